// AVX2 + F16C attention: q.K with K rows converted from F16 in registers, a scalar softmax, and
// the weighted sum of V rows accumulated in place. The rows two positions ahead are prefetched.
#include <immintrin.h>

#include <cmath>
#include <vector>

#include "cpu/attention.h"

namespace tandem::cpu::detail {

namespace {
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline __m256 load_h(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
}  // namespace

void attention_avx2(float* out, const float* q, const uint16_t* k_cache, const uint16_t* v_cache,
                    int n_tok, int pos0, int n_head, int n_head_kv, int head_dim, int h0, int h1) {
  const int group = n_head / n_head_kv;
  const int kv_stride = n_head_kv * head_dim;
  const int q_stride = n_head * head_dim;
  const int n_all = pos0 + n_tok;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  thread_local std::vector<float> att, kf, vf;
  att.resize(static_cast<size_t>(n_all) + 4);
  // A batch reads each K/V row once per query token: convert the KV head's rows to F32 once
  // (prefetching ahead) when that pays, and read F16 directly for a single decode token.
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
          _mm256_storeu_ps(&kf[static_cast<size_t>(p) * head_dim + d], load_h(k + d));
          _mm256_storeu_ps(&vf[static_cast<size_t>(p) * head_dim + d], load_h(v + d));
        }
      }
      staged_hk = hk;
    }
    for (int t = 0; t < n_tok; ++t) {
      const int n_pos = pos0 + t + 1;
      const float* qh = q + static_cast<int64_t>(t) * q_stride + h * head_dim;
      float mx = -INFINITY;
      if (stage) {
        // Four positions at a time: independent accumulator chains.
        int p = 0;
        for (; p + 4 <= n_pos; p += 4) {
          const float* k0 = &kf[static_cast<size_t>(p) * head_dim];
          __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
          for (int d = 0; d < head_dim; d += 8) {
            const __m256 qv = _mm256_loadu_ps(qh + d);
            a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + d), a0);
            a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + head_dim + d), a1);
            a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + 2 * head_dim + d), a2);
            a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + 3 * head_dim + d), a3);
          }
          const float s[4] = {hsum(a0) * scale, hsum(a1) * scale, hsum(a2) * scale, hsum(a3) * scale};
          for (int j = 0; j < 4; ++j) {
            att[static_cast<size_t>(p + j)] = s[j];
            mx = s[j] > mx ? s[j] : mx;
          }
        }
        for (; p < n_pos; ++p) {
          const float* k = &kf[static_cast<size_t>(p) * head_dim];
          __m256 a = _mm256_setzero_ps();
          for (int d = 0; d < head_dim; d += 8)
            a = _mm256_fmadd_ps(_mm256_loadu_ps(qh + d), _mm256_loadu_ps(k + d), a);
          const float sc = hsum(a) * scale;
          att[static_cast<size_t>(p)] = sc;
          mx = sc > mx ? sc : mx;
        }
      } else {
        const uint16_t* kb = k_cache + hk * head_dim;
        for (int p = 0; p < n_pos; ++p) {
          const uint16_t* k = kb + static_cast<int64_t>(p) * kv_stride;
          _mm_prefetch(reinterpret_cast<const char*>(k + 2 * kv_stride), _MM_HINT_T0);
          __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
          int d = 0;
          for (; d + 16 <= head_dim; d += 16) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qh + d), load_h(k + d), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(qh + d + 8), load_h(k + d + 8), a1);
          }
          for (; d < head_dim; d += 8)
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qh + d), load_h(k + d), a0);
          const float sc = hsum(_mm256_add_ps(a0, a1)) * scale;
          att[static_cast<size_t>(p)] = sc;
          mx = sc > mx ? sc : mx;
        }
      }
      double sum = 0;
      for (int p = 0; p < n_pos; ++p) {
        const float e = std::exp(att[static_cast<size_t>(p)] - mx);
        att[static_cast<size_t>(p)] = e;
        sum += e;
      }
      const float inv = static_cast<float>(1.0 / sum);
      float* o = out + static_cast<int64_t>(t) * q_stride + h * head_dim;
      for (int d = 0; d < head_dim; d += 8) _mm256_storeu_ps(o + d, _mm256_setzero_ps());
      if (stage) {
        for (int p = 0; p < n_pos; ++p) {
          const float* v = &vf[static_cast<size_t>(p) * head_dim];
          const __m256 a = _mm256_set1_ps(att[static_cast<size_t>(p)] * inv);
          for (int d = 0; d < head_dim; d += 8)
            _mm256_storeu_ps(o + d, _mm256_fmadd_ps(a, _mm256_loadu_ps(v + d), _mm256_loadu_ps(o + d)));
        }
      } else {
        const uint16_t* vb = v_cache + hk * head_dim;
        for (int p = 0; p < n_pos; ++p) {
          const uint16_t* v = vb + static_cast<int64_t>(p) * kv_stride;
          _mm_prefetch(reinterpret_cast<const char*>(v + 2 * kv_stride), _MM_HINT_T0);
          const __m256 a = _mm256_set1_ps(att[static_cast<size_t>(p)] * inv);
          for (int d = 0; d < head_dim; d += 8)
            _mm256_storeu_ps(o + d, _mm256_fmadd_ps(a, load_h(v + d), _mm256_loadu_ps(o + d)));
        }
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
