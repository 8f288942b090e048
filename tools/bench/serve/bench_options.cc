#include "tools/bench/serve/bench_options.h"

#include <cmath>
#include <limits>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace arbor::bench {

const char kBenchServeUsage[] =
    R"(arbor bench serve — a load generator for OpenAI-compatible servers and Arbor's gRPC API

Usage:
  arbor bench serve --model NAME [options]

Sends streamed /v1/completions (or /v1/chat/completions) requests over HTTP/1.1 to Arbor or any
OpenAI-compatible server, or streamed Generation.Complete (ChatComplete) calls to Arbor's gRPC
port, times every chunk of the stream, and reports per sweep point: req/s, output tok/s,
goodput, TTFT / TPOT / inter-token / end-to-end latency at p50/p90/p99, and errors by kind
(connect, http_<status>, grpc_<code>, timeout, malformed_stream, stream_error).

Server:
  --url URL              http://HOST:PORT, a server root (default http://127.0.0.1:8000), or
                         grpc://HOST:PORT, Arbor's gRPC port (server.grpc_port): the same
                         requests as streamed Generation.Complete / ChatComplete calls
                         (token-id prompts as token_ids; usage always comes)
  --api completions|chat which endpoint or RPC (default completions)
  --endpoint PATH        another path with the same request shape (overrides --api's path;
                         HTTP only)
  --model NAME           the served model's name (required unless --adapters)
  --api-key KEY          sent as "Authorization: Bearer KEY" (gRPC: as that metadata)
  --timeout-s S          a request not ended S seconds after its send is a timeout (600)

Load (one sweep point per value; rates first, then concurrencies; default --concurrency 1):
  --rate R1,R2,...       open loop at R requests/s ("inf": all at once)
  --arrival poisson|gamma  open-loop gaps (default poisson)
  --gamma-shape K        gamma's shape (default 1 = Poisson; < 1 burstier, > 1 more regular)
  --concurrency C1,...   closed loop: C requests in flight, the next sent as one ends
  --num-requests N       requests per sweep point (default 100)
  --seed S               prompts, lengths, adapters and arrivals (default 0)

Requests:
  --prompt-len SPEC      prompt length in tokens (default 128); SPEC is N, uniform:A,B,
                         lognormal:MEDIAN,SIGMA[,MAX], or the ShareGPT-like presets
                         sharegpt-prompt (= lognormal:128,1.0,2048, mean ~211) and
                         sharegpt-output (= lognormal:160,0.9,1024, mean ~240)
  --output-len SPEC      max_tokens per request, same SPEC forms (default 128)
  --vocab-size V         synthetic prompts are token ids uniform over [--vocab-offset, V), sent
                         as a token-id `prompt` (exact lengths; completions only). Without it,
                         and for chat, they are N common English words (~N tokens)
  --vocab-offset O       first id drawn (default 0)
  --prompts-file PATH    JSONL, one {"prompt": "text" | [ids]} per line, used in order
  --adapters A,B,...     each request's `model` names one of these LoRA adapters
  --adapter-alpha X      adapter popularity: 0 uniform (default), else power law
                         P(i) ~ (i + 1)^-X over the adapters in the order given
  --temperature T        sampling temperature (default 0)
  --no-ignore-eos        do not send ignore_eos (requests may then end before max_tokens)
  --no-usage             do not send stream_options.include_usage (tokens are then counted
                         as output chunks, which undercounts a server that sends several a chunk;
                         HTTP only: gRPC's last message always carries usage)

SLO (goodput: completed requests per second within every bound given):
  --slo-ttft-ms MS       time to first token
  --slo-tpot-ms MS       time per output token after the first

Output:
  --json PATH            every point's figures and the run's options
  --csv PATH             one row per sweep point
  --results PATH         append the figures to a bench/results.json (BENCHMARKS.md)
  --card NAME            the server's device, as those records name it
  --quiet                no progress line on stderr
A summary table goes to stdout at the end.
)";

namespace {

absl::Status Bad(const std::string& flag, const std::string& why) {
  return absl::InvalidArgumentError(flag + ": " + why);
}

absl::StatusOr<std::vector<double>> ParseList(const std::string& flag, const std::string& value,
                                              bool allow_inf) {
  std::vector<double> out;
  for (const std::string& item : std::vector<std::string>(absl::StrSplit(value, ','))) {
    double x = 0;
    if (allow_inf && item == "inf") {
      x = std::numeric_limits<double>::infinity();
    } else if (!absl::SimpleAtod(item, &x) || !std::isfinite(x) || x <= 0) {
      return Bad(flag, "expected positive numbers separated by commas, got '" + value + "'");
    }
    out.push_back(x);
  }
  return out;
}

}  // namespace

