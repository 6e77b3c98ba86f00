// Threaded matrix products on weights of any supported type. Dispatches to the kernel table
// chosen at start-up (scalar reference or SIMD); the threading layer splits rows.
#pragma once
#include <algorithm>
#include <cstddef>
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

namespace detail {
// A growable 64-byte aligned buffer; one per thread and purpose.
class scratch {
 public:
  uint8_t* get(size_t n) {
    if (n > cap_) {
      cap_ = std::max(n, cap_ * 3 / 2);
      buf_.reset(new uint8_t[cap_ + 64]);
    }
    auto p = reinterpret_cast<uintptr_t>(buf_.get());
    return reinterpret_cast<uint8_t*>((p + 63) & ~uintptr_t{63});
  }

 private:
  std::unique_ptr<uint8_t[]> buf_;
  size_t cap_ = 0;
};

// One weight's activations for mv_q8 / mv_f32: quantized rows (per token) or the float input.
struct act_rows {
  act_format fmt = act_format::f32;
  const uint8_t* buf = nullptr;
  size_t per_tok = 0, q_bytes = 0, d_bytes = 0;

  q8_row row(int t) const {
    const uint8_t* p = buf + per_tok * static_cast<size_t>(t);
    q8_row r{};
    r.q = reinterpret_cast<const int8_t*>(p);
    r.d = reinterpret_cast<const float*>(p + q_bytes);
    if (fmt == act_format::q16_64)
      r.q16 = reinterpret_cast<const int16_t*>(p);
    else if (fmt == act_format::q8_256)
      r.bsums = reinterpret_cast<const int16_t*>(p + q_bytes + d_bytes);
    else
      r.sum = reinterpret_cast<const int32_t*>(p + q_bytes + d_bytes);
    return r;
  }
};

}  // namespace detail

// A decode-sized matmul_n (few tokens, row kernels) cut into chunks that threads take in order:
// build() plans it (false when the shapes want the tiled kernels), quantize() quantizes the input
// once per activation format (one thread), then run(i) computes chunk i for i < chunks(), on any
// thread, in any order. cpu::run_steps (parallel.h) chains such plans without a fork-join
// between them. The activations live in the plan, so a plan is reused, not shared.
class matvec_plan {
 public:
  static constexpr int max_jobs = 8;
  // The smallest chunk build() makes at `threads` threads, in weight bytes, unless a step has
  // fewer bytes than that per thread: 192 KiB at 2 threads, 64 KiB from 6 threads on (the more
  // threads share the memory, the slower each streams a chunk, and a thread's last chunk is what
  // the others may wait out). Measured with `tandem bench -p 0 --memory`, alternating rounds:
  // - stories110M Q4_0 tg128 at 2 threads on the 2-core development VM, the old rule (unassigned
  //   / 2T, at least 64 KiB) -> unassigned / T, at least 192 KiB: 748 -> 816 and 701 -> 719 t/s;
  //   Q6_K 547 -> 604 and 478 -> 587.
  // - tinyllama Q4_0 tg32 on a 16-core Xeon, medians of 5 rounds, old rule / 192 KiB at every
  //   thread count / this rule: 4 threads 89.6 / 89.4 / 90.2, 8 threads 155.9 / 147.6 / 161.8,
  //   16 threads 239.2 / 231.6 / 247.0.
  static size_t min_chunk(int threads) {
    return std::max<size_t>(64 * 1024, 384 * 1024 / static_cast<size_t>(std::max(1, threads)));
  }
  static bool suits(const matmul_job* jobs, int n_jobs, int n_tok);
  bool build(const matmul_job* jobs, int n_jobs, int n_tok);
  void quantize(const float* x);
  int64_t chunks() const { return static_cast<int64_t>(chunks_.size()); }
  void run(int64_t i) const;
  // Prefetches (towards L2) up to max_bytes of the weights chunk i reads first.
  void warm(int64_t i, size_t max_bytes) const;
  // The output rows [*r0, *r1) of its job that chunk i writes.
  void chunk_rows(int64_t i, int64_t* r0, int64_t* r1) const;

 private:
  struct chunk {
    int job;
    int64_t r0, r1;
  };
  const kernel_table* kt_ = nullptr;
  int n_jobs_ = 0, n_tok_ = 0;
  int64_t cols_ = 0;
  const float* x_ = nullptr;
  matmul_job jobs_[max_jobs] = {};
  const type_kernels* ks_[max_jobs] = {};
  const packed_matrix* pk_[max_jobs] = {};
  act_format fmt_[max_jobs] = {};
  detail::act_rows rows_[max_jobs];  // each job's quantized activations
  bool need_[n_act_formats] = {};
  size_t offset_[n_act_formats] = {};
  detail::scratch acts_buf_;
  uint8_t* acts_ = nullptr;
  std::vector<chunk> chunks_;
};

}  // namespace tandem::cpu
