// AVX-512 (F, BW, VL, DQ, VNNI) kernels, compiled with those flags and only called when CPUID
// says so. Internal linkage throughout, as in kernels_avx2.cpp.
//
// The table starts from the AVX2 one and replaces what is faster here: the prompt-path gemm
// (16 weight rows per zmm, vpdpbusd with a broadcast of 4 activation bytes per token) and the
// float kernels (zmm, masked tails).
// GCC 12's AVX-512 headers initialise _mm512_undefined_* from themselves, which -Wuninitialized
// reports at every use (GCC bug 105593, fixed in 13).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstring>
#include <stdexcept>
#include <type_traits>

#include "cpu/kernels.h"
#include "runtime/blocks.h"

namespace tandem::cpu {
namespace {

inline const uint8_t* row_at(const void* w, size_t rb, int64_t r) {
  return static_cast<const uint8_t*>(w) + static_cast<size_t>(r) * rb;
}

inline void prefetch(const void* p, int dist) {
  _mm_prefetch(static_cast<const char*>(p) + dist, _MM_HINT_T0);
}

// ---- float weights ------------------------------------------------------------------------------

inline __m512 load16(const float* p) {
  return _mm512_loadu_ps(p);
}
inline __m512 load16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline __m512 load16(const float* p, __mmask16 m) {
  return _mm512_maskz_loadu_ps(m, p);
}
inline __m512 load16(const uint16_t* p, __mmask16 m) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}

template <typename W>
void mv_float(const void* w, size_t rb, int64_t cols, const float* x, float* y, int64_t r0,
              int64_t r1) {
  const int pf = prefetch_distance(std::is_same_v<W, float> ? dtype::f32 : dtype::f16);
  const __mmask16 tail = static_cast<__mmask16>((1u << (cols % 16)) - 1);
  for (int64_t r = r0; r < r1; ++r) {
    const W* wr = reinterpret_cast<const W*>(row_at(w, rb, r));
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 64 <= cols; i += 64) {
      if (pf) {
        prefetch(wr + i, pf);
        if (sizeof(W) == 4) prefetch(wr + i + 32, pf);
      }
      a0 = _mm512_fmadd_ps(load16(wr + i), load16(x + i), a0);
      a1 = _mm512_fmadd_ps(load16(wr + i + 16), load16(x + i + 16), a1);
      a2 = _mm512_fmadd_ps(load16(wr + i + 32), load16(x + i + 32), a2);
      a3 = _mm512_fmadd_ps(load16(wr + i + 48), load16(x + i + 48), a3);
    }
    for (; i + 16 <= cols; i += 16) a0 = _mm512_fmadd_ps(load16(wr + i), load16(x + i), a0);
    if (i < cols) a1 = _mm512_fmadd_ps(load16(wr + i, tail), load16(x + i, tail), a1);
    y[r] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  }
}

// Lane sums of 16 vectors at once (45 instructions instead of 16 reductions of 8): lane p of the
// result is the sum of v[tree_slot(p)]. Every vector's lanes are added in the same order whatever
// its slot and neighbours, so an output does not depend on which tile computed it.
constexpr int tree_slot(int p) {
  return (p % 4) * 4 + p / 4;
}
inline __m512 hsum16(const __m512* v) {
  __m512 s[8], t[4], u[2];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i)
    s[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44),
                         _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xEE));
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i)
    t[i] = _mm512_add_ps(_mm512_shuffle_f32x4(s[2 * i], s[2 * i + 1], 0x88),
                         _mm512_shuffle_f32x4(s[2 * i], s[2 * i + 1], 0xDD));
