// AVX2 kernels on the x16 layouts of repack.h: a 64-byte step of a layout holds 16 rows, so two
// ymm registers (rows 0-7 and 8-15) whose 32-bit lanes are rows.
//
// F16 (14-bit levels, BF16 scale per 64 columns) with q16_64 activations: a step is 2 columns, and
// vpmaddwd multiplies each register by one broadcast of 2 activation levels. vpmaddwd does 16
// multiply-adds per instruction against FP32 FMA's 8: the same doubling the AVX-512 level gets from
// vpdpwssd. Sums stay exact in int32 (repack.h) and are scaled in float once per 64 columns.
//
// Quantized types (matrix-vector; the gemm is in kernels_avx2.cpp): a step is 4 columns, and
// vpmaddubsw multiplies 4 unsigned levels of each row by one broadcast of 4 activation bytes into
// int16 pairs. Sums stay in int16 while they cannot saturate (|activation| <= 127):
//  * Q4_0, Q4_K: levels 0..15, 8 steps (one block of 32 columns) sum below 8 * 2 * 15 * 127 =
//    30480; vpmaddwd then widens them, for Q4_K multiplied by the sub-block scale of each row
//    (an int16 pair per lane), which makes the scaled sum in the same instruction;
//  * Q5_K: levels 0..31, widened by the scale every 4 steps (4 * 2 * 31 * 127 = 31496);
//  * Q6_K: levels 0..63 (the value is level - 32), 2 steps sum below 2 * 2 * 63 * 127 = 32004,
//    then vpmaddwd by the scale;
//  * Q8_0: levels are stored + 128, so the kernel flips them back to signed and puts their signs
//    on the activations (vpsignb), as the row kernels do: every step widens at once.
// Level offsets (Q4_0's 8, Q6_K's 32) and Q4_K's mins are subtracted through the activations'
// block sums, as in the AVX-512 kernels.
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <type_traits>

#include "cpu/kernels.h"
#include "runtime/blocks.h"
#include "cpu/repack.h"

namespace tandem::cpu {
namespace {

// Software prefetch of the block dist bytes ahead of b (kernels.h: prefetch_distance; 0 = off).
inline void prefetch_ahead(const void* b, size_t bytes, int dist) {
  if (dist <= 0) return;
  const char* p = static_cast<const char*>(b) + dist;
  for (size_t off = 0; off < bytes; off += 64) _mm_prefetch(p + off, _MM_HINT_T0);
}

inline __m256i bcast_pair(const int16_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

// 8 BF16 scales as floats.
inline __m256 load_bf16x8(const uint16_t* p) {
  const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

// Rows [16g, 16g + 16) of a 16-float result, only those below rows.
inline void store_rows(float* y, const __m256* v, int64_t rows, int64_t g) {
  const int64_t n = rows - g * x16_rows;
  if (n >= x16_rows) {
    _mm256_storeu_ps(y, v[0]);
    _mm256_storeu_ps(y + 8, v[1]);
    return;
  }
  alignas(32) float tmp[x16_rows];
  _mm256_store_ps(tmp, v[0]);
  _mm256_store_ps(tmp + 8, v[1]);
  std::memcpy(y, tmp, static_cast<size_t>(n) * sizeof(float));
}

// One block of 64 activations: the scale, and the levels in order. Bit for bit
// quant_q16_64_ref: the same division, and cvtps rounds to nearest even as nearbyint does.
inline float quant_block(const float* x, int16_t* q) {
  __m256 v[8];
  __m256 amax = _mm256_setzero_ps();
  for (int k = 0; k < 8; ++k) {
    v[k] = _mm256_loadu_ps(x + 8 * k);
    amax = _mm256_max_ps(amax, _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v[k]));
  }
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  const float dd = _mm_cvtss_f32(m) / q16_level_max;
  const __m256 id = _mm256_set1_ps(dd > 0 ? 1 / dd : 0.0f);
  const __m256i lo = _mm256_set1_epi32(-q16_level_max), hi = _mm256_set1_epi32(q16_level_max);
  for (int k = 0; k < 8; k += 2) {
    __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], id));
    __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(v[k + 1], id));
    a = _mm256_min_epi32(_mm256_max_epi32(a, lo), hi);
    b = _mm256_min_epi32(_mm256_max_epi32(b, lo), hi);
    // packs works per 128-bit lane: [a0-3 b0-3 a4-7 b4-7] -> [a0-7 b0-7]
    const __m256i p = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 8 * k), p);
  }
  return dd;
}

}  // namespace

void quant_q16_64_avx2(const float* x, int64_t cols, int16_t* q, float* d) {
  for (int64_t b = 0; b < cols / q16_block; ++b)
    d[b] = quant_block(x + q16_block * b, q + q16_block * b);
}

