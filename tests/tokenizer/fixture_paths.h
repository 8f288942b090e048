// Paths of the tokenizer fixtures (tests/data/tokenizers/<name>/) inside a test's runfiles.
#ifndef ARBOR_TESTS_TOKENIZER_FIXTURE_PATHS_H_
#define ARBOR_TESTS_TOKENIZER_FIXTURE_PATHS_H_

#include <cstdlib>
#include <string>
#include <vector>

namespace arbor::testing {

// Every fixture: byte-level (llama3, gpt2, qwen2) and SentencePiece-style (llama2, mistral,
// metaspace).
inline const std::vector<std::string>& TokenizerFixtureNames() {
  static const auto* names =
      new std::vector<std::string>{"llama3", "gpt2", "qwen2", "llama2", "mistral", "metaspace"};
  return *names;
}

// `path` (relative to the repository root) inside the test's runfiles.
inline std::string RunfilePath(const std::string& path) {
  if (const char* srcdir = std::getenv("TEST_SRCDIR"); srcdir != nullptr) {
    return std::string(srcdir) + "/arbor/" + path;
  }
  return path;
}

inline std::string TokenizerFixturePath(const std::string& name, const std::string& file) {
  return RunfilePath("tests/data/tokenizers/" + name + "/" + file);
}

}  // namespace arbor::testing

#endif  // ARBOR_TESTS_TOKENIZER_FIXTURE_PATHS_H_
