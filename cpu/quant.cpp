#include "cpu/quant.h"

#include <fmt/format.h>

#include <cstring>

#include "cpu/fp16.h"
#include "runtime/error.h"

namespace tandem::cpu {

void dequantize_row(dtype t, const void* src, float* dst, int64_t n) {
  switch (t) {
    case dtype::f32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case dtype::f16: {
      const auto* h = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(h[i]);
      return;
    }
    default:
      throw error(fmt::format("no dequantizer for type {}", dtype_name(t)));
  }
}

void quantize_row(dtype t, const float* src, void* dst, int64_t n) {
  switch (t) {
    case dtype::f32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case dtype::f16: {
      auto* h = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) h[i] = fp32_to_fp16(src[i]);
      return;
    }
    default:
      throw error(fmt::format("no quantizer for type {}", dtype_name(t)));
  }
}

}  // namespace tandem::cpu
