#ifndef ARBOR_SERVER_VERSION_H_
#define ARBOR_SERVER_VERSION_H_

namespace arbor {
inline constexpr char kVersion[] = "0.1.0";
}  // namespace arbor

#endif  // ARBOR_SERVER_VERSION_H_
