// Scalar reference kernels. Plain and obviously right: every SIMD and shader kernel is tested
// against these, so keep them free of tricks. All activations are row-major float arrays of
// n_tokens rows.
#pragma once
#include <cstdint>

#include "runtime/dtype.h"
#include "runtime/model.h"

namespace tandem::cpu::ref {

// y = x / sqrt(mean(x^2) + eps) * w, over n elements.
void rms_norm(float* y, const float* x, const float* w, int n, float eps);

// Rotates the first n_rot dims of each of n_heads heads (head_dim apart) of one token at pos.
// adjacent: pairs (x[2i], x[2i+1]); neox: pairs (x[i], x[i + n_rot/2]).
// theta_i = pos * freq_scale * base^(-2i / n_rot).
void rope(float* x, int n_heads, int head_dim, int n_rot, int pos, float freq_base,
          float freq_scale, rope_style style);

// In-place softmax over n elements (max-subtracted).
void softmax(float* x, int n);

inline float silu(float x);
// out[i] = silu(gate[i]) * up[i].
void swiglu(float* out, const float* gate, const float* up, int n);

// Dot product of one weight row (cols elements, of type t) with a float vector.
float dot_row(dtype t, const void* row, const float* x, int64_t cols);

// Matrix product y = x W^T for rows [r0, r1) of W: W is rows x cols of type t (row-major, ne[0] =
// cols), x is n_tok x cols, y is n_tok x rows (y[tok * rows + r]).
void matmul(dtype t, const void* w, int64_t cols, int64_t rows, const float* x, int n_tok, float* y,
            int64_t r0, int64_t r1);

// Causal attention with grouped KV heads for n_tok query tokens at positions pos0.., against a
// KV cache of F16 values (positions 0 .. pos0+n_tok-1 already written). q: n_tok x (n_head *
// head_dim); out likewise. Scale 1/sqrt(head_dim). Heads [h0, h1) only. KV head h's vector of
// position p starts at element p * pos_stride + h * head_stride of each cache.
void attention(float* out, const float* q, const uint16_t* k_cache, const uint16_t* v_cache,
               int n_tok, int pos0, int n_head, int n_head_kv, int head_dim, int h0, int h1,
               int64_t pos_stride, int64_t head_stride);
// The same with one row of n_head_kv * head_dim per position (the GPU's layout).
inline void attention(float* out, const float* q, const uint16_t* k_cache, const uint16_t* v_cache,
                      int n_tok, int pos0, int n_head, int n_head_kv, int head_dim, int h0,
                      int h1) {
  attention(out, q, k_cache, v_cache, n_tok, pos0, n_head, n_head_kv, head_dim, h0, h1,
            static_cast<int64_t>(n_head_kv) * head_dim, head_dim);
}

inline float silu(float x) {
  return x / (1.0f + __builtin_expf(-x));
}

}  // namespace tandem::cpu::ref
