// AVX2 + FMA + F16C kernels (compiled with -mavx2 -mfma -mf16c; only called when CPUID says so).
// Everything here has internal linkage so no AVX2 code can leak into the rest of the binary
// through an inline function the linker picks from this file.
//
// Integer dot products use maddubs (u8 x s8 -> s16 pairs) and madd (-> s32). The unsigned operand
// is always the weight level (Q4/Q5/Q6 levels are small, so pair sums cannot saturate); Q8_0
// moves the signs onto the activations (the "sign trick") instead.
#include <immintrin.h>

#include <cstring>
#include <stdexcept>
#include <type_traits>

#include "cpu/kernels.h"
#include "runtime/blocks.h"

namespace tandem::cpu {
namespace {

// ---- helpers ------------------------------------------------------------------------------------

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

// 8 x s32: sums of 4 products of unsigned u and signed s bytes.
inline __m256i dot_u8s8(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

// 8 x s32: sums of 4 products of signed bytes (neither may be -128 in x; w may).
inline __m256i dot_s8s8(__m256i w, __m256i x) {
  return dot_u8s8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
}

inline const uint8_t* row_at(const void* w, size_t rb, int64_t r) {
  return static_cast<const uint8_t*>(w) + static_cast<size_t>(r) * rb;
}

inline void prefetch(const void* p, int dist) {
  _mm_prefetch(static_cast<const char*>(p) + dist, _MM_HINT_T0);
}

// ---- activation quantizers (bit-identical to the scalar ones) -----------------------------------

inline __m256 abs_ps(__m256 v) {
  return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
}

inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

inline int hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
  return _mm_cvtsi128_si32(s);
}

inline __m256i round_clamp(__m256 v) {
  const __m256i q = _mm256_cvtps_epi32(v);
  return _mm256_max_epi32(_mm256_set1_epi32(-127), _mm256_min_epi32(_mm256_set1_epi32(127), q));
}

// Quantizes 32 floats with inverse scale id into 32 bytes (in order); returns the 4 x 8 s32 levels.
inline __m256i quant32(const float* x, float id, __m256i* lv) {
  const __m256 vid = _mm256_set1_ps(id);
#pragma GCC unroll 16
  for (int k = 0; k < 4; ++k) lv[k] = round_clamp(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), vid));
  const __m256i a = _mm256_packs_epi32(lv[0], lv[1]), b = _mm256_packs_epi32(lv[2], lv[3]);
  return _mm256_permutevar8x32_epi32(_mm256_packs_epi16(a, b),
                                     _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

inline float amax_n(const float* x, int n) {
  __m256 m = _mm256_setzero_ps();
  for (int i = 0; i < n; i += 8) m = _mm256_max_ps(m, abs_ps(_mm256_loadu_ps(x + i)));
  return hmax(m);
}

// Q8_0 rule (32 elements): inverse scale 127 / amax, scale amax / 127 rounded to fp16.
inline float scale32(const float* x, float* id) {
  const float amax = amax_n(x, 32);
  *id = amax != 0.0f ? 127.0f / amax : 0.0f;
  return _cvtsh_ss(_cvtss_sh(amax / 127.0f, 0));
}

// Q8_K rule (256 elements): inverse scale -127 / max, max the first element of largest
// magnitude; scale 1 / inverse scale.
inline float scale256(const float* x, float* id) {
  const float amax = amax_n(x, 256);
  *id = 0.0f;
  if (amax == 0.0f) return 0.0f;
  const __m256 va = _mm256_set1_ps(amax);
  float max = amax;
  for (int i = 0; i < 256; i += 8) {
    const int m = _mm256_movemask_ps(_mm256_cmp_ps(abs_ps(_mm256_loadu_ps(x + i)), va, _CMP_EQ_OQ));
    if (m) {
      max = x[i + __builtin_ctz(static_cast<unsigned>(m))];
      break;
    }
  }
  *id = -127.0f / max;
  return 1 / *id;
}

void quant_q8_32(const float* x, int64_t cols, int8_t* q, float* d, int32_t* sum) {
  __m256i lv[4];
  for (int64_t b = 0; b < cols / 32; ++b) {
    float id;
    d[b] = scale32(x + 32 * b, &id);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 32 * b), quant32(x + 32 * b, id, lv));
    sum[b] =
        hsum_i32(_mm256_add_epi32(_mm256_add_epi32(lv[0], lv[1]), _mm256_add_epi32(lv[2], lv[3])));
  }
}

void quant_q8_256(const float* x, int64_t cols, int8_t* q, float* d, int16_t* bsums) {
  __m256i lv[4];
  for (int64_t b = 0; b < cols / 256; ++b) {
    float id;
    d[b] = scale256(x + 256 * b, &id);
    for (int j = 0; j < 8; ++j) {
      const int64_t o = 256 * b + 32 * j;
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + o), quant32(x + o, id, lv));
      bsums[16 * b + 2 * j] = static_cast<int16_t>(hsum_i32(_mm256_add_epi32(lv[0], lv[1])));
      bsums[16 * b + 2 * j + 1] = static_cast<int16_t>(hsum_i32(_mm256_add_epi32(lv[2], lv[3])));
    }
  }
}

