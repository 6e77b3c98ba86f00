// The element-wise ops of a layer on the fast path: RMS norm, SwiGLU and RoPE over token rows.
// Same contracts as the scalar references in cpu/ops_ref.h, which they are tested against; the
// active kernel level picks AVX2 code or the reference.
#pragma once
#include <cstdint>

#include "runtime/model.h"

namespace tandem::cpu {

// y[t] = rms_norm(x[t]) * w for n_tok rows of n elements.
void rms_norm_rows(float* y, const float* x, const float* w, int n_tok, int n, float eps);

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
// The adjacent-pair rotation (rope_style::adjacent, llama's) of elements [r0, r1) of one token's
// heads laid end to end (r0 and r1 even): each pair is rotated on its own, so that a product's
// rows can be rotated as they are computed. The same bits as rope_qk on the whole heads.
void rope_rows(float* x, int64_t r0, int64_t r1, int head_dim, int n_rot, const float* cs);

namespace detail {
// AVX2 bodies (cpu/elementwise_avx2.cpp).
void rms_norm_avx2(float* y, const float* x, const float* w, int n, float eps);
void swiglu_avx2(float* out, const float* gate, const float* up, int64_t n);
// Adjacent pairs (v[2i], v[2i + 1]) of n elements (n even), cs holding their (cos, sin) in the
// same places (cpu/rope_avx2.cpp).
void rope_pairs_avx2(float* v, const float* cs, int64_t n);
// rope_qk's rotation of n_head heads with the angles given (cpu/rope_avx2.cpp).
void rope_heads_avx2(float* x, int n_head, int head_dim, int n_rot, const float* cs,
                     rope_style style);
}  // namespace detail

}  // namespace tandem::cpu
