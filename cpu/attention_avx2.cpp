// AVX2 + F16C attention, with a vectorized exp for the softmax. A single decode token of heads
// with their own KV heads reads the F16 cache directly (up to 8 heads side by side, scores four
// positions at a time with one reduction tree, rows prefetched ahead, V summed in registers 64
// dimensions per pass). When several query vectors read one KV head (prompt tokens, or the query heads of a
// GQA group), the KV head is converted to F32 once, K transposed, and blocks of 4 queries run as
// small matrix products (see block()).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "cpu/attention.h"
#include "cpu/simd_math_avx2.h"

namespace tandem::cpu::detail {

namespace {
using simd::hsum;
using simd::hsum4;

// Rows of the F16 cache (decode of a head with its own KV head).
struct f16_rows {
  const uint16_t* base;
  int64_t stride;  // elements between positions
  int head_dim;
  const uint16_t* row(int p) const { return base + stride * p; }
  static __m256 load(const uint16_t* r, int d) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r + d)));
  }
  // Every cache line of row p (a head's row spans head_dim * 2 bytes).
  void prefetch(int p) const {  // every line the row touches, aligned or not
    const auto a = reinterpret_cast<uintptr_t>(base + stride * p);
    for (uintptr_t l = a & ~uintptr_t{63}; l < a + 2 * static_cast<uintptr_t>(head_dim); l += 64)
      _mm_prefetch(reinterpret_cast<const char*>(l), _MM_HINT_T0);
  }
};

// o[0 .. 8 * NV) = sum_p w[p] * V row p [d0 .. d0 + 8 * NV).
template <int NV, typename R>
void weighted_sum(const R& v, const float* w, int n, int d0, float* o) {
  __m256 acc[NV];
  for (int j = 0; j < NV; ++j) acc[j] = _mm256_setzero_ps();
  for (int p = 0; p < n; ++p) {
    v.prefetch(p + 4);
    const auto* vr = v.row(p);
    const __m256 a = _mm256_broadcast_ss(w + p);
    for (int j = 0; j < NV; ++j) acc[j] = _mm256_fmadd_ps(a, R::load(vr, d0 + 8 * j), acc[j]);
  }
  for (int j = 0; j < NV; ++j) _mm256_storeu_ps(o + d0 + 8 * j, acc[j]);
}

// s[h][p] = scale * dot(q[h], K[h] row p) for p < n, of up to max_side heads side by side (a block
// of 4 positions of each in turn), and mx[h] = max_p s[h][p]. V's rows are prefetched along with
// K's, so that they are in cache for weighted_sum. Side by side, the heads' rows stream together:
// one head after another read one short stream at a time, each waiting for the memory latency
// until the prefetchers had found it.
constexpr int max_side = 8;
template <typename R>
void scores_side(const R* k, const R* v, const float* const* q, int nh, int head_dim, float scale,
                 int n, float* const* s, float* mx) {
  const __m256 vs = _mm256_set1_ps(scale);
  __m128 m4[max_side];
  for (int h = 0; h < nh; ++h) {
    m4[h] = _mm_set1_ps(-INFINITY);
    for (int a = 0; a < 8 && a < n; ++a) k[h].prefetch(a);
  }
  int p = 0;
  for (; p + 4 <= n; p += 4) {
    for (int h = 0; h < nh; ++h) {
      for (int a = 8; a < 12; ++a) k[h].prefetch(p + a);
      for (int a = 0; a < 4; ++a) v[h].prefetch(p + a);
      const auto *k0 = k[h].row(p), *k1 = k[h].row(p + 1), *k2 = k[h].row(p + 2),
                 *k3 = k[h].row(p + 3);
      const float* qh = q[h];
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (int d = 0; d < head_dim; d += 8) {
        const __m256 qv = _mm256_loadu_ps(qh + d);
        a0 = _mm256_fmadd_ps(qv, R::load(k0, d), a0);
        a1 = _mm256_fmadd_ps(qv, R::load(k1, d), a1);
        a2 = _mm256_fmadd_ps(qv, R::load(k2, d), a2);
        a3 = _mm256_fmadd_ps(qv, R::load(k3, d), a3);
      }
      const __m128 r = _mm_mul_ps(hsum4(a0, a1, a2, a3), _mm256_castps256_ps128(vs));
      _mm_storeu_ps(s[h] + p, r);
      m4[h] = _mm_max_ps(m4[h], r);
    }
  }
  for (int h = 0; h < nh; ++h) {
    float m = simd::hmax(m4[h]);
    for (int t = p; t < n; ++t) {
      v[h].prefetch(t);
      const auto* kr = k[h].row(t);
      __m256 a = _mm256_setzero_ps();
      for (int d = 0; d < head_dim; d += 8)
        a = _mm256_fmadd_ps(_mm256_loadu_ps(q[h] + d), R::load(kr, d), a);
      s[h][t] = hsum(a) * scale;
      m = s[h][t] > m ? s[h][t] : m;
    }
    mx[h] = m;
  }
}