void quant_group(const float* x, int n, int64_t cols, int sb, int db, int8_t* q, float* d,
                 float* s) {
  constexpr int g = gemm_group;
  std::memset(q, 0, static_cast<size_t>(cols) * g);
  std::memset(d, 0, sizeof(float) * static_cast<size_t>(cols / db * g));
  std::memset(s, 0, sizeof(float) * static_cast<size_t>(cols / sb * g));
  __m256i lv[4];
  alignas(32) int8_t tmp[32];
  for (int t = 0; t < n; ++t) {
    const float* xt = x + t * cols;
    for (int64_t b = 0; b < cols / db; ++b) {
      float id;
      const float dd = db == 32 ? scale32(xt + 32 * b, &id) : scale256(xt + 256 * b, &id);
      d[b * g + t] = dd;
      for (int64_t c = b * db / 32; c < (b + 1) * db / 32; ++c) {
        _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), quant32(xt + 32 * c, id, lv));
        for (int k = 0; k < 8; ++k) std::memcpy(q + (c * 8 + k) * 4 * g + t * 4, tmp + 4 * k, 4);
        if (sb == 32) {
          const __m256i a =
              _mm256_add_epi32(_mm256_add_epi32(lv[0], lv[1]), _mm256_add_epi32(lv[2], lv[3]));
          s[c * g + t] = dd * static_cast<float>(hsum_i32(a));
        } else {
          s[(2 * c) * g + t] = dd * static_cast<float>(hsum_i32(_mm256_add_epi32(lv[0], lv[1])));
          s[(2 * c + 1) * g + t] =
              dd * static_cast<float>(hsum_i32(_mm256_add_epi32(lv[2], lv[3])));
        }
      }
    }
  }
}

// ---- float weights ------------------------------------------------------------------------------

inline __m256 load8(const float* p) {
  return _mm256_loadu_ps(p);
}
inline __m256 load8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline float load1(const float* p) {
  return *p;
}
inline float load1(const uint16_t* p) {
  return h2f(*p);
}

template <typename W>
void mv_float(const void* w, size_t rb, int64_t cols, const float* x, float* y, int64_t r0,
              int64_t r1) {
  const int pf = prefetch_distance(std::is_same_v<W, float> ? dtype::f32 : dtype::f16);
  for (int64_t r = r0; r < r1; ++r) {
    const W* wr = reinterpret_cast<const W*>(row_at(w, rb, r));
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 32 <= cols; i += 32) {
      if (pf) prefetch(wr + i, pf);
      a0 = _mm256_fmadd_ps(load8(wr + i), load8(x + i), a0);
      a1 = _mm256_fmadd_ps(load8(wr + i + 8), load8(x + i + 8), a1);
      a2 = _mm256_fmadd_ps(load8(wr + i + 16), load8(x + i + 16), a2);
      a3 = _mm256_fmadd_ps(load8(wr + i + 24), load8(x + i + 24), a3);
    }
    for (; i + 8 <= cols; i += 8) a0 = _mm256_fmadd_ps(load8(wr + i), load8(x + i), a0);
    float acc = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < cols; ++i) acc += load1(wr + i) * x[i];
    y[r] = acc;
  }
}

// Lane sums of 8 vectors at once (21 instructions instead of 8 reductions of 7): lane p of the
// result is the sum of v[tree_slot8(p)], each vector's lanes added in the order hsum uses, so the
// results are those of hsum whatever the slot.
constexpr int tree_slot8(int p) {
  return (p % 4) * 2 + p / 4;
}
inline __m256 hsum8(const __m256* v) {
  __m256 s[4], t[2];
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i)
    s[i] = _mm256_add_ps(_mm256_permute2f128_ps(v[2 * i], v[2 * i + 1], 0x20),
                         _mm256_permute2f128_ps(v[2 * i], v[2 * i + 1], 0x31));
