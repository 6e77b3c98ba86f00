// AVX2 + F16C attention. Per query head and token: scores for four positions at a time (one
// reduction tree for the four), a vectorized exp for the softmax, and the weighted sum of V rows
// accumulated in registers, 64 dimensions per pass. A single decode token reads the F16 cache
// directly with the rows two positions ahead prefetched; a batch converts its KV head to F32 once
// (prefetching ahead), since every query token re-reads those rows.
#include <immintrin.h>

#include <cmath>
#include <vector>

#include "cpu/attention.h"
#include "cpu/simd_math_avx2.h"

namespace tandem::cpu::detail {

namespace {
using simd::hsum;
using simd::hsum4;

// Rows are F16 in the cache (decode) or F32 after staging (batches).
struct f16_rows {
  const uint16_t* base;
  int64_t stride;  // elements between positions
  const uint16_t* row(int p) const { return base + stride * p; }
  static __m256 load(const uint16_t* r, int d) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r + d)));
  }
  void prefetch(int p) const {
    _mm_prefetch(reinterpret_cast<const char*>(base + stride * p), _MM_HINT_T0);
  }
};
struct f32_rows {
  const float* base;
  int64_t stride;
  const float* row(int p) const { return base + stride * p; }
  static __m256 load(const float* r, int d) { return _mm256_loadu_ps(r + d); }
  void prefetch(int) const {}
};

// s[p] = scale * dot(q, K row p) for p < n; returns max s.
template <typename R>
float scores(const R& k, const float* q, int head_dim, float scale, int n, float* s) {
  const __m256 vs = _mm256_set1_ps(scale);
  __m128 mx = _mm_set1_ps(-INFINITY);
  int p = 0;
  for (; p + 4 <= n; p += 4) {
    k.prefetch(p + 6);
    k.prefetch(p + 7);
    const auto *k0 = k.row(p), *k1 = k.row(p + 1), *k2 = k.row(p + 2), *k3 = k.row(p + 3);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int d = 0; d < head_dim; d += 8) {
      const __m256 qv = _mm256_loadu_ps(q + d);
      a0 = _mm256_fmadd_ps(qv, R::load(k0, d), a0);
      a1 = _mm256_fmadd_ps(qv, R::load(k1, d), a1);
      a2 = _mm256_fmadd_ps(qv, R::load(k2, d), a2);
      a3 = _mm256_fmadd_ps(qv, R::load(k3, d), a3);
    }
    const __m128 r = _mm_mul_ps(hsum4(a0, a1, a2, a3), _mm256_castps256_ps128(vs));
    _mm_storeu_ps(s + p, r);
    mx = _mm_max_ps(mx, r);
  }
  float m = simd::hmax(mx);
  for (; p < n; ++p) {
    const auto* kr = k.row(p);
    __m256 a = _mm256_setzero_ps();
    for (int d = 0; d < head_dim; d += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), R::load(kr, d), a);
    s[p] = hsum(a) * scale;
    m = s[p] > m ? s[p] : m;
  }
  return m;
}

// o[0 .. 8 * NV) = sum_p w[p] * V row p [d0 .. d0 + 8 * NV).
template <int NV, typename R>
void weighted_sum(const R& v, const float* w, int n, int d0, float* o) {
  __m256 acc[NV];
  for (int j = 0; j < NV; ++j) acc[j] = _mm256_setzero_ps();
  for (int p = 0; p < n; ++p) {
    v.prefetch(p + 2);
    const auto* vr = v.row(p);
    const __m256 a = _mm256_broadcast_ss(w + p);
    for (int j = 0; j < NV; ++j) acc[j] = _mm256_fmadd_ps(a, R::load(vr, d0 + 8 * j), acc[j]);
  }
  for (int j = 0; j < NV; ++j) _mm256_storeu_ps(o + d0 + 8 * j, acc[j]);
}

// One query head, one token: o = softmax(scale * q.K) V over positions [0, n).
template <typename R>
void head(const R& k, const R& v, const float* q, int head_dim, float scale, int n, float* att,
          float* o) {
  const float mx = scores(k, q, head_dim, scale, n, att);
  const float inv = 1.0f / softmax_exp(att, n, mx);
  for (int p = 0; p < n; ++p) att[p] *= inv;
  int d = 0;
  for (; d + 64 <= head_dim; d += 64) weighted_sum<8>(v, att, n, d, o);
  for (; d + 32 <= head_dim; d += 32) weighted_sum<4>(v, att, n, d, o);
  for (; d < head_dim; d += 8) weighted_sum<1>(v, att, n, d, o);
}

