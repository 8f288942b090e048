// Reading the chat-template fixtures (tests/data/chat_templates/) from a test's runfiles.
#ifndef ARBOR_TESTS_CHAT_TEMPLATE_FIXTURES_H_
#define ARBOR_TESTS_CHAT_TEMPLATE_FIXTURES_H_

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

namespace arbor::testing {

// Every template of tools/fixtures/make_chat_templates.py.
inline const std::vector<std::string>& ChatTemplateFixtureNames() {
  static const auto* names = new std::vector<std::string>{
      "llama3_style",  "llama31_tools",  "mistral_inst",    "chatml_tools",
      "gemma_style",   "phi3_style",     "reasoning_style", "stress_loops",
      "filters_tests", "tojson_unicode", "whitespace"};
  return *names;
}

// `path` (relative to the repository root) inside the test's runfiles.
inline std::string ChatTemplateRunfile(const std::string& path) {
  if (const char* srcdir = std::getenv("TEST_SRCDIR"); srcdir != nullptr) {
    return std::string(srcdir) + "/arbor/" + path;
  }
  return path;
}

inline std::string ChatTemplateFixture(const std::string& file) {
  return ChatTemplateRunfile("tests/data/chat_templates/" + file);
}

// The whole file, or "" if it cannot be read.
inline std::string ReadFileOrEmpty(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline nlohmann::ordered_json ReadOrderedJson(const std::string& path) {
  return nlohmann::ordered_json::parse(ReadFileOrEmpty(path));
}

}  // namespace arbor::testing

#endif  // ARBOR_TESTS_CHAT_TEMPLATE_FIXTURES_H_
