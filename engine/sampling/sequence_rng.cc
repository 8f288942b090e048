#include "engine/sampling/sequence_rng.h"

#include <atomic>
#include <chrono>
#include <random>

#include "kernels/sampling_math.h"

namespace arbor::engine {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// A distinct key for every unseeded sequence of this process: a random base (random device and
// clock) plus a counter, scrambled so that consecutive keys are unrelated.
uint64_t ProcessWideKey() {
  static const uint64_t base = [] {
    uint64_t b =
        static_cast<uint64_t>(std::chrono::high_resolution_clock::now().time_since_epoch().count());
    try {
      std::random_device rd;
      b ^= (static_cast<uint64_t>(rd()) << 32) ^ rd();
    } catch (...) {
      // No entropy device: the clock alone still gives distinct processes distinct keys.
    }
    return SplitMix64(b);
  }();
  static std::atomic<uint64_t> next{0};
  return SplitMix64(base + next.fetch_add(1, std::memory_order_relaxed));
}

}  // namespace

std::array<uint32_t, 4> Philox4x32x10(std::array<uint32_t, 4> c, std::array<uint32_t, 2> k) {
  kernels::sampling::Philox4x32x10(c.data(), k[0], k[1]);
  return c;
}

SequenceRng::SequenceRng(std::optional<uint64_t> seed, uint64_t stream)
    : key_(seed.has_value() ? *seed : ProcessWideKey()), stream_(stream) {}

uint64_t SequenceRng::Next64() {
  return kernels::sampling::PhiloxRandom64(key_, stream_, counter_++);
}

double SequenceRng::Uniform() {
  // The top 53 bits scaled by 2^-53: every value is k / 2^53 for k in [0, 2^53), so the result
  // is never 1.
  return static_cast<double>(Next64() >> 11) * 0x1.0p-53;
}

}  // namespace arbor::engine