absl::StatusOr<BenchOptions> ParseBenchOptions(const std::vector<std::string>& args) {
  BenchOptions o;
  std::string api = "completions", arrival = "poisson", endpoint;
  std::string prompt_len = "128", output_len = "128";
  double gamma_shape = 1;
  std::vector<double> rates, concurrencies;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& flag = args[i];
    auto Value = [&]() -> absl::StatusOr<std::string> {
      if (i + 1 >= args.size()) return Bad(flag, "needs a value");
      return args[++i];
    };
    auto Number = [&](double* out, double min) -> absl::Status {
      auto v = Value();
      if (!v.ok()) return v.status();
      if (!absl::SimpleAtod(*v, out) || !std::isfinite(*out) || *out < min) {
        return Bad(flag, absl::StrCat("expected a number >= ", min, ", got '", *v, "'"));
      }
      return absl::OkStatus();
    };
    auto Integer = [&](auto* out, int64_t min) -> absl::Status {
      auto v = Value();
      if (!v.ok()) return v.status();
      if (!absl::SimpleAtoi(*v, out) || *out < min) {
        return Bad(flag, absl::StrCat("expected an integer >= ", min, ", got '", *v, "'"));
      }
      return absl::OkStatus();
    };
    auto String = [&](std::string* out) -> absl::Status {
      auto v = Value();
      if (!v.ok()) return v.status();
      *out = *v;
      return absl::OkStatus();
    };
    absl::Status s;
    if (flag == "--help" || flag == "-h") {
      o.help = true;
      return o;
    } else if (flag == "--url") {
      s = String(&o.url);
    } else if (flag == "--api") {
      s = String(&api);
    } else if (flag == "--endpoint") {
      s = String(&endpoint);
    } else if (flag == "--model") {
      s = String(&o.workload.model);
    } else if (flag == "--api-key") {
      s = String(&o.api_key);
    } else if (flag == "--timeout-s") {
      s = Number(&o.timeout_s, 0.001);
    } else if (flag == "--rate" || flag == "--concurrency") {
      auto v = Value();
      if (!v.ok()) return v.status();
      auto list = ParseList(flag, *v, flag == "--rate");
      if (!list.ok()) return list.status();
      (flag == "--rate" ? rates : concurrencies) = *list;
    } else if (flag == "--arrival") {
      s = String(&arrival);
    } else if (flag == "--gamma-shape") {
      s = Number(&gamma_shape, 1e-6);
    } else if (flag == "--num-requests") {
      s = Integer(&o.num_requests, 1);
    } else if (flag == "--seed") {
      int64_t seed = 0;
      s = Integer(&seed, 0);
      o.workload.seed = uint64_t(seed);
    } else if (flag == "--prompt-len") {
      s = String(&prompt_len);
    } else if (flag == "--output-len") {
      s = String(&output_len);
    } else if (flag == "--vocab-size") {
      s = Integer(&o.vocab_size, 1);
    } else if (flag == "--vocab-offset") {
      s = Integer(&o.vocab_offset, 0);
    } else if (flag == "--prompts-file") {
      s = String(&o.prompts_file);
    } else if (flag == "--adapters") {
      std::string list;
      s = String(&list);
      o.workload.adapters = absl::StrSplit(list, ',', absl::SkipEmpty());
    } else if (flag == "--adapter-alpha") {
      s = Number(&o.workload.adapter_alpha, 0);
    } else if (flag == "--temperature") {
      s = Number(&o.workload.temperature, 0);
    } else if (flag == "--no-ignore-eos") {
      o.workload.ignore_eos = false;
    } else if (flag == "--no-usage") {
      o.workload.include_usage = false;
    } else if (flag == "--slo-ttft-ms") {
      s = Number(&o.slo.ttft_ms, 0);
    } else if (flag == "--slo-tpot-ms") {
      s = Number(&o.slo.tpot_ms, 0);
    } else if (flag == "--json") {
      s = String(&o.json_path);
    } else if (flag == "--csv") {
      s = String(&o.csv_path);
    } else if (flag == "--results") {
      s = String(&o.results_path);
    } else if (flag == "--card") {
      s = String(&o.card);
    } else if (flag == "--quiet") {
      o.progress = false;
    } else {
      return Bad(flag, "unknown flag (see arbor bench serve --help)");
    }
    if (!s.ok()) return s;
  }

  if (api == "completions") {
    o.workload.api = Api::kCompletions;
    o.path = "/v1/completions";
  } else if (api == "chat") {
    o.workload.api = Api::kChat;
    o.path = "/v1/chat/completions";
  } else {
    return Bad("--api", "expected completions or chat, got '" + api + "'");
  }
  if (absl::StartsWith(o.url, "grpc://")) {
    // The gRPC method the requests call, for the run's JSON.
    o.path = o.workload.api == Api::kChat ? "/arbor.v1.Generation/ChatComplete"
                                          : "/arbor.v1.Generation/Complete";
    if (!endpoint.empty()) return Bad("--endpoint", "is HTTP only (a grpc:// --url was given)");
  }
  if (!endpoint.empty()) {
    if (endpoint[0] != '/') return Bad("--endpoint", "must start with /");
    o.path = endpoint;
  }
  if (o.workload.model.empty() && o.workload.adapters.empty()) {
    return Bad("--model", "is required (the served model's name; or give --adapters)");
  }
  if (arrival == "poisson") {
    if (gamma_shape != 1) return Bad("--gamma-shape", "needs --arrival gamma");
  } else if (arrival != "gamma") {
    return Bad("--arrival", "expected poisson or gamma, got '" + arrival + "'");
  }
  if (o.vocab_size > 0 && o.vocab_offset >= o.vocab_size) {
    return Bad("--vocab-offset", "must be below --vocab-size");
  }
  auto p = LengthDistribution::Parse(prompt_len);
  if (!p.ok()) return Bad("--prompt-len", std::string(p.status().message()));
  o.workload.prompt_len = *p;
  auto q = LengthDistribution::Parse(output_len);
  if (!q.ok()) return Bad("--output-len", std::string(q.status().message()));
  o.workload.output_len = *q;

  if (rates.empty() && concurrencies.empty()) concurrencies = {1};
  for (double r : rates) {
    LoadPoint lp;
    lp.rate = r;
    lp.gamma_shape = gamma_shape;
    o.points.push_back(lp);
  }
  for (double c : concurrencies) {
    if (c != std::floor(c)) return Bad("--concurrency", "must be whole numbers");
    o.points.push_back(LoadPoint::ClosedLoop(int32_t(c)));
  }
  return o;
}

}  // namespace arbor::bench