void quant_group_q16_avx2(const float* x, int n, int64_t cols, int16_t* q, float* d) {
  constexpr int g = gemm_group;
  if (n < g) {
    std::memset(q, 0, static_cast<size_t>(cols) * g * sizeof(int16_t));
    std::memset(d, 0, static_cast<size_t>(cols / q16_block) * g * sizeof(float));
  }
  // Each token's levels in row order, then pair p of token t to int32 slot 8p + t.
  alignas(32) int32_t rows[g][q16_block / 2];
  auto* out = reinterpret_cast<int32_t*>(q);
  for (int64_t b = 0; b < cols / q16_block; ++b) {
    for (int t = 0; t < n; ++t)
      d[b * g + t] = quant_block(x + t * cols + q16_block * b, reinterpret_cast<int16_t*>(rows[t]));
    int32_t* o = out + (q16_block / 2) * g * b;
    for (int p = 0; p < q16_block / 2; ++p)
      for (int t = 0; t < n; ++t) o[p * g + t] = rows[t][p];
  }
}

void mv_f16_x16_avx2(const void* p, int64_t rows, int64_t cols, const q8_row& x, float* y,
                     int64_t g0, int64_t g1) {
  const int64_t nb = cols / 128;
  const int pf = prefetch_distance(dtype::f16);
  const auto* blocks = static_cast<const block_f16_x16*>(p);
  for (int64_t g = g0; g < g1; ++g) {
    const block_f16_x16* b = blocks + g * nb;
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t i = 0; i < nb; ++i) {
      const block_f16_x16& B = b[i];
      prefetch_ahead(&B, sizeof(B), pf);
      for (int h = 0; h < 2; ++h) {
        const int16_t* xq = x.q16 + 128 * i + 64 * h;
        __m256i a[4];
        for (int k = 0; k < 4; ++k) a[k] = _mm256_setzero_si256();
#pragma GCC unroll 16
        for (int s = 0; s < 32; s += 2) {
#pragma GCC unroll 2
          for (int e = 0; e < 2; ++e) {
            const auto* w = reinterpret_cast<const __m256i*>(B.qs[32 * h + s + e]);
            const __m256i bx = bcast_pair(xq + 2 * (s + e));
            a[2 * e] = _mm256_add_epi32(a[2 * e], _mm256_madd_epi16(_mm256_loadu_si256(w), bx));
            a[2 * e + 1] =
                _mm256_add_epi32(a[2 * e + 1], _mm256_madd_epi16(_mm256_loadu_si256(w + 1), bx));
          }
        }
        const __m256 xd = _mm256_set1_ps(x.d[2 * i + h]);
#pragma GCC unroll 2
        for (int r = 0; r < 2; ++r)
          acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(a[r], a[r + 2])),
                                   _mm256_mul_ps(load_bf16x8(B.d[h] + 8 * r), xd), acc[r]);
      }
    }
    store_rows(y + g * x16_rows, acc, rows, g);
  }
}

namespace {

// 16 rows x NT (<= 4) tokens of a q16_64 activation group ([cols / 2][8 tokens][2 levels]),
// starting at token t0 of the group. The float sums live in memory (AVX2 has 16 registers: the
// int32 sums of 4 tokens x 2 row halves, the weights and a broadcast fill them).
template <int NT>
void f16_tile(const block_f16_x16* B, int64_t nb, const int16_t* xq, const float* xd, int t0,
              float* y, int64_t ldy, int64_t rows, int64_t g) {
  constexpr int gg = gemm_group;
  __m256 acc[NT][2];
  for (int t = 0; t < NT; ++t) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    for (int h = 0; h < 2; ++h) {
      const int16_t* xb = xq + (128 * i + 64 * h) * gg + 2 * t0;
      __m256i a[NT][2];
      for (int t = 0; t < NT; ++t) a[t][0] = a[t][1] = _mm256_setzero_si256();
#pragma GCC unroll 4
      for (int s = 0; s < 32; ++s) {
        const auto* wp = reinterpret_cast<const __m256i*>(B[i].qs[32 * h + s]);
        const __m256i w0 = _mm256_loadu_si256(wp), w1 = _mm256_loadu_si256(wp + 1);
#pragma GCC unroll 4
        for (int t = 0; t < NT; ++t) {
          const __m256i bx = bcast_pair(xb + 2 * gg * s + 2 * t);
          a[t][0] = _mm256_add_epi32(a[t][0], _mm256_madd_epi16(w0, bx));
          a[t][1] = _mm256_add_epi32(a[t][1], _mm256_madd_epi16(w1, bx));
        }
      }
      const __m256 d0 = load_bf16x8(B[i].d[h]), d1 = load_bf16x8(B[i].d[h] + 8);
      const float* xdi = xd + (2 * i + h) * gg + t0;
      for (int t = 0; t < NT; ++t) {
        const __m256 xs = _mm256_set1_ps(xdi[t]);
        acc[t][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a[t][0]), _mm256_mul_ps(d0, xs), acc[t][0]);
        acc[t][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a[t][1]), _mm256_mul_ps(d1, xs), acc[t][1]);
      }
    }
  }
  for (int t = 0; t < NT; ++t) store_rows(y + (t0 + t) * ldy, acc[t], rows, g);
}

}  // namespace

