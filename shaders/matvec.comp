// Matrix-vector product for decode and small batches: y_i[t, y_off_i + r] (+)= W_i[r, :] . x[t, :]
// for up to NT tokens per workgroup (z) and up to three matrices W_0..W_2 reading the same x (Q, K
// and V, or gate and up, in one dispatch; matvec_push in push_constants.h). With GLU, x[t, c] is
// silu(g[t, c]) * u[t, c] (g at binding 3, u at binding 4): SwiGLU fused into the down product.
// With NORM, the product is of rms_norm(x[t, :]) * n (the norm weight n, cols floats, at binding
// 4; never with GLU): y = (W[r, :] . (x[t, :] * n)) * inv_rms[t], inv_rms[t] = 1 / sqrt(mean over
// the cols of x[t, c]^2 + p.eps), the math of rms_norm.comp, which every workgroup recomputes for
// itself from the x it reads anyway (one more pass over x, L1/L2-resident; the norm's dispatch and
// its barrier are gone).
//
// Shape: a row gets row_threads lanes (a power of two chosen by ops.cpp per matrix shape); a
// 128-lane workgroup holds 128 / row_threads rows, all of one part (the part is uniform per
// workgroup). Each lane strides over groups of 8 columns, four groups per iteration (4x unrolled:
// four independent weight loads in flight per lane), activations read as two vec4 (16-byte) loads
// per group where the row stride allows, F32/F16 weights as 16-byte loads (dequant.glsl, W_VEC4).
// Reduction: where row_threads >= the subgroup size, subgroupAdd (no shared memory or barrier
// when a row is exactly one subgroup, the common case on NVIDIA: 32 lanes per row of a long
// matrix); the shared-memory tree otherwise (lavapipe's subgroup of 8 with short rows, and the
// no-subgroup variant).
//
// What an H100 should reach (an estimate from the shape, not a measurement: no such device was
// available while writing this): Q4_0 at n_embd 4096, row_threads 32, 4 rows per workgroup:
// each lane reads 2 x 4 bytes of quants + the 2-byte scale per group of 8 (32 lanes cover 256
// columns of a row per step, i.e. 8 blocks = 144 contiguous bytes per row per step) and 32 bytes
// of x (L1-resident after the first row). With 4 groups unrolled a lane has 8 independent 4-byte
// weight loads in flight; at 16 workgroups of 128 lanes per SM (full occupancy, ~40 registers)
// that is 2048 x 32 B = 64 KiB in flight per SM, above the ~40 KiB latency x bandwidth product
// (3.35 TB/s / 132 SMs x ~1.5 us), so 55-70% of HBM bandwidth is a fair target; F16/F32 rows use
// 16-byte loads and should reach 70-80%. wk/wv (few rows) get more lanes per row (64 or 128) so
// that they still launch >= 256 workgroups. 4-byte quant loads (not 16) and the 2-byte block
// alignment of Q4_0/Q8_0/Q6_K are what keeps the quantized kernels below the F16 one.
//
// The rope_epilogue variant (matvec_rope_<type>, built from this file with ROPE_KV = 1: the op
// matvec_rope): the normed Q/K/V product of a decode token with RoPE and the KV-cache append in
// its epilogue (the rotary_kv dispatch and its barrier gone). Parts 0, 1, 2 are Q, K, V. The
// workgroup's row slots are mapped to rows so that it holds whole rotation pairs and whole F16
// words (rope_row): adjacent style, rows in order (rows per workgroup even); NEOX, units of four
// slots (2u, 2u+1, 2u+n_rot/2, 2u+1+n_rot/2 of a head; the dims past n_rot in order), rows per
// workgroup a multiple of 4. The rows' sums meet in shared memory: the bias added, q and k
// rotated (angles from the host's cos/sin table at the token's position, rope_pos), q written to
// y0, k and v as F16 into the caches (one word per pair of dims), and with KV_F32 k and v as F32
// into y1 and y2 too (a capture reads them). The epilogue is shaders/rope_epilogue.glsl, shared
// with the integer-dot kernel's (matvec_dot.comp).
// Weight loads: Q4_0, Q8_0 and Q6_K blocks (2-byte aligned) are read as 32-bit words with the
// halves of unaligned runs merged, or in the LOADS_U16 build (`_u16`, where the device has 16- and
// 8-bit storage access) as aligned 16-bit loads through a uint16_t view of the same binding
// (dequant.glsl); the same bits, the same math, bit-identical results.
// tandem-variants: types subgroup rope_epilogue storage16  (read by vulkan/CMakeLists.txt)
#version 450
#extension GL_GOOGLE_include_directive : require
#ifdef LOADS_U16
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_8bit_storage : require
#endif
#include "common.glsl"
#ifndef ROPE_KV
#define ROPE_KV 0
#endif

