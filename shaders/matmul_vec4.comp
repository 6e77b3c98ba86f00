// Register-tiled matrix-matrix product for prompt batches (the `vec4` variant of the matmul op,
// the default where the device has no cooperative matrix): y[t, y_off + r] (+)= W[r, :] . x[t, :].
//
// A workgroup of 256 computes a tile of BM = 128 rows x BN = 64 tokens, stepping over the columns
// BK = 32 at a time. Per step the W tile is decoded once into shared memory as F32 (exact for
// every type, so the result matches the reference to the order of summation) and the x tile is
// staged beside it; both are stored k-contiguous, so an invocation reads them as vec4. Each
// invocation owns 8 rows x 4 tokens (32 accumulators): per 4 columns it loads 8 + 4 vec4 from
// shared memory and does 128 FMAs, 10.7 FMAs per shared load (the F32 kernel, matmul.comp, does
// 1.3). Rows of W are padded by one vec4 in shared memory, so the 8 lanes of a quarter warp that
// read 8 different rows at the same column hit 8 different bank groups; the 2 token groups of a
// warp read the same x words (broadcast).
//
// On an H100 (SXM: 132 SMs at ~1.8 GHz, 128 FP32 FMAs and 128 B of shared memory per SM per
// clock, FP32 peak ~67 TFLOP/s), counted per warp: the F32 kernel spends per column 6 shared-
// memory wavefronts (4 row loads, 2 broadcast token loads) on 256 FMAs (2 clocks of FMA), so it
// is shared-memory bound at ~1/3 of FP32 peak (~20 TFLOP/s at best). Here per 4 columns the 8
// row vec4 loads take 2 wavefronts each (16 distinct rows x 16 B) and the 4 token loads 1 each
// (2 distinct addresses, broadcast): 20 clocks of shared memory for 4096 FMAs (32 clocks of
// FMA), so the kernel is FMA-bound with the shared-memory pipe ~60% busy. With the decode (one
// dequant8 per 8 weights, amortised over 64 tokens), the two barriers per 32 columns and
// occupancy (24 KiB of shared memory, ~90 registers: 2-3 workgroups per SM) an H100 should reach
// ~60-70% of FP32 peak, ~40 TFLOP/s: ~2x the F32 kernel on large prompts. The tensor cores
// (matmul_coopmat.comp) go well beyond that.
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
layout(binding = 1) readonly buffer x4_buf { vec4 x4[]; };  // the same binding, read as vec4
layout(binding = 2) buffer y_buf { float y[]; };

#include "dequant.glsl"

#define BM 128u
#define BN 64u
#define BK 32u
#define KV (BK / 4u)  // vec4 per tile row
#define TM 8u         // rows per invocation
#define TN 4u         // tokens per invocation

shared vec4 ws[BM * (KV + 1u)];  // row r, vec4 q at r * (KV + 1) + q (+1: no bank conflicts)
shared vec4 xs[BN * KV];         // token t, vec4 q at t * KV + q

// Stages 4 columns (vec4 q of the tile) of token t: a vec4 load where x is 16-byte aligned and
// the columns all lie inside the row, else scalar loads with zeros past the row's end.
vec4 load_x(uint t, uint k) {
  if (t >= p.n_tok) return vec4(0.0);
  const uint i = t * p.ldx + k;
  if ((i & 3u) == 0u && k + 4u <= p.cols) return x4[i >> 2];
  vec4 v;
  for (uint c = 0; c < 4u; ++c) v[c] = k + c < p.cols ? x[i + c] : 0.0;
  return v;
}

void main() {
  const uint tid = gl_LocalInvocationIndex;
  const uint row0 = gl_WorkGroupID.x * BM;
  const uint tok0 = gl_WorkGroupID.y * BN;
  const uint tr = tid % 16u, tc = tid / 16u;  // this invocation: rows tr + 16i, tokens tc + 16j
  float acc[TM][TN];
  for (uint i = 0; i < TM; ++i)
    for (uint j = 0; j < TN; ++j) acc[i][j] = 0.0;

  for (uint k0 = 0; k0 < p.cols; k0 += BK) {
    // Decode: BM x BK weights = 512 groups of 8, two per invocation.
    for (uint s = 0; s < 2u; ++s) {
      const uint gi = tid + 256u * s;
      const uint dr = gi / 4u, dg = gi % 4u;
      float v[8];
      if (row0 + dr < p.rows) {
        dequant8(row0 + dr, k0 / 8u + dg, p.cols, v);
      } else {
        for (uint k = 0; k < 8u; ++k) v[k] = 0.0;
      }
      ws[dr * (KV + 1u) + 2u * dg] = vec4(v[0], v[1], v[2], v[3]);
      ws[dr * (KV + 1u) + 2u * dg + 1u] = vec4(v[4], v[5], v[6], v[7]);
    }
    // Stage x: BN x BK = 512 vec4, two per invocation.
    for (uint s = 0; s < 2u; ++s) {
      const uint xi = tid + 256u * s;
      const uint t = xi / KV, q = xi % KV;
      xs[xi] = load_x(tok0 + t, k0 + 4u * q);
    }
    barrier();
    for (uint q = 0; q < KV; ++q) {
      vec4 xv[TN];
      for (uint j = 0; j < TN; ++j) xv[j] = xs[(tc + 16u * j) * KV + q];
      for (uint i = 0; i < TM; ++i) {
        const vec4 wv = ws[(tr + 16u * i) * (KV + 1u) + q];
        for (uint j = 0; j < TN; ++j) acc[i][j] += dot(wv, xv[j]);
      }
    }
    barrier();
  }
  for (uint i = 0; i < TM; ++i) {
    const uint r = row0 + tr + 16u * i;
    if (r >= p.rows) continue;
    for (uint j = 0; j < TN; ++j) {
      const uint t = tok0 + tc + 16u * j;
      if (t >= p.n_tok) continue;
      const uint yi = t * p.ldy + p.y_off + r;
      y[yi] = ACC ? y[yi] + acc[i][j] : acc[i][j];
    }
  }
}
