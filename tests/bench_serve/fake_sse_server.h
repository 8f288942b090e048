// A tiny OpenAI-style streaming server on loopback for the load generator's tests: it answers
// every request the same scripted way, so latencies and failures are known in advance.
#ifndef ARBOR_TESTS_BENCH_SERVE_FAKE_SSE_SERVER_H_
#define ARBOR_TESTS_BENCH_SERVE_FAKE_SSE_SERVER_H_

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace arbor::bench::testing {

struct FakeScript {
  enum class Mode {
    kStream,         // 200, `tokens` completion chunks, a usage chunk, [DONE]
    kStatus500,      // 500 with an OpenAI error body
    kGarbage,        // 200, then a data line that is not JSON
    kCutShort,       // 200, one token chunk, then the connection closes without [DONE]
    kHang,           // 200 head, then nothing until the server stops
    kInStreamError,  // 200, then {"error": ...}
  };
  Mode mode = Mode::kStream;
  int first_token_delay_ms = 0;  // after reading the request, before the first token
  int gap_ms = 0;                // between later tokens
  int tokens = 4;
};

class FakeSseServer {
 public:
  explicit FakeSseServer(FakeScript script);
  ~FakeSseServer();  // stops: hung connections are released, threads joined
  int port() const { return port_; }
  int requests() const { return requests_.load(); }

 private:
  void AcceptLoop();
  void Serve(int fd);
  // Waits `ms` or until the server stops; false when stopping.
  bool Wait(int ms);

  FakeScript script_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<int> requests_{0};
  std::mutex mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::thread acceptor_;
  std::vector<std::thread> workers_;  // guarded by mu_
};

}  // namespace arbor::bench::testing

#endif  // ARBOR_TESTS_BENCH_SERVE_FAKE_SSE_SERVER_H_
