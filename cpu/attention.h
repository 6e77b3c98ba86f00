// Causal attention over the F16 KV cache: the fast path of ref::attention (same contract, see
// cpu/ops_ref.h), chosen by the active kernel level. The next K and V rows are prefetched.
#pragma once
#include <cstdint>

namespace tandem::cpu {

void attention(float* out, const float* q, const uint16_t* k_cache, const uint16_t* v_cache,
               int n_tok, int pos0, int n_head, int n_head_kv, int head_dim, int h0, int h1,
               int64_t pos_stride, int64_t head_stride);

namespace detail {
// AVX2/F16C version (cpu/attention_avx2.cpp); head_dim must be a multiple of 8.
void attention_avx2(float* out, const float* q, const uint16_t* k_cache, const uint16_t* v_cache,
                    int n_tok, int pos0, int n_head, int n_head_kv, int head_dim, int h0, int h1,
                    int64_t pos_stride, int64_t head_stride);
void fp32_to_fp16_row_avx2(const float* x, uint16_t* y, int64_t n);
// x[i] = exp(x[i] - mx) for i < n (AVX2); returns the sum of the new x.
float softmax_exp(float* x, int n, float mx);
}  // namespace detail

// y = x rounded to F16 (round to nearest even), n elements; F16C where the kernels allow.
void fp32_to_fp16_row(const float* x, uint16_t* y, int64_t n);

}  // namespace tandem::cpu