#pragma GCC unroll 2
  for (int i = 0; i < 2; ++i)
    t[i] = _mm256_add_ps(_mm256_shuffle_ps(s[2 * i], s[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm256_shuffle_ps(s[2 * i], s[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  return _mm256_add_ps(_mm256_shuffle_ps(t[0], t[1], _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm256_shuffle_ps(t[0], t[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

// R rows x T tokens: each weight vector is loaded (and converted) once for T tokens.
template <typename W, int R, int T>
void mm_float_tile(const void* w, size_t rb, int64_t cols, const float* x, float* y, int64_t ldy,
                   int64_t r, int t0) {
  const W* wr[R];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) wr[i] = reinterpret_cast<const W*>(row_at(w, rb, r + i));
  const float* xt[T];
#pragma GCC unroll 16
  for (int j = 0; j < T; ++j) xt[j] = x + (t0 + j) * cols;
  __m256 acc[R][T];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 16
    for (int j = 0; j < T; ++j) acc[i][j] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= cols; k += 8) {
    __m256 wv[R];
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) wv[i] = load8(wr[i] + k);
#pragma GCC unroll 16
    for (int j = 0; j < T; ++j) {
      const __m256 xv = _mm256_loadu_ps(xt[j] + k);
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) acc[i][j] = _mm256_fmadd_ps(wv[i], xv, acc[i][j]);
    }
  }
  // Outputs p = j * R + i, 8 per transpose-add tree (output b + q in slot tree_slot8(q)).
  constexpr int n = R * T;
  float out[(n + 7) / 8 * 8];
#pragma GCC unroll 4
  for (int b = 0; b < n; b += 8) {
    __m256 v[8];
#pragma GCC unroll 8
    for (int q = 0; q < 8; ++q) {
      const int p = b + q;
      v[tree_slot8(q)] = p < n ? acc[p % R][p / R] : _mm256_setzero_ps();
    }
    _mm256_storeu_ps(out + b, hsum8(v));
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
    for (int j = 0; j < T; ++j) {
      float s = out[j * R + i];
      for (int64_t kk = k; kk < cols; ++kk) s += load1(wr[i] + kk) * xt[j][kk];
      y[(t0 + j) * ldy + r + i] = s;
    }
  }
}

template <typename W, int R>
void mm_float_rows(const void* w, size_t rb, int64_t cols, const float* x, int n_tok, float* y,
                   int64_t ldy, int64_t r) {
  int t = 0;
  for (; t + 4 <= n_tok; t += 4) mm_float_tile<W, R, 4>(w, rb, cols, x, y, ldy, r, t);
  switch (n_tok - t) {
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
  // over them; otherwise each group of 2 rows streams all n_tok activation rows from L3.
  // Results do not depend on the blocking (each output is one tile's sum).
  const int64_t per_block = 512 * 1024 / (cols * static_cast<int64_t>(sizeof(float))) / 4 * 4;
  const int64_t tb = per_block > 4 ? per_block : 4;
  for (int64_t t0 = 0; t0 < n_tok; t0 += tb) {
    const int nt = static_cast<int>(n_tok - t0 < tb ? n_tok - t0 : tb);
    const float* xb = x + t0 * cols;
    float* yb = y + t0 * ldy;
    int64_t r = r0;
    for (; r + 2 <= r1; r += 2) mm_float_rows<W, 2>(w, rb, cols, xb, nt, yb, ldy, r);
    if (r < r1) mm_float_rows<W, 1>(w, rb, cols, xb, nt, yb, ldy, r);
  }
}

// ---- Q4_0 / Q8_0 x q8_32 ------------------------------------------------------------------------
// These loops are bound by vector instructions per block (Zen 4 issues at most ~4 per cycle, and
// integer multiplies share two pipes with FMA), so everything per block that is not the dot
// product itself is moved out: eight blocks' fp16 scales are gathered with scalar loads into one
// vector and multiplied by the activation scales once; Q4_0's -8 offset is one multiply-add per
// eight blocks against the activation block sums; Q4_0 pairs blocks (q8_32p activations) so one
// madd / convert / multiply-add serves two blocks. Four accumulators: the multiply-add latency
// must not bound the loop.

// fp16 scales d of 8 consecutive blocks (block size bs bytes, d first) as floats.
inline __m256 scales8(const uint8_t* p, size_t bs) {
  uint64_t lo = 0, hi = 0;
  for (int j = 0; j < 4; ++j) {
    uint16_t a, b;
    std::memcpy(&a, p + j * bs, 2);
    std::memcpy(&b, p + (j + 4) * bs, 2);
    lo |= static_cast<uint64_t>(a) << (16 * j);
    hi |= static_cast<uint64_t>(b) << (16 * j);
  }
  return _mm256_cvtph_ps(_mm_set_epi64x(static_cast<int64_t>(hi), static_cast<int64_t>(lo)));
}

// The 32 levels (0..15) of a Q4_0 block: low nibbles, then high nibbles.
inline __m256i q4_0_levels(const block_q4_0& b) {
  const __m256i raw =
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs)));
  return _mm256_and_si256(_mm256_srlv_epi32(raw, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4)),
                          _mm256_set1_epi8(0x0F));
}

// Two Q4_0 blocks against q8_32p activations: the low nibbles of both blocks meet the first
// halves of both activation blocks in one vector, the high nibbles the second halves, so one
// madd / convert / multiply-add serves two blocks. Lanes 0-3 hold block i, 4-7 block i + 1.
inline __m256i q4_0_pair(const block_q4_0* b, const int8_t* xq) {
  const __m256i raw = _mm256_inserti128_si256(
      _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b[0].qs))),
      _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[1].qs)), 1);
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i lo = _mm256_and_si256(raw, m4),
                hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
  const __m256i xl = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq));
  const __m256i xh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + 32));
  // s16 sums of two products of levels <= 15 and |x| <= 127, twice: <= 7620, no saturation.
  const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(lo, xl), _mm256_maddubs_epi16(hi, xh));
  return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