#pragma GCC unroll 2
  for (int i = 0; i < 2; ++i)
    u[i] = _mm512_add_ps(_mm512_shuffle_ps(t[2 * i], t[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(t[2 * i], t[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  return _mm512_add_ps(_mm512_shuffle_ps(u[0], u[1], _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_ps(u[0], u[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

// R rows x T tokens, lanes along the row: each weight vector is loaded (and converted) once for
// T tokens.
template <typename W, int R, int T>
void mm_float_tile(const void* w, size_t rb, int64_t cols, const float* x, float* y, int64_t ldy,
                   int64_t r, int t0) {
  const W* wr[R];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) wr[i] = reinterpret_cast<const W*>(row_at(w, rb, r + i));
  const float* xt[T];
#pragma GCC unroll 16
  for (int j = 0; j < T; ++j) xt[j] = x + (t0 + j) * cols;
  __m512 acc[R][T];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 16
    for (int j = 0; j < T; ++j) acc[i][j] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= cols; k += 16) {
    __m512 wv[R];
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) wv[i] = load16(wr[i] + k);
#pragma GCC unroll 16
    for (int j = 0; j < T; ++j) {
      const __m512 xv = _mm512_loadu_ps(xt[j] + k);
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) acc[i][j] = _mm512_fmadd_ps(wv[i], xv, acc[i][j]);
    }
  }
  if (k < cols) {
    const __mmask16 m = static_cast<__mmask16>((1u << (cols - k)) - 1);
    __m512 wv[R];
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) wv[i] = load16(wr[i] + k, m);
#pragma GCC unroll 16
    for (int j = 0; j < T; ++j) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, xt[j] + k);
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) acc[i][j] = _mm512_fmadd_ps(wv[i], xv, acc[i][j]);
    }
  }
  // Outputs p = j * R + i, 16 per transpose-add tree (output b + q in slot tree_slot(q)).
  constexpr int n = R * T;
  float out[(n + 15) / 16 * 16];
#pragma GCC unroll 4
  for (int b = 0; b < n; b += 16) {
    __m512 v[16];
#pragma GCC unroll 16
    for (int q = 0; q < 16; ++q) {
      const int p = b + q;
      v[tree_slot(q)] = p < n ? acc[p % R][p / R] : _mm512_setzero_ps();
    }
    _mm512_storeu_ps(out + b, hsum16(v));
  }
#pragma GCC unroll 16
  for (int j = 0; j < T; ++j)
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) y[(t0 + j) * ldy + r + i] = out[j * R + i];
}

template <typename W, int R>
void mm_float_rows(const void* w, size_t rb, int64_t cols, const float* x, int n_tok, float* y,
                   int64_t ldy, int64_t r) {
  int t = 0;
  for (; t + 6 <= n_tok; t += 6) mm_float_tile<W, R, 6>(w, rb, cols, x, y, ldy, r, t);
  switch (n_tok - t) {
    case 5:
      mm_float_tile<W, R, 5>(w, rb, cols, x, y, ldy, r, t);
      break;
    case 4:
      mm_float_tile<W, R, 4>(w, rb, cols, x, y, ldy, r, t);
      break;
    case 3:
      mm_float_tile<W, R, 3>(w, rb, cols, x, y, ldy, r, t);
      break;
    case 2:
      mm_float_tile<W, R, 2>(w, rb, cols, x, y, ldy, r, t);
      break;
    case 1:
      mm_float_tile<W, R, 1>(w, rb, cols, x, y, ldy, r, t);
      break;
    default:
      break;
  }
}

template <typename W>
void mm_float(const void* w, size_t rb, int64_t cols, const float* x, int n_tok, float* y,
              int64_t ldy, int64_t r0, int64_t r1) {
  // Blocks of tokens whose activations (~512 KiB) stay in L2 while every row of [r0, r1) passes
  // over them; otherwise each group of 4 rows streams all n_tok activation rows from L3.
  // Results do not depend on the blocking (each output is one tile's sum).
  const int64_t per_block = 512 * 1024 / (cols * static_cast<int64_t>(sizeof(float))) / 6 * 6;
  const int64_t tb = per_block > 6 ? per_block : 6;
  for (int64_t t0 = 0; t0 < n_tok; t0 += tb) {
    const int nt = static_cast<int>(n_tok - t0 < tb ? n_tok - t0 : tb);
    const float* xb = x + t0 * cols;
    float* yb = y + t0 * ldy;
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) mm_float_rows<W, 4>(w, rb, cols, xb, nt, yb, ldy, r);
    for (; r < r1; ++r) mm_float_rows<W, 1>(w, rb, cols, xb, nt, yb, ldy, r);
  }
}

