// AVX2 kernels on the F16 x16 layout of repack.h (14-bit levels, BF16 scale per 64 columns) with
// q16_64 activations: a 64-byte step of the layout is 2 columns of 16 rows, so two ymm registers
// (rows 0-7 and 8-15), and vpmaddwd multiplies each by one broadcast of 2 activation levels.
// vpmaddwd does 16 multiply-adds per instruction against FP32 FMA's 8: the same doubling the
// AVX-512 level gets from vpdpwssd. Sums stay exact in int32 (repack.h) and are scaled in float
// once per 64 columns.
#include <immintrin.h>

#include <cstring>

#include "cpu/kernels.h"
#include "cpu/repack.h"

namespace tandem::cpu {
namespace {

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
  const auto* blocks = static_cast<const block_f16_x16*>(p);
  for (int64_t g = g0; g < g1; ++g) {
    const block_f16_x16* b = blocks + g * nb;
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t i = 0; i < nb; ++i) {
      const block_f16_x16& B = b[i];
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

}  // namespace tandem::cpu