inline __m256 q4_0_block(const block_q4_0& b, const int8_t* xq, float xd, int32_t xsum,
                         __m256 acc) {
  const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq));
  // Sum over the 8 lanes of (p - xsum) is dot(q, x) - 8 * sum(x): the -8 offset of Q4_0.
  const __m256i p = _mm256_sub_epi32(dot_u8s8(q4_0_levels(b), x), _mm256_set1_epi32(xsum));
  return _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(h2f(b.d) * xd), acc);
}

// Activations in q8_32p layout.
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
      // dw * dx of the 8 blocks; the -8 offset against their activation sums.
      const __m256 s =
          _mm256_mul_ps(scales8(reinterpret_cast<const uint8_t*>(b + i), sizeof(block_q4_0)),
                        _mm256_loadu_ps(x.d + i));
      off = _mm256_fmadd_ps(
          s, _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.sum + i))),
          off);
#pragma GCC unroll 4
      for (int j = 0; j < 8; j += 2) {
        const __m256 sc =
            _mm256_permutevar8x32_ps(s, _mm256_setr_epi32(j, j, j, j, j + 1, j + 1, j + 1, j + 1));
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
    if (i < nb) a[1] = q4_0_block(b[i], x.q + 32 * i, x.d[i], x.sum[i], a[1]);  // odd last block
    y[r] = hsum(_mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]))) -
           8.0f * hsum(off) + tail;
  }
}

inline __m256 q8_0_block(const block_q8_0& b, const int8_t* xq, float xd, __m256 acc) {
  const __m256i wq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
  const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq));
  return _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_s8s8(wq, x)), _mm256_set1_ps(h2f(b.d) * xd), acc);
}

void mv_q8_0(const void* w, size_t rb, int64_t cols, const q8_row& x, float* y, int64_t r0,
             int64_t r1) {
  const int64_t nb = cols / 32;
  const int pf = prefetch_distance(dtype::q8_0);
  alignas(32) float sc[8];
  for (int64_t r = r0; r < r1; ++r) {
    const auto* b = reinterpret_cast<const block_q8_0*>(row_at(w, rb, r));
    __m256 a[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                   _mm256_setzero_ps()};
    int64_t i = 0;
    for (; i + 8 <= nb; i += 8) {
      if (pf) {
        for (int l = 0; l < 5; ++l) prefetch(b + i, pf + 64 * l);
      }
      _mm256_store_ps(
          sc, _mm256_mul_ps(scales8(reinterpret_cast<const uint8_t*>(b + i), sizeof(block_q8_0)),
                            _mm256_loadu_ps(x.d + i)));
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) {
        const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i + j].qs));
        const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q + 32 * (i + j)));
        a[j % 4] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_s8s8(wv, xv)),
                                   _mm256_broadcast_ss(sc + j), a[j % 4]);
      }
    }
    for (; i < nb; ++i) a[0] = q8_0_block(b[i], x.q + 32 * i, x.d[i], a[0]);
    y[r] = hsum(_mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])));
  }
}

// ---- K-quants x q8_256 --------------------------------------------------------------------------

// Shuffle that broadcasts the 16-bit element k of each 128-bit lane.
inline __m256i shuffle_k(int k) {
  const int lo = 2 * k, hi = 2 * k + 1;
  const int v = lo | hi << 8 | lo << 16 | hi << 24;
  return _mm256_set1_epi32(v);
}

// Unpacks the 12 scale bytes of a Q4_K / Q5_K block: sc[0..7] in bytes 0-7, m[0..7] in 8-15.
inline __m128i scales_mins_k4(const uint8_t* s) {
  constexpr uint32_t kmask1 = 0x3f3f3f3f, kmask2 = 0x0f0f0f0f, kmask3 = 0x03030303;
  uint32_t u[4];
  std::memcpy(u, s, 12);
  u[3] = ((u[2] >> 4) & kmask2) | (((u[1] >> 6) & kmask3) << 4);
  const uint32_t uaux = u[1] & kmask1;
  u[1] = (u[2] & kmask2) | (((u[0] >> 6) & kmask3) << 4);
  u[2] = uaux;
  u[0] &= kmask1;
  return _mm_set_epi32(static_cast<int>(u[3]), static_cast<int>(u[2]), static_cast<int>(u[1]),
                       static_cast<int>(u[0]));
}

// Q4_K and Q5_K: per super-block, integer sum_j sc_j dot_j (madd with the broadcast scale does the
// multiply), and the mins against the activation block sums.
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
      __m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 16
      for (int j = 0; j < 4; ++j) {
        const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 32 * j));
        __m256i ql = _mm256_and_si256(bits, m4);
        __m256i qh = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
        if constexpr (five) {
          // Bit 2j (2j + 1) of each qh byte becomes bit 4 of the level.
          const __m256i h0 = 2 * j <= 4 ? _mm256_slli_epi16(hbits, 4 - 2 * j)
                                        : _mm256_srli_epi16(hbits, 2 * j - 4);
          const __m256i h1 = 2 * j + 1 <= 4 ? _mm256_slli_epi16(hbits, 3 - 2 * j)
                                            : _mm256_srli_epi16(hbits, 2 * j - 3);
          ql = _mm256_or_si256(ql, _mm256_and_si256(h0, m16));
          qh = _mm256_or_si256(qh, _mm256_and_si256(h1, m16));
        }
        const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + 64 * j));
        const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + 64 * j + 32));
        const __m256i p0 = _mm256_madd_epi16(_mm256_shuffle_epi8(scales, shuffle_k(2 * j)),
                                             _mm256_maddubs_epi16(ql, x0));
        const __m256i p1 = _mm256_madd_epi16(_mm256_shuffle_epi8(scales, shuffle_k(2 * j + 1)),
                                             _mm256_maddubs_epi16(qh, x1));
        sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
      }
      acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    y[r] = hsum(acc) + hsum128(acc_m);
  }
}