void mm_f16_x16_avx2(const void* p, int64_t rows, int64_t cols, const q8_groups& x, float* y,
                     int64_t ldy, int64_t g0, int64_t g1) {
  constexpr int gg = gemm_group;
  const int64_t nb = cols / 128;
  const int n_groups = (x.n_tok + gg - 1) / gg;
  for (int64_t g = g0; g < g1; ++g) {
    const auto* B = static_cast<const block_f16_x16*>(p) + g * nb;
    for (int gi = 0; gi < n_groups; ++gi) {
      const int nt = x.n_tok - gi * gg < gg ? x.n_tok - gi * gg : gg;
      const int16_t* xq = x.q16 + gi * cols * gg;
      const float* xd = x.d + gi * (cols / q16_block) * gg;
      float* yg = y + gi * gg * ldy + g * x16_rows;
      for (int t0 = 0; t0 < nt; t0 += 4) {
        switch (nt - t0 < 4 ? nt - t0 : 4) {
          case 1:
            f16_tile<1>(B, nb, xq, xd, t0, yg, ldy, rows, g);
            break;
          case 2:
            f16_tile<2>(B, nb, xq, xd, t0, yg, ldy, rows, g);
            break;
          case 3:
            f16_tile<3>(B, nb, xq, xd, t0, yg, ldy, rows, g);
            break;
          default:
            f16_tile<4>(B, nb, xq, xd, t0, yg, ldy, rows, g);
            break;
        }
      }
    }
  }
}

// ---- quantized types: matrix-vector -----------------------------------------------------------

namespace {

inline __m256i bcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

// The 8 rows of one half (h = 0, 1) of a 16-row x 4-byte step.
inline __m256i load_half(const uint8_t (*rows)[4], int h) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows + 8 * h));
}

inline __m256 load_f16x8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// 8 unsigned bytes (one per row) as an int16 pair [v, v] per 32-bit lane.
inline __m256i u8x8_pairs(const uint8_t* p) {
  int64_t v;
  std::memcpy(&v, p, 8);
  const __m256i dup = _mm256_setr_epi8(0, -1, 0, -1, 1, -1, 1, -1, 2, -1, 2, -1, 3, -1, 3, -1,  //
                                       4, -1, 4, -1, 5, -1, 5, -1, 6, -1, 6, -1, 7, -1, 7, -1);
  return _mm256_shuffle_epi8(_mm256_set1_epi64x(v), dup);
}

// Q4_K / Q5_K: the activation sums per sub-block of 32 of super-block i, as int16 pairs
// (2q, 2q + 1).
inline void bsum32_pairs(const int16_t* bsums, int32_t pairs[4]) {
  const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bsums));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(pairs),
                   _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1)));
}

// Q4_K / Q5_K: adds one super-block to acc (d * xd * sum(sc * dot)) and acc_m (dmin * xd *
// sum(min * activation sum)).
template <typename X16>
inline void add_super_block(const X16& B, const int32_t pairs[4], const __m256i isum[2], float xd,
                            __m256 acc[2], __m256 acc_m[2]) {
  __m256i mins[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
#pragma GCC unroll 4
  for (int q = 0; q < 4; ++q) {
    const __m256i pair = _mm256_set1_epi32(pairs[q]);
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      const __m256i mn =
          _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(B.mn[q][8 * h])));
      mins[h] = _mm256_add_epi32(mins[h], _mm256_madd_epi16(mn, pair));
    }
  }
  const __m256 xs = _mm256_set1_ps(xd);
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h) {
    acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[h]),
                             _mm256_mul_ps(load_f16x8(B.d + 8 * h), xs), acc[h]);
    acc_m[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(mins[h]),
                               _mm256_mul_ps(load_f16x8(B.dmin + 8 * h), xs), acc_m[h]);
  }
}

}  // namespace

// Q4_0 against q8_32p activations (kernels.h): block k's columns 4s.. are at 16k + 4s of the pair,
// its columns 16 + 4s.. at 32 + 16k + 4s.
// U x16 blocks (64 U columns) per call, 4U int16 chains.
template <int U>
inline void q4_0_x16_blocks_avx2(const block_q4_0_x16* B, const q8_row& x, int64_t i,
                                 __m256 acc[2]) {
  const __m256i m4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
  const int8_t* xq = x.q + 64 * i;
  // Steps outer, blocks inner: the loads walk the block's cache lines in order.
  __m256i s16[2 * U][2];
#pragma GCC unroll 8
  for (int k = 0; k < 2 * U; ++k) s16[k][0] = s16[k][1] = _mm256_setzero_si256();
#pragma GCC unroll 4
  for (int u = 0; u < U; ++u) {
#pragma GCC unroll 4
    for (int s = 0; s < 4; ++s) {
#pragma GCC unroll 2
      for (int k = 0; k < 2; ++k) {
        const int8_t* xb = xq + 64 * u + 16 * k + 4 * s;
        const __m256i xl = bcast4(xb), xh = bcast4(xb + 32);
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h) {
          const __m256i w = load_half(B[u].qs[s][k], h);
          const __m256i lo = _mm256_maddubs_epi16(_mm256_and_si256(w, m4), xl);
          const __m256i hi =
              _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(w, 4), m4), xh);
          s16[2 * u + k][h] = _mm256_add_epi16(s16[2 * u + k][h], _mm256_add_epi16(lo, hi));
        }
      }
    }
  }