// o = softmax(att) V over positions [0, n), att holding the scores and their maximum mx.
template <typename R>
void softmax_v(const R& v, int head_dim, int n, float mx, float* att, float* o) {
  const float inv = 1.0f / softmax_exp(att, n, mx);
  for (int p = 0; p < n; ++p) att[p] *= inv;
  int d = 0;
  for (; d + 64 <= head_dim; d += 64) weighted_sum<8>(v, att, n, d, o);
  for (; d + 32 <= head_dim; d += 32) weighted_sum<4>(v, att, n, d, o);
  for (; d < head_dim; d += 8) weighted_sum<1>(v, att, n, d, o);
}

// ---- blocks of query vectors against a staged KV head ---------------------------------------

// r[j] (8 floats each) becomes column j of the 8 x 8 matrix the rows held.
inline void transpose8(__m256* r) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}
// Prompt tokens of one head, or (decode) the query heads that share one KV head, go through the
// staged F32 copy of that KV head in blocks of up to 4 query vectors: K transposed (head_dim rows
// of ld positions), so that 16 scores of 4 queries come from 2 loads and 4 broadcasts per
// dimension with no horizontal sums, and V row by row, each row load feeding all 4 queries.
struct staged_kv {
  const float* kt;  // kt[d * ld + p]
  int64_t ld;       // positions per K^T row, a multiple of 16 (zero past the last position)
  const float* v;   // v[p * head_dim + d]
  int head_dim;
};

template <int TB, int NV>
void block_weighted_sum(const staged_kv& kv, const float* s, int64_t ld, int n, int d0,
                        float* const* o) {
  __m256 a[TB][NV];
  for (int i = 0; i < TB; ++i)
    for (int j = 0; j < NV; ++j) a[i][j] = _mm256_setzero_ps();
  const float* vr = kv.v + d0;
  for (int p = 0; p < n; ++p, vr += kv.head_dim) {
    __m256 vv[NV];
    for (int j = 0; j < NV; ++j) vv[j] = _mm256_loadu_ps(vr + 8 * j);
    for (int i = 0; i < TB; ++i) {
      const __m256 w = _mm256_broadcast_ss(s + i * ld + p);
      for (int j = 0; j < NV; ++j) a[i][j] = _mm256_fmadd_ps(w, vv[j], a[i][j]);
    }
  }
  for (int i = 0; i < TB; ++i)
    for (int j = 0; j < NV; ++j) _mm256_storeu_ps(o[i] + d0 + 8 * j, a[i][j]);
}

// o[i] = softmax(scale * q[i].K) V over positions [0, n[i]), for i < TB; s: TB rows of kv.ld.
template <int TB>
void block(const staged_kv& kv, float scale, const float* const* q, const int* n, float* const* o,
           float* s) {
  const int hd = kv.head_dim;
  const int64_t ld = kv.ld;
  int n_max = 0;
  for (int i = 0; i < TB; ++i) n_max = n[i] > n_max ? n[i] : n_max;
  const __m256 vs = _mm256_set1_ps(scale);
  for (int p = 0; p < n_max; p += 16) {
    __m256 a[TB][2];
    for (int i = 0; i < TB; ++i) a[i][0] = a[i][1] = _mm256_setzero_ps();
    const float* kp = kv.kt + p;
    for (int d = 0; d < hd; ++d, kp += ld) {
      const __m256 k0 = _mm256_loadu_ps(kp), k1 = _mm256_loadu_ps(kp + 8);
      for (int i = 0; i < TB; ++i) {
        const __m256 qb = _mm256_broadcast_ss(q[i] + d);
        a[i][0] = _mm256_fmadd_ps(qb, k0, a[i][0]);
        a[i][1] = _mm256_fmadd_ps(qb, k1, a[i][1]);
      }
    }
    for (int i = 0; i < TB; ++i) {
      _mm256_storeu_ps(s + i * ld + p, _mm256_mul_ps(a[i][0], vs));
      _mm256_storeu_ps(s + i * ld + p + 8, _mm256_mul_ps(a[i][1], vs));
    }
  }
  for (int i = 0; i < TB; ++i) {
    float* si = s + i * ld;
    __m256 mv = _mm256_set1_ps(-INFINITY);
    int p = 0;
    for (; p + 8 <= n[i]; p += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(si + p));
    float mx = simd::hmax(_mm_max_ps(_mm256_castps256_ps128(mv), _mm256_extractf128_ps(mv, 1)));
    for (; p < n[i]; ++p) mx = si[p] > mx ? si[p] : mx;
    const __m256 inv = _mm256_set1_ps(1.0f / softmax_exp(si, n[i], mx));
    for (p = 0; p + 8 <= n[i]; p += 8)
      _mm256_storeu_ps(si + p, _mm256_mul_ps(_mm256_loadu_ps(si + p), inv));
    for (; p < n[i]; ++p) si[p] *= _mm256_cvtss_f32(inv);
    for (p = n[i]; p < n_max; ++p) si[p] = 0.0f;  // positions this query does not see
  }
  int d0 = 0;
  for (; d0 + 16 <= hd; d0 += 16) block_weighted_sum<TB, 2>(kv, s, ld, n_max, d0, o);
  if (d0 < hd) block_weighted_sum<TB, 1>(kv, s, ld, n_max, d0, o);
}

