// The fast CPU attention against the scalar reference: odd lengths, GQA ratios 1, 2, 4, 8,
// prompt batches and single-token decode at an offset.
#include "cpu/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "runtime/fp16.h"
#include "cpu/kernels.h"
#include "cpu/ops_ref.h"

namespace tandem::cpu {
namespace {

TEST(Attention, SimdMatchesReference) {
  if (!cpu_supports(kernel_level::avx2)) GTEST_SKIP() << "no AVX2 on this CPU";
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  for (int head_dim : {8, 24, 64, 80, 128}) {
    for (int ratio : {1, 2, 4, 8}) {
      for (auto [n_tok, pos0] :
           {std::pair{1, 0}, {7, 0}, {1, 36}, {13, 21}, {1, 301}, {3, 2}, {37, 95}}) {
        const int n_head_kv = 2, n_head = n_head_kv * ratio;
        const int n_pos = pos0 + n_tok;
        std::vector<uint16_t> k(static_cast<size_t>(n_pos) * n_head_kv * head_dim), v(k.size());
        for (auto& x : k) x = fp32_to_fp16(nd(rng));
        for (auto& x : v) x = fp32_to_fp16(nd(rng));
        std::vector<float> q(static_cast<size_t>(n_tok) * n_head * head_dim);
        for (auto& x : q) x = nd(rng);
        // The same cache head-major (the CPU backend's layout), with room for 3 more positions.
        const int64_t n_ctx = n_pos + 3, row = static_cast<int64_t>(n_head_kv) * head_dim;
        std::vector<uint16_t> kh(static_cast<size_t>(n_ctx * row)), vh(kh.size());
        for (int p = 0; p < n_pos; ++p)
          for (int h = 0; h < n_head_kv; ++h)
            for (int d = 0; d < head_dim; ++d) {
              const size_t from = static_cast<size_t>(p * row + h * head_dim + d);
              const size_t to = static_cast<size_t>((h * n_ctx + p) * head_dim + d);
              kh[to] = k[from];
              vh[to] = v[from];
            }
        std::vector<float> a(q.size()), b(q.size()), c(q.size()), r(q.size());
        ref::attention(a.data(), q.data(), k.data(), v.data(), n_tok, pos0, n_head, n_head_kv,
                       head_dim, 0, n_head);
        detail::attention_avx2(b.data(), q.data(), k.data(), v.data(), n_tok, pos0, n_head,
                               n_head_kv, head_dim, 0, n_head, row, head_dim);
        detail::attention_avx2(c.data(), q.data(), kh.data(), vh.data(), n_tok, pos0, n_head,
                               n_head_kv, head_dim, 0, n_head, head_dim, n_ctx * head_dim);
        ref::attention(r.data(), q.data(), kh.data(), vh.data(), n_tok, pos0, n_head, n_head_kv,
                       head_dim, 0, n_head, head_dim, n_ctx * head_dim);
        EXPECT_EQ(r, a) << "the reference reads either layout alike";
        for (const auto* y : {&b, &c}) {
          double num = 0, den = 0;
          for (size_t i = 0; i < a.size(); ++i) {
            num += (a[i] - (*y)[i]) * (a[i] - (*y)[i]);
            den += a[i] * a[i];
          }
          EXPECT_LT(num / den, 1e-10)
              << (y == &b ? "interleaved" : "head-major") << " head_dim " << head_dim << " ratio "
              << ratio << " n_tok " << n_tok << " pos0 " << pos0;
        }
      }
    }
  }
}

}  // namespace
}  // namespace tandem::cpu

