#include "tests/eval/reference.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/tokenizer/tokenizer.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/launch_args.h"

namespace arbor::eval::testing {
namespace {

template <typename Row>
double RowNll(const Row& row, size_t n, int32_t target) {
  double max = row[0];
  for (size_t v = 1; v < n; ++v) max = std::max(max, double(row[v]));
  double sum = 0;
  for (size_t v = 0; v < n; ++v) sum += std::exp(double(row[v]) - max);
  return max + std::log(sum) - double(row[size_t(target)]);
}

}  // namespace

double ReferenceNll(engine::Model& model, const std::vector<int32_t>& tokens) {
  auto seq = model.NewSequence(int64_t(tokens.size()));
  REQUIRE(seq.ok());
  auto logits = model.Forward(tokens, *seq, /*all_positions=*/true);
  INFO(logits.status().ToString());
  REQUIRE(logits.ok());
  const size_t vocab = size_t(model.spec().vocab_size);
  REQUIRE(logits->size() == tokens.size() * vocab);
  double nll = 0;
  for (size_t t = 1; t < tokens.size(); ++t) {
    nll += RowNll(logits->data() + (t - 1) * vocab, vocab, tokens[t]);
  }
  return nll;
}

double ReferenceNll(const std::vector<std::vector<double>>& logits,
                    const std::vector<int32_t>& tokens) {
  REQUIRE(logits.size() + 1 >= tokens.size());
  double nll = 0;
  for (size_t t = 1; t < tokens.size(); ++t) {
    nll += RowNll(logits[t - 1], logits[t - 1].size(), tokens[t]);
  }
  return nll;
}

double TinyReference::perplexity() const { return std::exp(nll / double(tokens)); }

TinyReference TinyPerplexity(const std::vector<std::string>& texts, int64_t max_tokens) {
  auto tok = engine::Tokenizer::FromFile("models/tiny/tokenizer.json");
  REQUIRE(tok.ok());
  kernels::CpuBackend cpu;
  auto model = engine::Model::Load("models/tiny", cpu);
  REQUIRE(model.ok());
  TinyReference ref;
  for (const std::string& text : texts) {
    auto ids = (*tok)->Encode(text, /*add_special_tokens=*/false);
    REQUIRE(ids.ok());
    std::vector<int32_t> doc = {1200};
    doc.insert(doc.end(), ids->begin(), ids->end());
    doc.push_back(1201);
    if (int64_t(doc.size()) > max_tokens) {
      doc.resize(size_t(max_tokens));
      ++ref.truncated;
    }
    ref.nll += ReferenceNll(**model, doc);
    ref.tokens += int64_t(doc.size()) - 1;
  }
  return ref;
}

std::vector<int32_t> ReferenceGreedy(engine::Model& model, const std::vector<int32_t>& prompt,
                                     int64_t max_tokens, const std::vector<int32_t>& stop) {
  auto seq = model.NewSequence(int64_t(prompt.size()) + max_tokens);
  REQUIRE(seq.ok());
  const size_t vocab = size_t(model.spec().vocab_size);
  std::vector<int32_t> out;
  std::vector<int32_t> next = prompt;
  while (int64_t(out.size()) < max_tokens) {
    auto logits = model.Forward(next, *seq, /*all_positions=*/false);
    REQUIRE(logits.ok());
    REQUIRE(logits->size() == vocab);
    const int32_t id = int32_t(std::max_element(logits->begin(), logits->end()) - logits->begin());
    out.push_back(id);
    if (std::find(stop.begin(), stop.end(), id) != stop.end()) break;
    next = {id};
  }
  return out;
}

engine::LaunchConfig TinyConfig(const std::vector<std::string>& overrides) {
  server::LaunchArgs args;
  args.overrides = {"device=cpu", "log_level=warn", "model.path=models/tiny"};
  args.overrides.insert(args.overrides.end(), overrides.begin(), overrides.end());
  auto config = server::LoadLaunchConfig(args);
  INFO(config.status().ToString());
  REQUIRE(config.ok());
  return *config;
}

EvalStack NewEvalStack(const engine::LaunchConfig& config) {
  auto backend = server::CreateConfiguredBackend(config);
  INFO(backend.status().ToString());
  REQUIRE(backend.ok());
  auto stack = server::BuildEngineStack(config, std::move(*backend));
  INFO(stack.status().ToString());
  REQUIRE(stack.ok());
  EvalStack out{std::move(*stack), {}};
  if (out->tokenizer != nullptr) {
    auto framing = FramingFor(out->model->spec(), *out->tokenizer, out->bos_token, out->eos_token);
    REQUIRE(framing.ok());
    out.framing = *framing;
  }
  return out;
}

std::string TinyPrmDir(const std::string& name, const std::string& step_tag) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::filesystem::path dir = std::filesystem::path(tmp != nullptr ? tmp : "/tmp") / name;
  std::filesystem::create_directories(dir);
  for (const auto& entry : std::filesystem::directory_iterator("models/tiny")) {
    std::filesystem::copy_file(entry.path(), dir / entry.path().filename(),
                               std::filesystem::copy_options::overwrite_existing);
  }
  std::ofstream(dir / "prm.json") << nlohmann::json{
      {"step_tag", step_tag},
      {"plus_token", "+"},
      {"minus_token", "-"}}.dump();
  return dir.string();
}

std::string WriteTempFile(const std::string& name, const std::string& text) {
  const char* dir = std::getenv("TEST_TMPDIR");
  const std::string path = std::string(dir != nullptr ? dir : "/tmp") + "/" + name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  REQUIRE(out.good());
  return path;
}

}  // namespace arbor::eval::testing