void run_block(int tb, const staged_kv& kv, float scale, const float* const* q, const int* n,
               float* const* o, float* s) {
  switch (tb) {
    case 4:
      return block<4>(kv, scale, q, n, o, s);
    case 3:
      return block<3>(kv, scale, q, n, o, s);
    case 2:
      return block<2>(kv, scale, q, n, o, s);
    default:
      return block<1>(kv, scale, q, n, o, s);
  }
}

}  // namespace

float softmax_exp(float* x, int n, float mx) {
  const __m256 m = _mm256_set1_ps(mx);
  __m256 s0 = _mm256_setzero_ps(), s1 = s0;
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 e0 = simd::exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), m));
    const __m256 e1 = simd::exp(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), m));
    _mm256_storeu_ps(x + i, e0);
    _mm256_storeu_ps(x + i + 8, e1);
    s0 = _mm256_add_ps(s0, e0);
    s1 = _mm256_add_ps(s1, e1);
  }
  for (; i + 8 <= n; i += 8) {
    const __m256 e = simd::exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), m));
    _mm256_storeu_ps(x + i, e);
    s0 = _mm256_add_ps(s0, e);
  }
  if (i < n) {
    const __m256i mask = simd::first_lanes(n - i);
    const __m256 e = _mm256_and_ps(simd::exp(_mm256_sub_ps(_mm256_maskload_ps(x + i, mask), m)),
                                   _mm256_castsi256_ps(mask));
    _mm256_maskstore_ps(x + i, mask, e);
    s1 = _mm256_add_ps(s1, e);
  }
  return hsum(_mm256_add_ps(s0, s1));
}

