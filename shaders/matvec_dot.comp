// The integer-dot matvec: matvec.comp's rows and parts (Q/K/V, gate/up in one dispatch), with the
// activations quantized once per token by quantize_q8.comp and each 32-element block of a Q4_0 /
// Q8_0 row (each 32-element sub-block of a Q4_K / Q5_K / Q6_K super-block) dotted with them by
// OpSDot (SPV_KHR_integer_dot_product, emitted through GL_EXT_spirv_intrinsics: glslang 12 has no
// GL_EXT_integer_dot_product); dot_block.glsl has the algebra per type. A lane takes whole
// blocks (18 or 34 bytes of weights, 40 of activations; K-quants: 16, 20 or 24 bytes of quants
// and the super-block's scales), 2x unrolled. Chosen where the device
// reports 4x8-bit packed signed dot products as accelerated (vulkan/ops.cpp); forced with
// TANDEM_VK_VARIANT=matvec=dot. On an H100 (dp4a) this halves the instructions per weight byte
// against the float kernel, which matters once the float kernel is issue-bound rather than
// bandwidth-bound (Q4_0 at 4 rows per workgroup: ~7 instructions per weight byte in the float
// kernel, ~3 here).
//
// The rope_epilogue variant (matvec_dot_rope_<type>, built from this file with ROPE_KV = 1: the
// op matvec_dot_rope): the decode token's Q/K/V product, its activations normed and quantized by
// quantize_q8.comp (NORM), with matvec.comp's epilogue (shaders/rope_epilogue.glsl: biases,
// RoPE, q to y0, k and v as F16 into the caches, with KV_F32 as F32 into y1 and y2 too) and its
// row layout (rope_row: a workgroup holds whole rotation pairs and F16 words).
// tandem-variants: dot subgroup rope_epilogue  (read by vulkan/CMakeLists.txt)
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_spirv_intrinsics : require
#include "common.glsl"
#ifndef ROPE_KV
#define ROPE_KV 0
#endif

layout(local_size_x_id = 0) in;
#include "reduce.glsl"
#if ROPE_KV
const bool ACC = false;
const uint PARTS = 3u;
layout(constant_id = 1) const bool NEOX = false;  // rotate halves (else adjacent pairs)
layout(push_constant) uniform push_block {
  matvec_push p;
  rope_epilogue_push rk;
};
#else
layout(constant_id = 1) const bool ACC = false;  // y += instead of y =
layout(constant_id = 2) const uint PARTS = 3u;   // as in matvec.comp
layout(push_constant) uniform push_block { matvec_push p; };
#endif
layout(binding = 0) readonly buffer w0_buf { uint w0[]; };
layout(binding = 1) readonly buffer w1_buf { uint w1[]; };
layout(binding = 2) readonly buffer w2_buf { uint w2[]; };
layout(binding = 3) readonly buffer xq_buf { uint xq[]; };
layout(binding = 5) buffer y0_buf { float y0[]; };
layout(binding = 6) buffer y1_buf { float y1[]; };
layout(binding = 7) buffer y2_buf { float y2[]; };

// OpSDot (4450) on two 4x8-bit packed words (format 0: PackedVectorFormat4x8Bit); capabilities
// DotProductInput4x8BitPacked (6018) and DotProduct (6019).
spirv_instruction(extensions = ["SPV_KHR_integer_dot_product"], capabilities = [6019, 6018],
                  id = 4450)
int sdot(uint a, uint b, spirv_literal int fmt);

#define DQ(f) f##_0
#define w w0
#include "dequant.glsl"
#include "dot_block.glsl"
#undef DQ
#undef w
#define DQ(f) f##_1
#define w w1
#include "dequant.glsl"
#include "dot_block.glsl"
#undef DQ
#undef w
#define DQ(f) f##_2
#define w w2
#include "dequant.glsl"
#include "dot_block.glsl"
#undef DQ
#undef w

#define NT 4u
#include "matvec_rows.glsl"
#if ROPE_KV
#include "rope_epilogue.glsl"
#endif

float dot_part(uint part, uint wb, uint a) {
  if (PARTS == 1u || part == 0u) return dot_block_0(wb, a);
  if (PARTS == 2u || part == 1u) return dot_block_1(wb, a);
  return dot_block_2(wb, a);
}

void main() {
  const uint tid = gl_LocalInvocationIndex;
  const uint tpr = p.row_threads;
  const uint lane = tid % tpr;
  uint part, row;
  const bool valid = find_row(gl_WorkGroupSize.x / tpr, part, row);
#if ROPE_KV
  if (part < 2u) row = rope_row(row);
#endif
  const uint t0 = gl_WorkGroupID.z * NT;
  const uint nt = min(NT, p.n_tok - t0);
  const uint nb = p.cols / 32u;
  float acc[NT];
  for (uint t = 0; t < NT; ++t) acc[t] = 0.0;
  uint b = lane;
  for (; valid && b + tpr < nb; b += 2u * tpr)
    for (uint t = 0; t < NT; ++t) {
      if (t >= nt) break;
      const uint a = ((t0 + t) * nb + b) * 10u;
      acc[t] += dot_part(part, row * nb + b, a) + dot_part(part, row * nb + b + tpr, a + 10u * tpr);
    }
  for (; valid && b < nb; b += tpr)
    for (uint t = 0; t < NT; ++t) {
      if (t >= nt) break;
      acc[t] += dot_part(part, row * nb + b, ((t0 + t) * nb + b) * 10u);
    }
  for (uint t = 0; t < NT; ++t) {
    if (t >= nt) break;  // nt is uniform: the reductions stay in uniform control flow
    const float s = row_sum(acc[t], tpr);
#if ROPE_KV
    rope_kv_epilogue(part, t0 + t, row, tid / tpr, s, valid, lane == 0u);
#else
    if (lane == 0u && valid) store(part, t0 + t, row, s);
#endif
  }
}