#pragma GCC unroll 8
  for (int k = 0; k < 2 * U; ++k) {
    // sum((level - 8) * x) = sum(level * x) - 8 * sum(x).
    const __m256i off = _mm256_set1_epi32(8 * x.sum[2 * i + k]);
    const __m256 xd = _mm256_set1_ps(x.d[2 * i + k]);
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      const __m256i tot = _mm256_sub_epi32(_mm256_madd_epi16(s16[k][h], ones), off);
      acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(tot),
                               _mm256_mul_ps(load_f16x8(B[k / 2].d[k & 1] + 8 * h), xd), acc[h]);
    }
  }
}

// Q8_0 against q8_32 activations; U x16 blocks per call.
template <int U>
inline void q8_0_x16_blocks_avx2(const block_q8_0_x16* B, const q8_row& x, int64_t i,
                                 __m256 acc[2]) {
  const __m256i bias = _mm256_set1_epi8(static_cast<char>(0x80)), ones = _mm256_set1_epi16(1);
  const int8_t* xq = x.q + 64 * i;
  __m256i s32[2 * U][2];
#pragma GCC unroll 8
  for (int k = 0; k < 2 * U; ++k) s32[k][0] = s32[k][1] = _mm256_setzero_si256();
#pragma GCC unroll 4
  for (int u = 0; u < U; ++u) {
#pragma GCC unroll 8
    for (int s = 0; s < 8; ++s) {
#pragma GCC unroll 2
      for (int k = 0; k < 2; ++k) {
        const __m256i xb = bcast4(xq + 64 * u + 32 * k + 4 * s);
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h) {
          // |w| (up to 128, unsigned) times x with w's sign: pairs stay within int16.
          const __m256i w = _mm256_xor_si256(load_half(B[u].qs[s][k], h), bias);
          const __m256i pr = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(xb, w));
          s32[2 * u + k][h] = _mm256_add_epi32(s32[2 * u + k][h], _mm256_madd_epi16(pr, ones));
        }
      }
    }
  }
#pragma GCC unroll 8
  for (int k = 0; k < 2 * U; ++k) {
    const __m256 xd = _mm256_set1_ps(x.d[2 * i + k]);
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h)
      acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32[k][h]),
                               _mm256_mul_ps(load_f16x8(B[k / 2].d[k & 1] + 8 * h), xd), acc[h]);
  }
}

// Q4_0 / Q8_0 matrix-vector: U x16 blocks (64 U columns) per step with one prefetch burst, then
// single blocks for the rest of the row (kernels_x16_avx512.cpp has the measurement).
template <typename Block, void (*step_u)(const Block*, const q8_row&, int64_t, __m256*),
          void (*step_1)(const Block*, const q8_row&, int64_t, __m256*), int U>
static void mv_x16_by_steps(dtype t, const void* p, int64_t rows, int64_t cols, const q8_row& x,
                            float* y, int64_t g0, int64_t g1) {
  const int64_t nb = cols / 64, nb_u = nb / U * U;
  const int pf = prefetch_distance(t);
  const auto* blocks = static_cast<const Block*>(p);
  for (int64_t g = g0; g < g1; ++g) {
    const Block* b = blocks + g * nb;
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    int64_t i = 0;
    for (; i < nb_u; i += U) {
      prefetch_ahead(b + i, U * sizeof(Block), pf);
      step_u(b + i, x, i, acc);
    }
    for (; i < nb; ++i) {
      prefetch_ahead(b + i, sizeof(Block), pf);
      step_1(b + i, x, i, acc);
    }
    store_rows(y + g * x16_rows, acc, rows, g);
  }
}

// Two blocks per step: four would not fit the 16 ymm registers.
void mv_q4_0_x16_avx2(const void* p, int64_t rows, int64_t cols, const q8_row& x, float* y,
                      int64_t g0, int64_t g1) {
  mv_x16_by_steps<block_q4_0_x16, q4_0_x16_blocks_avx2<2>, q4_0_x16_blocks_avx2<1>, 2>(
      dtype::q4_0, p, rows, cols, x, y, g0, g1);
}

void mv_q8_0_x16_avx2(const void* p, int64_t rows, int64_t cols, const q8_row& x, float* y,
                      int64_t g0, int64_t g1) {
  mv_x16_by_steps<block_q8_0_x16, q8_0_x16_blocks_avx2<2>, q8_0_x16_blocks_avx2<1>, 2>(
      dtype::q8_0, p, rows, cols, x, y, g0, g1);
}

