// Threaded matrix products on weights of any supported type. Dispatches to the kernel table
// chosen at start-up (scalar reference or SIMD); the threading layer splits rows.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/parallel.h"
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

// Reference products, for checking (gpu-cpu-parity model --cpu reference): every product reads
// the weights in their file layout through the scalar reference (ref::matmul: each row
// dequantized, F32 activations) instead of the kernels, which round the
// activations of quantized products to 8 bits and pack F16 weights to 14-bit levels. The CPU
// backend then also runs decode layer by layer (no decode region). Off by default; process-wide.
void set_reference_products(bool on);
bool reference_products();

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

// A decode-sized matmul_n (few tokens, row kernels) as one stream of units: build() plans it
// (false when the shapes want the tiled kernels), quantize() quantizes the input once per
// activation format (one thread), then run(u0, u1) computes units [u0, u1) for any
// 0 <= u0 < u1 <= units(), on any thread. A unit is a group of x16_rows rows of a packed weight or
// one row of another. The jobs' units go back to back in job order or, built with groups > 1,
// group by group: every job's units cut into `groups` equal runs, and run g of each job (in job
// order) before run g + 1 of any (the same rows of FFN gate and up together). Either way a job's
// units come in row order, so any run of units covers one run of each job's rows. cpu::run_steps
// (parallel.h) runs a plan as a unit step (step()), and chains plans without a fork-join between
// them. The activations live in the plan, so a plan is reused, not shared.
class matvec_plan {
 public:
  static constexpr int max_jobs = 8;
  // The least a thread takes at a time from its share: about grain_bytes of weights (it takes
  // half of what is left of the share, up to 8 grains: cpu::run_steps). Within a share the units
  // are one contiguous stream (the kernels prefetch past a run's end), so a run costs a kernel
  // call and one atomic (a locked instruction, which waits for the loads before it), and the
  // last run of a step is what another thread may wait out. stories110M Q4_0 tg128 at 2 threads
  // on the 2-core VM, `tandem bench -p 0 -n 128 -r 3`, medians of 6 alternating rounds, one grain
  // per run: guided chunks of at least 192 KiB from one counter (the scheme before shares) 730
  // t/s; grains of 32 KiB 695, 64 KiB 741, 128 KiB 750, 256 KiB 743. With one grain per run, the
  // runs' ends took ~0.12 us each, ~4% of a tinyllama Q4_0 layer; half of what is left (1 to 8
  // grains) took tinyllama Q4_0 tg32 from 112.7, 113.4, 112.1, 110.1 to 115.5, 119.8, 118.8,
  // 115.3 t/s in 4 alternating rounds (stories110M Q4_0 tg128, medians of 4: 925 -> 980).
  static constexpr size_t grain_bytes = 128 * 1024;
  static bool suits(const matmul_job* jobs, int n_jobs, int n_tok);
  // groups > 1: group by group where every job's unit count divides by it (groups() says).
  bool build(const matmul_job* jobs, int n_jobs, int n_tok, int groups = 1);
  void quantize(const float* x);
  // quantize() in parts, on any threads: prepare(x) once, then quantize_range(c0, c1) for
  // columns [c0, c1) of x (multiples of range_block, or c1 = the input's length) as their values
  // are final; the parts together give quantize()'s bytes. One token.
  static constexpr int64_t range_block = 256;
  void prepare(const float* x);
  void quantize_range(int64_t c0, int64_t c1) const;
  int64_t units() const { return group_units_ * groups_; }
  int groups() const { return groups_; }
  int64_t group_units() const { return group_units_; }  // units per group (all of them: 1 group)
  void run(int64_t u0, int64_t u1) const;
  // The first unit of part k of `parts` with about equal weight bytes (split(0) = 0,
  // split(parts) = units()).
  int64_t split(int k, int parts) const;
  int64_t grain() const { return grain_; }
  // Rows of job j per unit (x16_rows where packed, else 1): rows() of whole units start and end
  // on multiples of it, or at the job's end.
  int64_t unit_rows(int j) const { return pk_[j] ? x16_rows : 1; }
  // Prefetches (towards L2) up to max_bytes of the weights from unit u on.
  void warm(int64_t u, size_t max_bytes) const;
  // The output rows [*r0, *r1) of job j that units [u0, u1) write (empty: *r0 == *r1).
  void rows(int j, int64_t u0, int64_t u1, int64_t* r0, int64_t* r1) const;
  // A unit step of run_steps over this plan: run(), with `then` (where set) called on the same
  // units after them; warm() of warm_bytes.
  step as_step(size_t warm_bytes, std::function<void(int64_t, int64_t)> then = {}) const;

 private:
  const kernel_table* kt_ = nullptr;
  int n_jobs_ = 0, n_tok_ = 0;
  int64_t cols_ = 0;
  const float* x_ = nullptr;
  matmul_job jobs_[max_jobs] = {};
  const type_kernels* ks_[max_jobs] = {};
  const packed_matrix* pk_[max_jobs] = {};
  act_format fmt_[max_jobs] = {};
  detail::act_rows rows_[max_jobs];  // each job's quantized activations
  // Group g holds units [g * group_units_, (g + 1) * group_units_); job j's run in it is
  // [at_[j], at_[j] + per_[j]) of those, its units [g * per_[j], (g + 1) * per_[j]).
  int groups_ = 1;
  int64_t group_units_ = 0;
  int64_t at_[max_jobs] = {}, per_[max_jobs] = {};
  size_t unit_bytes_[max_jobs] = {};
  const uint8_t* base_[max_jobs] = {};  // the weights the kernels read (packed or not)
  int64_t grain_ = 1;
  // Job j's units among units [0, u).
  int64_t job_units_before(int j, int64_t u) const {
    if (group_units_ == 0) return 0;
    return u / group_units_ * per_[j] + std::clamp<int64_t>(u % group_units_ - at_[j], 0, per_[j]);
  }
  // The run of units from u (before `end`) that is one run of one job: its job and first unit.
  int64_t segment(int64_t u, int64_t end, int* job, int64_t* first) const;
  bool need_[n_act_formats] = {};
  size_t offset_[n_act_formats] = {};
  detail::scratch acts_buf_;
  uint8_t* acts_ = nullptr;
};

}  // namespace tandem::cpu
