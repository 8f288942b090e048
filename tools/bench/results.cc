#include "tools/bench/results.h"

#include <fstream>

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

}  // namespace arbor::bench
