// Matrix-vector product for decode and small batches: y[t, y_off + r] (+)= W[r, :] . x[t, :]
// for up to NT tokens per workgroup (z). A row gets row_threads invocations (all of the
// workgroup for long rows; short rows share a workgroup), which stride over groups of 8 columns
// and meet in a reduction.
// tandem-variants: types subgroup  (read by vulkan/CMakeLists.txt)
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
#include "reduce.glsl"
layout(constant_id = 1) const bool ACC = false;  // y += instead of y =
layout(push_constant) uniform push_block { matmul_push p; };
layout(binding = 0) readonly buffer w_buf { uint w[]; };
layout(binding = 1) readonly buffer x_buf { float x[]; };
layout(binding = 2) buffer y_buf { float y[]; };

#include "dequant.glsl"

#define NT 4u

void main() {
  const uint tid = gl_LocalInvocationIndex;
  const uint tpr = p.row_threads;
  const uint lane = tid % tpr;
  const uint rows_per_wg = gl_WorkGroupSize.x / tpr;
  const uint row =
      (gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x) * rows_per_wg + tid / tpr;
  const bool valid = row < p.rows;  // no early return: the reductions need every invocation
  const uint t0 = gl_WorkGroupID.z * NT;
  const uint nt = min(NT, p.n_tok - t0);
  const uint n_groups = (p.cols + 7u) / 8u;
  float acc[NT];
  for (uint t = 0; t < NT; ++t) acc[t] = 0.0;
  for (uint g = lane; valid && g < n_groups; g += tpr) {
    float v[8];
    dequant8(row, g, p.cols, v);
    for (uint t = 0; t < NT; ++t) {
      if (t >= nt) break;
      const uint xb = (t0 + t) * p.ldx + 8u * g;
      for (uint k = 0; k < 8u; ++k) {
#ifdef WEIGHT_IS_FLOAT
        if (8u * g + k < p.cols)
#endif
          acc[t] += v[k] * x[xb + k];
      }
    }
  }
  for (uint t = 0; t < NT; ++t) {
    if (t >= nt) break;  // nt is uniform: the reductions stay in uniform control flow
    const float s = segment_sum(acc[t], tpr);
    if (lane == 0 && valid) {
      const uint yi = (t0 + t) * p.ldy + p.y_off + row;
      y[yi] = ACC ? y[yi] + s : s;
    }
  }
}
