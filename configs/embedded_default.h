// configs/tiny.yaml, embedded at build time.
#ifndef ARBOR_CONFIGS_EMBEDDED_DEFAULT_H_
#define ARBOR_CONFIGS_EMBEDDED_DEFAULT_H_

namespace arbor::configs {
extern const char kEmbeddedDefaultYaml[];
}  // namespace arbor::configs

#endif  // ARBOR_CONFIGS_EMBEDDED_DEFAULT_H_
