// The fast element-wise ops (cpu/elementwise.h) against the scalar references: RMS norm and
// SwiGLU on odd lengths (vector tails), large inputs (the threaded path), and extreme gate values;
// RoPE for Q and K together bit-identical to two reference calls.
#include "cpu/elementwise.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <stdexcept>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/ops_ref.h"
#include "tests/test_util.h"

namespace tandem::cpu {
namespace {

using test::gaussian;

double max_rel(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i)
    m = std::max(m, std::abs(static_cast<double>(a[i]) - b[i]) / (std::abs(a[i]) + 1e-30));
  return m;
}

// Runs the test at the AVX2 level whatever the active one (TANDEM_KERNELS=scalar would otherwise
// compare the reference with itself), and restores it.
struct avx2_level {
  kernel_level before = active_kernel_level();
  avx2_level() { set_kernel_level(kernel_level::avx2); }
  ~avx2_level() { set_kernel_level(before); }
};

TEST(Elementwise, RmsNormMatchesReference) {
  if (!cpu_supports(kernel_level::avx2)) GTEST_SKIP() << "no AVX2 on this CPU";
  const avx2_level at_avx2;
  for (int n : {1, 7, 8, 17, 33, 768, 2050}) {
    for (int n_tok : {1, 3, 20}) {
      const auto x = gaussian(static_cast<size_t>(n * n_tok), static_cast<uint32_t>(n), 3.0f);
      const auto w = gaussian(static_cast<size_t>(n), 99);
      std::vector<float> want(x.size()), got(x.size(), NAN);
      for (int t = 0; t < n_tok; ++t)
        ref::rms_norm(&want[static_cast<size_t>(t * n)], &x[static_cast<size_t>(t * n)], w.data(),
                      n, 1e-5f);
      rms_norm_rows(got.data(), x.data(), w.data(), n_tok, n, 1e-5f);
      EXPECT_LT(max_rel(want, got), 2e-6) << "n " << n << " n_tok " << n_tok;
    }
  }
}

TEST(Elementwise, SwigluMatchesReference) {
  if (!cpu_supports(kernel_level::avx2)) GTEST_SKIP() << "no AVX2 on this CPU";
  const avx2_level at_avx2;
  for (int64_t n : {0, 1, 7, 8, 9, 31, 2048, 100003}) {
    auto g = gaussian(static_cast<size_t>(n), 7, 4.0f);
    const auto u = gaussian(static_cast<size_t>(n), 8);
    if (n >= 4) {  // far outside exp's range: silu(-200) = -0, silu(200) = 200
      g[0] = -200.0f;
      g[1] = 200.0f;
      g[2] = -87.0f;
      g[3] = 89.0f;
    }
    std::vector<float> want(g.size()), got(g.size(), NAN);
    ref::swiglu(want.data(), g.data(), u.data(), static_cast<int>(n));
    swiglu(got.data(), g.data(), u.data(), n);
    EXPECT_LT(max_rel(want, got), 1e-6) << "n " << n;
    for (float v : got) ASSERT_TRUE(std::isfinite(v));
  }
}

// The AVX2 rotation: bit for bit the reference, full and partial rotations, rotation widths the
// vectors do not divide. (At the scalar level rope_qk is the reference itself.)
TEST(Elementwise, RopeQkIsTwoReferenceCalls) {
  if (!cpu_supports(kernel_level::avx2)) GTEST_SKIP() << "no AVX2 on this CPU";
  const kernel_level before = active_kernel_level();
  for (kernel_level level : {kernel_level::avx2}) {
    set_kernel_level(level);
    for (rope_style style : {rope_style::adjacent, rope_style::neox}) {
      for (auto [head_dim, n_rot] :
           {std::pair{24, 16}, {64, 64}, {80, 36}, {128, 128}, {40, 20}}) {
        for (int pos : {0, 1, 17, 4095}) {
          const int n_head = 6, n_head_kv = 2;
          auto q = gaussian(static_cast<size_t>(n_head * head_dim), 1);
          auto k = gaussian(static_cast<size_t>(n_head_kv * head_dim), 2);
          auto q_ref = q, k_ref = k;
          ref::rope(q_ref.data(), n_head, head_dim, n_rot, pos, 10000.0f, 0.5f, style);
          ref::rope(k_ref.data(), n_head_kv, head_dim, n_rot, pos, 10000.0f, 0.5f, style);
          rope_qk(q.data(), n_head, k.data(), n_head_kv, head_dim, n_rot, pos, 10000.0f, 0.5f,
                  style);
          EXPECT_EQ(q, q_ref) << kernel_level_name(level) << " head_dim " << head_dim
                              << " n_rot " << n_rot << " pos " << pos;
          EXPECT_EQ(k, k_ref);
        }
      }
    }
  }
  set_kernel_level(before);
}

// Rows rotated range by range (any even cuts, across heads, partial rotations): the bits of
// rope_qk on the whole heads.
TEST(Elementwise, RopeRowsMatchesWholeHeads) {
  const kernel_level before = active_kernel_level();
  std::mt19937 rng(11);
  for (kernel_level level : {kernel_level::scalar, kernel_level::avx2}) {
    if (!cpu_supports(level)) continue;
    set_kernel_level(level);
    for (auto [head_dim, n_rot] : {std::pair{64, 64}, {80, 36}, {24, 16}, {128, 128}}) {
      const int n_head = 7, pos = 123;
      const auto x = gaussian(static_cast<size_t>(n_head * head_dim), 3);
      auto want = x;
      std::vector<float> cs(static_cast<size_t>(n_rot));
      rope_angles(pos, n_rot, 10000.0f, 1.0f, cs.data());
      float no_k = 0;
      rope_qk(want.data(), n_head, &no_k, 0, head_dim, n_rot, cs.data(), rope_style::adjacent);
      for (int trial = 0; trial < 20; ++trial) {
        auto got = x;
        const int64_t n = static_cast<int64_t>(x.size());
        std::vector<int64_t> cuts = {0, n};
        for (int c = 0; c < 4; ++c)
          cuts.push_back(std::uniform_int_distribution<int64_t>(0, n / 2)(rng) * 2);
        std::sort(cuts.begin(), cuts.end());
        for (size_t c = 0; c + 1 < cuts.size(); ++c)
          rope_rows(got.data(), cuts[c], cuts[c + 1], head_dim, n_rot, cs.data());
        EXPECT_EQ(got, want) << kernel_level_name(level) << " head_dim " << head_dim
                             << " n_rot " << n_rot;
      }
    }
  }
  set_kernel_level(before);
  std::vector<float> v(8);
  EXPECT_THROW(rope_rows(v.data(), 1, 4, 8, 8, v.data()), std::logic_error);
}

}  // namespace
}  // namespace tandem::cpu
