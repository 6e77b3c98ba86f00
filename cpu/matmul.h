// Threaded matrix products on weights of any supported type. Dispatches to the kernel table
// chosen at start-up (scalar reference or SIMD); the threading layer splits rows.
#pragma once
#include <cstdint>

#include "runtime/model.h"

namespace tandem::cpu {

// y (n_tok x w.rows()) = x (n_tok x w.cols()) W^T.
void matmul(const weight& w, const float* x, int n_tok, float* y);

}  // namespace tandem::cpu
