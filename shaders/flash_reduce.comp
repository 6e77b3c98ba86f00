// Flash-decoding's second pass: combines the n_split partials (unnormalised acc, running max m,
// sum l) of shaders/flash_attn.comp into the attention output, one workgroup per (query head,
// token), lanes over the head dimension: out = sum_s acc_s e^(m_s - M) / sum_s l_s e^(m_s - M),
// M = max_s m_s. A split that saw no position of its row (l = 0) adds nothing.
// tandem-variants: none  (read by vulkan/CMakeLists.txt)
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform push_block { flash_reduce_push p; };
layout(binding = 0) readonly buffer part_buf { float part[]; };
layout(binding = 1) writeonly buffer o_buf { float o[]; };
#define STEP_BINDING 2
#define STEP_ID 1
#include "step.glsl"  // a replayed decode layer: the split count from the step buffer

void main() {
  const uint h = gl_WorkGroupID.x, t = gl_WorkGroupID.y, D = p.head_dim;
  const uint n_split = STEP ? step.n_split : p.n_split, ml_off = STEP ? step.ml_off : p.ml_off;
  float mx = -1.0e30;
  for (uint s = 0; s < n_split; ++s)
    mx = max(mx, part[ml_off + 2u * ((s * p.n_tok + t) * p.n_head + h)]);
  float l = 0.0;
  for (uint s = 0; s < n_split; ++s) {
    const uint ml = ml_off + 2u * ((s * p.n_tok + t) * p.n_head + h);
    l += part[ml + 1u] * exp(part[ml] - mx);
  }
  for (uint d = gl_LocalInvocationIndex; d < D; d += gl_WorkGroupSize.x) {
    float a = 0.0;
    for (uint s = 0; s < n_split; ++s) {
      const uint slot = (s * p.n_tok + t) * p.n_head + h;
      a += part[slot * D + d] * exp(part[ml_off + 2u * slot] - mx);
    }
    o[t * p.ldq + h * D + d] = l > 0.0 ? a / l : 0.0;
  }
}
