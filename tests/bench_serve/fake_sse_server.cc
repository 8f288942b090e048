#include "tests/bench_serve/fake_sse_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace arbor::bench::testing {
namespace {

bool WriteAll(int fd, const std::string& s) {
  size_t done = 0;
  while (done < s.size()) {
    const ssize_t n = send(fd, s.data() + done, s.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return false;
    done += size_t(n);
  }
  return true;
}

// One HTTP chunk holding one SSE event.
std::string Event(const std::string& data) {
  const std::string event = "data: " + data + "\n\n";
  char size[16];
  std::snprintf(size, sizeof(size), "%zx\r\n", event.size());
  return size + event + "\r\n";
}

// Reads the request head and its Content-Length body.
bool ReadRequest(int fd) {
  std::string in;
  char buf[4096];
  size_t need = std::string::npos;
  while (need == std::string::npos || in.size() < need) {
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return false;
    in.append(buf, size_t(n));
    const size_t head_end = in.find("\r\n\r\n");
    if (need == std::string::npos && head_end != std::string::npos) {
      const size_t cl = in.find("Content-Length: ");
      const size_t length =
          cl == std::string::npos ? 0 : std::strtoul(in.c_str() + cl + 16, nullptr, 10);
      need = head_end + 4 + length;
    }
  }
  return true;
}

}  // namespace

FakeSseServer::FakeSseServer(FakeScript script) : script_(script) {
  listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  listen(listen_fd_, 512);
  socklen_t len = sizeof(addr);
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  acceptor_ = std::thread([this] { AcceptLoop(); });
}

FakeSseServer::~FakeSseServer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  acceptor_.join();
  for (std::thread& t : workers_) t.join();
  close(listen_fd_);
}

bool FakeSseServer::Wait(int ms) {
  std::unique_lock<std::mutex> lock(mu_);
  return !stop_cv_.wait_for(lock, std::chrono::milliseconds(ms), [this] { return stopping_; });
}

void FakeSseServer::AcceptLoop() {
  for (;;) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (poll(&p, 1, 20) > 0) {
      const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) {
        std::lock_guard<std::mutex> lock(mu_);
        workers_.emplace_back([this, fd] { Serve(fd); });
      }
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
  }
}

void FakeSseServer::Serve(int fd) {
  if (ReadRequest(fd)) {
    ++requests_;
    using Mode = FakeScript::Mode;
    const std::string head =
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
    const std::string token = R"({"choices":[{"index":0,"text":"tok","finish_reason":null}]})";
    switch (script_.mode) {
      case Mode::kStatus500: {
        const std::string body = R"({"error":{"message":"boom","code":500}})";
        WriteAll(fd,
                 "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                 "Content-Length: " +
                     std::to_string(body.size()) + "\r\n\r\n" + body);
        break;
      }
      case Mode::kGarbage:
        WriteAll(fd, head + Event("this is not json"));
        break;
      case Mode::kCutShort:
        WriteAll(fd, head + Event(token));
        break;
      case Mode::kHang:
        WriteAll(fd, head);
        Wait(60 * 1000);
        break;
      case Mode::kInStreamError:
        WriteAll(fd, head + Event(R"({"error":{"message":"engine failed"}})"));
        break;
      case Mode::kStream: {
        WriteAll(fd, head);
        if (!Wait(script_.first_token_delay_ms)) break;
        bool ok = true;
        for (int i = 0; ok && i < script_.tokens; ++i) {
          if (i > 0 && !Wait(script_.gap_ms)) ok = false;
          if (ok) ok = WriteAll(fd, Event(token));
        }
        if (!ok) break;
        WriteAll(fd, Event(R"({"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":)" +
                           std::to_string(script_.tokens) + "}}") +
                         Event("[DONE]") + "0\r\n\r\n");
        break;
      }
    }
  }
  close(fd);
}

}  // namespace arbor::bench::testing