// Broadcasts scale bytes a and a + 1 of a 16-byte vector over 8 bytes each.
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
        prefetch(b + i, pf);
        prefetch(b + i, pf + 64);
        prefetch(b + i, pf + 128);
        prefetch(b + i, pf + 192);
      }
      const float d = h2f(b[i].d) * x.d[i];
      const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].scales));
      // -32 offset: sum_j sc_j * (sum of x over sub-block j).
      const __m256i off =
          _mm256_madd_epi16(_mm256_cvtepi8_epi16(sc8),
                            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.bsums + 16 * i)));
      const uint8_t* ql = b[i].ql;
      const uint8_t* qh = b[i].qh;
      const int8_t* xq = x.q + qk_k * i;
      __m256i sumi = _mm256_setzero_si256();
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
#pragma GCC unroll 16
        for (int k = 0; k < 4; ++k) {
          const __m256i xv =
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + 128 * h + 32 * k));
          const __m256i sc = _mm256_cvtepi8_epi16(scale_pair(sc8, 8 * h + 2 * k));
          sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(q[k], xv), sc));
        }
      }
      sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(off, 5));
      acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    y[r] = hsum(acc);
  }
}

// ---- repacking weight tiles for the gemm
// ---------------------------------------------------------- Same bytes as repack_gemm_tile
// (kernels.cpp), which the tests hold it to. Levels: one 32-element chunk of a row decoded into a
// ymm of bytes, 8 rows at a time transposed 4 bytes at a time (an 8 x 8 dword transpose) so each
// store is one k-step of 8 rows. Scales: a scalar pass per row.

template <dtype T>
inline __m256i decode_chunk(const uint8_t* row, int64_t c, bool q8_signed) {
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  if constexpr (T == dtype::q4_0) {
    const auto& b = reinterpret_cast<const block_q4_0*>(row)[c];
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), m4);
  } else if constexpr (T == dtype::q8_0) {
    const auto& b = reinterpret_cast<const block_q8_0*>(row)[c];
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
    return q8_signed ? q : _mm256_xor_si256(q, _mm256_set1_epi8(static_cast<char>(0x80)));
  } else if constexpr (T == dtype::q4_k || T == dtype::q5_k) {
    using block = std::conditional_t<T == dtype::q5_k, block_q5_k, block_q4_k>;
    const auto& b = reinterpret_cast<const block*>(row)[c / 8];
    const int j = static_cast<int>(c % 8);
    const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs + 32 * (j / 2)));
    __m256i q = _mm256_and_si256(j % 2 ? _mm256_srli_epi16(bits, 4) : bits, m4);
    if constexpr (T == dtype::q5_k) {
      const __m256i hb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qh));
      const __m128i cnt = _mm_cvtsi32_si128(j <= 4 ? 4 - j : j - 4);
      const __m256i h = j <= 4 ? _mm256_sll_epi16(hb, cnt) : _mm256_srl_epi16(hb, cnt);
      q = _mm256_or_si256(q, _mm256_and_si256(h, _mm256_set1_epi8(0x10)));
    }
    return q;
  } else {  // q6_k
    const auto& b = reinterpret_cast<const block_q6_k*>(row)[c / 8];
    const int h = static_cast<int>(c % 8) / 4, quarter = static_cast<int>(c % 4);
    const __m256i l =
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.ql + 64 * h + 32 * (quarter & 1)));
    const __m256i hb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qh + 32 * h));
    const __m256i lo = _mm256_and_si256(quarter < 2 ? l : _mm256_srli_epi16(l, 4), m4);
    // High bits 2q, 2q + 1 of each qh byte go to bits 4, 5.
    const __m128i cnt = _mm_cvtsi32_si128(quarter < 2 ? 4 - 2 * quarter : 2 * quarter - 4);
    const __m256i hi = quarter < 2 ? _mm256_sll_epi16(hb, cnt) : _mm256_srl_epi16(hb, cnt);
    return _mm256_or_si256(lo, _mm256_and_si256(hi, _mm256_set1_epi8(0x30)));
  }
}

inline void transpose8x8(__m256i v[8]) {
  __m256i t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_epi32(v[i], v[i + 1]);
    t[i + 1] = _mm256_unpackhi_epi32(v[i], v[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
    u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
    u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
    u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  for (int i = 0; i < 4; ++i) {
    v[i] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x20);
    v[i + 4] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x31);
  }
}

