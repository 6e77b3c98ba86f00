#include "cpu/matmul.h"

#include "cpu/ops_ref.h"
#include "cpu/parallel.h"

namespace tandem::cpu {

void matmul(const weight& w, const float* x, int n_tok, float* y) {
  const int64_t rows = w.rows(), cols = w.cols();
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, cols / 64));
  parallel_for(rows, grain, [&](int64_t r0, int64_t r1) {
    ref::matmul(w.type(), w.data(), cols, rows, x, n_tok, y, r0, r1);
  });
}

}  // namespace tandem::cpu
