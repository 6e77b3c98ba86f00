// Threaded matrix products on weights of any supported type. Dispatches to the kernel table
// chosen at start-up (scalar reference or SIMD); the threading layer splits rows.
#pragma once
#include <cstdint>

#include "cpu/repack.h"
#include "runtime/model.h"

namespace tandem::cpu {

// y (n_tok x w.rows()) = x (n_tok x w.cols()) W^T. With `packed` (a packed copy of w, see
// repack.h) the active level's x16 kernels read it instead of w, where the level has them.
void matmul(const weight& w, const float* x, int n_tok, float* y,
            const packed_matrix* packed = nullptr);

// Several products with the same input (Q, K and V; gate and up): jobs[j].y = x W_j^T. For
// decode-sized n_tok the activations are quantized once and one parallel loop covers every
// weight's rows (one fork-join instead of n_jobs); otherwise the same as calling matmul per job.
struct matmul_job {
  const weight* w;
  float* y;
  const packed_matrix* packed = nullptr;
};
void matmul_n(const matmul_job* jobs, int n_jobs, const float* x, int n_tok);

}  // namespace tandem::cpu
