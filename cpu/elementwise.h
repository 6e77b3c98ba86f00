// The element-wise ops of a layer on the fast path: RMS norm, SwiGLU and RoPE over token rows.
// Same contracts as the scalar references in cpu/ops_ref.h, which they are tested against; the
// active kernel level picks AVX2 code or the reference.
#pragma once
#include <cstdint>

#include "runtime/model.h"

namespace tandem::cpu {

// y[t] = rmsnorm(x[t]) * w for n_tok rows of n elements.
void rmsnorm_rows(float* y, const float* x, const float* w, int n_tok, int n, float eps);

// out[i] = silu(gate[i]) * up[i], n elements (in parallel when n is large).
void swiglu(float* out, const float* gate, const float* up, int64_t n);

// ref::rope on the query heads and the key heads of one token: the angles are computed once for
// both (bit-identical to two ref::rope calls).
void rope_qk(float* q, int n_head, float* k, int n_head_kv, int head_dim, int n_rot, int pos,
             float freq_base, float freq_scale, rope_style style);

// The cosines and sines of RoPE's n_rot / 2 angles for one position, cs[2i] = cos and cs[2i + 1] =
// sin of angle i, computed exactly as ref::rope computes them. They depend on the position only,
// so a decode token computes them once for every layer.
void rope_angles(int pos, int n_rot, float freq_base, float freq_scale, float* cs);
// rope_qk with the angles given (rope_angles of the token's position): the same bits.
void rope_qk(float* q, int n_head, float* k, int n_head_kv, int head_dim, int n_rot,
             const float* cs, rope_style style);

namespace detail {
// AVX2 bodies (cpu/elementwise_avx2.cpp).
void rmsnorm_avx2(float* y, const float* x, const float* w, int n, float eps);
void swiglu_avx2(float* out, const float* gate, const float* up, int64_t n);
}  // namespace detail

}  // namespace tandem::cpu
