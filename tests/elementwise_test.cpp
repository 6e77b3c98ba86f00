// The fast element-wise ops (cpu/elementwise.h) against the scalar references: RMS norm and
// SwiGLU on odd lengths (vector tails), large inputs (the threaded path), and extreme gate values;
// RoPE for Q and K together bit-identical to two reference calls.
#include "cpu/elementwise.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
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

TEST(Elementwise, RmsNormMatchesReference) {
  if (!cpu_supports(kernel_level::avx2)) GTEST_SKIP() << "no AVX2 on this CPU";
  for (int n : {1, 7, 8, 17, 33, 768, 2050}) {
    for (int n_tok : {1, 3, 20}) {
      const auto x = gaussian(static_cast<size_t>(n * n_tok), static_cast<uint32_t>(n), 3.0f);
      const auto w = gaussian(static_cast<size_t>(n), 99);
      std::vector<float> want(x.size()), got(x.size(), NAN);
      for (int t = 0; t < n_tok; ++t)
        ref::rmsnorm(&want[static_cast<size_t>(t * n)], &x[static_cast<size_t>(t * n)], w.data(), n,
                     1e-5f);
      rmsnorm_rows(got.data(), x.data(), w.data(), n_tok, n, 1e-5f);
      EXPECT_LT(max_rel(want, got), 2e-6) << "n " << n << " n_tok " << n_tok;
    }
  }
}

TEST(Elementwise, SwigluMatchesReference) {
  if (!cpu_supports(kernel_level::avx2)) GTEST_SKIP() << "no AVX2 on this CPU";
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

TEST(Elementwise, RopeQkIsTwoReferenceCalls) {
  for (rope_style style : {rope_style::adjacent, rope_style::neox}) {
    for (int pos : {0, 1, 17, 4095}) {
      const int n_head = 6, n_head_kv = 2, head_dim = 24, n_rot = 16;  // partial rotation
      auto q = gaussian(static_cast<size_t>(n_head * head_dim), 1);
      auto k = gaussian(static_cast<size_t>(n_head_kv * head_dim), 2);
      auto q_ref = q, k_ref = k;
      ref::rope(q_ref.data(), n_head, head_dim, n_rot, pos, 10000.0f, 0.5f, style);
      ref::rope(k_ref.data(), n_head_kv, head_dim, n_rot, pos, 10000.0f, 0.5f, style);
      rope_qk(q.data(), n_head, k.data(), n_head_kv, head_dim, n_rot, pos, 10000.0f, 0.5f, style);
      EXPECT_EQ(q, q_ref);
      EXPECT_EQ(k, k_ref);
    }
  }
}

}  // namespace
}  // namespace tandem::cpu
