#include "engine/checkpoint/checkpoint.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "engine/checkpoint/json_input.h"
#include "engine/checkpoint/mapped_file.h"
#include "kernels/dtype.h"

// safetensors is little-endian; F32 tensors are copied as they lie.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "ReadAsF32 assumes a little-endian host");

namespace arbor::engine {
namespace {

using Json = nlohmann::json;

constexpr char kSingleFile[] = "model.safetensors";
constexpr char kIndexFile[] = "model.safetensors.index.json";
// An index lists names only; anything this large is not one.
constexpr size_t kMaxIndexBytes = 100'000'000;

std::string JoinPath(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  if (dir.back() == '/') return dir + name;
  return absl::StrCat(dir, "/", name);
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// Weight files in Python's pickle format (torch.save): reading them can execute code.
bool IsPickleName(const std::string& name) {
  for (const char* ext : {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"}) {
    if (absl::EndsWith(name, ext)) return true;
  }
  return false;
}

// Why `shard` is not a plain file name inside the model directory, or nullopt if it is one.
std::optional<std::string> BadShardName(const std::string& shard) {
  if (shard.empty()) return "it is empty";
  if (shard == "." || shard == "..") return "it names a directory";
  if (shard.find('/') != std::string::npos) return "it contains '/'";
  if (shard.find('\\') != std::string::npos) return "it contains '\\'";
  if (shard.find('\0') != std::string::npos) return "it contains a NUL byte";
  return std::nullopt;
}

std::string ShapeStr(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

std::string TensorPrefix(const TensorView& t) {
  return absl::StrCat(t.file, ": tensor ", QuoteForError(t.name), ": ");
}

absl::Status InvalidIndex(const std::string& index_path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(index_path, ": ", what));
}

}  // namespace

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) return -1;
  }
  return n;
}

Checkpoint::~Checkpoint() = default;

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::OpenFile(const std::string& path) {
  std::unique_ptr<Checkpoint> ckpt(new Checkpoint());
  RETURN_IF_ERROR(ckpt->AddFile(path));
  return ckpt;
}

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& model_dir) {
  const auto start = std::chrono::steady_clock::now();
  struct stat st;
  if (::stat(model_dir.c_str(), &st) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("model directory ", model_dir));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("model directory ", model_dir, ": not a directory"));
  }

  std::unique_ptr<Checkpoint> ckpt(new Checkpoint());
  const std::string single = JoinPath(model_dir, kSingleFile);
  const std::string index = JoinPath(model_dir, kIndexFile);
  if (Exists(single)) {
    RETURN_IF_ERROR(ckpt->AddFile(single));
  } else if (Exists(index)) {
    RETURN_IF_ERROR(ckpt->LoadIndex(model_dir, index));
  } else {
    std::vector<std::string> pickles;
    std::error_code ec;
    for (std::filesystem::directory_iterator it(model_dir, ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
      std::string name = it->path().filename().string();
      if (IsPickleName(name)) pickles.push_back(std::move(name));
    }
    std::sort(pickles.begin(), pickles.end());
    if (!pickles.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          model_dir, ": only pickle-format weights found (", absl::StrJoin(pickles, ", "),
          "); Arbor does not load pickle files, since reading one can run arbitrary code. "
          "Convert the checkpoint to safetensors (",
          kSingleFile, "), e.g. with transformers' save_pretrained(dir, safe_serialization=True)"));
    }
    return absl::NotFoundError(
        absl::StrCat(model_dir, ": no ", kSingleFile, " or ", kIndexFile, " in this directory"));
  }

  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double mb = static_cast<double>(ckpt->total_bytes_) / 1e6;
  spdlog::info(
      "checkpoint {}: indexed {} tensors, {:.1f} MB in {} file(s) in {:.1f} ms ({:.0f} MB/s)",
      model_dir, ckpt->tensors_.size(), mb, ckpt->files_.size(), secs * 1e3,
      secs > 0 ? mb / secs : 0.0);
  return ckpt;
}

absl::Status Checkpoint::AddFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  ASSIGN_OR_RETURN(SafetensorsIndex index, ParseSafetensorsHeader(file->bytes(), path));
  size_t bytes = 0;
  for (SafetensorsEntry& e : index.tensors) {
    auto [it, inserted] = tensors_.try_emplace(e.name);
    if (!inserted) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor ", QuoteForError(e.name),
                                                     " is also in ", it->second.file,
                                                     "; a tensor may be in only one shard"));
    }
    TensorView& v = it->second;
    v.name = std::move(e.name);
    v.dtype = e.dtype;
    v.shape = std::move(e.shape);
    v.data = file->data() + e.offset;
    v.nbytes = e.nbytes;
    v.file = path;
    bytes += e.nbytes;
  }
  total_bytes_ += bytes;
  spdlog::debug("checkpoint: {}: {} tensors, {:.1f} MB", path, index.tensors.size(),
                static_cast<double>(bytes) / 1e6);
  files_.push_back(std::move(file));
  return absl::OkStatus();
}

