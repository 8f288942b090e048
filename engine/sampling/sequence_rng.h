// Per-sequence random numbers for sampling. Each sequence owns its generator, so what a seeded
// sequence draws depends only on its seed, its stream and how many numbers it drew before —
// never on which other sequences share the batch or in what order the engine samples them.
#ifndef ARBOR_ENGINE_SAMPLING_SEQUENCE_RNG_H_
#define ARBOR_ENGINE_SAMPLING_SEQUENCE_RNG_H_

#include <array>
#include <cstdint>
#include <optional>

namespace arbor::engine {

// Philox4x32-10 (Salmon et al., SC'11; the generator of cuRAND and PyTorch's CUDA sampling),
// used as a counter-based generator: the key is the seed, the counter is (draw index, stream).
// 24 bytes of state, cheap to copy when the engine forks a sequence.
class SequenceRng {
 public:
  // `seed` set: a reproducible stream. Unset: a key taken from a process-wide source (random
  // device mixed with a counter), different for every unseeded sequence. `stream` separates
  // the n parallel samples of one request: the engine gives fork i stream i, so the forks of a
  // seeded request draw different but reproducible numbers.
  explicit SequenceRng(std::optional<uint64_t> seed, uint64_t stream = 0);

  // A uniform double in [0, 1) with 53 random bits; one Philox block per call.
  double Uniform();
  // 64 uniform random bits; one Philox block per call.
  uint64_t Next64();

  // Counts `blocks` draws made elsewhere from this stream: the device sampler draws block
  // draws() (kernels::SampleRow::rng_counter) and the host then advances past it.
  void Advance(uint64_t blocks) { counter_ += blocks; }

  uint64_t key() const { return key_; }
  uint64_t stream() const { return stream_; }
  uint64_t draws() const { return counter_; }  // blocks drawn so far

 private:
  uint64_t key_;
  uint64_t stream_;
  uint64_t counter_ = 0;
};

// The Philox4x32-10 bijection of one 128-bit counter under a 64-bit key, exactly as Random123
// defines it (its known-answer vectors are in the tests).
std::array<uint32_t, 4> Philox4x32x10(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_SAMPLING_SEQUENCE_RNG_H_
