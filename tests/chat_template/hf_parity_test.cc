// Every fixture case (tests/data/chat_templates/<name>.cases.json, written by
// tools/fixtures/make_chat_templates.py with transformers' own environment) rendered here must
// be byte-identical to transformers' render, and the cases transformers refuses must fail here
// too: with exactly the message for raise_exception, with an error for the rest.
#include <catch2/catch.hpp>
#include <string>

#include "engine/chat_template/chat_template.h"
#include "tests/chat_template/fixtures.h"

namespace arbor::engine {
namespace {

using testing::ChatTemplateFixture;
using testing::ChatTemplateFixtureNames;
using testing::ReadFileOrEmpty;
using testing::ReadOrderedJson;

// Where two renders first differ, with some context, for a readable failure.
std::string FirstDifference(const std::string& got, const std::string& want) {
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  auto around = [&](const std::string& s) {
    const size_t from = i < 40 ? 0 : i - 40;
    return nlohmann::json(s.substr(from, 80))
        .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  };
  return "first difference at byte " + std::to_string(i) + " (got " + std::to_string(got.size()) +
         " bytes, want " + std::to_string(want.size()) + ")\n  got:  " + around(got) +
         "\n  want: " + around(want);
}

TEST_CASE("fixtures were rendered by transformers itself", "[chat_template][hf]") {
  const auto manifest = ReadOrderedJson(ChatTemplateFixture("manifest.json"));
  INFO(manifest.dump());
  CHECK(manifest["renderer"] == "transformers._compile_jinja_template");
  CHECK(manifest["transformers"].is_string());
  // The tojson the templates see is transformers' json.dumps wrapper, in this argument order.
  CHECK(manifest["tojson_signature"] ==
        "(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)");
}

TEST_CASE("every fixture case renders byte-identical to transformers", "[chat_template][hf]") {
  int rendered = 0;
  int refused = 0;
  for (const std::string& name : ChatTemplateFixtureNames()) {
    const std::string source = ReadFileOrEmpty(ChatTemplateFixture(name + ".jinja"));
    REQUIRE_FALSE(source.empty());
    auto tmpl = ChatTemplate::Parse(source, name + ".jinja");
    INFO(name << ": " << tmpl.status());
    REQUIRE(tmpl.ok());
    const auto fixture = ReadOrderedJson(ChatTemplateFixture(name + ".cases.json"));
    REQUIRE(fixture["cases"].size() > 0);
    for (const auto& c : fixture["cases"]) {
      INFO(name << " / " << c["name"].get<std::string>());
      auto out = tmpl->Render(c["context"]);
      if (c.contains("expected")) {
        INFO(out.status());
        REQUIRE(out.ok());
        const std::string want = c["expected"].get<std::string>();
        INFO(FirstDifference(*out, want));
        CHECK(*out == want);
        ++rendered;
      } else {
        const auto& error = c["error"];
        INFO("transformers: " << error.dump());
        REQUIRE_FALSE(out.ok());
        CHECK(out.status().code() == absl::StatusCode::kInvalidArgument);
        if (error["raised"].get<bool>()) {
          CHECK(IsChatTemplateRaise(out.status()));
          CHECK(std::string(out.status().message()) == error["message"].get<std::string>());
        } else {
          CHECK_FALSE(IsChatTemplateRaise(out.status()));
          CHECK_THAT(std::string(out.status().message()), Catch::StartsWith(name + ".jinja:"));
        }
        ++refused;
      }
    }
  }
  CHECK(rendered >= 100);
  CHECK(refused >= 10);
}

}  // namespace
}  // namespace arbor::engine
