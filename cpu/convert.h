// Whole-tensor conversion between float and the weight types, parallel over rows. Used by the
// quantize and make-model tools.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "runtime/dtype.h"

namespace tandem::cpu {

// Quantizes rows x cols floats produced row by row by fill(row, out) into type t.
std::vector<uint8_t> quantize_rows(dtype t, int64_t rows, int64_t cols,
                                   const std::function<void(int64_t, float*)>& fill);

// Dequantizes one row of any computable type (src points at rows x row_bytes).
void dequantize_matrix_row(dtype t, const void* src, int64_t row, int64_t cols, float* out);

}  // namespace tandem::cpu
