#include "engine/lora/peft_targets.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace arbor::engine {
namespace {

using nlohmann::json;

absl::Status Bad(const std::string& what) { return absl::InvalidArgumentError(what); }

// A regex of `field`, or the reason it is refused. Patterns come from adapter configs, which only
// the admin key registers; a length cap keeps a pasted blob from being compiled at all. (libstdc++
// matches by backtracking, so a pattern of nested quantifiers can still be slow on a module name.)
constexpr size_t kMaxPattern = 1000;
absl::StatusOr<std::regex> Compile(const std::string& field, const std::string& pattern) {
  if (pattern.size() > kMaxPattern) {
    return Bad(absl::StrCat(field, ": a pattern of ", pattern.size(), " characters (at most ",
                            kMaxPattern, ")"));
  }
  try {
    return std::regex(pattern, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    return Bad(
        absl::StrCat(field, ": \"", pattern,
                     "\" is not a regular expression Arbor can read (ECMAScript): ", e.what()));
  }
}

}  // namespace

bool PeftModuleSelector::Names::Matches(const std::string& name) const {
  if (regex) return std::regex_match(name, *regex);
  return std::any_of(list.begin(), list.end(), [&](const std::string& t) {
    return name == t || absl::EndsWith(name, "." + t);
  });
}

absl::StatusOr<PeftModuleSelector> PeftModuleSelector::FromConfig(const json& c, bool allow_none) {
  auto get = [&](const char* key) -> const json* {
    auto it = c.find(key);
    return it == c.end() || it->is_null() ? nullptr : &*it;
  };
  PeftModuleSelector s;
  // A regex string or a list of strings, into `names`.
  auto read = [&](const char* field, const json& v, Names& names) -> absl::Status {
    if (v.is_string()) {
      auto re = Compile(field, v.get<std::string>());
      if (!re.ok()) return re.status();
      names.regex = std::move(*re);
      return absl::OkStatus();
    }
    if (!v.is_array()) return Bad(absl::StrCat(field, ": must be a list of names or a regex"));
    for (const json& t : v) {
      if (!t.is_string()) return Bad(absl::StrCat(field, ": ", t.dump(), " is not a name"));
      names.list.push_back(t.get<std::string>());
    }
    return absl::OkStatus();
  };
  if (const json* v = get("exclude_modules")) {
    if (absl::Status st = read("exclude_modules", *v, s.exclude_); !st.ok()) return st;
  }
  const json* targets = get("target_modules");
  if (targets == nullptr || (targets->is_array() && targets->empty())) {
    if (!allow_none) return Bad("target_modules: must name the modules to adapt");
    return s;  // selects nothing
  }
  if (targets->is_string() && absl::AsciiStrToLower(targets->get<std::string>()) == "all-linear") {
    s.all_ = true;  // PEFT's every nn.Linear but the output head: every module Arbor adapts
  } else if (absl::Status st = read("target_modules", *targets, s.targets_); !st.ok()) {
    return st;
  }
  if (const json* v = get("layers_to_transform")) {
    if (v->is_number_integer()) {
      s.layers_ = std::vector<int64_t>{v->get<int64_t>()};
    } else if (v->is_array()) {
      s.layers_.emplace();
      for (const json& l : *v) {
        if (!l.is_number_integer()) {
          return Bad(absl::StrCat("layers_to_transform: ", l.dump(), " is not a layer index"));
        }
        s.layers_->push_back(l.get<int64_t>());
      }
    } else {
      return Bad("layers_to_transform: must be a layer index or a list of them");
    }
    std::vector<std::string> patterns;
    if (const json* p = get("layers_pattern")) {
      if (p->is_string()) {
        patterns.push_back(p->get<std::string>());
      } else if (p->is_array()) {
        for (const json& x : *p) {
          if (!x.is_string())
            return Bad(absl::StrCat("layers_pattern: ", x.dump(), " is not a name"));
          patterns.push_back(x.get<std::string>());
        }
      } else {
        return Bad("layers_pattern: must be a name or a list of names");
      }
    }
    if (patterns.empty()) {
      s.layer_patterns_.emplace_back(R"(.*\.[^.]*\.(\d+)\.)");
    } else {
      for (const std::string& p : patterns) {
        auto re = Compile("layers_pattern", absl::StrCat(R"(.*\.)", p, R"(\.(\d+)\.)"));
        if (!re.ok()) return re.status();
        s.layer_patterns_.push_back(std::move(*re));
      }
    }
  }
  return s;
}

std::vector<std::string> PeftModuleSelector::Unmatched(
    const std::vector<std::string>& modules) const {
  std::vector<std::string> out;
  for (const std::string& t : targets_.list) {
    Names one;
    one.list = {t};
    if (std::none_of(modules.begin(), modules.end(),
                     [&](const std::string& m) { return one.Matches(m); })) {
      out.push_back(t);
    }
  }
  return out;
}

bool PeftModuleSelector::Selects(const std::string& name) const {
  if ((exclude_.regex || !exclude_.list.empty()) && exclude_.Matches(name)) return false;
  if (all_) return true;
  if (targets_.regex) return std::regex_match(name, *targets_.regex);
  if (!targets_.Matches(name)) return false;
  if (!layers_) return true;
  // The layer index as PEFT reads it: the first pattern that matches from the start of the name.
  for (const std::regex& p : layer_patterns_) {
    std::smatch m;
    if (std::regex_search(name, m, p, std::regex_constants::match_continuous)) {
      int64_t layer = 0;
      if (!absl::SimpleAtoi(m[1].str(), &layer)) return false;
      return std::find(layers_->begin(), layers_->end(), layer) != layers_->end();
    }
  }
  return false;
}

absl::StatusOr<PeftPattern> PeftPattern::FromConfig(const std::string& config_text,
                                                    const char* field) {
  const nlohmann::ordered_json c = nlohmann::ordered_json::parse(config_text, nullptr, false);
  PeftPattern p;
  if (c.is_discarded() || !c.is_object()) return Bad("not a JSON object");
  auto it = c.find(field);
  if (it == c.end() || it->is_null()) return p;
  if (!it->is_object()) return Bad(absl::StrCat(field, ": must be an object of name: value"));
  for (const auto& [key, value] : it->items()) {
    if (!value.is_number()) {
      return Bad(absl::StrCat(field, ": \"", key, "\": ", value.dump(), " is not a number"));
    }
    auto re = Compile(field, absl::StrCat(R"((.*\.)?()", key, ")"));
    if (!re.ok()) return re.status();
    p.keys_.emplace_back(std::move(*re), value.get<double>());
  }
  return p;
}

double PeftPattern::Lookup(const std::string& name, double fallback) const {
  for (const auto& [re, value] : keys_) {
    if (std::regex_match(name, re)) return value;  // re.match with `$`: the whole name
  }
  return fallback;
}

}  // namespace arbor::engine