// dw, mw of every sub-block of one row into the tile (row index r of 16).
template <dtype T>
void repack_scales(const uint8_t* row, int64_t cols, int r, bool q8_signed, uint8_t* tile) {
  constexpr int B = gemm_sub_block(T);
  constexpr size_t sbs = B * 16 + 128;
  auto put = [&](int64_t s, float dw, float mw) {
    std::memcpy(tile + s * sbs + B * 16 + 4 * r, &dw, 4);
    std::memcpy(tile + s * sbs + B * 16 + 64 + 4 * r, &mw, 4);
  };
  if constexpr (T == dtype::q4_0 || T == dtype::q8_0) {
    const size_t bs = T == dtype::q4_0 ? sizeof(block_q4_0) : sizeof(block_q8_0);
    const float off = T == dtype::q4_0 ? -8.0f : (q8_signed ? 0.0f : -128.0f);
    for (int64_t s = 0; s < cols / 32; ++s) {
      uint16_t h;
      std::memcpy(&h, row + s * bs, 2);
      const float dw = h2f(h);
      put(s, dw, off * dw);
    }
  } else if constexpr (T == dtype::q4_k || T == dtype::q5_k) {
    using block = std::conditional_t<T == dtype::q5_k, block_q5_k, block_q4_k>;
    const auto* b = reinterpret_cast<const block*>(row);
    for (int64_t i = 0; i < cols / qk_k; ++i) {
      alignas(16) uint8_t sm[16];
      _mm_store_si128(reinterpret_cast<__m128i*>(sm), scales_mins_k4(b[i].scales));
      const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
      for (int j = 0; j < 8; ++j) put(8 * i + j, d * sm[j], -(dmin * sm[8 + j]));
    }
  } else {
    const auto* b = reinterpret_cast<const block_q6_k*>(row);
    for (int64_t i = 0; i < cols / qk_k; ++i) {
      const float d = h2f(b[i].d);
      for (int j = 0; j < 16; ++j) {
        const float dw = d * static_cast<float>(b[i].scales[j]);
        put(16 * i + j, dw, -32.0f * dw);
      }
    }
  }
}

template <dtype T>
void repack_tile(const void* w, size_t rb, int64_t r0, int nr, int64_t cols, bool q8_signed,
                 uint8_t* tile) {
  constexpr int B = gemm_sub_block(T);
  constexpr size_t sbs = B * 16 + 128;
  for (int r = 0; r < gemm_rows; ++r) {
    if (r < nr) {
      repack_scales<T>(row_at(w, rb, r0 + r), cols, r, q8_signed, tile);
    } else {
      for (int64_t s = 0; s < cols / B; ++s) {
        std::memset(tile + s * sbs + B * 16 + 4 * r, 0, 4);
        std::memset(tile + s * sbs + B * 16 + 64 + 4 * r, 0, 4);
      }
    }
  }
  for (int half = 0; half < 2; ++half) {
    const uint8_t* rows[8];
    for (int i = 0; i < 8; ++i) {
      const int r = 8 * half + i;
      rows[i] = r < nr ? row_at(w, rb, r0 + r) : nullptr;
    }
    for (int64_t c = 0; c < cols / 32; ++c) {
      __m256i v[8];
      for (int i = 0; i < 8; ++i)
        v[i] = rows[i] ? decode_chunk<T>(rows[i], c, q8_signed) : _mm256_setzero_si256();
      transpose8x8(v);
      for (int k = 0; k < 8; ++k) {
        // k-step k of chunk c: sub-block c (B = 32) or 2c + k / 4 (B = 16).
        uint8_t* dst =
            B == 32 ? tile + c * sbs + k * 64 : tile + (2 * c + k / 4) * sbs + (k % 4) * 64;
        _mm256_store_si256(reinterpret_cast<__m256i*>(dst + half * 32), v[k]);
      }
    }
  }
}

// ---- gemm on repacked tiles ---------------------------------------------------------------------
// One 8-row half of a 16-row tile against NT tokens of one activation group: lanes are rows, one
// 4-byte broadcast of a token's activations feeds 8 rows. Levels accumulate in s16 for ACC16
// k-steps (no saturation for the level range of the type), then widen to s32 by madd.