layout(local_size_x_id = 0) in;
#include "reduce.glsl"
#if ROPE_KV
const bool ACC = false;
const bool GLU = false;
const uint PARTS = 3u;
const bool NORM = true;
layout(constant_id = 1) const bool NEOX = false;  // rotate halves (else adjacent pairs)
layout(push_constant) uniform push_block {
  matvec_push p;
  rope_epilogue_push rk;
};
#else
layout(constant_id = 1) const bool ACC = false;  // y += instead of y =
layout(constant_id = 2) const bool GLU = false;  // x := silu(x) * u
// Parts read (p.n_parts <= PARTS): a constant, so that a one-matrix product has no part branches
// (lavapipe, which runs both sides of every branch, would pay for all three dequantizations).
layout(constant_id = 3) const uint PARTS = 3u;
layout(constant_id = 4) const bool NORM = false;  // x := rms_norm(x) * n (n at binding 4)
layout(push_constant) uniform push_block { matvec_push p; };
#endif
layout(binding = 0) readonly buffer w0_buf { uint w0[]; };
layout(binding = 0) readonly buffer w0v_buf { uvec4 w0v[]; };
layout(binding = 1) readonly buffer w1_buf { uint w1[]; };
layout(binding = 1) readonly buffer w1v_buf { uvec4 w1v[]; };
layout(binding = 2) readonly buffer w2_buf { uint w2[]; };
layout(binding = 2) readonly buffer w2v_buf { uvec4 w2v[]; };
layout(binding = 3) readonly buffer x_buf { float x[]; };
layout(binding = 3) readonly buffer x4_buf { vec4 x4[]; };
layout(binding = 4) readonly buffer u_buf { float u[]; };
layout(binding = 4) readonly buffer u4_buf { vec4 u4[]; };
layout(binding = 5) buffer y0_buf { float y0[]; };
layout(binding = 6) buffer y1_buf { float y1[]; };
layout(binding = 7) buffer y2_buf { float y2[]; };

#ifdef LOADS_U16  // 16- and 8-bit views of the weights (dequant.glsl's w16, w8)
layout(binding = 0) readonly buffer w0h_buf { uint16_t w0h[]; };
layout(binding = 0) readonly buffer w0b_buf { int8_t w0b[]; };
layout(binding = 1) readonly buffer w1h_buf { uint16_t w1h[]; };
layout(binding = 1) readonly buffer w1b_buf { int8_t w1b[]; };
layout(binding = 2) readonly buffer w2h_buf { uint16_t w2h[]; };
layout(binding = 2) readonly buffer w2b_buf { int8_t w2b[]; };
#endif

#define W_VEC4 1
#define DQ(f) f##_0
#define w w0
#define w4 w0v
#define w16 w0h
#define w8 w0b
#include "dequant.glsl"
#undef DQ
#undef w
#undef w4
#undef w16
#undef w8
#define DQ(f) f##_1
#define w w1
#define w4 w1v
#define w16 w1h
#define w8 w1b
#include "dequant.glsl"
#undef DQ
#undef w
#undef w4
#undef w16
#undef w8
#define DQ(f) f##_2
#define w w2
#define w4 w2v
#define w16 w2h
#define w8 w2b
#include "dequant.glsl"
#undef DQ
#undef w
#undef w4
#undef w16
#undef w8

#define NT 4u
#include "matvec_rows.glsl"

void dequant_part(uint part, uint row, uint g, out float v[8]) {
  if (PARTS == 1u || part == 0u)
    dequant8_0(row, g, p.cols, v);
  else if (PARTS == 2u || part == 1u)
    dequant8_1(row, g, p.cols, v);
  else
    dequant8_2(row, g, p.cols, v);
}

float silu_mul(float g, float up) { return g / (1.0 + exp(-g)) * up; }

// Columns 8g .. 8g+7 of x's row t as two 16-byte loads (a whole group; ldx a multiple of 4).
void load_x8_vec(uint t, uint g, out vec4 a, out vec4 b) {
  const uint i = (t * p.ldx + 8u * g) >> 2;
  a = x4[i];
  b = x4[i + 1u];
  if (GLU) {
    a = a / (1.0 + exp(-a)) * u4[i];
    b = b / (1.0 + exp(-b)) * u4[i + 1u];
  }
  if (NORM) {  // the norm weight: one row of cols floats
    const uint j = (8u * g) >> 2;
    a *= u4[j];
    b *= u4[j + 1u];
  }
}