// ---- quantized matrix-vector kernels (ymm + VNNI)
// ------------------------------------------------ The AVX2 kernels' structure (see
// kernels_avx2.cpp) with vpdpbusd for u8 x s8 dot products and vpdpwssd for the scaled s16 sums of
// the K-quants: fewer multiply-pipe instructions per block, which is what bounds these loops on
// Zen 4. zmm would not help: the limit is execution ports, not instruction count.

inline float hsum(__m256 v) {
  __m128 r = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  r = _mm_add_ps(r, _mm_movehl_ps(r, r));
  r = _mm_add_ss(r, _mm_movehdup_ps(r));
  return _mm_cvtss_f32(r);
}

inline float hsum128(__m128 r) {
  r = _mm_add_ps(r, _mm_movehl_ps(r, r));
  r = _mm_add_ss(r, _mm_movehdup_ps(r));
  return _mm_cvtss_f32(r);
}

inline float h2f(uint16_t h) {
  return _cvtsh_ss(h);
}

inline __m256i dot_u8s8(__m256i u, __m256i s) {
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
}

// The F16 scales of 8 consecutive blocks, 18 (Q4_0) or 34 (Q8_0) bytes apart, gathered from
// whole-vector loads of the blocks by two-table word permutes (AVX512BW) instead of 8 scalar loads.
alignas(64) constexpr uint16_t k_scale_words[3][32] = {
    {0, 9, 18, 27, 36, 45, 54, 63},  // Q4_0: words 9j of bytes [0, 128)
    {0, 17, 34, 51},                 // Q8_0 blocks 0-3: words 17j of bytes [0, 128)
    {0, 0, 0, 0, 0, 17, 34, 51}};    // Q8_0 blocks 4-7 (lanes 4-7, from byte 136)
inline __m512i scale_idx(int k) {
  return _mm512_load_si512(k_scale_words[k]);
}
inline __m256 scales8_q4_0(const void* b) {
  const auto* p = static_cast<const uint8_t*>(b);
  const __m512i g =
      _mm512_permutex2var_epi16(_mm512_loadu_si512(p), scale_idx(0), _mm512_loadu_si512(p + 64));
  return _mm256_cvtph_ps(_mm512_castsi512_si128(g));
}
inline __m256 scales8_q8_0(const void* b) {
  const auto* p = static_cast<const uint8_t*>(b);
  const __m512i lo =
      _mm512_permutex2var_epi16(_mm512_loadu_si512(p), scale_idx(1), _mm512_loadu_si512(p + 64));
  const __m512i hi = _mm512_permutex2var_epi16(_mm512_loadu_si512(p + 136), scale_idx(2),
                                               _mm512_loadu_si512(p + 200));
  return _mm256_cvtph_ps(_mm512_castsi512_si128(_mm512_mask_blend_epi16(0xF0, lo, hi)));
}

inline __m256i pair_index(int j) {
  return _mm256_setr_epi32(j, j, j, j, j + 1, j + 1, j + 1, j + 1);
}

// Two Q4_0 blocks against q8_32p activations (lanes 0-3: block 0, 4-7: block 1).
inline __m256i q4_0_pair(const block_q4_0* b, const int8_t* xq) {
  const __m256i raw = _mm256_inserti128_si256(
      _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b[0].qs))),
      _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[1].qs)), 1);
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i lo = _mm256_and_si256(raw, m4),
                hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
  const __m256i p = dot_u8s8(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq)));
  return _mm256_dpbusd_epi32(p, hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + 32)));
}