// Not inlined: inlined into gemm_tile's four cases, GCC schedules it worse (6-8% slower prompts).
template <int NT, int B, int ACC16, bool SIGNED>
[[gnu::noinline]] void gemm_half(const uint8_t* tile, int64_t nsb, int half, const int8_t* xq, const float* xd,
               const float* xs, int db, int tok0, float* out /* NT x 8 */) {
  constexpr int g = gemm_group, ksteps = B / 4;
  constexpr size_t sbs = B * 16 + 128;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[NT];
#pragma GCC unroll 16
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t s = 0; s < nsb; ++s) {
    const uint8_t* tp = tile + s * sbs + half * 32;
    const int8_t* xk = xq + s * ksteps * 4 * g + tok0 * 4;
    __m256i i32[NT];
#pragma GCC unroll 16
    for (int t = 0; t < NT; ++t) i32[t] = _mm256_setzero_si256();
      // The k loops stay rolled: unrolled, GCC re-associates the s16 sums into trees that spill.
#pragma GCC unroll 1
    for (int kk = 0; kk < ksteps; kk += ACC16) {
      [[maybe_unused]] __m256i i16[NT];
#pragma GCC unroll 16
      for (int t = 0; t < NT; ++t) i16[t] = _mm256_setzero_si256();
#pragma GCC unroll 1
      for (int k = kk; k < kk + ACC16; ++k) {
        const __m256i wv = _mm256_load_si256(reinterpret_cast<const __m256i*>(tp + k * 64));
        if constexpr (SIGNED) {
          const __m256i aw = _mm256_sign_epi8(wv, wv);
#pragma GCC unroll 16
          for (int t = 0; t < NT; ++t) {
            int32_t xv;
            std::memcpy(&xv, xk + k * 4 * g + t * 4, 4);
            const __m256i sx = _mm256_sign_epi8(_mm256_set1_epi32(xv), wv);
            i32[t] =
                _mm256_add_epi32(i32[t], _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), ones));
          }
        } else {
#pragma GCC unroll 16
          for (int t = 0; t < NT; ++t) {
            int32_t xv;
            std::memcpy(&xv, xk + k * 4 * g + t * 4, 4);
            i16[t] = _mm256_add_epi16(i16[t], _mm256_maddubs_epi16(wv, _mm256_set1_epi32(xv)));
          }
        }
      }
      if constexpr (!SIGNED) {
#pragma GCC unroll 16
        for (int t = 0; t < NT; ++t)
          i32[t] = _mm256_add_epi32(i32[t], _mm256_madd_epi16(i16[t], ones));
      }
    }
    const __m256 dw = _mm256_load_ps(reinterpret_cast<const float*>(tp + B * 16));
    const __m256 mw = _mm256_load_ps(reinterpret_cast<const float*>(tp + B * 16 + 64));
    const float* xds = xd + (s * B / db) * g + tok0;
    const float* xss = xs + s * g + tok0;
#pragma GCC unroll 16
    for (int t = 0; t < NT; ++t) {
      const __m256 sc = _mm256_mul_ps(dw, _mm256_set1_ps(xds[t]));
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i32[t]), sc, acc[t]);
      if constexpr (!SIGNED) acc[t] = _mm256_fmadd_ps(mw, _mm256_set1_ps(xss[t]), acc[t]);
    }
  }
#pragma GCC unroll 16
  for (int t = 0; t < NT; ++t) _mm256_storeu_ps(out + 8 * t, acc[t]);
}

// One repacked tile (nr <= 16 rows from row tr) against every activation group.
template <dtype T>
void gemm_tile(const uint8_t* tile, int nr, int64_t cols, const q8_groups& x, float* y,
               int64_t ldy, int64_t tr) {
  constexpr bool sgn = T == dtype::q8_0;
  constexpr int B = gemm_sub_block(T);
  constexpr int acc16 = T == dtype::q4_0 || T == dtype::q4_k ? 8 : T == dtype::q5_k ? 4 : 2;
  constexpr int g = gemm_group;
  const int64_t nsb = cols / B;
  const int n_groups = (x.n_tok + g - 1) / g;
  alignas(32) float out[4 * 8];
  for (int gi = 0; gi < n_groups; ++gi) {
    const int8_t* xq = x.q + gi * cols * g;
    const float* xd = x.d + gi * (cols / x.db) * g;
    const float* xs = x.s + gi * nsb * g;
    const int nt_group = x.n_tok - gi * g < g ? x.n_tok - gi * g : g;
    for (int half = 0; half * 8 < nr; ++half) {
      for (int tok0 = 0; tok0 < nt_group; tok0 += 4) {
        const int nt = nt_group - tok0 < 4 ? nt_group - tok0 : 4;
        switch (nt) {
          case 4:
            gemm_half<4, B, acc16, sgn>(tile, nsb, half, xq, xd, xs, x.db, tok0, out);
            break;
          case 3:
            gemm_half<3, B, acc16, sgn>(tile, nsb, half, xq, xd, xs, x.db, tok0, out);
            break;
          case 2:
            gemm_half<2, B, acc16, sgn>(tile, nsb, half, xq, xd, xs, x.db, tok0, out);
            break;
          default:
            gemm_half<1, B, acc16, sgn>(tile, nsb, half, xq, xd, xs, x.db, tok0, out);
            break;
        }
        const int rows_here = nr - half * 8 < 8 ? nr - half * 8 : 8;
        for (int t = 0; t < nt; ++t) {
          float* yt = y + (gi * g + tok0 + t) * ldy + tr + half * 8;
          for (int i = 0; i < rows_here; ++i) yt[i] = out[8 * t + i];
        }
      }
    }
  }
}