void attention_avx2(float* out, const float* q, const uint16_t* k_cache, const uint16_t* v_cache,
                    int n_tok, int pos0, int n_head, int n_head_kv, int head_dim, int h0, int h1,
                    int64_t pos_stride, int64_t head_stride) {
  const int group = n_head / n_head_kv;
  const int64_t kv_stride = pos_stride;
  const int q_stride = n_head * head_dim;
  const int n_all = pos0 + n_tok;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  thread_local std::vector<float> att, kt, vf;
  // One token of a head with its own KV head: read the F16 cache directly.
  if (n_tok == 1 && group == 1) {
    const size_t ld = static_cast<size_t>(n_all) + 8;
    att.resize(ld * max_side);
    // Heads side by side while their K and V rows come to at most 256 KiB: more streams than the
    // prefetchers follow, or V rows fetched early that the cache no longer holds when the
    // weighted sums read them, made long contexts slower (`tandem_kernel_bench
    // --benchmark_filter=attention_decode`, cold cache, 6 heads of 64, us at positions
    // 64 / 128 / 256 / 512: one by one 8.2-10.4 / 12.3-15.4 / 17.8-23.8 / 28.9-40.2; all 6 side by
    // side 9.5-10.3 / 12.9-15.0 / 21.8-26.7 / 40.9-48.0; up to 256 KiB 6.7-8.7 / 9.9-12.3 /
    // 15.1-18.2 / 29.4-36.8).
    constexpr int64_t side_bytes = 256 * 1024;
    const int64_t head_bytes = 2 * static_cast<int64_t>(n_all) * head_dim * 2;
    const int side = static_cast<int>(std::clamp<int64_t>(side_bytes / head_bytes, 1, max_side));
    for (int h = h0; h < h1; h += side) {
      const int nh = std::min(side, h1 - h);
      f16_rows k[max_side], v[max_side];
      const float* qs[max_side];
      float* ss[max_side];
      float mx[max_side];
      for (int i = 0; i < nh; ++i) {
        k[i] = {k_cache + (h + i) * head_stride, kv_stride, head_dim};
        v[i] = {v_cache + (h + i) * head_stride, kv_stride, head_dim};
        qs[i] = q + (h + i) * head_dim;
        ss[i] = att.data() + ld * static_cast<size_t>(i);
      }
      scores_side(k, v, qs, nh, head_dim, scale, n_all, ss, mx);
      for (int i = 0; i < nh; ++i)
        softmax_v(v[i], head_dim, n_all, mx[i], ss[i], out + (h + i) * head_dim);
    }
    return;
  }
  // Otherwise every KV head is read by several query vectors: stage it as F32 (K transposed).
  const int64_t ld = (n_all + 15) / 16 * 16;
  kt.assign(static_cast<size_t>(ld) * head_dim, 0.0f);
  vf.resize(static_cast<size_t>(n_all) * head_dim);
  att.resize(static_cast<size_t>(4 * ld));
  const staged_kv kv{kt.data(), ld, vf.data(), head_dim};
  int staged_hk = -1;
  const float* qs[4];
  float* os[4];
  int ns[4];
  for (int h = h0; h < h1;) {
    const int hk = h / group;
    if (hk != staged_hk) {
      const uint16_t* k0 = k_cache + hk * head_stride;
      const uint16_t* v0 = v_cache + hk * head_stride;
      int p = 0;
      for (; p + 8 <= n_all; p += 8) {  // K: 8 positions x 8 dims at a time, transposed
        for (int j = 0; j < 8; ++j) {
          const int64_t off = static_cast<int64_t>(p + j) * kv_stride;
          _mm_prefetch(reinterpret_cast<const char*>(k0 + off + 8 * kv_stride), _MM_HINT_T0);
          _mm_prefetch(reinterpret_cast<const char*>(v0 + off + 8 * kv_stride), _MM_HINT_T0);
          for (int d = 0; d < head_dim; d += 8)
            _mm256_storeu_ps(&vf[static_cast<size_t>(p + j) * head_dim + d],
                             f16_rows::load(v0 + off, d));
        }
        for (int d = 0; d < head_dim; d += 8) {
          __m256 r[8];
          for (int j = 0; j < 8; ++j)
            r[j] = f16_rows::load(k0 + static_cast<int64_t>(p + j) * kv_stride, d);
          transpose8(r);
          for (int j = 0; j < 8; ++j)
            _mm256_storeu_ps(&kt[static_cast<size_t>((d + j) * ld + p)], r[j]);
        }
      }
      for (; p < n_all; ++p) {
        const uint16_t* k = k0 + static_cast<int64_t>(p) * kv_stride;
        const uint16_t* v = v0 + static_cast<int64_t>(p) * kv_stride;
        alignas(32) float row[8];
        for (int d = 0; d < head_dim; d += 8) {
          _mm256_store_ps(row, f16_rows::load(k, d));
          for (int j = 0; j < 8; ++j) kt[static_cast<size_t>((d + j) * ld + p)] = row[j];
          _mm256_storeu_ps(&vf[static_cast<size_t>(p) * head_dim + d], f16_rows::load(v, d));
        }
      }
      staged_hk = hk;
    }
    if (n_tok == 1) {  // the query heads of this KV head, 4 at a time
      const int h_end = std::min(h1, (hk + 1) * group);
      while (h < h_end) {
        const int tb = std::min(4, h_end - h);
        for (int i = 0; i < tb; ++i) {
          qs[i] = q + (h + i) * head_dim;
          os[i] = out + (h + i) * head_dim;
          ns[i] = n_all;
        }
        run_block(tb, kv, scale, qs, ns, os, att.data());
        h += tb;
      }
      continue;
    }
    for (int t0 = 0; t0 < n_tok; t0 += 4) {  // this head's tokens, 4 at a time
      const int tb = std::min(4, n_tok - t0);
      for (int i = 0; i < tb; ++i) {
        qs[i] = q + static_cast<int64_t>(t0 + i) * q_stride + h * head_dim;
        os[i] = out + static_cast<int64_t>(t0 + i) * q_stride + h * head_dim;
        ns[i] = pos0 + t0 + i + 1;
      }
      run_block(tb, kv, scale, qs, ns, os, att.data());
    }
    ++h;
  }
}

void fp32_to_fp16_row_avx2(const float* x, uint16_t* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; ++i) y[i] = static_cast<uint16_t>(_cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT));
}

}  // namespace tandem::cpu::detail