void mv_q4_0(const void* w, size_t rb, int64_t cols, const q8_row& x, float* y, int64_t r0,
             int64_t r1) {
  const int64_t nb = cols / 32;
  const int pf = prefetch_distance(dtype::q4_0);
  for (int64_t r = r0; r < r1; ++r) {
    const auto* b = reinterpret_cast<const block_q4_0*>(row_at(w, rb, r));
    __m256 a[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                   _mm256_setzero_ps()};
    __m256 off = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= nb; i += 8) {
      if (pf) {
        prefetch(b + i, pf);
        prefetch(b + i, pf + 64);
        prefetch(b + i, pf + 128);
      }
      const __m256 s = _mm256_mul_ps(scales8_q4_0(b + i), _mm256_loadu_ps(x.d + i));
      off = _mm256_fmadd_ps(
          s, _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.sum + i))),
          off);
#pragma GCC unroll 4
      for (int j = 0; j < 8; j += 2) {
        const __m256 sc = _mm256_permutevar8x32_ps(s, pair_index(j));
        a[j / 2] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q4_0_pair(b + i + j, x.q + 32 * (i + j))), sc,
                                   a[j / 2]);
      }
    }
    float tail = 0;
    for (; i + 2 <= nb; i += 2) {
      const float s0 = h2f(b[i].d) * x.d[i], s1 = h2f(b[i + 1].d) * x.d[i + 1];
      const __m256 sc = _mm256_set_m128(_mm_set1_ps(s1), _mm_set1_ps(s0));
      a[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q4_0_pair(b + i, x.q + 32 * i)), sc, a[0]);
      tail -= 8.0f * (s0 * static_cast<float>(x.sum[i]) + s1 * static_cast<float>(x.sum[i + 1]));
    }
    if (i < nb) {  // an odd last block, in natural order
      const __m256i raw =
          _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].qs)));
      const __m256i lv =
          _mm256_and_si256(_mm256_srlv_epi32(raw, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4)),
                           _mm256_set1_epi8(0x0F));
      const __m256i p =
          dot_u8s8(lv, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q + 32 * i)));
      const float s0 = h2f(b[i].d) * x.d[i];
      a[1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(s0), a[1]);
      tail -= 8.0f * s0 * static_cast<float>(x.sum[i]);
    }
    y[r] = hsum(_mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]))) -
           8.0f * hsum(off) + tail;
  }
}

void mv_q8_0(const void* w, size_t rb, int64_t cols, const q8_row& x, float* y, int64_t r0,
             int64_t r1) {
  const int64_t nb = cols / 32;
  const int pf = prefetch_distance(dtype::q8_0);
  for (int64_t r = r0; r < r1; ++r) {
    const auto* b = reinterpret_cast<const block_q8_0*>(row_at(w, rb, r));
    __m256 a[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                   _mm256_setzero_ps()};
    int64_t i = 0;
    for (; i + 8 <= nb; i += 8) {
      if (pf) {
        for (int l = 0; l < 5; ++l) prefetch(b + i, pf + 64 * l);
      }
      const __m256 s = _mm256_mul_ps(scales8_q8_0(b + i), _mm256_loadu_ps(x.d + i));
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) {
        const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i + j].qs));
        const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q + 32 * (i + j)));
        const __m256i p = dot_u8s8(_mm256_abs_epi8(wv), _mm256_sign_epi8(xv, wv));
        a[j % 4] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),
                                   _mm256_permutevar8x32_ps(s, _mm256_set1_epi32(j)), a[j % 4]);
      }
    }
    for (; i < nb; ++i) {
      const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qs));
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q + 32 * i));
      const __m256i p = dot_u8s8(_mm256_abs_epi8(wv), _mm256_sign_epi8(xv, wv));
      a[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(h2f(b[i].d) * x.d[i]), a[0]);
    }
    y[r] = hsum(_mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])));
  }
}

