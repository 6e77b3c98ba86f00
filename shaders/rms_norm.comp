// RMS norm: y = x / sqrt(mean(x^2) + eps) * w. One workgroup per row.
// tandem-variants: subgroup  (read by vulkan/CMakeLists.txt)
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
#include "reduce.glsl"
layout(push_constant) uniform push_block { rms_norm_push p; };
layout(binding = 0) readonly buffer x_buf { float x[]; };
layout(binding = 1) readonly buffer w_buf { float w[]; };
layout(binding = 2) writeonly buffer y_buf { float y[]; };

void main() {
  const uint row = gl_WorkGroupID.x;
  const uint tid = gl_LocalInvocationIndex;
  const uint xb = (p.x_row0 + row) * p.ldx;
  float ss = 0.0;
  for (uint i = tid; i < p.n; i += gl_WorkGroupSize.x) ss += x[xb + i] * x[xb + i];
  ss = wg_sum(ss);
  const float scale = 1.0 / sqrt(ss / float(p.n) + p.eps);
  const uint yb = row * p.ldy;
  for (uint i = tid; i < p.n; i += gl_WorkGroupSize.x) y[yb + i] = x[xb + i] * scale * w[i];
}