// Q4_K against q8_256 activations: per pair q, the low nibbles are sub-block 2q and the high
// nibbles 2q + 1; vpmaddwd by the rows' 6-bit scales gives sum_j(sc_j * dot_j), below 2^25.
void mv_q4_k_x16_avx2(const void* p, int64_t rows, int64_t cols, const q8_row& x, float* y,
                      int64_t g0, int64_t g1) {
  const int64_t nb = cols / qk_k;
  const int pf = prefetch_distance(dtype::q4_k);
  const auto* blocks = static_cast<const block_q4_k_x16*>(p);
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  for (int64_t g = g0; g < g1; ++g) {
    const block_q4_k_x16* b = blocks + g * nb;
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    __m256 acc_m[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t i = 0; i < nb; ++i) {
      const block_q4_k_x16& B = b[i];
      prefetch_ahead(&B, sizeof(B), pf);
      const int8_t* xq = x.q + qk_k * i;
      __m256i isum[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
#pragma GCC unroll 1
      for (int q = 0; q < 4; ++q) {
        __m256i lo[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
        __m256i hi[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
#pragma GCC unroll 8
        for (int s = 0; s < 8; ++s) {
          const __m256i xl = bcast4(xq + 64 * q + 4 * s), xh = bcast4(xq + 64 * q + 32 + 4 * s);
#pragma GCC unroll 2
          for (int h = 0; h < 2; ++h) {
            const __m256i w = load_half(B.qs[s][q], h);
            lo[h] = _mm256_add_epi16(lo[h], _mm256_maddubs_epi16(_mm256_and_si256(w, m4), xl));
            hi[h] = _mm256_add_epi16(
                hi[h], _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(w, 4), m4), xh));
          }
        }
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h)
          isum[h] = _mm256_add_epi32(
              isum[h],
              _mm256_add_epi32(_mm256_madd_epi16(lo[h], u8x8_pairs(B.sc[2 * q] + 8 * h)),
                               _mm256_madd_epi16(hi[h], u8x8_pairs(B.sc[2 * q + 1] + 8 * h))));
      }
      int32_t pairs[4];
      bsum32_pairs(x.bsums + 16 * i, pairs);
      add_super_block(B, pairs, isum, x.d[i], acc, acc_m);
    }
    const __m256 out[2] = {_mm256_sub_ps(acc[0], acc_m[0]), _mm256_sub_ps(acc[1], acc_m[1])};
    store_rows(y + g * x16_rows, out, rows, g);
  }
}

namespace {

// Q5_K: the 5-bit levels of sub-block j (columns 4s .. 4s + 3) of rows 8h .. 8h + 7 at step s.
inline __m256i q5_levels(const block_q5_k_x16& B, int s, int j, int h) {
  const __m256i w = load_half(B.qs[s][j / 2], h);
  const __m256i q = load_half(B.qh[s], h);
  const __m256i lo =
      _mm256_and_si256((j & 1) ? _mm256_srli_epi16(w, 4) : w, _mm256_set1_epi8(0x0F));
  // Bit j of each qh byte to bit 4 (16-bit shifts: the bit stays within its byte).
  const __m256i hi = j < 4 ? _mm256_slli_epi16(q, 4 - j) : _mm256_srli_epi16(q, j - 4);
  return _mm256_or_si256(lo, _mm256_and_si256(hi, _mm256_set1_epi8(0x10)));
}

}  // namespace

// Q5_K against q8_256 activations: as Q4_K with 5-bit levels, whose int16 sums widen every 4
// steps (4 * 2 * 31 * 127 = 31496).
void mv_q5_k_x16_avx2(const void* p, int64_t rows, int64_t cols, const q8_row& x, float* y,
                      int64_t g0, int64_t g1) {
  const int64_t nb = cols / qk_k;
  const int pf = prefetch_distance(dtype::q5_k);
  const auto* blocks = static_cast<const block_q5_k_x16*>(p);
  for (int64_t g = g0; g < g1; ++g) {
    const block_q5_k_x16* b = blocks + g * nb;
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    __m256 acc_m[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t i = 0; i < nb; ++i) {
      const block_q5_k_x16& B = b[i];
      prefetch_ahead(&B, sizeof(B), pf);
      const int8_t* xq = x.q + qk_k * i;
      __m256i isum[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) {
        __m256i sc[2];
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h) sc[h] = u8x8_pairs(B.sc[j] + 8 * h);
#pragma GCC unroll 1
        for (int s0 = 0; s0 < 8; s0 += 4) {
          __m256i a[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
#pragma GCC unroll 4
          for (int s = s0; s < s0 + 4; ++s) {
            const __m256i xb = bcast4(xq + 32 * j + 4 * s);
#pragma GCC unroll 2
            for (int h = 0; h < 2; ++h)
              a[h] = _mm256_add_epi16(a[h], _mm256_maddubs_epi16(q5_levels(B, s, j, h), xb));
          }
#pragma GCC unroll 2
          for (int h = 0; h < 2; ++h)
            isum[h] = _mm256_add_epi32(isum[h], _mm256_madd_epi16(a[h], sc[h]));
        }
      }
      int32_t pairs[4];
      bsum32_pairs(x.bsums + 16 * i, pairs);
      add_super_block(B, pairs, isum, x.d[i], acc, acc_m);
    }
    const __m256 out[2] = {_mm256_sub_ps(acc[0], acc_m[0]), _mm256_sub_ps(acc[1], acc_m[1])};
    store_rows(y + g * x16_rows, out, rows, g);
  }
}

