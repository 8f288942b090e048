#include "engine/checkpoint/safetensors.h"

#include <algorithm>
#include <limits>
#include <nlohmann/json.hpp>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "engine/checkpoint/json_input.h"

namespace arbor::engine {
namespace {

using Json = nlohmann::json;

struct DtypeInfo {
  StDtype dtype;
  const char* name;
  size_t size;
};

// The one table of accepted dtypes: spelling and element size.
constexpr DtypeInfo kDtypes[] = {
    {StDtype::kF64, "F64", 8},   {StDtype::kF32, "F32", 4},        {StDtype::kF16, "F16", 2},
    {StDtype::kBF16, "BF16", 2}, {StDtype::kI64, "I64", 8},        {StDtype::kI32, "I32", 4},
    {StDtype::kI16, "I16", 2},   {StDtype::kI8, "I8", 1},          {StDtype::kU8, "U8", 1},
    {StDtype::kBool, "BOOL", 1}, {StDtype::kF8E4M3, "F8_E4M3", 1}, {StDtype::kF8E5M2, "F8_E5M2", 1},
};

const DtypeInfo& Info(StDtype dtype) {
  for (const DtypeInfo& d : kDtypes) {
    if (d.dtype == dtype) return d;
  }
  return kDtypes[0];  // unreachable: every enumerator is in the table
}

std::string ShapeStr(const std::vector<uint64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

std::string OffsetsStr(uint64_t begin, uint64_t end) {
  return absl::StrCat("[", begin, ", ", end, "]");
}

// A scalar's value, or the kind of a composite value (never a dump of a big or deep value).
std::string ValueOf(const Json& v) {
  if (v.is_number_unsigned()) return absl::StrCat(v.get<uint64_t>());
  if (v.is_number_integer()) return absl::StrCat(v.get<int64_t>());
  if (v.is_number_float()) return absl::StrCat(v.get<double>());
  if (v.is_string()) return QuoteForError(v.get_ref<const std::string&>());
  return JsonTypeForError(v);
}

class Errors {
 public:
  explicit Errors(const std::string& file) : file_(file) {}

  template <typename... Args>
  absl::Status File(const Args&... args) const {
    return absl::InvalidArgumentError(absl::StrCat(file_, ": ", args...));
  }
  template <typename... Args>
  absl::Status Tensor(std::string_view name, const Args&... args) const {
    return absl::InvalidArgumentError(
        absl::StrCat(file_, ": tensor ", QuoteForError(name), ": ", args...));
  }

 private:
  const std::string& file_;
};

// A JSON integer in [0, max], or nullopt.
std::optional<uint64_t> NonNegativeInt(const Json& v, uint64_t max) {
  if (v.is_number_unsigned()) {
    const auto u = v.get<uint64_t>();
    if (u <= max) return u;
    return std::nullopt;
  }
  if (v.is_number_integer() && v.get<int64_t>() == 0) return 0;  // "-0"
  return std::nullopt;
}

absl::Status ParseMetadata(const Json& v, const Errors& err,
                           std::map<std::string, std::string>* out) {
  if (!v.is_object()) {
    return err.File("\"__metadata__\" must be an object of strings, got ", JsonTypeForError(v));
  }
  for (auto it = v.begin(); it != v.end(); ++it) {
    if (!it.value().is_string()) {
      return err.File("\"__metadata__\" must be an object of strings; key ",
                      QuoteForError(it.key()), " holds ", JsonTypeForError(it.value()));
    }
    (*out)[it.key()] = it.value().get<std::string>();
  }
  return absl::OkStatus();
}

// A tensor entry as read from JSON, before the tiling check. begin/end are relative to the
// data section.
struct RawEntry {
  std::string name;
  StDtype dtype;
  std::vector<uint64_t> shape;
  uint64_t begin;
  uint64_t end;
};

absl::StatusOr<RawEntry> ParseEntry(const std::string& name, const Json& v, uint64_t data_len,
                                    const Errors& err) {
  if (!v.is_object()) {
    return err.Tensor(name, "entry must be an object with dtype, shape and data_offsets, got ",
                      JsonTypeForError(v));
  }
  RawEntry e;
  e.name = name;

  const auto dtype_it = v.find("dtype");
  if (dtype_it == v.end()) return err.Tensor(name, "missing \"dtype\"");
  if (!dtype_it->is_string()) {
    return err.Tensor(name, "\"dtype\" must be a string, got ", JsonTypeForError(*dtype_it));
  }
  const auto& dtype_name = dtype_it->get_ref<const std::string&>();
  const std::optional<StDtype> dtype = StDtypeFromName(dtype_name);
  if (!dtype.has_value()) {
    std::vector<std::string> known;
    for (const DtypeInfo& d : kDtypes) known.push_back(d.name);
    return err.Tensor(name, "unknown dtype ", QuoteForError(dtype_name), " (expected one of ",
                      absl::StrJoin(known, ", "), ")");
  }
  e.dtype = *dtype;

  const auto shape_it = v.find("shape");
  if (shape_it == v.end()) return err.Tensor(name, "missing \"shape\"");
  if (!shape_it->is_array()) {
    return err.Tensor(name, "\"shape\" must be an array of non-negative integers, got ",
                      JsonTypeForError(*shape_it));
  }
  for (size_t i = 0; i < shape_it->size(); ++i) {
    const Json& dim = (*shape_it)[i];
    const std::optional<uint64_t> d =
        NonNegativeInt(dim, static_cast<uint64_t>(std::numeric_limits<int64_t>::max()));
    if (!d.has_value()) {
      return err.Tensor(name, "shape[", i, "] is ", ValueOf(dim),
                        "; dimensions must be integers in [0, 2^63)");
    }
    e.shape.push_back(*d);
  }

  const auto off_it = v.find("data_offsets");
  if (off_it == v.end()) return err.Tensor(name, "missing \"data_offsets\"");
  if (!off_it->is_array() || off_it->size() != 2) {
    return err.Tensor(name, "\"data_offsets\" must be [begin, end], got ",
                      off_it->is_array() ? absl::StrCat("an array of ", off_it->size())
                                         : JsonTypeForError(*off_it));
  }
  const std::optional<uint64_t> begin =
      NonNegativeInt((*off_it)[0], std::numeric_limits<uint64_t>::max());
  const std::optional<uint64_t> end =
      NonNegativeInt((*off_it)[1], std::numeric_limits<uint64_t>::max());
  if (!begin.has_value() || !end.has_value()) {
    return err.Tensor(name, "\"data_offsets\" [", ValueOf((*off_it)[0]), ", ",
                      ValueOf((*off_it)[1]), "] must be two non-negative integers");
  }
  e.begin = *begin;
  e.end = *end;
  if (e.end < e.begin) {
    return err.Tensor(name, "data_offsets ", OffsetsStr(e.begin, e.end), " end before they begin");
  }
  if (e.end > data_len) {
    return err.Tensor(name, "data_offsets ", OffsetsStr(e.begin, e.end),
                      " run past the end of the data section (", data_len, " bytes)");
  }

  // numel x element size, overflow-checked. A zero dimension makes the product zero whatever
  // the other dimensions are.
  const size_t elem = StDtypeSize(e.dtype);
  uint64_t needed = 0;
  if (std::find(e.shape.begin(), e.shape.end(), 0) == e.shape.end()) {
    needed = elem;
    for (uint64_t d : e.shape) {
      if (__builtin_mul_overflow(needed, d, &needed)) {
        return err.Tensor(name, "shape ", ShapeStr(e.shape), " x ", StDtypeName(e.dtype),
                          " overflows a 64-bit byte count");
      }
    }
  }
  if (needed != e.end - e.begin) {
    return err.Tensor(name, "data_offsets ", OffsetsStr(e.begin, e.end), " span ", e.end - e.begin,
                      " bytes but shape ", ShapeStr(e.shape), " x ", StDtypeName(e.dtype),
                      " needs ", needed);
  }
  return e;
}

}  // namespace

const char* StDtypeName(StDtype dtype) { return Info(dtype).name; }

size_t StDtypeSize(StDtype dtype) { return Info(dtype).size; }

std::optional<StDtype> StDtypeFromName(std::string_view name) {
  for (const DtypeInfo& d : kDtypes) {
    if (name == d.name) return d.dtype;
  }
  return std::nullopt;
}

absl::StatusOr<SafetensorsIndex> ParseSafetensorsHeader(absl::Span<const uint8_t> file_bytes,
                                                        const std::string& file_name) {
  const Errors err(file_name);
  const uint64_t file_size = file_bytes.size();
  if (file_size < 8) {
    return err.File("file is ", file_size,
                    " bytes, too short to hold the 8-byte header length; not a safetensors file");
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | file_bytes[i];
  if (header_len < 2) {
    return err.File("header length ", header_len, " is too small (the least is 2, \"{}\")");
  }
  if (header_len > kMaxSafetensorsHeaderLen) {
    return err.File("header length ", header_len, " exceeds the limit of ",
                    kMaxSafetensorsHeaderLen, " bytes");
  }
  if (header_len > file_size - 8) {
    return err.File("header length ", header_len, " runs past the end of the file (", file_size - 8,
                    " bytes follow the 8-byte length)");
  }

  SafetensorsIndex index;
  index.header_len = header_len;
  index.data_offset = 8 + header_len;
  index.data_len = file_size - index.data_offset;

  const std::string_view text(reinterpret_cast<const char*>(file_bytes.data()) + 8, header_len);
  if (const std::optional<size_t> bad = FirstInvalidUtf8(text); bad.has_value()) {
    return err.File("header is not valid UTF-8 (byte ", *bad, " of the header is 0x",
                    absl::Hex(static_cast<uint8_t>(text[*bad]), absl::kZeroPad2), ")");
  }
  std::optional<JsonDuplicateKey> duplicate;
  absl::StatusOr<Json> parsed = ParseJsonNoDuplicates(text, &duplicate);
  if (!parsed.ok()) return err.File("header is not valid JSON: ", parsed.status().message());
  const Json& header = *parsed;
  if (!header.is_object()) {
    return err.File("header must be a JSON object, got ", JsonTypeForError(header));
  }
  if (duplicate.has_value()) {
    if (duplicate->path.empty()) return err.Tensor(duplicate->key, "defined twice in the header");
    return err.Tensor(duplicate->path[0], "key ", QuoteForError(duplicate->key),
                      " appears twice in its entry");
  }

  std::vector<RawEntry> entries;
  entries.reserve(header.size());
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      RETURN_IF_ERROR(ParseMetadata(it.value(), err, &index.metadata));
      continue;
    }
    ASSIGN_OR_RETURN(RawEntry e, ParseEntry(it.key(), it.value(), index.data_len, err));
    entries.push_back(std::move(e));
  }

