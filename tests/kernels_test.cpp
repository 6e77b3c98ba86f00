// The kernel table: every weight type at every level this CPU has, on odd shapes, against
// (1) the float reference (ref::matmul on the dequantized weights), within the error that 8-bit
// activations bring, and (2) the scalar table on the same quantized activations, within float
// summation-order error. Also: the activation quantizers agree bit for bit across levels, and
// prefetch distance and thread count do not change results.
#include "cpu/kernels.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "runtime/fp16.h"
#include "cpu/matmul.h"
#include "cpu/ops_ref.h"
#include "cpu/parallel.h"
#include "runtime/blocks.h"
#include "cpu/repack.h"
#include "runtime/error.h"
#include "tests/test_util.h"

namespace tandem::cpu {
namespace {

using test::gaussian;

// A rows x cols matrix of type t, quantized from Gaussian values, as a weight view.
struct test_matrix {
  std::vector<uint8_t> data;
  gguf_tensor t;
  test_matrix(dtype type, int64_t rows, int64_t cols, uint32_t seed) {
    const auto f = gaussian(static_cast<size_t>(rows * cols), seed, 0.05f);
    const size_t rb = row_bytes(type, static_cast<uint64_t>(cols));
    data.resize(rb * static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r)
      quantize_row(type, f.data() + r * cols, data.data() + r * rb, cols);
    t.type = type;
    t.n_dims = 2;
    t.ne[0] = cols;
    t.ne[1] = rows;
    t.nbytes = data.size();
    t.data = data.data();
  }
  weight w() const { return weight{&t}; }
};

// Restores the kernel level, prefetch distance and thread count a test changes.
struct state_guard {
  kernel_level level = active_kernel_level();
  int pf = prefetch_distance();
  int threads = num_threads();
  ~state_guard() {
    set_kernel_level(level);
    set_prefetch_distance(pf);
    set_num_threads(threads);
  }
};

std::vector<float> run(kernel_level l, const test_matrix& m, const std::vector<float>& x,
                       int n_tok) {
  set_kernel_level(l);
  std::vector<float> y(static_cast<size_t>(m.t.ne[1] * n_tok), NAN);
  matmul(m.w(), x.data(), n_tok, y.data());
  return y;
}

std::vector<float> reference(const test_matrix& m, const std::vector<float>& x, int n_tok) {
  const int64_t rows = m.t.ne[1], cols = m.t.ne[0];
  std::vector<float> y(static_cast<size_t>(rows * n_tok));
  ref::matmul(m.t.type, m.t.data, cols, rows, x.data(), n_tok, y.data(), 0, rows);
  return y;
}

// For every output y[t * rows + r]: sum_k (w_rk x_tk)^2, the expected y^2 of random data and the
// scale of its rounding errors. Errors are measured against it rather than against y, which can
// cancel to near zero.
std::vector<double> term_squares(const test_matrix& m, const std::vector<float>& x, int n_tok) {
  const int64_t rows = m.t.ne[1], cols = m.t.ne[0];
  const size_t rb = row_bytes(m.t.type, static_cast<uint64_t>(cols));
  std::vector<float> wr(static_cast<size_t>(cols));
  std::vector<double> out(static_cast<size_t>(rows * n_tok));
  for (int64_t r = 0; r < rows; ++r) {
    dequantize_row(m.t.type, m.t.data + r * rb, wr.data(), cols);
    for (int t = 0; t < n_tok; ++t) {
      double den = 0;
      for (int64_t k = 0; k < cols; ++k) {
        const double p = double(wr[static_cast<size_t>(k)]) * x[static_cast<size_t>(t * cols + k)];
        den += p * p;
      }
      out[static_cast<size_t>(t * rows + r)] = den;
    }
  }
  return out;
}

// Squared error over the sum of term_squares.
double normalized_error(const test_matrix& m, const std::vector<float>& x, int n_tok,
                        const std::vector<float>& got, const std::vector<float>& want) {
  const auto sq = term_squares(m, x, n_tok);
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += sq[i];
  }
  return num / den;
}

bool is_float(dtype t) {
  return t == dtype::f32 || t == dtype::f16;
}

// The levels this CPU runs; the tests that loop over them check each. A level the CPU lacks is
// reported as a skipped test of its own (KernelLevels.*) instead of vanishing from the loops.
std::vector<kernel_level> levels() {
  std::vector<kernel_level> v;
  for (auto l : {kernel_level::scalar, kernel_level::avx2, kernel_level::avx512})
    if (cpu_supports(l)) v.push_back(l);
  return v;
}

TEST(KernelLevels, Avx2IsChecked) {
  if (!cpu_supports(kernel_level::avx2))
    GTEST_SKIP() << "this CPU lacks AVX2/FMA/F16C: the AVX2 kernels were not checked";
  const auto v = levels();
  EXPECT_NE(std::find(v.begin(), v.end(), kernel_level::avx2), v.end());
}

TEST(KernelLevels, Avx512IsChecked) {
  if (!cpu_supports(kernel_level::avx512))
    GTEST_SKIP() << "this CPU lacks AVX-512 (F, BW, VL, DQ, VNNI): the AVX-512 kernels were not "
                    "checked";
  const auto v = levels();
  EXPECT_NE(std::find(v.begin(), v.end(), kernel_level::avx512), v.end());
}

struct shape {
  int64_t rows, cols;
  int n_tok;
};

std::vector<shape> shapes(dtype t) {
  std::vector<shape> v;
  std::vector<int64_t> cols = {256, 512, 2304};
  if (is_float(t)) cols.push_back(172);  // not a multiple of the vector width (stories260K's FFN)
  if (t == dtype::q4_0 || t == dtype::q8_0) {
    cols.push_back(96);   // 3 blocks: a pair and an odd block, no group of 8
    cols.push_back(352);  // 11 blocks: a group of 8, a pair and an odd block
  }
  for (int64_t r : {1, 7, 33, 257})
    for (int64_t c : cols)
      for (int n : {1, 3, 17}) v.push_back({r, c, n});
  return v;
}

class KernelTypes : public ::testing::TestWithParam<dtype> {};

// 8-bit activations: quantization noise of ~ (amax / 127)^2 / 12 per element gives a normalized
// error of ~3e-5 (blocks of 32) to ~5e-5 (blocks of 256) on Gaussian data; float weights are
// exact but for summation order.
TEST_P(KernelTypes, MatchesFloatReference) {
  const dtype t = GetParam();
  state_guard guard;
  double worst_large = 0;  // over shapes with at least 1000 outputs
  for (kernel_level l : levels()) {
    for (const shape& s : shapes(t)) {
      test_matrix m(t, s.rows, s.cols, static_cast<uint32_t>(s.rows * 131 + s.cols));
      const auto x = gaussian(static_cast<size_t>(s.cols * s.n_tok), 99);
      const auto want = reference(m, x, s.n_tok);
      const auto got = run(l, m, x, s.n_tok);
      const double e = normalized_error(m, x, s.n_tok, got, want);
      // A mean-square over k outputs scatters like chi-square / k: allow for few outputs.
      const double k = static_cast<double>(s.rows * s.n_tok);
      const double bound = (is_float(t) ? 1e-10 : 1e-4) * (1 + 10 / std::sqrt(k));
      if (k >= 1000) worst_large = std::max(worst_large, e);
      EXPECT_LT(e, bound) << dtype_name(t) << " " << kernel_level_name(l) << " rows " << s.rows
                          << " cols " << s.cols << " n_tok " << s.n_tok;
    }
  }
  std::printf("  %s: worst normalized error on large shapes %.3g\n",
              std::string(dtype_name(t)).c_str(), worst_large);
}

// The same quantized activations through SIMD and scalar kernels: only the float summation order
// differs. Bound per output: 1e-5 of sqrt(sum_k (w_rk x_tk)^2).
TEST_P(KernelTypes, SimdMatchesScalarTable) {
  const dtype t = GetParam();
  state_guard guard;
  for (kernel_level l : levels()) {
    if (l == kernel_level::scalar) continue;
    for (const shape& s : shapes(t)) {
      test_matrix m(t, s.rows, s.cols, static_cast<uint32_t>(s.rows * 7 + s.cols));
      const auto x = gaussian(static_cast<size_t>(s.cols * s.n_tok), 5);
      const auto want = run(kernel_level::scalar, m, x, s.n_tok);
      const auto got = run(l, m, x, s.n_tok);
      const auto sq = term_squares(m, x, s.n_tok);
      for (size_t i = 0; i < want.size(); ++i) {
        ASSERT_LE(std::fabs(double(got[i]) - want[i]), 1e-5 * std::sqrt(sq[i]))
            << dtype_name(t) << " " << kernel_level_name(l) << " rows " << s.rows << " cols "
            << s.cols << " n_tok " << s.n_tok << ": mismatch at " << i << ": " << got[i] << " "
            << want[i];
      }
    }
  }
}

// Prefetch only touches caches; thread count only moves row boundaries. Neither changes a bit.
TEST_P(KernelTypes, PrefetchAndThreadsDoNotChangeResults) {
  const dtype t = GetParam();
  state_guard guard;
  test_matrix m(t, 257, 2304, 3);
  const auto x = gaussian(2304 * 17, 4);
  for (kernel_level l : levels()) {
    for (int n_tok : {1, 17}) {
      set_prefetch_distance(0);
      set_num_threads(1);
      const auto base = run(l, m, x, n_tok);
      for (int pf : {256, 1024, 4096}) {
        for (int threads : {2}) {
          set_prefetch_distance(pf);
          set_num_threads(threads);
          const auto y = run(l, m, x, n_tok);
          ASSERT_EQ(std::memcmp(y.data(), base.data(), y.size() * sizeof(float)), 0)
              << dtype_name(t) << " " << kernel_level_name(l) << " pf " << pf << " threads "
              << threads << " n_tok " << n_tok;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Kernel, KernelTypes,
                         ::testing::Values(dtype::f32, dtype::f16, dtype::q4_0, dtype::q8_0,
                                           dtype::q4_k, dtype::q5_k, dtype::q6_k),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

// ---- activation quantizers ----------------------------------------------------------------------

TEST(KernelQuantizers, IdenticalAtEveryLevel) {
  const int64_t cols = 2304;
  auto x = gaussian(static_cast<size_t>(cols * 5), 11);
  x[7] = 0;  // a few exact and tie values
  x[100] = 3.0f;
  for (int i = 256; i < 288; ++i) x[static_cast<size_t>(i)] = 0;  // an all-zero block
  const kernel_table& ref = kernels(kernel_level::scalar);
  std::vector<int8_t> q0(cols), q1(cols);
  std::vector<float> d0(cols / 32), d1(cols / 32);
  std::vector<int32_t> s0(cols / 32), s1(cols / 32);
  std::vector<int16_t> b0(cols / 16), b1(cols / 16);
  for (kernel_level l : levels()) {
    const kernel_table& k = kernels(l);
    ref.quant_q8_32(x.data(), cols, q0.data(), d0.data(), s0.data());
    k.quant_q8_32(x.data(), cols, q1.data(), d1.data(), s1.data());
    EXPECT_EQ(q0, q1) << kernel_level_name(l);
    EXPECT_EQ(d0, d1) << kernel_level_name(l);
    EXPECT_EQ(s0, s1) << kernel_level_name(l);
    ref.quant_q8_256(x.data(), cols, q0.data(), d0.data(), b0.data());
    k.quant_q8_256(x.data(), cols, q1.data(), d1.data(), b1.data());
    EXPECT_EQ(q0, q1) << kernel_level_name(l);
    EXPECT_EQ(std::vector<float>(d0.begin(), d0.begin() + cols / 256),
              std::vector<float>(d1.begin(), d1.begin() + cols / 256));
    EXPECT_EQ(b0, b1) << kernel_level_name(l);
    for (int sb : {32, 16}) {
      for (int db : {32, 256}) {
        for (int n : {1, 5}) {
          std::vector<int8_t> gq0(cols * 8), gq1(cols * 8, 1);
          std::vector<float> gd0(cols / db * 8), gd1(gd0.size(), 1), gs0(cols / sb * 8),
              gs1(gs0.size(), 1);
          ref.quant_group(x.data(), n, cols, sb, db, gq0.data(), gd0.data(), gs0.data());
          k.quant_group(x.data(), n, cols, sb, db, gq1.data(), gd1.data(), gs1.data());
          const std::string where = std::string(kernel_level_name(l)) + " sb " +
                                    std::to_string(sb) + " db " + std::to_string(db) + " n " +
                                    std::to_string(n);
          EXPECT_EQ(gq0, gq1) << where;
          EXPECT_EQ(gd0, gd1) << where;
          EXPECT_EQ(gs0, gs1) << where;
        }
      }
    }
    if (k.quant_q16 == nullptr) continue;  // q16_64 (F16 in x16 form)
    std::vector<int16_t> h0(cols), h1(cols, 1);
    std::vector<float> hd0(cols / q16_block), hd1(hd0.size(), 1);
    ref.quant_q16(x.data(), cols, h0.data(), hd0.data());
    k.quant_q16(x.data(), cols, h1.data(), hd1.data());
    EXPECT_EQ(h0, h1) << kernel_level_name(l);
    EXPECT_EQ(hd0, hd1) << kernel_level_name(l);
    for (int n : {1, 5}) {
      std::vector<int16_t> gq0(cols * 8), gq1(cols * 8, 1);
      std::vector<float> gd0(cols / q16_block * 8), gd1(gd0.size(), 1);
      ref.quant_group_q16(x.data(), n, cols, gq0.data(), gd0.data());
      k.quant_group_q16(x.data(), n, cols, gq1.data(), gd1.data());
      EXPECT_EQ(gq0, gq1) << kernel_level_name(l) << " n " << n;
      EXPECT_EQ(gd0, gd1) << kernel_level_name(l) << " n " << n;
    }
  }
}

// q16_64: levels within 4095, half a step of error, and the group layout holds the same levels.
TEST(KernelQuantizers, Q16RoundTripAndGroupLayout) {
  const int64_t cols = 320;
  auto x = gaussian(static_cast<size_t>(cols * 3), 13);
  x[70] = 250.0f;  // an outlier: the rest of its block gets coarse steps
  for (int i = 128; i < 192; ++i) x[static_cast<size_t>(i)] = 0;  // an all-zero block
  const kernel_table& k = kernels(kernel_level::scalar);
  std::vector<int16_t> q(cols * 3);
  std::vector<float> d(cols / q16_block * 3);
  for (int t = 0; t < 3; ++t)
    k.quant_q16(x.data() + t * cols, cols, q.data() + t * cols, d.data() + t * cols / q16_block);
  for (int64_t i = 0; i < cols * 3; ++i) {
    const float di = d[static_cast<size_t>(i / q16_block)];
    EXPECT_LE(std::fabs(q[i] * di - x[i]), 0.5001f * di) << i;
    EXPECT_LE(std::abs(q[i]), q16_level_max);
  }
  EXPECT_EQ(d[2], 0.0f);
  EXPECT_EQ(q[70], q16_level_max);
  std::vector<int16_t> gq(cols * 8, 7);
  std::vector<float> gd(cols / q16_block * 8, 7);
  k.quant_group_q16(x.data(), 3, cols, gq.data(), gd.data());
  for (int t = 0; t < 8; ++t)
    for (int64_t c = 0; c < cols; ++c)
      EXPECT_EQ(gq[static_cast<size_t>((c / 2) * 16 + 2 * t + c % 2)], t < 3 ? q[t * cols + c] : 0)
          << t << " " << c;
  for (int t = 0; t < 8; ++t)
    for (int64_t b = 0; b < cols / q16_block; ++b)
      EXPECT_EQ(gd[static_cast<size_t>(b * 8 + t)], t < 3 ? d[t * cols / q16_block + b] : 0.0f);
}

// The activation rounding is llama.cpp's: ggml's quantize_row_q8_K_ref for blocks of 256 and
// ggml-cpu's x86 quantize_row_q8_0 for blocks of 32, written out here independently.
TEST(KernelQuantizers, RoundLikeLlamaCpp) {
  const int64_t cols = 512;
  auto x = gaussian(cols, 21);
  x[300] = -4.0f;  // block 1's largest magnitude is negative (Q8_K's scale has max's opposite sign)
  std::vector<int8_t> q(cols);
  std::vector<float> d(cols / 32);
  std::vector<int16_t> bs(cols / 16);
  std::vector<int32_t> sum(cols / 32);
  const kernel_table& k = kernels(kernel_level::scalar);
  k.quant_q8_256(x.data(), cols, q.data(), d.data(), bs.data());
  for (int64_t b = 0; b < cols / 256; ++b) {
    float max = 0, amax = 0;
    for (int j = 0; j < 256; ++j) {
      const float ax = std::fabs(x[static_cast<size_t>(256 * b + j)]);
      if (ax > amax) {
        amax = ax;
        max = x[static_cast<size_t>(256 * b + j)];
      }
    }
    const float iscale = -127.f / max;
    EXPECT_EQ(d[static_cast<size_t>(b)], 1 / iscale);
    for (int j = 0; j < 256; ++j)
      EXPECT_EQ(q[static_cast<size_t>(256 * b + j)],
                std::min(127, nearest_int(iscale * x[static_cast<size_t>(256 * b + j)])));
  }
  EXPECT_GT(d[1], 0.0f);
  k.quant_q8_32(x.data(), cols, q.data(), d.data(), sum.data());
  for (int64_t b = 0; b < cols / 32; ++b) {
    float amax = 0;
    for (int j = 0; j < 32; ++j)
      amax = std::max(amax, std::fabs(x[static_cast<size_t>(32 * b + j)]));
    EXPECT_EQ(d[static_cast<size_t>(b)], fp16_to_fp32(fp32_to_fp16(amax / 127.f)));
    for (int j = 0; j < 32; ++j)
      EXPECT_EQ(
          q[static_cast<size_t>(32 * b + j)],
          static_cast<int8_t>(std::nearbyint(x[static_cast<size_t>(32 * b + j)] * (127.f / amax))));
  }
}

TEST(KernelQuantizers, Q8_32RoundTrip) {
  const int64_t cols = 512;
  const auto x = gaussian(cols, 12);
  std::vector<int8_t> q(cols);
  std::vector<float> d(cols / 32);
  std::vector<int32_t> s(cols / 32);
  kernels(kernel_level::scalar).quant_q8_32(x.data(), cols, q.data(), d.data(), s.data());
  for (int64_t i = 0; i < cols; ++i) {
    // Half a step, plus the fp16 rounding of the scale (2^-11 relative) over 127 steps.
    EXPECT_LE(std::fabs(q[i] * d[i / 32] - x[i]), 0.57f * d[i / 32]) << i;
    EXPECT_LE(std::abs(q[i]), 127);
  }
  for (int64_t b = 0; b < cols / 32; ++b) {
    int sum = 0;
    for (int i = 0; i < 32; ++i) sum += q[b * 32 + i];
    EXPECT_EQ(sum, s[b]);
  }
}

// The SIMD repack of gemm tiles writes the same bytes as the scalar one.
TEST(KernelRepack, Avx2MatchesScalar) {
  if (!cpu_supports(kernel_level::avx2)) GTEST_SKIP() << "no AVX2";
  for (dtype t : {dtype::q4_0, dtype::q8_0, dtype::q4_k, dtype::q5_k, dtype::q6_k}) {
    test_matrix m(t, 21, 512, 17);
    const size_t rb = row_bytes(t, 512);
    for (int nr : {16, 5}) {
      for (bool sgn : {false, true}) {
        // Tiles are 64-byte aligned (kernels use aligned loads and stores).
        std::vector<uint8_t> abuf(gemm_scratch_bytes(512) + 64, 1), bbuf(abuf.size(), 2);
        auto align = [](uint8_t* p) {
          return reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t{63});
        };
        uint8_t* a = align(abuf.data());
        uint8_t* b = align(bbuf.data());
        repack_gemm_tile(t, m.t.data, rb, 3, nr, 512, sgn, a);
        repack_gemm_tile_avx2(t, m.t.data, rb, 3, nr, 512, sgn, b);
        const size_t used =
            static_cast<size_t>(512 / gemm_sub_block(t)) * (gemm_sub_block(t) * 16 + 128);
        for (size_t i = 0; i < used; ++i)
          ASSERT_EQ(a[i], b[i]) << dtype_name(t) << " nr " << nr << " signed " << sgn << " byte "
                                << i;
      }
    }
  }
}

// ---- the table --------------------------------------------------------------------------------

TEST(KernelTable, LevelsAndSelection) {
  state_guard guard;
  EXPECT_TRUE(cpu_supports(kernel_level::scalar));
  EXPECT_TRUE(cpu_supports(best_kernel_level()));
  for (kernel_level l : levels()) {
    set_kernel_level(l);
    EXPECT_EQ(active_kernel_level(), l);
    EXPECT_EQ(kernels().level, l);
    EXPECT_EQ(kernels(l).level, l);
    for (dtype t :
         {dtype::f32, dtype::f16, dtype::q4_0, dtype::q8_0, dtype::q4_k, dtype::q5_k, dtype::q6_k})
      EXPECT_NE(kernels(l).find(t), nullptr) << dtype_name(t);
    EXPECT_EQ(kernels(l).find(dtype::q2_k), nullptr);
  }
  if (!cpu_supports(kernel_level::avx512)) {
    EXPECT_THROW(set_kernel_level(kernel_level::avx512), error);
  }
  set_prefetch_distance(-5);  // back to the per-type defaults
  EXPECT_EQ(prefetch_distance(), -1);
  EXPECT_EQ(prefetch_distance(dtype::q8_0), default_prefetch_distance(dtype::q8_0));
  EXPECT_EQ(prefetch_distance(dtype::q4_k), default_prefetch_distance(dtype::q4_k));
  set_prefetch_distance(512);
  EXPECT_EQ(prefetch_distance(), 512);
  EXPECT_EQ(prefetch_distance(dtype::q8_0), 512);
  EXPECT_EQ(prefetch_distance(dtype::q4_k), 512);
}

}  // namespace
}  // namespace tandem::cpu

namespace tandem::cpu {
namespace {

// matmul_n (one activation quantization, one parallel loop over several weights) gives exactly
// what one matmul per weight gives, with mixed types (so mixed activation formats: q8_32,
// q8_32p, q8_256, f32) and decode-sized and prompt-sized token counts, at every level.
TEST(MatmulN, EqualsSeparateMatmuls) {
  state_guard guard;
  const int64_t cols = 512;
  const test_matrix a(dtype::q4_k, 37, cols, 1), b(dtype::q6_k, 300, cols, 2),
      c(dtype::q8_0, 5, cols, 3), d(dtype::q4_0, 129, cols, 4), e(dtype::f16, 33, cols, 5);
  const test_matrix* ms[] = {&a, &b, &c, &d, &e};
  for (kernel_level l : {kernel_level::scalar, kernel_level::avx2, kernel_level::avx512}) {
    if (!cpu_supports(l)) continue;
    set_kernel_level(l);
    for (int n_tok : {1, 2, 3, 9}) {
      const auto x = gaussian(static_cast<size_t>(cols * n_tok), 10 + n_tok);
      std::vector<std::vector<float>> want, got;
      std::vector<matmul_job> jobs;
      for (const test_matrix* m : ms) {
        want.emplace_back(static_cast<size_t>(m->t.ne[1] * n_tok));
        got.emplace_back(static_cast<size_t>(m->t.ne[1] * n_tok), NAN);
        matmul(m->w(), x.data(), n_tok, want.back().data());
      }
      std::vector<weight> ws;
      for (const test_matrix* m : ms) ws.push_back(m->w());
      for (size_t j = 0; j < ws.size(); ++j) jobs.push_back({&ws[j], got[j].data()});
      matmul_n(jobs.data(), static_cast<int>(jobs.size()), x.data(), n_tok);
      for (size_t j = 0; j < ws.size(); ++j)
        EXPECT_EQ(want[j], got[j]) << kernel_level_name(l) << " n_tok " << n_tok << " job " << j;
    }
  }
}

// The decode plan's units (matvec_plan): the jobs' rows back to back, one unit per row of an
// unpacked weight, or group by group; split() cuts them into parts of about equal weight bytes
// (within a unit of the even share, in order, covering every unit); rows() maps any run of units
// back to each job's rows; and run() over any cut of the units computes what matmul does. Shapes
// of stories110M (QKV, FFN gate/up, FFN down, Q4_0), mixed types and a tiny one, each in one
// group and in several (where every job's rows divide by them; else one group).
TEST(MatvecPlan, UnitsSplitAndRowsCoverEveryRowOnce) {
  state_guard guard;
  const test_matrix q(dtype::q4_0, 768, 768, 1), g(dtype::q4_0, 2048, 768, 2),
      d(dtype::q4_0, 768, 2048, 3), t(dtype::q8_0, 40, 64, 4), k6(dtype::q6_k, 96, 768, 5),
      k4(dtype::q4_k, 200, 768, 6);
  struct plan_case {
    std::vector<const test_matrix*> ms;
    int groups, want_groups;
  };
  const std::vector<plan_case> cases = {{{&q, &q, &q}, 1, 1},
                                        {{&q, &q, &q}, 12, 12},
                                        {{&g, &g}, 1, 1},
                                        {{&g, &g}, 8, 8},
                                        {{&d}, 1, 1},
                                        {{&d}, 3, 3},
                                        {{&t}, 1, 1},
                                        {{&t}, 3, 1},
                                        {{&k4, &k6, &k4}, 1, 1},
                                        {{&k4, &k6, &k4}, 4, 4},
                                        {{&k4, &k6}, 5, 1}};
  for (const auto& [ms, groups, want_groups] : cases) {
    std::vector<weight> ws;
    std::vector<std::vector<float>> ys, want;
    std::vector<matmul_job> jobs;
    size_t bytes = 0;
    int64_t rows_total = 0;
    const int64_t cols = ms[0]->t.ne[0];
    const auto x = gaussian(static_cast<size_t>(cols), 7);
    for (const test_matrix* m : ms) {
      ws.push_back(m->w());
      ys.emplace_back(static_cast<size_t>(m->t.ne[1]), NAN);
      want.emplace_back(static_cast<size_t>(m->t.ne[1]));
      matmul(ws.back(), x.data(), 1, want.back().data());
      bytes += m->t.nbytes;
      rows_total += m->t.ne[1];
    }
    for (size_t j = 0; j < ws.size(); ++j) jobs.push_back({&ws[j], ys[j].data()});
    matvec_plan plan;
    ASSERT_TRUE(plan.build(jobs.data(), static_cast<int>(jobs.size()), 1, groups));
    const std::string what = std::to_string(ms.size()) + " x " + std::to_string(ms[0]->t.ne[1]) +
                             " in " + std::to_string(groups) + " groups";
    ASSERT_EQ(plan.units(), rows_total) << what;
    ASSERT_EQ(plan.groups(), want_groups) << what;
    ASSERT_EQ(plan.group_units() * want_groups, rows_total) << what;
    // A grain is about grain_bytes of weights: as many whole rows (units) as that holds.
    const size_t avg_row = bytes / static_cast<size_t>(rows_total);
    EXPECT_EQ(plan.grain(),
              std::max<int64_t>(1, static_cast<int64_t>(matvec_plan::grain_bytes / avg_row)))
        << what;
    // Group k holds the k-th of want_groups equal runs of each job's rows.
    for (int k = 0; k < want_groups; ++k)
      for (size_t j = 0; j < ms.size(); ++j) {
        int64_t r0, r1;
        plan.rows(static_cast<int>(j), k * plan.group_units(), (k + 1) * plan.group_units(), &r0,
                  &r1);
        EXPECT_EQ(r0, ms[j]->t.ne[1] / want_groups * k) << what << ", group " << k << ", job " << j;
        EXPECT_EQ(r1, ms[j]->t.ne[1] / want_groups * (k + 1)) << what << ", group " << k;
      }
    size_t max_row = 0;
    for (const test_matrix* m : ms) max_row = std::max<size_t>(max_row, m->t.nbytes / m->t.ne[1]);
    for (int parts : {1, 2, 3, 7, 16}) {
      EXPECT_EQ(plan.split(0, parts), 0);
      EXPECT_EQ(plan.split(parts, parts), plan.units());
      std::vector<int64_t> next(ms.size(), 0);  // each job's next row
      for (int k = 0; k < parts; ++k) {
        const int64_t u0 = plan.split(k, parts), u1 = plan.split(k + 1, parts);
        ASSERT_LE(u0, u1) << what << ", part " << k << " of " << parts;
        size_t part_bytes = 0;
        for (size_t j = 0; j < ms.size(); ++j) {
          int64_t r0, r1;
          plan.rows(static_cast<int>(j), u0, u1, &r0, &r1);
          ASSERT_LE(r0, r1);
          if (r0 == r1) continue;
          EXPECT_EQ(r0, next[j]) << what << ", part " << k << " of " << parts << ", job " << j;
          next[j] = r1;
          part_bytes += static_cast<size_t>(r1 - r0) * (ms[j]->t.nbytes / ms[j]->t.ne[1]);
        }
        if (static_cast<int64_t>(parts) <= rows_total) {  // about an even share of the bytes
          EXPECT_LE(part_bytes, bytes / parts + 2 * max_row) << what << ", part " << k;
          EXPECT_GE(part_bytes + 2 * max_row, bytes / parts) << what << ", part " << k;
        }
      }
      for (size_t j = 0; j < ms.size(); ++j) EXPECT_EQ(next[j], ms[j]->t.ne[1]) << what;
    }
    // run() over an uneven cut of the units (runs of 1, 2, 3, ... units) equals matmul.
    plan.quantize(x.data());
    for (int64_t u = 0, len = 1; u < plan.units(); u += len, ++len)
      plan.run(u, std::min(plan.units(), u + len));
    for (size_t j = 0; j < ms.size(); ++j) EXPECT_EQ(ys[j], want[j]) << what << ", job " << j;
  }
}

// quantize() in parts (prepare, then quantize_range over blocks of 256 columns in any order and
// the tail, as decode's SwiGLU groups do): the products give quantize()'s bits, for every
// activation format (q8_32 and its pair interleave, q8_256, q16_64 of packed F16) at every level,
// on columns that end in a partial 256 (800) where the formats allow it.
TEST(MatvecPlan, QuantizeRangeGivesQuantizesBits) {
  state_guard guard;
  for (kernel_level l : levels()) {
    set_kernel_level(l);
    for (dtype type :
         {dtype::q4_0, dtype::q8_0, dtype::q4_k, dtype::q5_k, dtype::q6_k, dtype::f16}) {
      const bool k256 = type == dtype::q4_k || type == dtype::q5_k || type == dtype::q6_k;
      const int64_t cols = k256 ? 768 : 800, rows = 48;
      const test_matrix m(type, rows, cols, 31);
      const weight w = m.w();
      const packed_matrix pk(type, m.t.data, rows, cols);
      for (const packed_matrix* p : {static_cast<const packed_matrix*>(nullptr), &pk}) {
        const auto x = gaussian(static_cast<size_t>(cols), 5);
        std::vector<float> want(static_cast<size_t>(rows)), got(want.size(), NAN);
        const std::string what =
            std::string(dtype_name(type)) + " " + kernel_level_name(l) + (p ? " packed" : "");
        matmul_job job{&w, want.data(), p};
        matvec_plan whole;
        ASSERT_TRUE(whole.build(&job, 1, 1)) << what;
        whole.quantize(x.data());
        whole.run(0, whole.units());
        job.y = got.data();
        matvec_plan parts;
        ASSERT_TRUE(parts.build(&job, 1, 1)) << what;
        parts.prepare(x.data());
        for (int64_t c0 : {int64_t{512}, int64_t{0}, int64_t{256}})
          parts.quantize_range(c0, std::min(cols, c0 + 256));
        if (cols > 768) parts.quantize_range(768, cols);
        parts.run(0, parts.units());
        EXPECT_EQ(std::memcmp(want.data(), got.data(), want.size() * sizeof(float)), 0) << what;
        EXPECT_THROW(parts.quantize_range(100, 256), std::invalid_argument) << what;
      }
    }
  }
}

// Float weights on the prompt path (mm_f32): token counts around the register tiles (2, 5, 9),
// cols that are not a multiple of the vector width, and cols large enough that the kernels split
// the tokens into blocks (2600 floats: blocks of 48 tokens), against the scalar table.
TEST(KernelFloatPrompt, OddTokenCountsAndColumns) {
  state_guard guard;
  for (dtype t : {dtype::f32, dtype::f16}) {
    for (kernel_level l : levels()) {
      if (l == kernel_level::scalar) continue;
      for (int64_t rows : {7, 33}) {
        for (int64_t cols : {40, 264, 2600}) {
          test_matrix m(t, rows, cols, static_cast<uint32_t>(rows * 17 + cols));
          for (int n_tok : {2, 5, 9, 31, 64}) {
            const auto x = gaussian(static_cast<size_t>(cols * n_tok), 7 + n_tok);
            const auto want = run(kernel_level::scalar, m, x, n_tok);
            const auto got = run(l, m, x, n_tok);
            const auto sq = term_squares(m, x, n_tok);
            for (size_t i = 0; i < want.size(); ++i) {
              ASSERT_LE(std::fabs(double(got[i]) - want[i]), 1e-5 * std::sqrt(sq[i]))
                  << dtype_name(t) << " " << kernel_level_name(l) << " rows " << rows << " cols "
                  << cols << " n_tok " << n_tok << ": mismatch at " << i;
            }
            const double e = normalized_error(m, x, n_tok, got, reference(m, x, n_tok));
            EXPECT_LT(e, 1e-10 * (1 + 10 / std::sqrt(static_cast<double>(rows * n_tok))))
                << dtype_name(t) << " " << kernel_level_name(l) << " rows " << rows << " cols "
                << cols << " n_tok " << n_tok;
          }
        }
      }
    }
  }
}

// x16 (row-interleaved) packing is exact: unpacking gives back the GGUF bytes, for row counts
// that do and do not fill the 16-row groups. Random bytes, so every bit of the scales is used.
TEST(KernelX16, PackUnpackRoundTrip) {
  std::mt19937 rng(5);
  for (dtype t : {dtype::q4_k, dtype::q5_k, dtype::q6_k, dtype::q4_0, dtype::q8_0}) {
    for (int64_t rows : {1, 7, 16, 33}) {
      for (int64_t cols : {256, 768}) {
        ASSERT_TRUE(x16_supported(t, cols));
        const size_t rb = row_bytes(t, static_cast<uint64_t>(cols));
        std::vector<uint8_t> w(rb * static_cast<size_t>(rows)), back(w.size(), 0xAA);
        for (auto& b : w) b = static_cast<uint8_t>(rng());
        std::vector<uint8_t> packed(x16_bytes(t, rows, cols), 0xCC);
        const int64_t groups = (rows + x16_rows - 1) / x16_rows;
        pack_x16(t, w.data(), rb, rows, cols, 0, groups, packed.data());
        unpack_x16(t, packed.data(), rows, cols, back.data(), rb);
        EXPECT_EQ(w, back) << dtype_name(t) << " rows " << rows << " cols " << cols;
      }
    }
  }
  EXPECT_TRUE(x16_supported(dtype::f16, 896));
  EXPECT_FALSE(x16_supported(dtype::f16, 832));
  EXPECT_FALSE(x16_supported(dtype::q4_k, 896));
  EXPECT_FALSE(x16_supported(dtype::q8_0, 96));
  EXPECT_FALSE(x16_supported(dtype::q5_k, 896));
  EXPECT_FALSE(x16_supported(dtype::q5_0, 256));
}

// The x16 kernels (matrix-vector for 1-3 tokens, the gemm from gemm_min_tokens) on a packed copy
// give what the same level's kernels give on the GGUF rows (same quantized activations: only the
// float summation order differs), for row counts that leave partial 16-row groups and for row
// counts not divisible by the thread count. A level without x16 kernels ignores the packed copy.
TEST(KernelX16, MatchesRowKernels) {
  state_guard guard;
  for (dtype type : {dtype::q4_k, dtype::q5_k, dtype::q6_k, dtype::q4_0, dtype::q8_0}) {
    for (kernel_level l : levels()) {
      set_kernel_level(l);
      const bool has_x16 = kernels().find(type)->mv_x16 != nullptr;
      for (int threads : {1, 2}) {
        set_num_threads(threads);
        for (int64_t rows : {1, 7, 16, 33, 101}) {
          for (int64_t cols : {256, 2304, 832}) {
            if (!x16_supported(type, cols)) continue;
            const test_matrix m(type, rows, cols, static_cast<uint32_t>(rows * 31 + cols));
            const packed_matrix pk(type, m.t.data, rows, cols);
            for (int n_tok : {1, 3, 4, 9, 17}) {
              const auto x = gaussian(static_cast<size_t>(cols * n_tok), 3 + n_tok);
              std::vector<float> want(static_cast<size_t>(rows * n_tok)), got(want.size(), NAN);
              matmul(m.w(), x.data(), n_tok, want.data());
              matmul(m.w(), x.data(), n_tok, got.data(), &pk);
              const std::string what = std::string(dtype_name(type)) + " " + kernel_level_name(l) +
                                       " rows " + std::to_string(rows) + " cols " +
                                       std::to_string(cols) + " n_tok " + std::to_string(n_tok);
              if (!has_x16) {
                EXPECT_EQ(want, got) << what;
                continue;
              }
              const auto sq = term_squares(m, x, n_tok);
              for (size_t i = 0; i < want.size(); ++i)
                ASSERT_LE(std::fabs(double(got[i]) - want[i]), 1e-5 * std::sqrt(sq[i]))
                    << what << ": mismatch at " << i;
              const double e = normalized_error(m, x, n_tok, got, reference(m, x, n_tok));
              EXPECT_LT(e, 1e-4 * (1 + 10 / std::sqrt(static_cast<double>(rows * n_tok)))) << what;
            }
          }
        }
      }
    }
  }
}

// Where the CPU has GFNI, the AVX-512 table's Q5_K / Q6_K matrix-vector kernels move the high bits
// with vgf2p8affineqb; AVX-512 CPUs without it run the shift-and-mask kernels. Both build the
// same levels, hence the same integer sums and the same bits, on every 16-row group (partial ones
// too) and on a range of groups that does not start at 0.
TEST(KernelX16, GfniKernelsGiveTheSameBits) {
  if (!cpu_supports(kernel_level::avx512) || !cpu_supports_gfni())
    GTEST_SKIP() << "this CPU lacks AVX-512 or GFNI";
  const kernel_table& k = kernels(kernel_level::avx512);
  EXPECT_EQ(k.q5_k.mv_x16, &mv_q5_k_x16_avx512_gfni);
  EXPECT_EQ(k.q6_k.mv_x16, &mv_q6_k_x16_avx512_gfni);
  struct variant {
    dtype type;
    mv_x16_fn plain, gfni;
  };
  for (const variant v : {variant{dtype::q5_k, mv_q5_k_x16_avx512, mv_q5_k_x16_avx512_gfni},
                          variant{dtype::q6_k, mv_q6_k_x16_avx512, mv_q6_k_x16_avx512_gfni}}) {
    for (int64_t rows : {1, 7, 16, 33, 101}) {
      for (int64_t cols : {256, 2304}) {
        const test_matrix m(v.type, rows, cols, static_cast<uint32_t>(rows * 7 + cols));
        const packed_matrix pk(v.type, m.t.data, rows, cols);
        ASSERT_TRUE(pk);
        const auto x = gaussian(static_cast<size_t>(cols), static_cast<uint32_t>(rows + cols));
        std::vector<int8_t> q(static_cast<size_t>(cols));
        std::vector<float> d(static_cast<size_t>(cols / qk_k));
        std::vector<int16_t> bsums(static_cast<size_t>(cols / 16));
        k.quant_q8_256(x.data(), cols, q.data(), d.data(), bsums.data());
        q8_row xr{};
        xr.q = q.data();
        xr.d = d.data();
        xr.bsums = bsums.data();
        const int64_t groups = (rows + x16_rows - 1) / x16_rows;
        std::vector<float> want(static_cast<size_t>(groups * x16_rows), 0.0f), got(want);
        v.plain(pk.data(), rows, cols, xr, want.data(), 0, groups);
        v.gfni(pk.data(), rows, cols, xr, got.data(), 0, groups / 2);
        v.gfni(pk.data(), rows, cols, xr, got.data(), groups / 2, groups);
        const std::string what = std::string(dtype_name(v.type)) + " rows " + std::to_string(rows) +
                                 " cols " + std::to_string(cols);
        EXPECT_EQ(want, got) << what;
        EXPECT_NE(want, std::vector<float>(want.size(), 0.0f)) << what;
      }
    }
  }
}

// F16 packs into 14-bit levels with a scale per 64 columns (repack.h): each weight moves by at
// most half a step (scale <= max|w| / 8191 * (1 + 2^-7), BF16 rounded up) plus F16 rounding of
// the unpacked value. Rows with mixed magnitudes, an all-zero block and non-finite values.
TEST(KernelX16, F16PackRoundsWithinHalfAStep) {
  const int64_t rows = 21, cols = 384;
  auto f = gaussian(static_cast<size_t>(rows * cols), 17, 0.05f);
  for (int64_t c = 0; c < cols; ++c) f[static_cast<size_t>(2 * cols + c)] *= 1e-4f;  // tiny row
  f[static_cast<size_t>(3 * cols + 5)] = 40.0f;                                      // outlier
  for (int c = 64; c < 128; ++c) f[static_cast<size_t>(4 * cols + c)] = 0;           // zero block
  std::vector<uint16_t> w(f.size()), back(f.size());
  for (size_t i = 0; i < f.size(); ++i) w[i] = fp32_to_fp16(f[i]);
  w[static_cast<size_t>(5 * cols + 7)] = 0x7C00;  // +inf
  w[static_cast<size_t>(5 * cols + 9)] = 0x7E00;  // NaN
  const packed_matrix pk(dtype::f16, w.data(), rows, cols);
  ASSERT_TRUE(pk);
  EXPECT_EQ(pk.nbytes(), x16_bytes(dtype::f16, rows, cols));
  unpack_x16(dtype::f16, pk.data(), rows, cols, back.data(), cols * sizeof(uint16_t));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < cols / 64; ++b) {
      float amax = 0;
      for (int e = 0; e < 64; ++e) {
        const float v = fp16_to_fp32(w[static_cast<size_t>(r * cols + 64 * b + e)]);
        if (std::isfinite(v)) amax = std::max(amax, std::fabs(v));
      }
      const float step = amax / f16_x16_level_max * (1 + 1.0f / 128);
      for (int e = 0; e < 64; ++e) {
        const size_t i = static_cast<size_t>(r * cols + 64 * b + e);
        const float v = fp16_to_fp32(w[i]), got = fp16_to_fp32(back[i]);
        if (!std::isfinite(v)) {
          EXPECT_EQ(got, 0.0f) << "row " << r << " col " << 64 * b + e;
          continue;
        }
        EXPECT_LE(std::fabs(got - v), 0.5f * step + std::fabs(v) * 0x1p-10f)
            << "row " << r << " col " << 64 * b + e;
      }
    }
  }
  EXPECT_EQ(fp16_to_fp32(back[static_cast<size_t>(3 * cols + 5)]), 40.0f);
  for (int c = 64; c < 128; ++c) EXPECT_EQ(back[static_cast<size_t>(4 * cols + c)], 0);
}

// The F16 x16 kernels (matrix-vector for 1-3 tokens, gemm from gemm_min_tokens) against a double
// sum over the same integers (the packed levels and the q16_64 activations): they may differ only
// by float rounding. Against the float reference on the F16 weights, the error is the rounding
// of both operands to 14 and 13 bits. Row counts leave partial 16-row groups and do not divide by
// the thread count. A level without x16 kernels ignores the packed copy.
TEST(KernelX16, F16MatchesIntegerReference) {
  state_guard guard;
  auto bf16 = [](uint16_t h) {
    const uint32_t bits = static_cast<uint32_t>(h) << 16;
    float v;
    std::memcpy(&v, &bits, 4);
    return v;
  };
  for (kernel_level l : levels()) {
    set_kernel_level(l);
    const kernel_table& k = kernels();
    const bool has_x16 = k.f16.mv_x16 != nullptr;
    for (int threads : {1, 2}) {
      set_num_threads(threads);
      for (int64_t rows : {1, 7, 16, 33, 101}) {
        for (int64_t cols : {128, 896, 2304}) {
          const test_matrix m(dtype::f16, rows, cols, static_cast<uint32_t>(rows * 7 + cols));
          const packed_matrix pk(dtype::f16, m.t.data, rows, cols);
          const auto* blocks = static_cast<const block_f16_x16*>(pk.data());
          const int64_t nb = cols / 128;
          for (int n_tok : {1, 3, 4, 9, 17}) {
            const auto x = gaussian(static_cast<size_t>(cols * n_tok), 5 + n_tok);
            std::vector<float> plain(static_cast<size_t>(rows * n_tok)), got(plain.size(), NAN);
            matmul(m.w(), x.data(), n_tok, plain.data());
            matmul(m.w(), x.data(), n_tok, got.data(), &pk);
            const std::string what = std::string(kernel_level_name(l)) + " threads " +
                                     std::to_string(threads) + " rows " + std::to_string(rows) +
                                     " cols " + std::to_string(cols) + " n_tok " +
                                     std::to_string(n_tok);
            if (!has_x16) {
              EXPECT_EQ(plain, got) << what;
              continue;
            }
            std::vector<int16_t> xq(static_cast<size_t>(cols));
            std::vector<float> xd(static_cast<size_t>(cols / q16_block));
            for (int t = 0; t < n_tok; ++t) {
              kernels(kernel_level::scalar)
                  .quant_q16(x.data() + t * cols, cols, xq.data(), xd.data());
              for (int64_t r = 0; r < rows; ++r) {
                double want = 0, scale = 0;
                for (int64_t i = 0; i < nb; ++i) {
                  const block_f16_x16& B = blocks[(r / 16) * nb + i];
                  for (int h = 0; h < 2; ++h) {
                    int64_t isum = 0;
                    for (int e = 0; e < 64; ++e)
                      isum += int64_t{B.qs[32 * h + e / 2][r % 16][e % 2]} *
                              xq[static_cast<size_t>(128 * i + 64 * h + e)];
                    const double f =
                        double(bf16(B.d[h][r % 16])) * xd[static_cast<size_t>(2 * i + h)];
                    want += f * static_cast<double>(isum);
                    scale += std::fabs(f) * 64 * f16_x16_level_max * q16_level_max;
                  }
                }
                const float y = got[static_cast<size_t>(t * rows + r)];
                ASSERT_LE(std::fabs(y - want), 1e-6 * scale + 1e-6 * std::fabs(want))
                    << what << ": token " << t << " row " << r;
              }
            }
            const double e = normalized_error(m, x, n_tok, got, reference(m, x, n_tok));
            EXPECT_LT(e, 1e-7 * (1 + 10 / std::sqrt(static_cast<double>(rows * n_tok)))) << what;
          }
        }
      }
    }
  }
}

// The largest 64-column sums the F16 x16 layout allows (every weight and activation at its
// largest level, one sign) must not wrap in int32.
TEST(KernelX16, F16LargestSumsDoNotOverflow) {
  state_guard guard;
  if (!kernels(best_kernel_level()).f16.mv_x16) GTEST_SKIP() << "no x16 F16 kernels on this CPU";
  set_kernel_level(best_kernel_level());
  const int64_t rows = 16, cols = 256;
  std::vector<uint16_t> w(static_cast<size_t>(rows * cols), fp32_to_fp16(-3.0f));
  gguf_tensor t;
  t.type = dtype::f16;
  t.n_dims = 2;
  t.ne[0] = cols;
  t.ne[1] = rows;
  t.nbytes = w.size() * 2;
  t.data = reinterpret_cast<const uint8_t*>(w.data());
  const packed_matrix pk(dtype::f16, w.data(), rows, cols);
  for (int n_tok : {1, 8}) {
    const std::vector<float> x(static_cast<size_t>(cols * n_tok), -2.0f);
    std::vector<float> y(static_cast<size_t>(rows * n_tok));
    matmul(weight{&t}, x.data(), n_tok, y.data(), &pk);
    for (float v : y) EXPECT_NEAR(v, 6.0f * cols, 1e-3 * 6 * cols) << "n_tok " << n_tok;
  }
}

}  // namespace
}  // namespace tandem::cpu