namespace {

// Q6_K: the 6-bit levels of group G (columns 32G + 4s .. + 3) of rows 8h .. 8h + 7 at step s.
inline __m256i q6_levels(const block_q6_k_x16& B, int s, int G, int h) {
  const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
  const __m256i l = load_half(B.step[s].ql[G / 2], h);
  const __m256i q = load_half(B.step[s].qh[G / 4], h);
  const __m256i lo = _mm256_and_si256((G & 1) ? _mm256_srli_epi16(l, 4) : l, m4);
  __m256i hi;
  switch (G & 3) {  // bits 2k, 2k + 1 of qh (k = G % 4) to bits 4, 5
    case 0:
      hi = _mm256_slli_epi16(q, 4);
      break;
    case 1:
      hi = _mm256_slli_epi16(q, 2);
      break;
    case 2:
      hi = q;
      break;
    default:
      hi = _mm256_srli_epi16(q, 2);
      break;
  }
  return _mm256_or_si256(lo, _mm256_and_si256(hi, m30));
}

// The int8 scales of sub-blocks 2G and 2G + 1 of rows 8h .. 8h + 7 as int16 pairs.
inline __m256i q6_scale_pairs(const block_q6_k_x16& B, int G, int h) {
  return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(B.sc[G][8 * h])));
}

}  // namespace

// Q6_K against q8_256 activations: levels are stored + 32, so 32 * sum(scale * activation sum)
// per sub-block of 16 is subtracted; per super-block and row the integer sums stay below 2^28.
void mv_q6_k_x16_avx2(const void* p, int64_t rows, int64_t cols, const q8_row& x, float* y,
                      int64_t g0, int64_t g1) {
  const int64_t nb = cols / qk_k;
  const int pf = prefetch_distance(dtype::q6_k);
  const auto* blocks = static_cast<const block_q6_k_x16*>(p);
  // An int16 pair [sc_2G, sc_2G+1] per lane to [sc_2G, sc_2G] (even) or [sc_2G+1, sc_2G+1].
  const __m256i dup_even = _mm256_setr_epi8(0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12, 13, 12, 13,  //
                                            0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12, 13, 12, 13);
  const __m256i dup_odd =
      _mm256_setr_epi8(2, 3, 2, 3, 6, 7, 6, 7, 10, 11, 10, 11, 14, 15, 14, 15,  //
                       2, 3, 2, 3, 6, 7, 6, 7, 10, 11, 10, 11, 14, 15, 14, 15);
  for (int64_t g = g0; g < g1; ++g) {
    const block_q6_k_x16* b = blocks + g * nb;
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t i = 0; i < nb; ++i) {
      const block_q6_k_x16& B = b[i];
      prefetch_ahead(&B, sizeof(B), pf);
      const int8_t* xq = x.q + qk_k * i;
      // Both row halves per broadcast (one pass: GCC keeps two passes' broadcasts on the stack).
      __m256i isum[2], off[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
#pragma GCC unroll 8
      for (int G = 0; G < 8; ++G) {
        int32_t bsum_pair;
        std::memcpy(&bsum_pair, x.bsums + 16 * i + 2 * G, 4);
        const __m256i bp = _mm256_set1_epi32(bsum_pair);
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h)
          off[h] = _mm256_add_epi32(off[h], _mm256_madd_epi16(q6_scale_pairs(B, G, h), bp));
      }
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h)
        isum[h] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(off[h], 5));
      // The scale of sub-block j as an int16 pair per row: scd[j][h] (a memory operand below).
      __m256i scd[16][2];
#pragma GCC unroll 8
      for (int G = 0; G < 8; ++G) {
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h) {
          const __m256i pairs = q6_scale_pairs(B, G, h);
          scd[2 * G][h] = _mm256_shuffle_epi8(pairs, dup_even);
          scd[2 * G + 1][h] = _mm256_shuffle_epi8(pairs, dup_odd);
        }
      }
