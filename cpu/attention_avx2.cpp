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
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  thread_local std::vector<float> att;
  att.resize(static_cast<size_t>(pos0 + n_tok));
  for (int t = 0; t < n_tok; ++t) {
    const int n_pos = pos0 + t + 1;
    for (int h = h0; h < h1; ++h) {
      const int hk = h / group;
      const float* qh = q + static_cast<int64_t>(t) * q_stride + h * head_dim;
      const uint16_t* kb = k_cache + hk * head_dim;
      float mx = -INFINITY;
      for (int p = 0; p < n_pos; ++p) {
        const uint16_t* k = kb + static_cast<int64_t>(p) * kv_stride;
        _mm_prefetch(reinterpret_cast<const char*>(k + 2 * kv_stride), _MM_HINT_T0);
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        int d = 0;
        for (; d + 16 <= head_dim; d += 16) {
          a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qh + d), load_h(k + d), a0);
          a1 = _mm256_fmadd_ps(_mm256_loadu_ps(qh + d + 8), load_h(k + d + 8), a1);
        }
        for (; d < head_dim; d += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qh + d), load_h(k + d), a0);
        const float s = hsum(_mm256_add_ps(a0, a1)) * scale;
        att[static_cast<size_t>(p)] = s;
        mx = s > mx ? s : mx;
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

}  // namespace tandem::cpu::detail
