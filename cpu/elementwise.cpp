#include "cpu/elementwise.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/ops_ref.h"
#include "cpu/parallel.h"

namespace tandem::cpu {

void rms_norm_rows(float* y, const float* x, const float* w, int n_tok, int n, float eps) {
  const bool simd = active_kernel_level() != kernel_level::scalar;
  auto rows = [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      if (simd)
        detail::rms_norm_avx2(y + t * n, x + t * n, w, n, eps);
      else
        ref::rms_norm(y + t * n, x + t * n, w, n, eps);
    }
  };
  if (n_tok >= 16)
    parallel_for(n_tok, 4, rows);
  else
    rows(0, n_tok);
}

void swiglu(float* out, const float* gate, const float* up, int64_t n) {
  const bool simd = active_kernel_level() != kernel_level::scalar;
  auto part = [&](int64_t a, int64_t b) {
    if (simd)
      detail::swiglu_avx2(out + a, gate + a, up + a, b - a);
    else
      ref::swiglu(out + a, gate + a, up + a, static_cast<int>(b - a));
  };
  constexpr int64_t chunk = 16384;  // elements; a decode row stays on the calling thread
  if (n > 2 * chunk)
    parallel_for((n + chunk - 1) / chunk, 1, [&](int64_t c0, int64_t c1) {
      part(c0 * chunk, std::min(n, c1 * chunk));
    });
  else
    part(0, n);
}

void rope_angles(int pos, int n_rot, float freq_base, float freq_scale, float* cs) {
  for (int i = 0; i < n_rot / 2; ++i) {
    // The angle exactly as ref::rope computes it.
    const float theta =
        static_cast<float>(pos) * freq_scale * std::pow(freq_base, -2.0f * i / n_rot);
    cs[2 * i] = std::cos(theta);
    cs[2 * i + 1] = std::sin(theta);
  }
}

namespace {
// Adjacent pairs (v[i], v[i + 1]) of n elements, cs holding their (cos, sin) in the same places:
// ref::rope's operations, pair by pair.
void rope_pairs(float* v, const float* cs, int64_t n) {
  for (int64_t i = 0; i + 1 < n; i += 2) {
    const float c = cs[i], s = cs[i + 1], x0 = v[i], x1 = v[i + 1];
    v[i] = x0 * c - x1 * s;
    v[i + 1] = x0 * s + x1 * c;
  }
}
}  // namespace

void rope_qk(float* q, int n_head, float* k, int n_head_kv, int head_dim, int n_rot,
             const float* cs, rope_style style) {
  if (active_kernel_level() != kernel_level::scalar) {
    detail::rope_heads_avx2(q, n_head, head_dim, n_rot, cs, style);
    detail::rope_heads_avx2(k, n_head_kv, head_dim, n_rot, cs, style);
    return;
  }
  const bool adjacent = style == rope_style::adjacent;
  for (float* x : {q, k}) {
    const int nh = x == q ? n_head : n_head_kv;
    for (int h = 0; h < nh; ++h) {
      float* v = x + static_cast<int64_t>(h) * head_dim;
      for (int i = 0; i < n_rot / 2; ++i) {
        const float c = cs[2 * i], s = cs[2 * i + 1];
        const int a = adjacent ? 2 * i : i;
        const int b = adjacent ? 2 * i + 1 : i + n_rot / 2;
        const float x0 = v[a], x1 = v[b];
        v[a] = x0 * c - x1 * s;
        v[b] = x0 * s + x1 * c;
      }
    }
  }
}

void rope_rows(float* x, int64_t r0, int64_t r1, int head_dim, int n_rot, const float* cs) {
  if (r0 % 2 != 0 || r1 % 2 != 0 || head_dim % 2 != 0)
    throw std::logic_error("rope_rows: a range of whole pairs");
  const bool simd = active_kernel_level() != kernel_level::scalar;
  for (int64_t r = r0; r < r1;) {  // head by head
    const int64_t d0 = r % head_dim, d1 = std::min<int64_t>(head_dim, d0 + (r1 - r));
    const int64_t e = std::min<int64_t>(d1, n_rot);  // rotated: the first n_rot of a head
    if (d0 < e) {
      float* v = x + (r - d0);
      if (simd)
        detail::rope_pairs_avx2(v + d0, cs + d0, e - d0);
      else
        rope_pairs(v + d0, cs + d0, e - d0);
    }
    r += d1 - d0;
  }
}

void rope_qk(float* q, int n_head, float* k, int n_head_kv, int head_dim, int n_rot, int pos,
             float freq_base, float freq_scale, rope_style style) {
  thread_local std::vector<float> cs;
  cs.resize(static_cast<size_t>(n_rot));
  rope_angles(pos, n_rot, freq_base, freq_scale, cs.data());
  rope_qk(q, n_head, k, n_head_kv, head_dim, n_rot, cs.data(), style);
}

}  // namespace tandem::cpu
