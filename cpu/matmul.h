// Threaded matrix products on weights of any supported type. Dispatches to the kernel table
// chosen at start-up (scalar reference or SIMD); the threading layer splits rows.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "cpu/kernels.h"
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

// A decode-sized matmul_n (few tokens, row kernels) cut into chunks that threads take in order:
// build() plans it (false when the shapes want the tiled kernels), quantize() quantizes the input
// once per activation format (one thread), then run(i) computes chunk i for i < chunks(), on any
// thread, in any order. cpu::run_steps (parallel.h) chains such plans without a fork-join
// between them. The activations live in the plan, so a plan is reused, not shared.
class matvec_plan {
 public:
  static constexpr int max_jobs = 8;
  static bool suits(const matmul_job* jobs, int n_jobs, int n_tok);
  bool build(const matmul_job* jobs, int n_jobs, int n_tok);
  void quantize(const float* x);
  int64_t chunks() const { return static_cast<int64_t>(chunks_.size()); }
  void run(int64_t i) const;
  // Prefetches (towards L2) up to max_bytes of the weights chunk i reads first.
  void warm(int64_t i, size_t max_bytes) const;

 private:
  struct chunk {
    int job;
    int64_t r0, r1;
  };
  struct rows {  // one job's quantized activations
    act_format fmt = act_format::f32;
    const uint8_t* buf = nullptr;
    size_t per_tok = 0, q_bytes = 0, d_bytes = 0;
  };
  const kernel_table* kt_ = nullptr;
  int n_jobs_ = 0, n_tok_ = 0;
  int64_t cols_ = 0;
  const float* x_ = nullptr;
  matmul_job jobs_[max_jobs] = {};
  const type_kernels* ks_[max_jobs] = {};
  const packed_matrix* pk_[max_jobs] = {};
  act_format fmt_[max_jobs] = {};
  rows rows_[max_jobs];
  bool need_[n_act_formats] = {};
  size_t offset_[n_act_formats] = {};
  std::unique_ptr<uint8_t[]> acts_buf_;
  size_t acts_cap_ = 0;
  uint8_t* acts_ = nullptr;
  std::vector<chunk> chunks_;
};

}  // namespace tandem::cpu
