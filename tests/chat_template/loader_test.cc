#include "engine/chat_template/loader.h"

#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <string>

#include "tests/chat_template/fixtures.h"

namespace arbor::engine {
namespace {

using testing::ChatTemplateFixture;
using testing::ReadOrderedJson;

std::string ModelDir(const std::string& name) { return ChatTemplateFixture("models/" + name); }

// A fresh directory under the test's scratch space holding `files`.
std::string ScratchModel(const std::string& name,
                         const std::vector<std::pair<std::string, std::string>>& files) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = std::string(tmp != nullptr ? tmp : "/tmp") + "/" + name;
  mkdir(dir.c_str(), 0755);
  for (const auto& [file, content] : files) {
    std::ofstream(dir + "/" + file, std::ios::binary) << content;
  }
  return dir;
}

TEST_CASE("each model directory yields the template transformers would use",
          "[chat_template][loader][hf]") {
  const auto fixture = ReadOrderedJson(ChatTemplateFixture("models/cases.json"));
  REQUIRE(fixture["cases"].size() == 4);
  for (const auto& c : fixture["cases"]) {
    const std::string model = c["model"].get<std::string>();
    const std::string name = c["template_name"].get<std::string>();
    INFO(model << " / " << name);
    auto tmpl = LoadChatTemplate(ModelDir(model), name);
    INFO(tmpl.status());
    REQUIRE(tmpl.ok());
    auto out = tmpl->Render(c["context"]);
    INFO(out.status());
    REQUIRE(out.ok());
    CHECK(*out == c["expected"].get<std::string>());
  }
}

TEST_CASE("chat_template.jinja wins over tokenizer_config.json", "[chat_template][loader]") {
  auto tmpl = LoadChatTemplate(ModelDir("jinja_file"));
  REQUIRE(tmpl.ok());
  CHECK_THAT(tmpl->name(), Catch::EndsWith("jinja_file/chat_template.jinja"));
  auto out = tmpl->Render(nlohmann::ordered_json::parse(
      R"({"messages": [{"role": "user", "content": "q"}], "eos_token": "E", "bos_token": "B"})"));
  REQUIRE(out.ok());
  CHECK(*out == "[A:user]qE");  // the file's trailing newline is dropped, as Jinja does
}

TEST_CASE("the template's name says where it came from", "[chat_template][loader]") {
  auto from_string = LoadChatTemplate(ModelDir("config_string"));
  REQUIRE(from_string.ok());
  CHECK_THAT(from_string->name(), Catch::EndsWith("tokenizer_config.json[chat_template]"));
  auto from_list = LoadChatTemplate(ModelDir("config_list"), "tool_use");
  REQUIRE(from_list.ok());
  CHECK_THAT(from_list->name(), Catch::EndsWith("tokenizer_config.json[chat_template:tool_use]"));
}

TEST_CASE("missing templates are NotFound", "[chat_template][loader]") {
  auto none = LoadChatTemplate(ModelDir("no_template"));
  REQUIRE_FALSE(none.ok());
  CHECK(none.status().code() == absl::StatusCode::kNotFound);
  auto no_dir = LoadChatTemplate(ModelDir("does_not_exist"));
  REQUIRE_FALSE(no_dir.ok());
  CHECK(no_dir.status().code() == absl::StatusCode::kNotFound);
  auto no_name = LoadChatTemplate(ModelDir("config_list"), "rag");
  REQUIRE_FALSE(no_name.ok());
  CHECK(no_name.status().code() == absl::StatusCode::kNotFound);
  auto string_named = LoadChatTemplate(ModelDir("config_string"), "tool_use");
  REQUIRE_FALSE(string_named.ok());
  CHECK(string_named.status().code() == absl::StatusCode::kNotFound);
}

TEST_CASE("bad configs and names are InvalidArgument", "[chat_template][loader]") {
  auto traversal = LoadChatTemplate(ModelDir("config_list"), "../../etc/passwd");
  REQUIRE_FALSE(traversal.ok());
  CHECK(traversal.status().code() == absl::StatusCode::kInvalidArgument);

  const std::string bad_json = ScratchModel("bad_json", {{"tokenizer_config.json", "{oops"}});
  auto a = LoadChatTemplate(bad_json);
  REQUIRE_FALSE(a.ok());
  CHECK(a.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(a.status().message()), Catch::Contains("not valid JSON"));

  const std::string wrong_type =
      ScratchModel("wrong_type", {{"tokenizer_config.json", R"({"chat_template": 7})"}});
  auto b = LoadChatTemplate(wrong_type);
  REQUIRE_FALSE(b.ok());
  CHECK(b.status().code() == absl::StatusCode::kInvalidArgument);

  const std::string bad_entry = ScratchModel(
      "bad_entry", {{"tokenizer_config.json", R"({"chat_template": [{"name": "default"}]})"}});
  auto c = LoadChatTemplate(bad_entry);
  REQUIRE_FALSE(c.ok());
  CHECK(c.status().code() == absl::StatusCode::kInvalidArgument);

  const std::string bad_template = ScratchModel(
      "bad_template", {{"tokenizer_config.json", R"({"chat_template": "line1\n{% foo %}"})"}});
  auto d = LoadChatTemplate(bad_template);
  REQUIRE_FALSE(d.ok());
  CHECK_THAT(std::string(d.status().message()),
             Catch::Contains("tokenizer_config.json[chat_template]:2:4: unknown tag 'foo'"));

  const std::string named_file = ScratchModel("named_file", {});
  mkdir((named_file + "/additional_chat_templates").c_str(), 0755);
  std::ofstream(named_file + "/additional_chat_templates/rag.jinja") << "R{{ messages | length }}";
  auto e = LoadChatTemplate(named_file, "rag");
  REQUIRE(e.ok());
  auto out = e->Render(nlohmann::ordered_json::parse(R"({"messages": [1, 2]})"));
  REQUIRE(out.ok());
  CHECK(*out == "R2");
}

TEST_CASE("special tokens come as strings, AddedToken objects reduced to content",
          "[chat_template][loader]") {
  auto a = LoadSpecialTokens(ModelDir("jinja_file"));
  REQUIRE(a.ok());
  CHECK(*a == nlohmann::ordered_json::parse(R"({"bos_token": "<s>", "eos_token": "</s>"})"));
  auto b = LoadSpecialTokens(ModelDir("config_string"));
  REQUIRE(b.ok());
  CHECK(*b ==
        nlohmann::ordered_json::parse(R"({"bos_token": "<|begin|>", "eos_token": "<|end|>"})"));
  auto none = LoadSpecialTokens(ModelDir("does_not_exist"));
  REQUIRE(none.ok());
  CHECK(none->empty());
  const std::string bad =
      ScratchModel("bad_token", {{"tokenizer_config.json", R"({"bos_token": 5})"}});
  CHECK_FALSE(LoadSpecialTokens(bad).ok());
}

}  // namespace
}  // namespace arbor::engine