// Two consecutive query tokens of one head against the same F32 rows (prompt batches): each K and
// V load feeds both tokens. Token 1 sees one more position (n + 1) than token 0 (n).
void scores2(const f32_rows& k, const float* q0, const float* q1, int head_dim, float scale,
             int n, float* s0, float* s1, float* m0, float* m1) {
  const __m128 vs = _mm_set1_ps(scale);
  __m128 mx0 = _mm_set1_ps(-INFINITY), mx1 = mx0;
  int p = 0;
  for (; p + 4 <= n; p += 4) {
    const float *k0 = k.row(p), *k1 = k.row(p + 1), *k2 = k.row(p + 2), *k3 = k.row(p + 3);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    for (int d = 0; d < head_dim; d += 8) {
      const __m256 u = _mm256_loadu_ps(q0 + d), w = _mm256_loadu_ps(q1 + d);
      __m256 kv = _mm256_loadu_ps(k0 + d);
      a0 = _mm256_fmadd_ps(u, kv, a0);
      b0 = _mm256_fmadd_ps(w, kv, b0);
      kv = _mm256_loadu_ps(k1 + d);
      a1 = _mm256_fmadd_ps(u, kv, a1);
      b1 = _mm256_fmadd_ps(w, kv, b1);
      kv = _mm256_loadu_ps(k2 + d);
      a2 = _mm256_fmadd_ps(u, kv, a2);
      b2 = _mm256_fmadd_ps(w, kv, b2);
      kv = _mm256_loadu_ps(k3 + d);
      a3 = _mm256_fmadd_ps(u, kv, a3);
      b3 = _mm256_fmadd_ps(w, kv, b3);
    }
    const __m128 r0 = _mm_mul_ps(hsum4(a0, a1, a2, a3), vs);
    const __m128 r1 = _mm_mul_ps(hsum4(b0, b1, b2, b3), vs);
    _mm_storeu_ps(s0 + p, r0);
    _mm_storeu_ps(s1 + p, r1);
    mx0 = _mm_max_ps(mx0, r0);
    mx1 = _mm_max_ps(mx1, r1);
  }
  *m0 = simd::hmax(mx0);
  *m1 = simd::hmax(mx1);
  for (; p <= n; ++p) {  // the tail, and token 1's extra position n
    const float* kr = k.row(p);
    __m256 a = _mm256_setzero_ps(), b = a;
    for (int d = 0; d < head_dim; d += 8) {
      const __m256 kv = _mm256_loadu_ps(kr + d);
      a = _mm256_fmadd_ps(_mm256_loadu_ps(q0 + d), kv, a);
      b = _mm256_fmadd_ps(_mm256_loadu_ps(q1 + d), kv, b);
    }
    if (p < n) {
      s0[p] = hsum(a) * scale;
      *m0 = s0[p] > *m0 ? s0[p] : *m0;
    }
    s1[p] = hsum(b) * scale;
    *m1 = s1[p] > *m1 ? s1[p] : *m1;
  }
}

// o0, o1 [d0 .. d0 + 8 * NV) = sum_p w0[p] (w1[p]) * V row p, over positions [0, n) (w0[n-1] may
// be a zero weight standing for "token 0 does not see this position").
template <int NV>
void weighted_sum2(const f32_rows& v, const float* w0, const float* w1, int n, int d0, float* o0,
                   float* o1) {
  __m256 a[NV], b[NV];
  for (int j = 0; j < NV; ++j) a[j] = b[j] = _mm256_setzero_ps();
  for (int p = 0; p < n; ++p) {
    const float* vr = v.row(p);
    const __m256 x = _mm256_broadcast_ss(w0 + p), y = _mm256_broadcast_ss(w1 + p);
    for (int j = 0; j < NV; ++j) {
      const __m256 vv = _mm256_loadu_ps(vr + d0 + 8 * j);
      a[j] = _mm256_fmadd_ps(x, vv, a[j]);
      b[j] = _mm256_fmadd_ps(y, vv, b[j]);
    }
  }
  for (int j = 0; j < NV; ++j) {
    _mm256_storeu_ps(o0 + d0 + 8 * j, a[j]);
    _mm256_storeu_ps(o1 + d0 + 8 * j, b[j]);
  }
}