template <dtype T>
void mm_q8(const void* w, size_t rb, int64_t cols, const q8_groups& x, float* y, int64_t ldy,
           int64_t r0, int64_t r1, void* scratch) {
  auto* tile = static_cast<uint8_t*>(scratch);
  for (int64_t tr = r0; tr < r1; tr += gemm_rows) {
    const int nr = static_cast<int>(r1 - tr < gemm_rows ? r1 - tr : gemm_rows);
    repack_tile<T>(w, rb, tr, nr, cols, T == dtype::q8_0, tile);
    gemm_tile<T>(tile, nr, cols, x, y, ldy, tr);
  }
}

kernel_table make_table() {
  kernel_table k;
  k.level = kernel_level::avx2;
  k.f32 = {act_format::f32, mv_float<float>, mm_float<float>, nullptr, nullptr, 32};
  k.f16 = {act_format::f32, mv_float<uint16_t>, mm_float<uint16_t>, nullptr, nullptr, 32};
  k.q4_0 = {act_format::q8_32p, nullptr, nullptr, mv_q4_0, mm_q8<dtype::q4_0>, 32, 32};
  k.q8_0 = {act_format::q8_32, nullptr, nullptr, mv_q8_0, mm_q8<dtype::q8_0>, 32, 32};
  k.q4_k = {act_format::q8_256, nullptr, nullptr, mv_q45_k<false>, mm_q8<dtype::q4_k>, 32, 256};
  k.q5_k = {act_format::q8_256, nullptr, nullptr, mv_q45_k<true>, mm_q8<dtype::q5_k>, 32, 256};
  k.q6_k = {act_format::q8_256, nullptr, nullptr, mv_q6_k, mm_q8<dtype::q6_k>, 16, 256};
  k.quant_q8_32 = quant_q8_32;
  k.quant_q8_256 = quant_q8_256;
  k.quant_group = quant_group;
  k.f16.mv_x16 = mv_f16_x16_avx2;
  k.f16.mm_x16 = mm_f16_x16_avx2;
  k.f16.x16_act = act_format::q16_64;
  k.q4_0.mv_x16 = mv_q4_0_x16_avx2;
  k.q4_0.mm_x16 = mm_q4_0_x16_avx2;
  k.q8_0.mv_x16 = mv_q8_0_x16_avx2;
  k.q8_0.mm_x16 = mm_q8_0_x16_avx2;
  k.q4_k.mv_x16 = mv_q4_k_x16_avx2;
  k.q4_k.mm_x16 = mm_q4_k_x16_avx2;
  k.q5_k.mv_x16 = mv_q5_k_x16_avx2;
  k.q5_k.mm_x16 = mm_q5_k_x16_avx2;
  k.q6_k.mv_x16 = mv_q6_k_x16_avx2;
  k.q6_k.mm_x16 = mm_q6_k_x16_avx2;
  for (type_kernels* t : {&k.q4_0, &k.q8_0, &k.q4_k, &k.q5_k, &k.q6_k}) t->x16_act = t->mv_act;
  k.quant_q16 = quant_q16_64_avx2;
  k.quant_group_q16 = quant_group_q16_avx2;
  k.gemm_min_tokens = 4;
  return k;
}

}  // namespace

void repack_gemm_tile_avx2(dtype t, const void* w, size_t rb, int64_t r0, int nr, int64_t cols,
                           bool q8_signed, uint8_t* tile) {
  switch (t) {
    case dtype::q4_0:
      return repack_tile<dtype::q4_0>(w, rb, r0, nr, cols, q8_signed, tile);
    case dtype::q8_0:
      return repack_tile<dtype::q8_0>(w, rb, r0, nr, cols, q8_signed, tile);
    case dtype::q4_k:
      return repack_tile<dtype::q4_k>(w, rb, r0, nr, cols, q8_signed, tile);
    case dtype::q5_k:
      return repack_tile<dtype::q5_k>(w, rb, r0, nr, cols, q8_signed, tile);
    case dtype::q6_k:
      return repack_tile<dtype::q6_k>(w, rb, r0, nr, cols, q8_signed, tile);
    default:
      return repack_gemm_tile(t, w, rb, r0, nr, cols, q8_signed, tile);
  }
}

void gemm_tile_avx2(dtype t, const uint8_t* tile, int nr, int64_t cols, const q8_groups& x,
                    float* y, int64_t ldy, int64_t r0) {
  switch (t) {
    case dtype::q4_0:
      return gemm_tile<dtype::q4_0>(tile, nr, cols, x, y, ldy, r0);
    case dtype::q8_0:
      return gemm_tile<dtype::q8_0>(tile, nr, cols, x, y, ldy, r0);
    case dtype::q4_k:
      return gemm_tile<dtype::q4_k>(tile, nr, cols, x, y, ldy, r0);
    case dtype::q5_k:
      return gemm_tile<dtype::q5_k>(tile, nr, cols, x, y, ldy, r0);
    case dtype::q6_k:
      return gemm_tile<dtype::q6_k>(tile, nr, cols, x, y, ldy, r0);
    default:
      throw std::logic_error("gemm_tile_avx2: no gemm for this type");
  }
}

const kernel_table& avx2_kernel_table() {
  static const kernel_table t = make_table();
  return t;
}

}  // namespace tandem::cpu
