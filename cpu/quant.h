// Weight storage types: GGUF block layouts (bit-exact with ggml), scalar reference dequantization
// and quantization. These are the reference every SIMD and shader kernel is tested against.
#pragma once
#include <cstdint>

#include "runtime/dtype.h"

namespace tandem::cpu {

// Dequantizes n elements (a multiple of the type's block size) of one row.
void dequantize_row(dtype t, const void* src, float* dst, int64_t n);

// Reference quantization of n elements into t's blocks (throws tandem::error for a type without
// a quantizer or when n is not a multiple of the block size).
void quantize_row(dtype t, const float* src, void* dst, int64_t n);

}  // namespace tandem::cpu