// The same, one float at a time, 0 at or past cols (any ldx; the last, partial group).
void load_x8(uint t, uint g, out vec4 a, out vec4 b) {
  const uint c0 = 8u * g;
  const uint base = t * p.ldx + c0;
  float s[8];
  for (uint k = 0; k < 8u; ++k) {
    s[k] = 0.0;
    if (c0 + k < p.cols)
      s[k] = GLU ? silu_mul(x[base + k], u[base + k]) : NORM ? x[base + k] * u[c0 + k] : x[base + k];
  }
  a = vec4(s[0], s[1], s[2], s[3]);
  b = vec4(s[4], s[5], s[6], s[7]);
}

#if ROPE_KV
#include "rope_epilogue.glsl"
#endif

float dot8(const float v[8], vec4 a, vec4 b) {
  return dot(vec4(v[0], v[1], v[2], v[3]), a) + dot(vec4(v[4], v[5], v[6], v[7]), b);
}

void main() {
  const uint tid = gl_LocalInvocationIndex;
  const uint tpr = p.row_threads;
  const uint lane = tid % tpr;
  const uint rows_per_wg = gl_WorkGroupSize.x / tpr;
  uint part, row;
  const bool valid = find_row(rows_per_wg, part, row);  // no early return: reductions follow
#if ROPE_KV
  if (part < 2u) row = rope_row(row);
#endif
  const uint t0 = gl_WorkGroupID.z * NT;
  const uint nt = min(NT, p.n_tok - t0);
  const uint n_groups = (p.cols + 7u) / 8u;
  float acc[NT];
  for (uint t = 0; t < NT; ++t) acc[t] = 0.0;
  // Whole groups with 16-byte activation loads, then (or, for an odd x stride, all) groups one
  // float at a time. Loop conditions rather than branches: a device that runs both sides of a
  // branch (lavapipe) skips a loop whose condition no lane meets.
  const bool xv = (p.ldx & 3u) == 0u;
  const uint n_full = xv ? p.cols / 8u : 0u;
  uint g = lane;
  // Four groups per iteration: their weight loads are independent and issue back to back.
  for (; valid && g + 3u * tpr < n_full; g += 4u * tpr) {
    float v0[8], v1[8], v2[8], v3[8];
    dequant_part(part, row, g, v0);
    dequant_part(part, row, g + tpr, v1);
    dequant_part(part, row, g + 2u * tpr, v2);
    dequant_part(part, row, g + 3u * tpr, v3);
    for (uint t = 0; t < NT; ++t) {
      if (t >= nt) break;
      vec4 a, b;
      load_x8_vec(t0 + t, g, a, b);
      float s = dot8(v0, a, b);
      load_x8_vec(t0 + t, g + tpr, a, b);
      s += dot8(v1, a, b);
      load_x8_vec(t0 + t, g + 2u * tpr, a, b);
      s += dot8(v2, a, b);
      load_x8_vec(t0 + t, g + 3u * tpr, a, b);
      acc[t] += s + dot8(v3, a, b);
    }
  }
  for (; valid && g < n_full; g += tpr) {
    float v[8];
    dequant_part(part, row, g, v);
    for (uint t = 0; t < NT; ++t) {
      if (t >= nt) break;
      vec4 a, b;
      load_x8_vec(t0 + t, g, a, b);
      acc[t] += dot8(v, a, b);
    }
  }
  for (; valid && g < n_groups; g += tpr) {
    float v[8];
    dequant_part(part, row, g, v);
    for (uint t = 0; t < NT; ++t) {
      if (t >= nt) break;
      vec4 a, b;
      load_x8(t0 + t, g, a, b);
      acc[t] += dot8(v, a, b);
    }
  }
  float inv_rms[NT];
  for (uint t = 0; t < NT; ++t) inv_rms[t] = 1.0;
  if (NORM) {  // the whole workgroup sums x[t, :]^2 (all lanes, valid or not)
    for (uint t = 0; t < NT; ++t) {
      if (t >= nt) break;
      const uint xb = (t0 + t) * p.ldx;
      float ss = 0.0;
      for (uint c = tid; c < p.cols; c += gl_WorkGroupSize.x) ss += x[xb + c] * x[xb + c];
      ss = wg_sum(ss);
      inv_rms[t] = 1.0 / sqrt(ss / float(p.cols) + p.eps);
    }
  }
  for (uint t = 0; t < NT; ++t) {
    if (t >= nt) break;  // nt is uniform: the reductions stay in uniform control flow
    const float s = row_sum(acc[t], tpr) * inv_rms[t];
#if ROPE_KV
    rope_kv_epilogue(part, t0 + t, row, tid / tpr, s, valid, lane == 0u);
#else
    if (lane == 0u && valid) store(part, t0 + t, row, s);
#endif
  }
}