inline __m256i shuffle_k(int k) {
  const int lo = 2 * k, hi = 2 * k + 1;
  return _mm256_set1_epi32(lo | hi << 8 | lo << 16 | hi << 24);
}

// The 8 six-bit scales and 8 mins of a Q4_K/Q5_K block (12 packed bytes) as bytes [scales 0-7,
// mins 0-7], in vector registers: word k of the result is ((A_k >> sa_k) & ma_k) | ((B_k >> 2) &
// mb_k), with A = words (0, 2, 1, 2) and B = words (-, 0, -, 1) of the packed bytes. Reads 16
// bytes from s (the 12 scale bytes and 4 bytes of qs).
inline __m128i scales_mins_k4(const uint8_t* s) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s));
  const __m128i a = _mm_shuffle_epi32(v, _MM_SHUFFLE(2, 1, 2, 0));
  const __m128i b = _mm_shuffle_epi32(v, _MM_SHUFFLE(1, 0, 0, 0));
  const __m128i lo = _mm_and_si128(_mm_srlv_epi32(a, _mm_setr_epi32(0, 0, 0, 4)),
                                   _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
  const __m128i hi =
      _mm_and_si128(_mm_srli_epi32(b, 2), _mm_setr_epi32(0, 0x30303030, 0, 0x30303030));
  return _mm_or_si128(lo, hi);
}

template <bool five>
void mv_q45_k(const void* w, size_t rb, int64_t cols, const q8_row& x, float* y, int64_t r0,
              int64_t r1) {
  using block = std::conditional_t<five, block_q5_k, block_q4_k>;
  const int64_t nb = cols / qk_k;
  const int pf = prefetch_distance(five ? dtype::q5_k : dtype::q4_k);
  const __m256i m4 = _mm256_set1_epi8(0x0F), m16 = _mm256_set1_epi8(0x10);
  for (int64_t r = r0; r < r1; ++r) {
    const auto* b = reinterpret_cast<const block*>(row_at(w, rb, r));
    __m256 acc = _mm256_setzero_ps();
    __m128 acc_m = _mm_setzero_ps();
    for (int64_t i = 0; i < nb; ++i) {
      if (pf) {
        prefetch(b + i, pf);
        prefetch(b + i, pf + 64);
        prefetch(b + i, pf + 128);
      }
      const float d = h2f(b[i].d) * x.d[i];
      const float dmin = -h2f(b[i].dmin) * x.d[i];
      const __m256i mins_scales = _mm256_cvtepu8_epi16(scales_mins_k4(b[i].scales));
      const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.bsums + 16 * i));
      const __m128i bs32 =
          _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
      const __m128i prod = _mm_madd_epi16(_mm256_extracti128_si256(mins_scales, 1), bs32);
      acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m);
      const __m128i sc128 = _mm256_castsi256_si128(mins_scales);
      const __m256i scales = _mm256_set_m128i(sc128, sc128);
      const uint8_t* q = b[i].qs;
      const int8_t* xq = x.q + qk_k * i;
      __m256i hbits = _mm256_setzero_si256();
      if constexpr (five) hbits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qh));
      __m256i s0 = _mm256_setzero_si256(), s1 = s0;
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 32 * j));
        __m256i ql = _mm256_and_si256(bits, m4);
        __m256i qh = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
        if constexpr (five) {
          const __m256i h0 = 2 * j <= 4 ? _mm256_slli_epi16(hbits, 4 - 2 * j)
                                        : _mm256_srli_epi16(hbits, 2 * j - 4);
          const __m256i h1 = 2 * j + 1 <= 4 ? _mm256_slli_epi16(hbits, 3 - 2 * j)
                                            : _mm256_srli_epi16(hbits, 2 * j - 3);
          ql = _mm256_or_si256(ql, _mm256_and_si256(h0, m16));
          qh = _mm256_or_si256(qh, _mm256_and_si256(h1, m16));
        }
        const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + 64 * j));
        const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + 64 * j + 32));
        s0 = _mm256_dpwssd_epi32(s0, _mm256_shuffle_epi8(scales, shuffle_k(2 * j)),
                                 _mm256_maddubs_epi16(ql, x0));
        s1 = _mm256_dpwssd_epi32(s1, _mm256_shuffle_epi8(scales, shuffle_k(2 * j + 1)),
                                 _mm256_maddubs_epi16(qh, x1));
      }
      acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(_mm256_add_epi32(s0, s1)), acc);
    }
    y[r] = hsum(acc) + hsum128(acc_m);
  }
}

