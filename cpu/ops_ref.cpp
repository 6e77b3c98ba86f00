#include "cpu/ops_ref.h"

#include <cmath>
#include <vector>

#include "runtime/fp16.h"
#include "runtime/blocks.h"

namespace tandem::cpu::ref {

void rms_norm(float* y, const float* x, const float* w, int n, float eps) {
  double ss = 0;
  for (int i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float scale = static_cast<float>(1.0 / std::sqrt(ss / n + eps));
  for (int i = 0; i < n; ++i) y[i] = x[i] * scale * w[i];
}

void rope(float* x, int n_heads, int head_dim, int n_rot, int pos, float freq_base,
          float freq_scale, rope_style style) {
  for (int i = 0; i < n_rot / 2; ++i) {
    const float theta =
        static_cast<float>(pos) * freq_scale * std::pow(freq_base, -2.0f * i / n_rot);
    const float c = std::cos(theta), s = std::sin(theta);
    const int a = style == rope_style::adjacent ? 2 * i : i;
    const int b = style == rope_style::adjacent ? 2 * i + 1 : i + n_rot / 2;
    for (int h = 0; h < n_heads; ++h) {
      float* v = x + static_cast<int64_t>(h) * head_dim;
      const float x0 = v[a], x1 = v[b];
      v[a] = x0 * c - x1 * s;
      v[b] = x0 * s + x1 * c;
    }
  }
}

void softmax(float* x, int n) {
  float mx = x[0];
  for (int i = 1; i < n; ++i) mx = std::max(mx, x[i]);
  double sum = 0;
  for (int i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int i = 0; i < n; ++i) x[i] *= inv;
}

void swiglu(float* out, const float* gate, const float* up, int n) {
  for (int i = 0; i < n; ++i) out[i] = silu(gate[i]) * up[i];
}

float dot_row(dtype t, const void* row, const float* x, int64_t cols) {
  if (t == dtype::f32) {
    const float* w = static_cast<const float*>(row);
    float s = 0;
    for (int64_t i = 0; i < cols; ++i) s += w[i] * x[i];
    return s;
  }
  thread_local std::vector<float> buf;
  buf.resize(static_cast<size_t>(cols));
  dequantize_row(t, row, buf.data(), cols);
  float s = 0;
  for (int64_t i = 0; i < cols; ++i) s += buf[static_cast<size_t>(i)] * x[i];
  return s;
}

void matmul(dtype t, const void* w, int64_t cols, int64_t rows, const float* x, int n_tok, float* y,
            int64_t r0, int64_t r1) {
  const uint64_t rb = row_bytes(t, static_cast<uint64_t>(cols));
  std::vector<float> buf(static_cast<size_t>(cols));
  for (int64_t r = r0; r < r1; ++r) {
    const auto* row = static_cast<const uint8_t*>(w) + static_cast<uint64_t>(r) * rb;
    dequantize_row(t, row, buf.data(), cols);
    for (int tok = 0; tok < n_tok; ++tok) {
      const float* xt = x + static_cast<int64_t>(tok) * cols;
      float s = 0;
      for (int64_t i = 0; i < cols; ++i) s += buf[static_cast<size_t>(i)] * xt[i];
      y[static_cast<int64_t>(tok) * rows + r] = s;
    }
  }
}

void attention(float* out, const float* q, const uint16_t* k_cache, const uint16_t* v_cache,
               int n_tok, int pos0, int n_head, int n_head_kv, int head_dim, int h0, int h1,
               int64_t pos_stride, int64_t head_stride) {
  const int group = n_head / n_head_kv;
  const int q_stride = n_head * head_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  std::vector<float> att(static_cast<size_t>(pos0 + n_tok));
  for (int t = 0; t < n_tok; ++t) {
    const int n_pos = pos0 + t + 1;  // causal: positions 0 .. pos0 + t
    for (int h = h0; h < h1; ++h) {
      const int hk = h / group;
      const float* qh = q + static_cast<int64_t>(t) * q_stride + h * head_dim;
      for (int p = 0; p < n_pos; ++p) {
        const uint16_t* k = k_cache + p * pos_stride + hk * head_stride;
        float s = 0;
        for (int d = 0; d < head_dim; ++d) s += qh[d] * fp16_to_fp32(k[d]);
        att[static_cast<size_t>(p)] = s * scale;
      }
      softmax(att.data(), n_pos);
      float* o = out + static_cast<int64_t>(t) * q_stride + h * head_dim;
      for (int d = 0; d < head_dim; ++d) o[d] = 0;
      for (int p = 0; p < n_pos; ++p) {
        const uint16_t* v = v_cache + p * pos_stride + hk * head_stride;
        const float a = att[static_cast<size_t>(p)];
        for (int d = 0; d < head_dim; ++d) o[d] += a * fp16_to_fp32(v[d]);
      }
    }
  }
}

}  // namespace tandem::cpu::ref
