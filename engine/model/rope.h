// RoPE inverse frequencies [head_dim / 2] for a RopeSpec, with linear or llama3 scaling applied,
// as Hugging Face computes them (fp32 results; the arithmetic is done in double).
#ifndef ARBOR_ENGINE_MODEL_ROPE_H_
#define ARBOR_ENGINE_MODEL_ROPE_H_

#include <cstdint>
#include <vector>

#include "engine/model/hf_config.h"

namespace arbor::engine {

std::vector<float> RopeInvFreq(const RopeSpec& rope, int64_t head_dim);

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_MODEL_ROPE_H_
