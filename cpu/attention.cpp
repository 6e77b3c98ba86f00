#include "cpu/attention.h"

#include "runtime/fp16.h"
#include "cpu/kernels.h"
#include "cpu/ops_ref.h"

namespace tandem::cpu {

void attention(float* out, const float* q, const uint16_t* k_cache, const uint16_t* v_cache,
               int n_tok, int pos0, int n_head, int n_head_kv, int head_dim, int h0, int h1,
               int64_t pos_stride, int64_t head_stride) {
  if (active_kernel_level() != kernel_level::scalar && head_dim % 8 == 0)
    detail::attention_avx2(out, q, k_cache, v_cache, n_tok, pos0, n_head, n_head_kv, head_dim, h0,
                           h1, pos_stride, head_stride);
  else
    ref::attention(out, q, k_cache, v_cache, n_tok, pos0, n_head, n_head_kv, head_dim, h0, h1,
                   pos_stride, head_stride);
}

void fp32_to_fp16_row(const float* x, uint16_t* y, int64_t n) {
  if (active_kernel_level() != kernel_level::scalar) {
    detail::fp32_to_fp16_row_avx2(x, y, n);
    return;
  }
  for (int64_t i = 0; i < n; ++i) y[i] = fp32_to_fp16(x[i]);
}

}  // namespace tandem::cpu