#pragma GCC unroll 1
      for (int s = 0; s < 8; s += 2) {  // sub-block 2G + s / 4
#pragma GCC unroll 8
        for (int G = 0; G < 8; ++G) {
          const __m256i xa = bcast4(xq + 32 * G + 4 * s), xc = bcast4(xq + 32 * G + 4 * s + 4);
#pragma GCC unroll 2
          for (int h = 0; h < 2; ++h) {
            const __m256i t = _mm256_add_epi16(_mm256_maddubs_epi16(q6_levels(B, s, G, h), xa),
                                               _mm256_maddubs_epi16(q6_levels(B, s + 1, G, h), xc));
            isum[h] = _mm256_add_epi32(isum[h], _mm256_madd_epi16(t, scd[2 * G + s / 4][h]));
          }
        }
      }
      const __m256 xd = _mm256_set1_ps(x.d[i]);
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h)
        acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[h]),
                                 _mm256_mul_ps(load_f16x8(B.d + 8 * h), xd), acc[h]);
    }
    store_rows(y + g * x16_rows, acc, rows, g);
  }
}

// ---- quantized types: gemm ----------------------------------------------------------------------
// The x16 layouts are already 16 rows x 4 bytes per step, which is the gemm tile's layout
// (kernels.h: repack_gemm_tile) but for unpacked levels and float scales per sub-block: each row
// group is unpacked into one tile (the same bytes repack_gemm_tile makes from the GGUF rows), then
// the AVX2 gemm runs on it for every token.

namespace {

inline void store_half(uint8_t* p, int h, __m256i v) {
  _mm256_store_si256(reinterpret_cast<__m256i*>(p + 32 * h), v);
}

// dw and mw (8 rows of half h) of the sub-block at base (B columns).
inline void store_scales(uint8_t* base, int B, int h, __m256 dw, __m256 mw) {
  _mm256_store_ps(reinterpret_cast<float*>(base + B * 16 + 32 * h), dw);
  _mm256_store_ps(reinterpret_cast<float*>(base + B * 16 + 64 + 32 * h), mw);
}

// Unpacks one row group (nb x16 blocks from b) into the gemm tile of type T.
template <dtype T>
void unpack_tile(const void* b, int64_t nb, uint8_t* tile) {
  constexpr int B = gemm_sub_block(T);
  constexpr size_t sbs = B * 16 + 128;
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  if constexpr (T == dtype::q4_0 || T == dtype::q8_0) {
    using block = std::conditional_t<T == dtype::q4_0, block_q4_0_x16, block_q8_0_x16>;
    for (int64_t i = 0; i < nb; ++i) {
      const block& X = static_cast<const block*>(b)[i];
      for (int k = 0; k < 2; ++k) {
        uint8_t* base = tile + (2 * i + k) * sbs;
        for (int h = 0; h < 2; ++h) {
          if constexpr (T == dtype::q4_0) {  // columns 4s.. in low nibbles, 16 + 4s.. in high
            for (int s = 0; s < 4; ++s) {
              const __m256i w = load_half(X.qs[s][k], h);
              store_half(base + 64 * s, h, _mm256_and_si256(w, m4));
              store_half(base + 64 * (s + 4), h, _mm256_and_si256(_mm256_srli_epi16(w, 4), m4));
            }
          } else {  // signed levels (the gemm's sign trick)
            for (int s = 0; s < 8; ++s)
              store_half(base + 64 * s, h,
                         _mm256_xor_si256(load_half(X.qs[s][k], h),
                                          _mm256_set1_epi8(static_cast<char>(0x80))));
          }
          const __m256 dw = load_f16x8(X.d[k] + 8 * h);
          store_scales(
              base, B, h, dw,
              T == dtype::q4_0 ? _mm256_mul_ps(dw, _mm256_set1_ps(-8.0f)) : _mm256_setzero_ps());
        }
      }
    }
  } else if constexpr (T == dtype::q4_k || T == dtype::q5_k) {
    using block = std::conditional_t<T == dtype::q4_k, block_q4_k_x16, block_q5_k_x16>;
    for (int64_t i = 0; i < nb; ++i) {
      const block& X = static_cast<const block*>(b)[i];
      uint8_t* base = tile + 8 * i * sbs;
      for (int h = 0; h < 2; ++h) {
        if constexpr (T == dtype::q5_k) {
          for (int j = 0; j < 8; ++j)
            for (int s = 0; s < 8; ++s)
              store_half(base + j * sbs + 64 * s, h, q5_levels(X, s, j, h));
        } else {
          for (int q = 0; q < 4; ++q) {
            for (int s = 0; s < 8; ++s) {
              const __m256i w = load_half(X.qs[s][q], h);
              store_half(base + 2 * q * sbs + 64 * s, h, _mm256_and_si256(w, m4));
              store_half(base + (2 * q + 1) * sbs + 64 * s, h,
                         _mm256_and_si256(_mm256_srli_epi16(w, 4), m4));
            }
          }
        }
        const __m256 d = load_f16x8(X.d + 8 * h), dmin = load_f16x8(X.dmin + 8 * h);
        for (int j = 0; j < 8; ++j) {
          const __m256 sc = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(
              _mm_loadl_epi64(reinterpret_cast<const __m128i*>(X.sc[j] + 8 * h))));
          const __m256i mn = _mm256_cvtepu8_epi16(
              _mm_loadu_si128(reinterpret_cast<const __m128i*>(X.mn[j / 2][8 * h])));
          const __m256i m =
              (j & 1) ? _mm256_srli_epi32(mn, 16) : _mm256_and_si256(mn, _mm256_set1_epi32(0xFFFF));
          const __m256 mw = _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(m));
          store_scales(base + j * sbs, B, h, _mm256_mul_ps(d, sc),
                       _mm256_xor_ps(mw, _mm256_set1_ps(-0.0f)));
        }
      }
    }
  } else {  // q6_k: sub-block 2G + hs is group G's steps 4hs .. 4hs + 3
    for (int64_t i = 0; i < nb; ++i) {
      const block_q6_k_x16& X = static_cast<const block_q6_k_x16*>(b)[i];
      uint8_t* base = tile + 16 * i * sbs;
      for (int h = 0; h < 2; ++h) {
        const __m256 d = load_f16x8(X.d + 8 * h);
        for (int G = 0; G < 8; ++G) {
          for (int s = 0; s < 8; ++s)
            store_half(base + (2 * G + s / 4) * sbs + 64 * (s % 4), h, q6_levels(X, s, G, h));
          const __m256i pairs = q6_scale_pairs(X, G, h);
          for (int hs = 0; hs < 2; ++hs) {
            const __m256i sc = hs ? _mm256_srai_epi32(pairs, 16)
                                  : _mm256_srai_epi32(_mm256_slli_epi32(pairs, 16), 16);
            const __m256 dw = _mm256_mul_ps(d, _mm256_cvtepi32_ps(sc));
            store_scales(base + (2 * G + hs) * sbs, B, h, dw,
                         _mm256_mul_ps(dw, _mm256_set1_ps(-32.0f)));
          }
        }
      }
    }
  }
}

