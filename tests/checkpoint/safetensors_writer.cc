#include "tests/checkpoint/safetensors_writer.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace arbor::testing {

std::string MakeSafetensors(const std::vector<StTensor>& tensors,
                            const std::map<std::string, std::string>& metadata) {
  // Built by hand, not with nlohmann::json, to keep the tensors in the given order.
  std::string header = "{";
  bool first = true;
  if (!metadata.empty()) {
    header += "\"__metadata__\":" + nlohmann::json(metadata).dump();
    first = false;
  }
  std::string data;
  for (const StTensor& t : tensors) {
    if (!first) header += ",";
    first = false;
    const size_t begin = data.size();
    data += t.bytes;
    header += nlohmann::json(t.name).dump() + ":{\"dtype\":\"" + t.dtype +
              "\",\"shape\":" + nlohmann::json(t.shape).dump() + ",\"data_offsets\":[" +
              std::to_string(begin) + "," + std::to_string(data.size()) + "]}";
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');
  return WithHeaderLen(header.size(), header + data);
}

std::string WithHeaderLen(uint64_t header_len, const std::string& rest) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((header_len >> (8 * i)) & 0xFF);
  return out + rest;
}

std::string MakeRaw(const std::string& header, size_t data_len) {
  return WithHeaderLen(header.size(), header + std::string(data_len, '\xAB'));
}

std::string FreshDir(const std::string& label) {
  static std::atomic<int> counter{0};
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::filesystem::path dir =
      std::filesystem::path(tmp != nullptr ? tmp : "/tmp") /
      ("ckpt_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" + label);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

bool WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  f.close();
  return static_cast<bool>(f);
}

}  // namespace arbor::testing
