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

#include "cpu/kernels.h"
#include "cpu/quant.h"

namespace tandem::cpu {
namespace {

inline const uint8_t* row_at(const void* w, size_t rb, int64_t r) {
  return static_cast<const uint8_t*>(w) + static_cast<size_t>(r) * rb;
}

inline void prefetch(const void* p, int dist) {
  _mm_prefetch(static_cast<const char*>(p) + dist, _MM_HINT_T0);
}

// ---- float weights ------------------------------------------------------------------------------

inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline __m512 load16(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
inline __m512 load16(const uint16_t* p, __mmask16 m) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}

template <typename W>
void mv_float(const void* w, size_t rb, int64_t cols, const float* x, float* y, int64_t r0,
              int64_t r1) {
  const int pf = prefetch_distance();
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
  #pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
    #pragma GCC unroll 16
    for (int j = 0; j < T; ++j) y[(t0 + j) * ldy + r + i] = _mm512_reduce_add_ps(acc[i][j]);
}

template <typename W, int R>
void mm_float_rows(const void* w, size_t rb, int64_t cols, const float* x, int n_tok, float* y,
                   int64_t ldy, int64_t r) {
  int t = 0;
  for (; t + 6 <= n_tok; t += 6) mm_float_tile<W, R, 6>(w, rb, cols, x, y, ldy, r, t);
  switch (n_tok - t) {
    case 5: mm_float_tile<W, R, 5>(w, rb, cols, x, y, ldy, r, t); break;
    case 4: mm_float_tile<W, R, 4>(w, rb, cols, x, y, ldy, r, t); break;
    case 3: mm_float_tile<W, R, 3>(w, rb, cols, x, y, ldy, r, t); break;
    case 2: mm_float_tile<W, R, 2>(w, rb, cols, x, y, ldy, r, t); break;
    case 1: mm_float_tile<W, R, 1>(w, rb, cols, x, y, ldy, r, t); break;
    default: break;
  }
}

template <typename W>
void mm_float(const void* w, size_t rb, int64_t cols, const float* x, int n_tok, float* y,
              int64_t ldy, int64_t r0, int64_t r1) {
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) mm_float_rows<W, 4>(w, rb, cols, x, n_tok, y, ldy, r);
  for (; r < r1; ++r) mm_float_rows<W, 1>(w, rb, cols, x, n_tok, y, ldy, r);
}

// ---- gemm on repacked tiles ---------------------------------------------------------------------
// A 16-row tile against NT tokens of one activation group: zmm lanes are the 16 rows; vpdpbusd
// multiplies 4 unsigned levels per row by 4 broadcast activation bytes of a token.

template <int NT, int B>
void gemm_tile(const uint8_t* tile, int64_t nsb, const int8_t* xq, const float* xd,
               const float* xs, float* y, int64_t ldy, __mmask16 rows) {
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
    const float* xds = xd + (s * B / 32) * g;
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

template <dtype T>
void mm_q8(const void* w, size_t rb, int64_t cols, const q8_groups& x, float* y, int64_t ldy,
           int64_t r0, int64_t r1, void* scratch) {
  constexpr int B = gemm_sub_block(T);
  constexpr int g = gemm_group;
  const int64_t nsb = cols / B;
  auto* tile = static_cast<uint8_t*>(scratch);
  const int n_groups = (x.n_tok + g - 1) / g;
  for (int64_t tr = r0; tr < r1; tr += gemm_rows) {
    const int nr = static_cast<int>(r1 - tr < gemm_rows ? r1 - tr : gemm_rows);
    const __mmask16 rows = static_cast<__mmask16>((1u << nr) - 1);
    repack_gemm_tile_avx2(T, w, rb, tr, nr, cols, false, tile);
    for (int gi = 0; gi < n_groups; ++gi) {
      const int8_t* xq = x.q + gi * cols * g;
      const float* xd = x.d + gi * (cols / 32) * g;
      const float* xs = x.s + gi * nsb * g;
      float* yt = y + gi * g * ldy + tr;
      switch (x.n_tok - gi * g < g ? x.n_tok - gi * g : g) {
        case 8: gemm_tile<8, B>(tile, nsb, xq, xd, xs, yt, ldy, rows); break;
        case 7: gemm_tile<7, B>(tile, nsb, xq, xd, xs, yt, ldy, rows); break;
        case 6: gemm_tile<6, B>(tile, nsb, xq, xd, xs, yt, ldy, rows); break;
        case 5: gemm_tile<5, B>(tile, nsb, xq, xd, xs, yt, ldy, rows); break;
        case 4: gemm_tile<4, B>(tile, nsb, xq, xd, xs, yt, ldy, rows); break;
        case 3: gemm_tile<3, B>(tile, nsb, xq, xd, xs, yt, ldy, rows); break;
        case 2: gemm_tile<2, B>(tile, nsb, xq, xd, xs, yt, ldy, rows); break;
        default: gemm_tile<1, B>(tile, nsb, xq, xd, xs, yt, ldy, rows); break;
      }
    }
  }
}

kernel_table make_table() {
  kernel_table k = avx2_kernel_table();  // the AVX2 kernels run here too; replace the faster ones
  k.level = kernel_level::avx512;
  k.f32.mv_f32 = mv_float<float>;
  k.f32.mm_f32 = mm_float<float>;
  k.f16.mv_f32 = mv_float<uint16_t>;
  k.f16.mm_f32 = mm_float<uint16_t>;
  k.q4_0.mm_q8 = mm_q8<dtype::q4_0>;
  k.q8_0.mm_q8 = mm_q8<dtype::q8_0>;
  k.q4_k.mm_q8 = mm_q8<dtype::q4_k>;
  k.q5_k.mm_q8 = mm_q8<dtype::q5_k>;
  k.q6_k.mm_q8 = mm_q8<dtype::q6_k>;
  return k;
}

}  // namespace

const kernel_table& avx512_kernel_table() {
  static const kernel_table t = make_table();
  return t;
}

}  // namespace tandem::cpu
