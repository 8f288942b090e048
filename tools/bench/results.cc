#include "tools/bench/results.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace arbor::bench {

void AppendResults(const std::string& path, const nlohmann::json& records) {
  nlohmann::json all = nlohmann::json::array();
  std::ifstream in(path);
  if (in) {
    all = nlohmann::json::parse(in, nullptr, false);
    if (!all.is_array()) all = nlohmann::json::array();
  }
  for (const auto& r : records) all.push_back(r);
  std::ofstream(path) << all.dump(2) << "\n";
}

nlohmann::json FindRecord(const std::string& path, const std::string& name,
                          const std::string& impl, const std::string& card) {
  std::ifstream in(path);
  if (!in) return nullptr;
  const nlohmann::json all = nlohmann::json::parse(in, nullptr, false);
  if (!all.is_array()) return nullptr;
  nlohmann::json found = nullptr;
  for (const auto& r : all) {
    if (r.is_object() && r.value("name", "") == name && r.value("impl", "") == impl &&
        r.value("card", "") == card && r.contains("value") && r["value"].is_number()) {
      found = r;
    }
  }
  return found;
}

std::vector<int64_t> ParseIntList(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(std::atoll(item.c_str()));
  return out;
}

}  // namespace arbor::bench