absl::Status Checkpoint::LoadIndex(const std::string& dir, const std::string& index_path) {
  ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(index_path));
  if (file->size() > kMaxIndexBytes) {
    return InvalidIndex(index_path,
                        absl::StrCat(file->size(), " bytes is too large for an index (limit ",
                                     kMaxIndexBytes, ")"));
  }
  const std::string_view text(reinterpret_cast<const char*>(file->data()), file->size());
  std::optional<JsonDuplicateKey> duplicate;
  absl::StatusOr<Json> parsed = ParseJsonNoDuplicates(text, &duplicate);
  if (!parsed.ok()) {
    return InvalidIndex(index_path, absl::StrCat("not valid JSON: ", parsed.status().message()));
  }
  if (!parsed->is_object()) {
    return InvalidIndex(index_path,
                        absl::StrCat("must be a JSON object, got ", JsonTypeForError(*parsed)));
  }
  if (duplicate.has_value()) {
    if (duplicate->path.size() == 1 && duplicate->path[0] == "weight_map") {
      return InvalidIndex(
          index_path,
          absl::StrCat("weight_map: tensor ", QuoteForError(duplicate->key), " is mapped twice"));
    }
    std::string where;
    for (const std::string& k : duplicate->path) absl::StrAppend(&where, QuoteForError(k), ".");
    return InvalidIndex(index_path,
                        absl::StrCat("duplicate key ", where, QuoteForError(duplicate->key)));
  }
  const auto map_it = parsed->find("weight_map");
  if (map_it == parsed->end()) return InvalidIndex(index_path, "missing \"weight_map\"");
  if (!map_it->is_object()) {
    return InvalidIndex(index_path, absl::StrCat("\"weight_map\" must be an object of tensor "
                                                 "name -> shard file name, got ",
                                                 JsonTypeForError(*map_it)));
  }
  if (map_it->empty()) return InvalidIndex(index_path, "\"weight_map\" is empty");

  // shard file name -> the tensors mapped to it.
  std::map<std::string, std::vector<std::string>> by_shard;
  for (auto it = map_it->begin(); it != map_it->end(); ++it) {
    const std::string tensor = QuoteForError(it.key());
    if (!it.value().is_string()) {
      return InvalidIndex(index_path,
                          absl::StrCat("weight_map: tensor ", tensor, " maps to ",
                                       JsonTypeForError(it.value()), ", not a shard file name"));
    }
    const auto& shard = it.value().get_ref<const std::string&>();
    if (const std::optional<std::string> why = BadShardName(shard); why.has_value()) {
      return InvalidIndex(
          index_path,
          absl::StrCat("weight_map: tensor ", tensor, " maps to shard ", QuoteForError(shard),
                       ", which is not a plain file name inside the model "
                       "directory (",
                       *why, ")"));
    }
    by_shard[shard].push_back(it.key());
  }

  size_t done = 0;
  for (const auto& [shard, tensors] : by_shard) {
    const std::string path = JoinPath(dir, shard);
    if (absl::Status s = AddFile(path); !s.ok()) {
      return absl::Status(
          s.code(), absl::StrCat(index_path, ": shard ", QuoteForError(shard), " (", tensors.size(),
                                 " tensors, e.g. ", QuoteForError(tensors[0]), "): ", s.message()));
    }
    ++done;
    spdlog::info("checkpoint {}: shard {}/{} {} indexed ({} tensors so far, {:.1f} MB)", dir, done,
                 by_shard.size(), shard, tensors_.size(), static_cast<double>(total_bytes_) / 1e6);
  }

  size_t mapped = 0;
  for (const auto& [shard, tensors] : by_shard) {
    const std::string path = JoinPath(dir, shard);
    for (const std::string& name : tensors) {
      const auto it = tensors_.find(name);
      if (it == tensors_.end() || it->second.file != path) {
        return InvalidIndex(
            index_path,
            absl::StrCat(
                "weight_map maps tensor ", QuoteForError(name), " to shard ", QuoteForError(shard),
                ", which has no such tensor",
                it == tensors_.end() ? "" : absl::StrCat(" (it is in ", it->second.file, ")")));
      }
      ++mapped;
    }
  }
  if (mapped != tensors_.size()) {
    spdlog::warn("checkpoint {}: the shards hold {} tensors that {} does not list; keeping them",
                 dir, tensors_.size() - mapped, kIndexFile);
  }
  return absl::OkStatus();
}

const TensorView* Checkpoint::Find(const std::string& name) const {
  const auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& [name, view] : tensors_) out.push_back(name);
  return out;
}

absl::Status ReadAsF32(const TensorView& t, float* out, size_t count) {
  if (t.dtype != StDtype::kF32 && t.dtype != StDtype::kF16 && t.dtype != StDtype::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat(TensorPrefix(t), "dtype ", StDtypeName(t.dtype),
                                                   " cannot be read as F32 (only F32, F16 and "
                                                   "BF16 can)"));
  }
  const int64_t n = t.numel();
  if (n < 0 || static_cast<uint64_t>(n) != count) {
    return absl::InvalidArgumentError(absl::StrCat(TensorPrefix(t), "asked for ", count,
                                                   " elements but shape ", ShapeStr(t.shape),
                                                   " holds ", n));
  }
  const size_t elem = StDtypeSize(t.dtype);
  size_t want = 0;
  if (__builtin_mul_overflow(count, elem, &want) || want != t.nbytes) {
    return absl::InvalidArgumentError(absl::StrCat(TensorPrefix(t), "view holds ", t.nbytes,
                                                   " bytes, not ", count, " x ",
                                                   StDtypeName(t.dtype)));
  }
  if (count == 0) return absl::OkStatus();
  const uint8_t* p = t.data;
  switch (t.dtype) {
    case StDtype::kF32:
      std::memcpy(out, p, want);
      break;
    case StDtype::kF16:
      for (size_t i = 0; i < count; ++i) {
        out[i] = kernels::F16ToFloat(static_cast<uint16_t>(p[2 * i] | (p[2 * i + 1] << 8)));
      }
      break;
    case StDtype::kBF16:
      for (size_t i = 0; i < count; ++i) {
        out[i] = kernels::Bf16ToFloat(static_cast<uint16_t>(p[2 * i] | (p[2 * i + 1] << 8)));
      }
      break;
    default:
      break;  // refused above
  }
  return absl::OkStatus();
}

}  // namespace arbor::engine
