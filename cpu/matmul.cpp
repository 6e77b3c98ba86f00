// cpu::matmul: quantizes the activations once per call (on the calling thread, into its scratch),
// then splits the weight rows across threads and runs the active table's kernels on each range.
#include "cpu/matmul.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/ops_ref.h"
#include "cpu/parallel.h"

namespace tandem::cpu {
using detail::act_rows;
using detail::scratch;

namespace {

thread_local scratch t_acts;  // the caller's quantized activations (read by every worker)
thread_local scratch t_tile;  // a worker's repacked weight tile

size_t align64(size_t n) {
  return (n + 63) & ~size_t{63};
}

// Float weights, several tokens (one token goes through matmul_rows).
void matmul_float(const type_kernels& k, const weight& w, const float* x, int n_tok, float* y) {
  const int64_t rows = w.rows(), cols = w.cols();
  const size_t rb = row_bytes(w.type(), static_cast<uint64_t>(cols));
  // Row blocks small enough to stay in L2 while every token passes over them.
  const int64_t grain = std::max<int64_t>(4, static_cast<int64_t>(256 * 1024 / rb) / 4 * 4);
  parallel_for(
      rows, std::min<int64_t>(grain, std::max<int64_t>(4, rows / 8)),
      [&](int64_t r0, int64_t r1) { k.mm_f32(w.data(), rb, cols, x, n_tok, y, rows, r0, r1); });
}

size_t act_bytes(act_format fmt, int64_t cols, size_t* q_bytes, size_t* d_bytes) {
  if (fmt == act_format::q16_64) {
    *q_bytes = align64(static_cast<size_t>(cols) * sizeof(int16_t));
    *d_bytes = align64(static_cast<size_t>(cols / q16_block) * sizeof(float));
    return *q_bytes + *d_bytes;
  }
  const bool k256 = fmt == act_format::q8_256;
  const int64_t nb = cols / (k256 ? 256 : 32);
  *q_bytes = align64(static_cast<size_t>(cols));
  *d_bytes = align64(static_cast<size_t>(nb) * sizeof(float));
  const size_t s_bytes = align64(k256 ? static_cast<size_t>(cols / 16) * sizeof(int16_t)
                                      : static_cast<size_t>(nb) * sizeof(int32_t));
  return *q_bytes + *d_bytes + s_bytes;
}

// The layout of one activation row per token of fmt in buf (nothing written).
act_rows describe_acts(act_format fmt, int64_t cols, uint8_t* buf) {
  act_rows a;
  a.fmt = fmt;
  a.buf = buf;
  a.per_tok = act_bytes(fmt, cols, &a.q_bytes, &a.d_bytes);
  return a;
}

// Columns [c0, c1) of token t's row x (whole blocks of a.fmt from c0, or to the row's end) into
// buf, laid out as a: the blocks are independent, so any cut of a row gives the whole row's bytes.
void quantize_cols(const kernel_table& kt, const act_rows& a, uint8_t* buf, const float* x,
                   int64_t c0, int64_t c1, int t) {
  uint8_t* p = buf + a.per_tok * static_cast<size_t>(t);
  auto* q = reinterpret_cast<int8_t*>(p) + c0;
  auto* d = reinterpret_cast<float*>(p + a.q_bytes);
  uint8_t* sums = p + a.q_bytes + a.d_bytes;
  const int64_t n = c1 - c0;
  if (a.fmt == act_format::q16_64)
    kt.quant_q16(x + c0, n, reinterpret_cast<int16_t*>(p) + c0, d + c0 / q16_block);
  else if (a.fmt == act_format::q8_256)
    kt.quant_q8_256(x + c0, n, q, d + c0 / 256, reinterpret_cast<int16_t*>(sums) + c0 / 16);
  else
    kt.quant_q8_32(x + c0, n, q, d + c0 / 32, reinterpret_cast<int32_t*>(sums) + c0 / 32);
  if (a.fmt == act_format::q8_32p) interleave_q8_32_pairs(q, n);
}

void quantize_acts(const kernel_table& kt, act_format fmt, const float* x, int64_t cols, int n_tok,
                   uint8_t* buf, act_rows* a) {
  *a = describe_acts(fmt, cols, buf);
  for (int t = 0; t < n_tok; ++t) quantize_cols(kt, *a, buf, x + t * cols, 0, cols, t);
}

// The packed copy of a job's weight when the table has kernels for it, else null.
const packed_matrix* usable_packed(const type_kernels* k, const matmul_job& j) {
  return k && k->mv_x16 && j.packed && *j.packed && j.packed->type() == j.w->type() ? j.packed
                                                                                    : nullptr;
}

// Rows [r0, r1) of one weight for n_tok (few) tokens with the matrix-vector kernels. With several
// tokens, passes over L2-sized row blocks so each token re-reads cached weights.
void mv_rows(const type_kernels& k, const weight& w, const act_rows& a, const float* x, int n_tok,
             float* y, int64_t r0, int64_t r1) {
  const int64_t rows = w.rows(), cols = w.cols();
  const size_t rb = row_bytes(w.type(), static_cast<uint64_t>(cols));
  const int64_t step = n_tok == 1 ? r1 - r0 : std::max<int64_t>(1, (256 * 1024) / rb);
  for (int64_t lo = r0; lo < r1; lo += step) {
    const int64_t hi = std::min(r1, lo + step);
    for (int t = 0; t < n_tok; ++t) {
      if (a.fmt == act_format::f32)
        k.mv_f32(w.data(), rb, cols, x + t * cols, y + t * rows, lo, hi);
      else
        k.mv_q8(w.data(), rb, cols, a.row(t), y + t * rows, lo, hi);
    }
  }
}

}  // namespace

// ---- matvec_plan ------------------------------------------------------------------------------

bool matvec_plan::suits(const matmul_job* jobs, int n_jobs, int n_tok) {
  if (n_tok <= 0 || n_jobs <= 0 || n_jobs > max_jobs) return false;
  const kernel_table& kt = kernels();
  for (int j = 0; j < n_jobs; ++j) {
    const type_kernels* k = kt.find(jobs[j].w->type());
    if (k == nullptr || jobs[j].w->cols() != jobs[0].w->cols()) return false;
    // Float weights with several tokens, and quantized or packed ones with many, use the tiled
    // kernels.
    if (usable_packed(k, jobs[j])) {
      if (n_tok >= kt.gemm_min_tokens && k->mm_x16) return false;
    } else if (k->mv_f32 ? n_tok > 1 : n_tok >= kt.gemm_min_tokens && k->mm_q8) {
      return false;
    }
  }
  return true;
}

bool matvec_plan::build(const matmul_job* jobs, int n_jobs, int n_tok, int groups) {
  n_jobs_ = 0;
  if (!suits(jobs, n_jobs, n_tok)) return false;
  const kernel_table& kt = kernels();
  kt_ = &kt;
  n_jobs_ = n_jobs;
  n_tok_ = n_tok;
  cols_ = jobs[0].w->cols();
  constexpr int nf = n_act_formats;
  size_t total = 0;
  for (int f = 0; f < nf; ++f) need_[f] = false;
  for (int j = 0; j < n_jobs; ++j) {
    jobs_[j] = jobs[j];
    ks_[j] = kt.find(jobs[j].w->type());
    pk_[j] = usable_packed(ks_[j], jobs[j]);
    fmt_[j] = pk_[j] ? ks_[j]->x16_act : ks_[j]->mv_act;
    need_[static_cast<int>(fmt_[j])] = true;
  }
  for (int f = 1; f < nf; ++f) {
    if (!need_[f]) continue;
    size_t qb, db;
    offset_[f] = total;
    total += act_bytes(static_cast<act_format>(f), cols_, &qb, &db) * static_cast<size_t>(n_tok);
  }
  acts_ = acts_buf_.get(total);

  // Units: x16 groups of packed weights, rows of the others; job by job, or group by group.
  size_t bytes = 0;
  int64_t n_units[max_jobs];
  groups_ = std::max(1, groups);
  for (int j = 0; j < n_jobs; ++j) {
    const weight& w = *jobs[j].w;
    unit_bytes_[j] = row_bytes(w.type(), static_cast<uint64_t>(w.cols()));
    int64_t n = w.rows();
    base_[j] = static_cast<const uint8_t*>(w.data());
    if (pk_[j]) {
      unit_bytes_[j] = x16_bytes(w.type(), x16_rows, w.cols());
      n = (n + x16_rows - 1) / x16_rows;
      base_[j] = static_cast<const uint8_t*>(pk_[j]->data());
    }
    n_units[j] = n;
    if (n % groups_ != 0) groups_ = 1;
    bytes += static_cast<size_t>(n) * unit_bytes_[j];
  }
  group_units_ = 0;
  for (int j = 0; j < n_jobs; ++j) {
    at_[j] = group_units_;
    per_[j] = n_units[j] / groups_;
    group_units_ += per_[j];
  }
  const size_t avg_unit =
      std::max<size_t>(1, bytes / static_cast<size_t>(std::max<int64_t>(1, units())));
  grain_ = std::max<int64_t>(1, static_cast<int64_t>(grain_bytes / avg_unit));
  return true;
}

int64_t matvec_plan::segment(int64_t u, int64_t end, int* job, int64_t* first) const {
  const int64_t g = u / group_units_, o = u % group_units_;
  int j = 0;
  while (j + 1 < n_jobs_ && o >= at_[j] + per_[j]) ++j;
  *job = j;
  *first = g * per_[j] + o - at_[j];
  return std::min(end - u, at_[j] + per_[j] - o);
}

int64_t matvec_plan::split(int k, int parts) const {
  if (k <= 0 || parts <= 0) return 0;
  if (k >= parts) return units();
  size_t group_bytes = 0;
  for (int j = 0; j < n_jobs_; ++j) group_bytes += static_cast<size_t>(per_[j]) * unit_bytes_[j];
  const size_t total = group_bytes * static_cast<size_t>(groups_);
  // Bytes before the split point: k / parts of the total, rounded to a whole unit of the job
  // (and group) it falls in.
  const size_t want =
      total / static_cast<size_t>(parts) * static_cast<size_t>(k) +
      total % static_cast<size_t>(parts) * static_cast<size_t>(k) / static_cast<size_t>(parts);
  const auto g = static_cast<int64_t>(
      std::min(want / std::max<size_t>(1, group_bytes), static_cast<size_t>(groups_ - 1)));
  size_t rem = want - static_cast<size_t>(g) * group_bytes;
  for (int j = 0; j < n_jobs_; ++j) {
    const size_t job_bytes = static_cast<size_t>(per_[j]) * unit_bytes_[j];
    const int64_t first = g * group_units_ + at_[j];
    if (rem < job_bytes || j == n_jobs_ - 1)
      return std::min(first + per_[j],
                      first + static_cast<int64_t>((rem + unit_bytes_[j] / 2) / unit_bytes_[j]));
    rem -= job_bytes;
  }
  return units();
}

void matvec_plan::quantize(const float* x) {
  x_ = x;
  act_rows by_fmt[n_act_formats];
  for (int f = 1; f < n_act_formats; ++f)
    if (need_[f])
      quantize_acts(*kt_, static_cast<act_format>(f), x, cols_, n_tok_, acts_ + offset_[f],
                    &by_fmt[f]);
  for (int j = 0; j < n_jobs_; ++j) {
    rows_[j] = by_fmt[static_cast<int>(fmt_[j])];
  }
}

void matvec_plan::prepare(const float* x) {
  x_ = x;
  for (int j = 0; j < n_jobs_; ++j)  // as quantize() leaves them: float input read from x_
    rows_[j] = fmt_[j] == act_format::f32
                   ? act_rows{}
                   : describe_acts(fmt_[j], cols_, acts_ + offset_[static_cast<int>(fmt_[j])]);
}

void matvec_plan::quantize_range(int64_t c0, int64_t c1) const {
  if (n_tok_ != 1 || c0 % range_block != 0 || (c1 % range_block != 0 && c1 != cols_) || c0 >= c1 ||
      c1 > cols_)
    throw std::invalid_argument("matvec_plan::quantize_range: not whole blocks of one token");
  for (int f = 1; f < n_act_formats; ++f) {
    if (!need_[f]) continue;
    uint8_t* buf = acts_ + offset_[f];
    quantize_cols(*kt_, describe_acts(static_cast<act_format>(f), cols_, buf), buf, x_, c0, c1, 0);
  }
}

void matvec_plan::run(int64_t u0, int64_t u1) const {
  while (u0 < u1) {
    int j;
    int64_t r0;
    const int64_t n = segment(u0, u1, &j, &r0), r1 = r0 + n;
    u0 += n;
    // The kernels prefetch their weights' bytes ahead; where the next units are another job's,
    // the first of those bytes (as far ahead as the kernels look).
    if (u0 < units()) {
      int jn;
      int64_t fn;
      const int64_t nn = segment(u0, units(), &jn, &fn);
      const int pf = prefetch_distance(jobs_[jn].w->type());
      if (jn != j && pf > 0)
        prefetch_l2(base_[jn] + static_cast<size_t>(fn) * unit_bytes_[jn],
                    std::min(static_cast<size_t>(pf), static_cast<size_t>(nn) * unit_bytes_[jn]));
    }
    const act_rows& a = rows_[j];
    if (const packed_matrix* p = pk_[j]) {
      for (int t = 0; t < n_tok_; ++t)
        ks_[j]->mv_x16(p->data(), p->rows(), p->cols(), a.row(t), jobs_[j].y + t * p->rows(), r0,
                       r1);
    } else {
      mv_rows(*ks_[j], *jobs_[j].w, a, x_, n_tok_, jobs_[j].y, r0, r1);
    }
  }
}

void matvec_plan::rows(int j, int64_t u0, int64_t u1, int64_t* r0, int64_t* r1) const {
  const int64_t rows = jobs_[j].w->rows();
  const int64_t unit = pk_[j] ? x16_rows : 1;
  *r0 = std::min(rows, job_units_before(j, u0) * unit);
  *r1 = std::max(*r0, std::min(rows, job_units_before(j, u1) * unit));
}

void matvec_plan::warm(int64_t u, size_t max_bytes) const {
  while (u < units() && max_bytes > 0) {
    int j;
    int64_t f;
    const int64_t n = segment(u, units(), &j, &f);
    const size_t b = std::min(max_bytes, static_cast<size_t>(n) * unit_bytes_[j]);
    prefetch_l2(base_[j] + static_cast<size_t>(f) * unit_bytes_[j], b);
    max_bytes -= b;
    u += n;
  }
}

step matvec_plan::as_step(size_t warm_bytes, std::function<void(int64_t, int64_t)> then) const {
  step s;
  s.n = units();
  s.grain = grain_;
  s.warm = [this, warm_bytes](int64_t u) { warm(u, warm_bytes); };
  s.split = [this](int k, int parts) { return split(k, parts); };
  if (then)
    s.range = [this, then = std::move(then)](int64_t u0, int64_t u1) {
      run(u0, u1);
      then(u0, u1);
    };
  else
    s.range = [this](int64_t u0, int64_t u1) { run(u0, u1); };
  return s;
}

namespace {

// Several weights with the same input and few tokens: the activations are quantized once per
// format, and one unit step (cpu::run_steps) covers the rows of every weight.
void matmul_rows(const matmul_job* jobs, int n_jobs, const float* x, int n_tok) {
  thread_local matvec_plan t_plan;
  matvec_plan& plan = t_plan;  // the caller's: the workers' lambda must not name the thread_local
  if (!plan.build(jobs, n_jobs, n_tok)) throw std::logic_error("matmul_rows: not a matvec shape");
  plan.quantize(x);
  const step s = plan.as_step(64 * 1024);
  run_steps(&s, 1);
}

void matmul_q8_gemm(const kernel_table& kt, const type_kernels& k, const weight& w, const float* x,
                    int n_tok, float* y, const packed_matrix* packed) {
  constexpr int g = gemm_group;
  const int64_t rows = w.rows(), cols = w.cols();
  const size_t rb = row_bytes(w.type(), static_cast<uint64_t>(cols));
  const int sb = k.gemm_sb;
  const int n_groups = (n_tok + g - 1) / g;
  const size_t q_bytes = align64(static_cast<size_t>(cols) * g);
  const int db = k.gemm_db;
  const size_t d_bytes = align64(static_cast<size_t>(cols / db) * g * sizeof(float));
  const size_t s_bytes = align64(static_cast<size_t>(cols / sb) * g * sizeof(float));
  const size_t per_group = q_bytes + d_bytes + s_bytes;
  uint8_t* buf = t_acts.get(per_group * static_cast<size_t>(n_groups));
  // Groups live back to back in three arrays so kernels can index group gi by stride.
  auto* q = reinterpret_cast<int8_t*>(buf);
  auto* d = reinterpret_cast<float*>(buf + q_bytes * n_groups);
  auto* s = reinterpret_cast<float*>(buf + (q_bytes + d_bytes) * n_groups);
  parallel_for(n_groups, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t gi = g0; gi < g1; ++gi) {
      const int nt = static_cast<int>(std::min<int64_t>(g, n_tok - gi * g));
      kt.quant_group(x + gi * g * cols, nt, cols, sb, db, q + gi * cols * g,
                     d + gi * (cols / db) * g, s + gi * (cols / sb) * g);
    }
  });
  const q8_groups groups{q, d, s, cols, sb, db, n_tok};
  if (packed && k.mm_x16) {
    parallel_for((rows + x16_rows - 1) / x16_rows, 1, [&](int64_t g0, int64_t g1) {
      k.mm_x16(packed->data(), rows, cols, groups, y, rows, g0, g1);
    });
    return;
  }
  const int64_t tiles = (rows + gemm_rows - 1) / gemm_rows;
  const size_t tile_bytes = gemm_scratch_bytes(cols);
  parallel_for(tiles, 1, [&](int64_t t0, int64_t t1) {
    void* tile = t_tile.get(tile_bytes);
    k.mm_q8(w.data(), rb, cols, groups, y, rows, t0 * gemm_rows, std::min(rows, t1 * gemm_rows),
            tile);
  });
}