inline __m128i scale_pair(__m128i s, int a) {
  const __m128i m = _mm_set_epi64x(0x0101010101010101LL * (a + 1), 0x0101010101010101LL * a);
  return _mm_shuffle_epi8(s, m);
}

void mv_q6_k(const void* w, size_t rb, int64_t cols, const q8_row& x, float* y, int64_t r0,
             int64_t r1) {
  const int64_t nb = cols / qk_k;
  const int pf = prefetch_distance(dtype::q6_k);
  const __m256i m4 = _mm256_set1_epi8(0x0F), m48 = _mm256_set1_epi8(0x30);
  for (int64_t r = r0; r < r1; ++r) {
    const auto* b = reinterpret_cast<const block_q6_k*>(row_at(w, rb, r));
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; ++i) {
      if (pf) {
        for (int l = 0; l < 4; ++l) prefetch(b + i, pf + 64 * l);
      }
      const float d = h2f(b[i].d) * x.d[i];
      const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].scales));
      const __m256i off =
          _mm256_madd_epi16(_mm256_cvtepi8_epi16(sc8),
                            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.bsums + 16 * i)));
      const uint8_t* ql = b[i].ql;
      const uint8_t* qh = b[i].qh;
      const int8_t* xq = x.q + qk_k * i;
      __m256i s0 = _mm256_setzero_si256(), s1 = s0;
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        const __m256i l0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 64 * h));
        const __m256i l1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 64 * h + 32));
        const __m256i hb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qh + 32 * h));
        __m256i q[4];
        q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4),
                               _mm256_and_si256(_mm256_slli_epi16(hb, 4), m48));
        q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4),
                               _mm256_and_si256(_mm256_slli_epi16(hb, 2), m48));
        q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                               _mm256_and_si256(hb, m48));
        q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                               _mm256_and_si256(_mm256_srli_epi16(hb, 2), m48));
#pragma GCC unroll 4
        for (int k = 0; k < 4; ++k) {
          const __m256i xv =
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + 128 * h + 32 * k));
          const __m256i sc = _mm256_cvtepi8_epi16(scale_pair(sc8, 8 * h + 2 * k));
          if (k % 2 == 0)
            s0 = _mm256_dpwssd_epi32(s0, _mm256_maddubs_epi16(q[k], xv), sc);
          else
            s1 = _mm256_dpwssd_epi32(s1, _mm256_maddubs_epi16(q[k], xv), sc);
        }
      }
      const __m256i sumi = _mm256_sub_epi32(_mm256_add_epi32(s0, s1), _mm256_slli_epi32(off, 5));
      acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    y[r] = hsum(acc);
  }
}

// ---- gemm on repacked tiles ---------------------------------------------------------------------
// A 16-row tile against NT tokens of one activation group: zmm lanes are the 16 rows; vpdpbusd
// multiplies 4 unsigned levels per row by 4 broadcast activation bytes of a token.

