// AVX2 RoPE with the angles given (cpu/elementwise.h rope_qk): the same multiplies, subtracts and
// adds per element as ref::rope, so the same bits. Compiled with -ffp-contract=off and
// -fno-tree-vectorize (CMakeLists): a multiply fused into the add would round once where the
// reference rounds twice.
#include <immintrin.h>

#include "cpu/elementwise.h"

namespace tandem::cpu::detail {

void rope_pairs_avx2(float* v, const float* cs, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 a = _mm256_loadu_ps(v + i), w = _mm256_loadu_ps(cs + i);
    const __m256 c = _mm256_moveldup_ps(w), s = _mm256_movehdup_ps(w);
    const __m256 swapped = _mm256_permute_ps(a, 0xB1);  // (v[2i + 1], v[2i]) per pair
    // even lanes: v[2i] c - v[2i + 1] s; odd lanes: v[2i + 1] c + v[2i] s
    _mm256_storeu_ps(v + i, _mm256_addsub_ps(_mm256_mul_ps(a, c), _mm256_mul_ps(swapped, s)));
  }
  for (; i + 1 < n; i += 2) {
    const float c = cs[i], s = cs[i + 1], x0 = v[i], x1 = v[i + 1];
    v[i] = x0 * c - x1 * s;
    v[i + 1] = x0 * s + x1 * c;
  }
}

void rope_heads_avx2(float* x, int n_head, int head_dim, int n_rot, const float* cs,
                     rope_style style) {
  for (int h = 0; h < n_head; ++h) {
    float* v = x + static_cast<int64_t>(h) * head_dim;
    if (style == rope_style::adjacent) {
      // Pairs (v[2i], v[2i + 1]); cs holds (cos, sin) of pair i at 2i, the pair's own place.
      rope_pairs_avx2(v, cs, n_rot);
    } else {
      // Pairs (v[i], v[i + n_rot / 2]).
      const int half = n_rot / 2;
      int i = 0;
      for (; i + 8 <= half; i += 8) {
        const __m256 w0 = _mm256_loadu_ps(cs + 2 * i), w1 = _mm256_loadu_ps(cs + 2 * i + 8);
        // The cosines (even places) and sines (odd) of pairs i .. i + 7, in order.
        const __m256 c = _mm256_castpd_ps(
            _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(w0, w1, 0x88)), 0xD8));
        const __m256 s = _mm256_castpd_ps(
            _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(w0, w1, 0xDD)), 0xD8));
        const __m256 x0 = _mm256_loadu_ps(v + i), x1 = _mm256_loadu_ps(v + i + half);
        _mm256_storeu_ps(v + i, _mm256_sub_ps(_mm256_mul_ps(x0, c), _mm256_mul_ps(x1, s)));
        _mm256_storeu_ps(v + i + half, _mm256_add_ps(_mm256_mul_ps(x0, s), _mm256_mul_ps(x1, c)));
      }
      for (; i < half; ++i) {
        const float c = cs[2 * i], s = cs[2 * i + 1], x0 = v[i], x1 = v[i + half];
        v[i] = x0 * c - x1 * s;
        v[i + half] = x0 * s + x1 * c;
      }
    }
  }
}

}  // namespace tandem::cpu::detail