  // Sorted by begin (zero-byte tensors first among equals), the spans must tile the data
  // section: each begins where the previous ends, the first at 0, the last at data_len.
  std::sort(entries.begin(), entries.end(), [](const RawEntry& a, const RawEntry& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  uint64_t expected = 0;
  const RawEntry* prev = nullptr;
  for (const RawEntry& e : entries) {
    if (e.begin > expected) {
      if (prev == nullptr) {
        return err.Tensor(e.name, "data_offsets ", OffsetsStr(e.begin, e.end),
                          " do not start at 0: the first ", e.begin,
                          " bytes of the data section belong to no tensor");
      }
      return err.Tensor(e.name, "data_offsets ", OffsetsStr(e.begin, e.end),
                        " leave a gap after tensor ", QuoteForError(prev->name), " ",
                        OffsetsStr(prev->begin, prev->end), ": bytes [", expected, ", ", e.begin,
                        ") belong to no tensor");
    }
    if (e.begin < expected) {
      return err.Tensor(e.name, "data_offsets ", OffsetsStr(e.begin, e.end), " overlap tensor ",
                        QuoteForError(prev->name), " ", OffsetsStr(prev->begin, prev->end));
    }
    expected = e.end;
    prev = &e;
  }
  if (expected != index.data_len) {
    if (prev == nullptr) {
      return err.File("the header lists no tensors but the data section holds ", index.data_len,
                      " bytes");
    }
    return err.Tensor(prev->name, "the last tensor ends at data offset ", expected,
                      " but the data section is ", index.data_len, " bytes (",
                      index.data_len - expected, " trailing bytes belong to no tensor)");
  }

  index.tensors.reserve(entries.size());
  for (RawEntry& e : entries) {
    SafetensorsEntry t;
    t.name = std::move(e.name);
    t.dtype = e.dtype;
    t.shape.assign(e.shape.begin(), e.shape.end());
    t.offset = index.data_offset + e.begin;
    t.nbytes = e.end - e.begin;
    index.tensors.push_back(std::move(t));
  }
  return index;
}

}  // namespace arbor::engine