template <int NT, int B>
void gemm_tile(const uint8_t* tile, int64_t nsb, const int8_t* xq, const float* xd, const float* xs,
               int db, float* y, int64_t ldy, __mmask16 rows) {
  constexpr int g = gemm_group, ksteps = B / 4;
  constexpr size_t sbs = B * 16 + 128;
  __m512 acc[NT];
#pragma GCC unroll 16
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t s = 0; s < nsb; ++s) {
    const uint8_t* tp = tile + s * sbs;
    const int8_t* xk = xq + s * ksteps * 4 * g;
    __m512i isum[NT];
#pragma GCC unroll 16
    for (int t = 0; t < NT; ++t) isum[t] = _mm512_setzero_si512();
#pragma GCC unroll 16
    for (int k = 0; k < ksteps; ++k) {
      const __m512i wv = _mm512_load_si512(tp + k * 64);
#pragma GCC unroll 16
      for (int t = 0; t < NT; ++t) {
        int32_t xv;
        std::memcpy(&xv, xk + k * 4 * g + t * 4, 4);
        isum[t] = _mm512_dpbusd_epi32(isum[t], wv, _mm512_set1_epi32(xv));
      }
    }
    const __m512 dw = _mm512_load_ps(tp + B * 16);
    const __m512 mw = _mm512_load_ps(tp + B * 16 + 64);
    const float* xds = xd + (s * B / db) * g;
    const float* xss = xs + s * g;
#pragma GCC unroll 16
    for (int t = 0; t < NT; ++t) {
      const __m512 sc = _mm512_mul_ps(dw, _mm512_set1_ps(xds[t]));
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), sc, acc[t]);
      acc[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(xss[t]), acc[t]);
    }
  }
#pragma GCC unroll 16
  for (int t = 0; t < NT; ++t) _mm512_mask_storeu_ps(y + t * ldy, rows, acc[t]);
}

// One repacked tile (nr <= 16 rows from row tr) against every activation group.
template <dtype T>
void gemm_tiles(const uint8_t* tile, int nr, int64_t cols, const q8_groups& x, float* y,
                int64_t ldy, int64_t tr) {
  constexpr int B = gemm_sub_block(T);
  constexpr int g = gemm_group;
  const int64_t nsb = cols / B;
  const int n_groups = (x.n_tok + g - 1) / g;
  const __mmask16 rows = static_cast<__mmask16>((1u << nr) - 1);
  for (int gi = 0; gi < n_groups; ++gi) {
    const int8_t* xq = x.q + gi * cols * g;
    const float* xd = x.d + gi * (cols / x.db) * g;
    const float* xs = x.s + gi * nsb * g;
    float* yt = y + gi * g * ldy + tr;
    switch (x.n_tok - gi * g < g ? x.n_tok - gi * g : g) {
      case 8:
        gemm_tile<8, B>(tile, nsb, xq, xd, xs, x.db, yt, ldy, rows);
        break;
      case 7:
        gemm_tile<7, B>(tile, nsb, xq, xd, xs, x.db, yt, ldy, rows);
        break;
      case 6:
        gemm_tile<6, B>(tile, nsb, xq, xd, xs, x.db, yt, ldy, rows);
        break;
      case 5:
        gemm_tile<5, B>(tile, nsb, xq, xd, xs, x.db, yt, ldy, rows);
        break;
      case 4:
        gemm_tile<4, B>(tile, nsb, xq, xd, xs, x.db, yt, ldy, rows);
        break;
      case 3:
        gemm_tile<3, B>(tile, nsb, xq, xd, xs, x.db, yt, ldy, rows);
        break;
      case 2:
        gemm_tile<2, B>(tile, nsb, xq, xd, xs, x.db, yt, ldy, rows);
        break;
      default:
        gemm_tile<1, B>(tile, nsb, xq, xd, xs, x.db, yt, ldy, rows);
        break;
    }
  }
}

template <dtype T>
void mm_q8(const void* w, size_t rb, int64_t cols, const q8_groups& x, float* y, int64_t ldy,
           int64_t r0, int64_t r1, void* scratch) {
  auto* tile = static_cast<uint8_t*>(scratch);
  for (int64_t tr = r0; tr < r1; tr += gemm_rows) {
    const int nr = static_cast<int>(r1 - tr < gemm_rows ? r1 - tr : gemm_rows);
    repack_gemm_tile_avx2(T, w, rb, tr, nr, cols, false, tile);
    gemm_tiles<T>(tile, nr, cols, x, y, ldy, tr);
  }
}

