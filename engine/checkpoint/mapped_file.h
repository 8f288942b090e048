// A whole file mapped read-only into memory; the mapping lives as long as the object.
#ifndef ARBOR_ENGINE_CHECKPOINT_MAPPED_FILE_H_
#define ARBOR_ENGINE_CHECKPOINT_MAPPED_FILE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace arbor::engine {

class MappedFile {
 public:
  // Opens, fstats and mmaps `path` (PROT_READ, MAP_PRIVATE); the descriptor is closed once
  // mapped. Errors name the path and the errno text, with the code absl::ErrnoToStatus gives
  // (NotFound, PermissionDenied, ...); a path that is not a regular file is InvalidArgument.
  // An empty file maps to an empty span. The file must not be truncated while mapped: reading
  // pages past its new end raises SIGBUS (a limit of mmap itself).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path);

  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  absl::Span<const uint8_t> bytes() const { return {data_, size_}; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile(std::string path, const uint8_t* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}

  std::string path_;
  const uint8_t* data_;  // nullptr when size_ == 0
  size_t size_;
};

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_CHECKPOINT_MAPPED_FILE_H_