// Tokens t and t + 1 of one head (positions [0, n) and [0, n + 1)).
void head2(const f32_rows& k, const f32_rows& v, const float* q0, const float* q1, int head_dim,
           float scale, int n, float* att0, float* att1, float* o0, float* o1) {
  float m0, m1;
  scores2(k, q0, q1, head_dim, scale, n, att0, att1, &m0, &m1);
  const float inv0 = 1.0f / softmax_exp(att0, n, m0);
  const float inv1 = 1.0f / softmax_exp(att1, n + 1, m1);
  for (int p = 0; p < n; ++p) att0[p] *= inv0;
  att0[n] = 0.0f;
  for (int p = 0; p <= n; ++p) att1[p] *= inv1;
  int d = 0;
  for (; d + 32 <= head_dim; d += 32) weighted_sum2<4>(v, att0, att1, n + 1, d, o0, o1);
  for (; d < head_dim; d += 8) weighted_sum2<1>(v, att0, att1, n + 1, d, o0, o1);
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
    const __m256 e = _mm256_and_ps(
        simd::exp(_mm256_sub_ps(_mm256_maskload_ps(x + i, mask), m)), _mm256_castsi256_ps(mask));
    _mm256_maskstore_ps(x + i, mask, e);
    s1 = _mm256_add_ps(s1, e);
  }
  return hsum(_mm256_add_ps(s0, s1));
}

void attention_avx2(float* out, const float* q, const uint16_t* k_cache, const uint16_t* v_cache,
                    int n_tok, int pos0, int n_head, int n_head_kv, int head_dim, int h0, int h1) {
  const int group = n_head / n_head_kv;
  const int kv_stride = n_head_kv * head_dim;
  const int q_stride = n_head * head_dim;
  const int n_all = pos0 + n_tok;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  thread_local std::vector<float> att, att1, kf, vf;
  att.resize(static_cast<size_t>(n_all) + 8);
  att1.resize(att.size());
  const bool stage = n_tok >= 4;
  if (stage) {
    kf.resize(static_cast<size_t>(n_all) * head_dim);
    vf.resize(kf.size());
  }
  int staged_hk = -1;
  for (int h = h0; h < h1; ++h) {
    const int hk = h / group;
    if (stage && hk != staged_hk) {
      for (int p = 0; p < n_all; ++p) {
        const uint16_t* k = k_cache + static_cast<int64_t>(p) * kv_stride + hk * head_dim;
        const uint16_t* v = v_cache + static_cast<int64_t>(p) * kv_stride + hk * head_dim;
        _mm_prefetch(reinterpret_cast<const char*>(k + 4 * kv_stride), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(v + 4 * kv_stride), _MM_HINT_T0);
        for (int d = 0; d < head_dim; d += 8) {
          _mm256_storeu_ps(&kf[static_cast<size_t>(p) * head_dim + d], f16_rows::load(k, d));
          _mm256_storeu_ps(&vf[static_cast<size_t>(p) * head_dim + d], f16_rows::load(v, d));
        }
      }
      staged_hk = hk;
    }
    for (int t = 0; t < n_tok; ++t) {
      const int n_pos = pos0 + t + 1;
      if (stage && t + 1 < n_tok) {  // two tokens share the K and V reads
        const f32_rows k{kf.data(), head_dim}, v{vf.data(), head_dim};
        const float* q0 = q + static_cast<int64_t>(t) * q_stride + h * head_dim;
        float* o0 = out + static_cast<int64_t>(t) * q_stride + h * head_dim;
        head2(k, v, q0, q0 + q_stride, head_dim, scale, n_pos, att.data(), att1.data(), o0,
              o0 + q_stride);
        ++t;
        continue;
      }
      const float* qh = q + static_cast<int64_t>(t) * q_stride + h * head_dim;
      float* o = out + static_cast<int64_t>(t) * q_stride + h * head_dim;
      if (stage) {
        const f32_rows k{kf.data(), head_dim}, v{vf.data(), head_dim};
        head(k, v, qh, head_dim, scale, n_pos, att.data(), o);
      } else {
        const f16_rows k{k_cache + hk * head_dim, kv_stride}, v{v_cache + hk * head_dim, kv_stride};
        head(k, v, qh, head_dim, scale, n_pos, att.data(), o);
      }
    }
  }
}

void fp32_to_fp16_row_avx2(const float* x, uint16_t* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; ++i)
    y[i] = static_cast<uint16_t>(_cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT));
}

}  // namespace tandem::cpu::detail