kernel_table make_table() {
  kernel_table k = avx2_kernel_table();  // the AVX2 kernels run here too; replace the faster ones
  k.level = kernel_level::avx512;
  k.f32.mv_f32 = mv_float<float>;
  k.f32.mm_f32 = mm_float<float>;
  k.f16.mv_f32 = mv_float<uint16_t>;
  k.f16.mm_f32 = mm_float<uint16_t>;
  k.q4_0.mv_q8 = mv_q4_0;
  k.q8_0.mv_q8 = mv_q8_0;
  k.q4_k.mv_q8 = mv_q45_k<false>;
  k.q5_k.mv_q8 = mv_q45_k<true>;
  k.q6_k.mv_q8 = mv_q6_k;
  k.q4_0.mm_q8 = mm_q8<dtype::q4_0>;
  k.q8_0.mm_q8 = mm_q8<dtype::q8_0>;
  k.q4_k.mm_q8 = mm_q8<dtype::q4_k>;
  k.q5_k.mm_q8 = mm_q8<dtype::q5_k>;
  k.q6_k.mm_q8 = mm_q8<dtype::q6_k>;
  k.q4_k.mv_x16 = mv_q4_k_x16_avx512;
  k.q4_k.mm_x16 = mm_q4_k_x16_avx512;
  k.q5_k.mv_x16 = cpu_supports_gfni() ? mv_q5_k_x16_avx512_gfni : mv_q5_k_x16_avx512;
  k.q5_k.mm_x16 = mm_q5_k_x16_avx512;
  k.q6_k.mv_x16 = cpu_supports_gfni() ? mv_q6_k_x16_avx512_gfni : mv_q6_k_x16_avx512;
  k.q6_k.mm_x16 = mm_q6_k_x16_avx512;
  k.q4_0.mv_x16 = mv_q4_0_x16_avx512;
  k.q4_0.mm_x16 = mm_q4_0_x16_avx512;
  k.q8_0.mv_x16 = mv_q8_0_x16_avx512;
  k.q8_0.mm_x16 = mm_q8_0_x16_avx512;
  k.f16.mv_x16 = mv_f16_x16_avx512;
  k.f16.mm_x16 = mm_f16_x16_avx512;
  k.f16.x16_act = act_format::q16_64;
  k.quant_q16 = quant_q16_64_avx512;
  k.quant_group_q16 = quant_group_q16_avx512;
  for (type_kernels* t : {&k.q4_0, &k.q8_0, &k.q4_k, &k.q5_k, &k.q6_k}) t->x16_act = t->mv_act;
  return k;
}

}  // namespace

void gemm_tile_avx512(dtype t, const uint8_t* tile, int nr, int64_t cols, const q8_groups& x,
                      float* y, int64_t ldy, int64_t r0) {
  switch (t) {
    case dtype::q4_0:
      return gemm_tiles<dtype::q4_0>(tile, nr, cols, x, y, ldy, r0);
    case dtype::q8_0:
      return gemm_tiles<dtype::q8_0>(tile, nr, cols, x, y, ldy, r0);
    case dtype::q4_k:
      return gemm_tiles<dtype::q4_k>(tile, nr, cols, x, y, ldy, r0);
    case dtype::q5_k:
      return gemm_tiles<dtype::q5_k>(tile, nr, cols, x, y, ldy, r0);
    case dtype::q6_k:
      return gemm_tiles<dtype::q6_k>(tile, nr, cols, x, y, ldy, r0);
    default:
      throw std::logic_error("gemm_tile_avx512: no gemm for this type");
  }
}

const kernel_table& avx512_kernel_table() {
  static const kernel_table t = make_table();
  return t;
}

}  // namespace tandem::cpu
