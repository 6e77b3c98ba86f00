// cpu::matmul: quantizes the activations once per call (on the calling thread, into its scratch),
// then splits the weight rows across threads and runs the active table's kernels on each range.
#include "cpu/matmul.h"

#include <algorithm>
#include <cstring>
#include <memory>

#include "cpu/kernels.h"
#include "cpu/ops_ref.h"
#include "cpu/parallel.h"

namespace tandem::cpu {
namespace {

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

thread_local scratch t_acts;  // the caller's quantized activations (read by every worker)
thread_local scratch t_tile;  // a worker's repacked weight tile

size_t align64(size_t n) {
  return (n + 63) & ~size_t{63};
}

// Rows per task for the matrix-vector kernels: enough weight bytes that a task outweighs its
// scheduling (a few microseconds), few enough that both cores get work on small matrices.
int64_t mv_grain(size_t rb) {
  constexpr size_t target = 64 * 1024;
  return std::max<int64_t>(1, static_cast<int64_t>(target / std::max<size_t>(rb, 1)));
}

void matmul_float(const type_kernels& k, const weight& w, const float* x, int n_tok, float* y) {
  const int64_t rows = w.rows(), cols = w.cols();
  const size_t rb = row_bytes(w.type(), static_cast<uint64_t>(cols));
  if (n_tok == 1) {
    parallel_for(rows, mv_grain(rb),
                 [&](int64_t r0, int64_t r1) { k.mv_f32(w.data(), rb, cols, x, y, r0, r1); });
    return;
  }
  // Row blocks small enough to stay in L2 while every token passes over them.
  const int64_t grain = std::max<int64_t>(4, static_cast<int64_t>(256 * 1024 / rb) / 4 * 4);
  parallel_for(
      rows, std::min<int64_t>(grain, std::max<int64_t>(4, rows / 8)),
      [&](int64_t r0, int64_t r1) { k.mm_f32(w.data(), rb, cols, x, n_tok, y, rows, r0, r1); });
}

void matmul_q8_rows(const kernel_table& kt, const type_kernels& k, const weight& w, const float* x,
                    int n_tok, float* y) {
  const int64_t rows = w.rows(), cols = w.cols();
  const size_t rb = row_bytes(w.type(), static_cast<uint64_t>(cols));
  const bool k256 = k.mv_act == act_format::q8_256;
  const int64_t nb = cols / (k256 ? 256 : 32);
  const size_t q_bytes = align64(static_cast<size_t>(cols));
  const size_t d_bytes = align64(static_cast<size_t>(nb) * sizeof(float));
  const size_t s_bytes = align64(k256 ? static_cast<size_t>(cols / 16) * sizeof(int16_t)
                                      : static_cast<size_t>(nb) * sizeof(int32_t));
  const size_t per_tok = q_bytes + d_bytes + s_bytes;
  uint8_t* buf = t_acts.get(per_tok * static_cast<size_t>(n_tok));
  for (int t = 0; t < n_tok; ++t) {
    uint8_t* p = buf + per_tok * static_cast<size_t>(t);
    auto* q = reinterpret_cast<int8_t*>(p);
    auto* d = reinterpret_cast<float*>(p + q_bytes);
    if (k256)
      kt.quant_q8_256(x + t * cols, cols, q, d, reinterpret_cast<int16_t*>(p + q_bytes + d_bytes));
    else
      kt.quant_q8_32(x + t * cols, cols, q, d, reinterpret_cast<int32_t*>(p + q_bytes + d_bytes));
    if (k.mv_act == act_format::q8_32p) interleave_q8_32_pairs(q, cols);
  }
  auto row_of = [&](int t) {
    const uint8_t* p = buf + per_tok * static_cast<size_t>(t);
    q8_row r{};
    r.q = reinterpret_cast<const int8_t*>(p);
    r.d = reinterpret_cast<const float*>(p + q_bytes);
    if (k256)
      r.bsums = reinterpret_cast<const int16_t*>(p + q_bytes + d_bytes);
    else
      r.sum = reinterpret_cast<const int32_t*>(p + q_bytes + d_bytes);
    return r;
  };
  const int64_t grain = mv_grain(rb);
  parallel_for(rows, grain, [&](int64_t r0, int64_t r1) {
    // With several tokens, pass over L2-sized row blocks so each token re-reads cached weights.
    const int64_t step = n_tok == 1 ? r1 - r0 : std::max<int64_t>(1, (256 * 1024) / rb);
    for (int64_t a = r0; a < r1; a += step) {
      const int64_t b = std::min(r1, a + step);
      for (int t = 0; t < n_tok; ++t) k.mv_q8(w.data(), rb, cols, row_of(t), y + t * rows, a, b);
    }
  });
}

void matmul_q8_gemm(const kernel_table& kt, const type_kernels& k, const weight& w, const float* x,
                    int n_tok, float* y) {
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
  const int64_t tiles = (rows + gemm_rows - 1) / gemm_rows;
  const size_t tile_bytes = gemm_scratch_bytes(cols);
  parallel_for(tiles, 1, [&](int64_t t0, int64_t t1) {
    void* tile = t_tile.get(tile_bytes);
    k.mm_q8(w.data(), rb, cols, groups, y, rows, t0 * gemm_rows, std::min(rows, t1 * gemm_rows),
            tile);
  });
}

}  // namespace

void matmul(const weight& w, const float* x, int n_tok, float* y) {
  if (n_tok <= 0) return;
  const kernel_table& kt = kernels();
  const type_kernels* k = kt.find(w.type());
  const int64_t rows = w.rows(), cols = w.cols();
  if (k == nullptr) {  // a type without kernels: dequantize rows (slow but right)
    const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, cols / 64));
    parallel_for(rows, grain, [&](int64_t r0, int64_t r1) {
      ref::matmul(w.type(), w.data(), cols, rows, x, n_tok, y, r0, r1);
    });
    return;
  }
  if (k->mv_f32) return matmul_float(*k, w, x, n_tok, y);
  if (n_tok >= kt.gemm_min_tokens && k->mm_q8) return matmul_q8_gemm(kt, *k, w, x, n_tok, y);
  matmul_q8_rows(kt, *k, w, x, n_tok, y);
}

}  // namespace tandem::cpu