namespace tandem::cpu {
namespace {

// A decode token of heads with their own KV heads reads up to 8 heads side by side: more heads
// than that, runs that start and end anywhere, and position counts around the blocks of 4.
TEST(Attention, DecodeHeadsSideBySideMatchReference) {
  if (!cpu_supports(kernel_level::avx2)) GTEST_SKIP() << "no AVX2 on this CPU";
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  constexpr int n_head = 19;
  for (int head_dim : {64, 80}) {
    for (int pos0 : {0, 3, 36, 130}) {
      const int n_ctx = pos0 + 5;
      const int64_t head_stride = static_cast<int64_t>(n_ctx) * head_dim;
      std::vector<uint16_t> k(static_cast<size_t>(n_head * head_stride)), v(k.size());
      for (auto& x : k) x = fp32_to_fp16(nd(rng));
      for (auto& x : v) x = fp32_to_fp16(nd(rng));
      std::vector<float> q(static_cast<size_t>(n_head) * head_dim);
      for (auto& x : q) x = nd(rng);
      for (auto [h0, h1] : {std::pair{0, n_head}, {2, 19}, {3, 4}, {5, 16}}) {
        std::vector<float> a(q.size(), 7.0f), b(q.size(), 7.0f);
        ref::attention(a.data(), q.data(), k.data(), v.data(), 1, pos0, n_head, n_head, head_dim,
                       h0, h1, head_dim, head_stride);
        detail::attention_avx2(b.data(), q.data(), k.data(), v.data(), 1, pos0, n_head, n_head,
                               head_dim, h0, h1, head_dim, head_stride);
        for (int h = 0; h < n_head; ++h) {
          double num = 0, den = 0;
          for (int d = 0; d < head_dim; ++d) {
            const size_t i = static_cast<size_t>(h * head_dim + d);
            num += (a[i] - b[i]) * (a[i] - b[i]);
            den += a[i] * a[i];
          }
          EXPECT_LT(num / den, 1e-10) << "head " << h << " of [" << h0 << ", " << h1
                                      << ") head_dim " << head_dim << " pos0 " << pos0;
        }
      }
    }
  }
}

TEST(Attention, F16RowConversionMatchesScalar) {
  if (!cpu_supports(kernel_level::avx2)) GTEST_SKIP() << "no AVX2 on this CPU";
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> ud(-70000.0f, 70000.0f);
  std::vector<float> x(1003);
  for (size_t i = 0; i < x.size(); ++i) x[i] = i % 3 == 0 ? ud(rng) : ud(rng) * 1e-6f;
  x[0] = 65520.0f;  // rounds to infinity
  x[1] = 1e-7f;     // subnormal
  std::vector<uint16_t> y(x.size());
  detail::fp32_to_fp16_row_avx2(x.data(), y.data(), static_cast<int64_t>(x.size()));
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(y[i], fp32_to_fp16(x[i])) << x[i];
}

}  // namespace
}  // namespace tandem::cpu

namespace tandem::cpu {
namespace {

// The vectorized softmax numerator against std::exp: every length 0..40 (the masked tail), and
// arguments from 0 down to far below exp's range (which must give 0 or tiny, never NaN).
TEST(Attention, SoftmaxExpMatchesStdExp) {
  if (!cpu_supports(kernel_level::avx2)) GTEST_SKIP() << "no AVX2 on this CPU";
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> ud(-100.0f, 5.0f);
  for (int n = 0; n <= 40; ++n) {
    std::vector<float> x(static_cast<size_t>(n) + 8, 123.0f);
    for (int i = 0; i < n; ++i) x[static_cast<size_t>(i)] = ud(rng);
    float mx = -1e30f;  // as softmax calls it: the largest argument becomes exp(0)
    for (int i = 0; i < n; ++i) mx = std::max(mx, x[static_cast<size_t>(i)]);
    std::vector<float> y = x;
    const float sum = detail::softmax_exp(y.data(), n, mx);
    double want_sum = 0;
    for (int i = 0; i < n; ++i) {
      const double want = std::exp(static_cast<double>(x[static_cast<size_t>(i)] - mx));
      want_sum += want;
      const double got = y[static_cast<size_t>(i)];
      if (want > 1e-37) {
        EXPECT_NEAR(got / want, 1.0, 4e-7) << x[static_cast<size_t>(i)];
      } else {
        EXPECT_LE(got, 2e-37);  // arguments below -87.3 are clamped there: about 1.2e-38
      }
    }
    for (size_t i = static_cast<size_t>(n); i < y.size(); ++i)
      EXPECT_EQ(y[i], 123.0f);  // untouched
    if (n > 0) {
      EXPECT_NEAR(sum / want_sum, 1.0, 1e-6);
    }
  }
}

}  // namespace
}  // namespace tandem::cpu