// F16 weights packed as 14-bit integers (block_f16_x16) for prompts: q16_64 activation groups.
void matmul_q16_gemm(const kernel_table& kt, const type_kernels& k, const weight& w, const float* x,
                     int n_tok, float* y, const packed_matrix& packed) {
  constexpr int g = gemm_group;
  const int64_t rows = w.rows(), cols = w.cols();
  const int n_groups = (n_tok + g - 1) / g;
  // Groups back to back, as mm_x16 indexes them: q16 + gi * cols * 8, d + gi * cols / 64 * 8.
  const size_t q_bytes = align64(static_cast<size_t>(cols) * g * n_groups * sizeof(int16_t));
  const size_t d_bytes = static_cast<size_t>(cols / q16_block) * g * n_groups * sizeof(float);
  uint8_t* buf = t_acts.get(q_bytes + d_bytes);
  auto* q = reinterpret_cast<int16_t*>(buf);
  auto* d = reinterpret_cast<float*>(buf + q_bytes);
  parallel_for(n_groups, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t gi = g0; gi < g1; ++gi) {
      const int nt = static_cast<int>(std::min<int64_t>(g, n_tok - gi * g));
      kt.quant_group_q16(x + gi * g * cols, nt, cols, q + gi * cols * g,
                         d + gi * (cols / q16_block) * g);
    }
  });
  const q8_groups groups{nullptr, d, nullptr, cols, q16_block, q16_block, n_tok, q};
  parallel_for((rows + x16_rows - 1) / x16_rows, 1, [&](int64_t g0, int64_t g1) {
    k.mm_x16(packed.data(), rows, cols, groups, y, rows, g0, g1);
  });
}

}  // namespace

