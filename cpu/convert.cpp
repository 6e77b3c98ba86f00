#include "cpu/convert.h"

#include "cpu/parallel.h"
#include "runtime/blocks.h"

namespace tandem::cpu {

std::vector<uint8_t> quantize_rows(dtype t, int64_t rows, int64_t cols,
                                   const std::function<void(int64_t, float*)>& fill) {
  const uint64_t rb = row_bytes(t, static_cast<uint64_t>(cols));
  std::vector<uint8_t> out(rb * static_cast<uint64_t>(rows));
  parallel_for(rows, 16, [&](int64_t r0, int64_t r1) {
    std::vector<float> buf(static_cast<size_t>(cols));
    for (int64_t r = r0; r < r1; ++r) {
      fill(r, buf.data());
      quantize_row(t, buf.data(), out.data() + rb * static_cast<uint64_t>(r), cols);
    }
  });
  return out;
}

void dequantize_matrix_row(dtype t, const void* src, int64_t row, int64_t cols, float* out) {
  const uint64_t rb = row_bytes(t, static_cast<uint64_t>(cols));
  dequantize_row(t, static_cast<const uint8_t*>(src) + rb * static_cast<uint64_t>(row), out, cols);
}

}  // namespace tandem::cpu