template <dtype T>
void mm_unpacked(const void* p, int64_t rows, int64_t cols, const q8_groups& x, float* y,
                 int64_t ldy, int64_t g0, int64_t g1) {
  const int64_t nb = cols / x16_block_cols(T);
  const size_t block_bytes = x16_bytes(T, x16_rows, x16_block_cols(T));
  uint8_t* tile = thread_gemm_scratch(cols);
  for (int64_t g = g0; g < g1; ++g) {
    unpack_tile<T>(static_cast<const uint8_t*>(p) + static_cast<size_t>(g * nb) * block_bytes, nb,
                   tile);
    const int64_t left = rows - g * x16_rows;
    gemm_tile_avx2(T, tile, static_cast<int>(left < x16_rows ? left : x16_rows), cols, x, y, ldy,
                   g * x16_rows);
  }
}

}  // namespace

void unpack_x16_tile_avx2(dtype t, const void* blocks, int64_t nb, uint8_t* tile) {
  switch (t) {
    case dtype::q4_0:
      return unpack_tile<dtype::q4_0>(blocks, nb, tile);
    case dtype::q8_0:
      return unpack_tile<dtype::q8_0>(blocks, nb, tile);
    case dtype::q4_k:
      return unpack_tile<dtype::q4_k>(blocks, nb, tile);
    case dtype::q5_k:
      return unpack_tile<dtype::q5_k>(blocks, nb, tile);
    case dtype::q6_k:
      return unpack_tile<dtype::q6_k>(blocks, nb, tile);
    default:
      throw std::logic_error("unpack_x16_tile_avx2: no x16 tile for this type");
  }
}

void mm_q4_0_x16_avx2(const void* p, int64_t rows, int64_t cols, const q8_groups& x, float* y,
                      int64_t ldy, int64_t g0, int64_t g1) {
  mm_unpacked<dtype::q4_0>(p, rows, cols, x, y, ldy, g0, g1);
}
void mm_q8_0_x16_avx2(const void* p, int64_t rows, int64_t cols, const q8_groups& x, float* y,
                      int64_t ldy, int64_t g0, int64_t g1) {
  mm_unpacked<dtype::q8_0>(p, rows, cols, x, y, ldy, g0, g1);
}
void mm_q4_k_x16_avx2(const void* p, int64_t rows, int64_t cols, const q8_groups& x, float* y,
                      int64_t ldy, int64_t g0, int64_t g1) {
  mm_unpacked<dtype::q4_k>(p, rows, cols, x, y, ldy, g0, g1);
}
void mm_q5_k_x16_avx2(const void* p, int64_t rows, int64_t cols, const q8_groups& x, float* y,
                      int64_t ldy, int64_t g0, int64_t g1) {
  mm_unpacked<dtype::q5_k>(p, rows, cols, x, y, ldy, g0, g1);
}
void mm_q6_k_x16_avx2(const void* p, int64_t rows, int64_t cols, const q8_groups& x, float* y,
                      int64_t ldy, int64_t g0, int64_t g1) {
  mm_unpacked<dtype::q6_k>(p, rows, cols, x, y, ldy, g0, g1);
}

}  // namespace tandem::cpu