void matmul(const weight& w, const float* x, int n_tok, float* y, const packed_matrix* packed) {
  const matmul_job job{&w, y, packed};
  matmul_n(&job, 1, x, n_tok);
}

namespace {
std::atomic<bool> g_reference_products{false};
}  // namespace

void set_reference_products(bool on) {
  g_reference_products.store(on);
}

bool reference_products() {
  return g_reference_products.load(std::memory_order_relaxed);
}

void matmul_n(const matmul_job* jobs, int n_jobs, const float* x, int n_tok) {
  if (n_tok <= 0 || n_jobs <= 0) return;
  const kernel_table& kt = kernels();
  for (int j = 0; j < n_jobs; ++j)
    if (jobs[j].w->cols() != jobs[0].w->cols())
      throw std::logic_error("matmul_n: the weights do not share an input width");
  if (reference_products()) {
    for (int j = 0; j < n_jobs; ++j) {
      const weight& w = *jobs[j].w;
      const int64_t rows = w.rows(), cols = w.cols();
      parallel_for(rows, 16, [&](int64_t r0, int64_t r1) {
        ref::matmul(w.type(), w.data(), cols, rows, x, n_tok, jobs[j].y, r0, r1);
      });
    }
    return;
  }
  if (matvec_plan::suits(jobs, n_jobs, n_tok)) return matmul_rows(jobs, n_jobs, x, n_tok);
  for (int j = 0; j < n_jobs; ++j) {
    const weight& w = *jobs[j].w;
    float* y = jobs[j].y;
    const type_kernels* k = kt.find(w.type());
    const int64_t rows = w.rows(), cols = w.cols();
    if (k == nullptr) {  // a type without kernels: dequantize rows (slow but right)
      const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, cols / 64));
      parallel_for(rows, grain, [&](int64_t r0, int64_t r1) {
        ref::matmul(w.type(), w.data(), cols, rows, x, n_tok, y, r0, r1);
      });
    } else if (const packed_matrix* p = usable_packed(k, jobs[j]);
               p && k->x16_act == act_format::q16_64) {
      if (n_tok >= kt.gemm_min_tokens && k->mm_x16)
        matmul_q16_gemm(kt, *k, w, x, n_tok, y, *p);
      else
        matmul_rows(&jobs[j], 1, x, n_tok);
    } else if (k->mv_f32) {
      matmul_float(*k, w, x, n_tok, y);
    } else if (n_tok >= kt.gemm_min_tokens && k->mm_q8) {
      matmul_q8_gemm(kt, *k, w, x, n_tok, y, usable_packed(k, jobs[j]));
    } else {
      matmul_rows(&jobs[j], 1, x, n_tok);
    }
  }
}

}  // namespace tandem::cpu
