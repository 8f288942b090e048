// Kernel choices the environment may override (kernels/cuda/launch.h): ARBOR_PREFILL_KERNEL and
// ARBOR_CCE_KERNEL pick what kAuto launches, as vLLM's VLLM_ATTENTION_BACKEND picks a backend, so
// a card where the Hopper kernel loses (or a suspected kernel bug) needs no rebuild.
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "kernels/cuda/launch.h"

namespace arbor::kernels {

bool KernelChoiceFromEnv(const char* name, bool fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0' || std::strcmp(v, "auto") == 0) return fallback;
  if (std::strcmp(v, "wgmma") == 0) return true;
  if (std::strcmp(v, "mma-sync") == 0) return false;
  std::fprintf(stderr, "%s=%s is not one of wgmma, mma-sync or auto: ignored (%s)\n", name, v,
               fallback ? "wgmma" : "mma-sync");
  return fallback;
}

bool PrefillAutoWgmma() {
  static const bool wgmma = KernelChoiceFromEnv("ARBOR_PREFILL_KERNEL", kPrefillAutoWgmma);
  return wgmma;
}

bool CceAutoWgmma() {
  static const bool wgmma = KernelChoiceFromEnv("ARBOR_CCE_KERNEL", kCceAutoWgmma);
  return wgmma;
}

}  // namespace arbor::kernels
