#include "engine/model/rope.h"

#include <cmath>

namespace arbor::engine {

std::vector<float> RopeInvFreq(const RopeSpec& rope, int64_t head_dim) {
  const int64_t half = head_dim / 2;
  std::vector<float> inv(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    // transformers: 1 / base ** (arange(0, dim, 2).float() / dim), in fp32.
    const float exponent = float(2 * i) / float(head_dim);
    inv[size_t(i)] = float(1.0 / std::pow(rope.theta, double(exponent)));
  }
  switch (rope.type) {
    case RopeType::kDefault:
      break;
    case RopeType::kLinear:
      for (auto& f : inv) f = float(double(f) / rope.factor);
      break;
    case RopeType::kLlama3: {
      // Long wavelengths are slowed by `factor`, short ones kept, and the band between
      // interpolated smoothly (Llama 3.1's scheme).
      const double old_len = double(rope.original_max_position_embeddings);
      const double low_wavelen = old_len / rope.low_freq_factor;
      const double high_wavelen = old_len / rope.high_freq_factor;
      for (auto& f : inv) {
        const double freq = f;
        const double wavelen = 2.0 * M_PI / freq;
        double out = wavelen > low_wavelen ? freq / rope.factor : freq;
        const bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
        if (medium) {
          const double smooth = (old_len / wavelen - rope.low_freq_factor) /
                                (rope.high_freq_factor - rope.low_freq_factor);
          out = (1.0 - smooth) * out / rope.factor + smooth * out;
        }
        f = float(out);
      }
      break;
    }
  }
  return inv;
}

}  // namespace arbor::engine
