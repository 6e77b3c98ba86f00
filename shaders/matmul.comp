// Tiled matrix-matrix product for prompt batches: y[t, y_off + r] (+)= W[r, :] . x[t, :].
// A workgroup of 256 computes a tile of BM rows x BN tokens, stepping over the columns BK at a
// time: the W tile is decoded once into shared memory and reused by all BN tokens. The `f32`
// variant of the prompt kernel (vulkan/matmul_variant.h): kept as the reference variant and the
// last fallback; matmul_vec4.comp (the default) and matmul_coopmat.comp are the fast ones.
// tandem-variants: types storage16  (read by vulkan/CMakeLists.txt)
#version 450
#extension GL_GOOGLE_include_directive : require
#ifdef LOADS_U16  // 16/8-bit loads of the 2-byte-aligned blocks (dequant.glsl)
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_8bit_storage : require
#endif
#include "common.glsl"

layout(local_size_x = 256) in;
layout(constant_id = 1) const bool ACC = false;  // y += instead of y =
layout(push_constant) uniform push_block { matmul_push p; };
layout(binding = 0) readonly buffer w_buf { uint w[]; };
#ifdef LOADS_U16
layout(binding = 0) readonly buffer w16_buf { uint16_t w16[]; };
layout(binding = 0) readonly buffer w8_buf { int8_t w8[]; };
#endif
layout(binding = 1) readonly buffer x_buf { float x[]; };
layout(binding = 2) buffer y_buf { float y[]; };

#include "dequant.glsl"

#define BM 64u
#define BN 32u
#define BK 32u

shared float ws[BM][BK + 1];  // +1: no bank conflicts on the column reads
shared float xs[BN][BK + 1];

void main() {
  const uint tid = gl_LocalInvocationIndex;
  const uint row0 = gl_WorkGroupID.x * BM;
  const uint tok0 = gl_WorkGroupID.y * BN;
  const uint tr = tid % 16u, tc = tid / 16u;  // this thread: rows tr + 16i, tokens tc + 16j
  float acc[4][2];
  for (uint i = 0; i < 4u; ++i) acc[i][0] = acc[i][1] = 0.0;

  const uint dr = tid / 4u, dg = tid % 4u;  // the 8 weights this thread decodes per tile
  for (uint k0 = 0; k0 < p.cols; k0 += BK) {
    float v[8];
    if (row0 + dr < p.rows) {
      dequant8(row0 + dr, k0 / 8u + dg, p.cols, v);
    } else {
      for (uint k = 0; k < 8u; ++k) v[k] = 0.0;
    }
    for (uint k = 0; k < 8u; ++k) ws[dr][dg * 8u + k] = v[k];
    for (uint i = 0; i < 4u; ++i) {
      const uint idx = tid + 256u * i;
      const uint t = idx / BK, c = idx % BK;
      xs[t][c] = tok0 + t < p.n_tok && k0 + c < p.cols ? x[(tok0 + t) * p.ldx + k0 + c] : 0.0;
    }
    barrier();
    for (uint k = 0; k < BK; ++k) {
      const float x0 = xs[tc][k], x1 = xs[tc + 16u][k];
      for (uint i = 0; i < 4u; ++i) {
        const float wv = ws[tr + 16u * i][k];
        acc[i][0] += wv * x0;
        acc[i][1] += wv * x1;
      }
    }
    barrier();
  }
  for (uint i = 0; i < 4u; ++i) {
    const uint r = row0 + tr + 16u * i;
    if (r >= p.rows) continue;
    for (uint j = 0; j < 2u; ++j) {
      const uint t = tok0 + tc + 16u * j;
      if (t >= p.n_tok) continue;
      const uint yi = t * p.ldy + p.y_off + r;
      y[yi] = ACC ? y[yi] + acc[i][j] : acc[i][j];
    }
  }
}
