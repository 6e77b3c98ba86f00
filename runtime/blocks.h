// Weight storage types: GGUF block layouts (bit-exact with ggml), scalar reference dequantization
// and quantization. These are the reference every SIMD and shader kernel is tested against.
#pragma once
#include <cstdint>

#include "runtime/dtype.h"

namespace tandem {

// ---- block layouts ------------------------------------------------------------------------
// Field order and sizes are ggml's (ggml-common.h); fp16 fields are raw IEEE half bits.

inline constexpr int qk4_0 = 32;
inline constexpr int qk8_0 = 32;
inline constexpr int qk_k = 256;  // K-quant super-block

// w = d * (q - 8), q a nibble: element j in the low nibble of qs[j], element j + 16 in the high.
struct block_q4_0 {
  uint16_t d;
  uint8_t qs[qk4_0 / 2];
};
static_assert(sizeof(block_q4_0) == 18);

// w = d * q.
struct block_q8_0 {
  uint16_t d;
  int8_t qs[qk8_0];
};
static_assert(sizeof(block_q8_0) == 34);

// Eight sub-blocks of 32: w = d * sc[j] * q - dmin * m[j], q 4 bits, (sc, m) 6 bits each packed
// in scales[12] (see get_scale_min_k4). qs[32 * i + l] holds element 64 * i + l in its low nibble
// and element 64 * i + 32 + l in its high nibble.
struct block_q4_k {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qs[qk_k / 2];
};
static_assert(sizeof(block_q4_k) == 144);

// As Q4_K with a fifth bit: bit 2i (2i + 1) of qh[l] is the high bit of element 64 i + l (+ 32).
struct block_q5_k {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qh[qk_k / 8];
  uint8_t qs[qk_k / 2];
};
static_assert(sizeof(block_q5_k) == 176);

// Sixteen sub-blocks of 16: w = d * scales[j] * (q - 32), q 6 bits: low 4 in ql, high 2 in qh.
// Per half (128 elements, n = 0 or 1): ql[64 n + l] low nibble = element 128 n + l, high nibble =
// element 128 n + 64 + l; ql[64 n + 32 + l] likewise for + 32 and + 96; qh[32 n + l] bits 0-1,
// 2-3, 4-5, 6-7 are the high bits of elements + 0, + 32, + 64, + 96.
struct block_q6_k {
  uint8_t ql[qk_k / 2];
  uint8_t qh[qk_k / 4];
  int8_t scales[qk_k / 16];
  uint16_t d;
};
static_assert(sizeof(block_q6_k) == 210);

// Unpacks the 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K super-block.
inline void get_scale_min_k4(int j, const uint8_t* q, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
  }
}

// ggml's round-to-nearest (ties to even) for |x| < 2^22, by the 1.5 * 2^23 magic number.
int nearest_int(float x);

// ---- per-type reference ---------------------------------------------------------------------
// n is the number of elements (a multiple of the block size).

void dequantize_row_q4_0(const block_q4_0* x, float* y, int64_t n);
void dequantize_row_q8_0(const block_q8_0* x, float* y, int64_t n);
void dequantize_row_q4_k(const block_q4_k* x, float* y, int64_t n);
void dequantize_row_q5_k(const block_q5_k* x, float* y, int64_t n);
void dequantize_row_q6_k(const block_q6_k* x, float* y, int64_t n);

// As ggml's quantize_row_*_ref: deterministic, no importance matrix.
void quantize_row_q4_0(const float* x, block_q4_0* y, int64_t n);
void quantize_row_q8_0(const float* x, block_q8_0* y, int64_t n);
void quantize_row_q4_k(const float* x, block_q4_k* y, int64_t n);
void quantize_row_q5_k(const float* x, block_q5_k* y, int64_t n);
void quantize_row_q6_k(const float* x, block_q6_k* y, int64_t n);

// ---- by type --------------------------------------------------------------------------------

// True when dequantize_row / quantize_row handle t (f32, f16, q4_0, q8_0, q4_k, q5_k, q6_k).
bool has_quantizer(dtype t);

// Dequantizes n elements (a multiple of the type's block size) of one row.
void dequantize_row(dtype t, const void* src, float* dst, int64_t n);

// Reference quantization of n elements into t's blocks (throws tandem::error for a type without
// a quantizer or when n is not a multiple of the block size).
void quantize_row(dtype t, const float* src, void* dst, int64_t n);

}  // namespace tandem
