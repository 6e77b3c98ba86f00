// Block layouts and reference (de)quantization. The dequantizers must reproduce llama.cpp's own
// dequantization of files written by llama-quantize bit for bit; the quantizers are checked by
// round trips (error relative to the signal, per type) and idempotence.
#include "runtime/blocks.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "runtime/fp16.h"
#include "runtime/gguf.h"
#include "test_util.h"
#include "tests/test_util.h"

namespace tandem::cpu {
namespace {

std::vector<float> read_f32(const std::string& path) {
  const std::string bytes = test::read_file(path);
  std::vector<float> v(bytes.size() / sizeof(float));
  std::memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
  return v;
}

struct file_case {
  const char* file;  // tiny-<file>.gguf
  dtype type;        // of blk.0.attn_q.weight
};

class QuantFile : public ::testing::TestWithParam<file_case> {};

TEST_P(QuantFile, DequantizeMatchesLlamaCpp) {
  const auto& c = GetParam();
  const std::string base = test::model_path(std::string("quant/tiny-") + c.file);
  auto f = gguf_file::open(base + ".gguf");
  const gguf_tensor* t = f->tensor("blk.0.attn_q.weight");
  ASSERT_NE(t, nullptr);
  ASSERT_EQ(t->type, c.type) << dtype_name(t->type);
  const std::vector<float> want = read_f32(base + ".blk.0.attn_q.f32");
  ASSERT_EQ(static_cast<int64_t>(want.size()), t->n_elements());

  const int64_t cols = t->ne[0], rows = t->n_elements() / cols;
  const uint64_t rb = row_bytes(t->type, static_cast<uint64_t>(cols));
  std::vector<float> got(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    dequantize_row(t->type, t->data + r * rb, got.data(), cols);
    for (int64_t i = 0; i < cols; ++i) {
      const float w = want[static_cast<size_t>(r * cols + i)];
      const float g = got[static_cast<size_t>(i)];
      ASSERT_EQ(std::memcmp(&w, &g, 4), 0)
          << c.file << " mismatch at row " << r << " col " << i << ": " << g << " vs " << w;
    }
  }
}

// llama-quantize made these files from tiny-F16.gguf without an importance matrix, which is
// ggml's quantize_row_*_ref: quantizing the F16 tensor must give the same bytes.
TEST_P(QuantFile, QuantizeMatchesLlamaQuantize) {
  const auto& c = GetParam();
  auto src = gguf_file::open(test::model_path("quant/tiny-F16.gguf"));
  auto dst = gguf_file::open(test::model_path(std::string("quant/tiny-") + c.file + ".gguf"));
  const gguf_tensor* s = src->tensor("blk.0.attn_q.weight");
  const gguf_tensor* d = dst->tensor("blk.0.attn_q.weight");
  ASSERT_TRUE(s && d);
  ASSERT_EQ(s->type, dtype::f16);
  const int64_t n = s->n_elements(), cols = s->ne[0];
  std::vector<float> x(static_cast<size_t>(n));
  dequantize_row(dtype::f16, s->data, x.data(), n);
  std::vector<uint8_t> q(d->nbytes);
  const uint64_t rb = row_bytes(c.type, static_cast<uint64_t>(cols));
  for (int64_t r = 0; r < n / cols; ++r)
    quantize_row(c.type, x.data() + r * cols, q.data() + r * rb, cols);
  for (size_t i = 0; i < q.size(); ++i)
    ASSERT_EQ(q[i], d->data[i]) << c.file << ": first differing byte " << i << " (block "
                                << i / traits(c.type).type_size << ")";
}

INSTANTIATE_TEST_SUITE_P(QuantFiles, QuantFile,
                         ::testing::Values(file_case{"Q8_0", dtype::q8_0},
                                           file_case{"Q4_0", dtype::q4_0},
                                           file_case{"Q4_K_M", dtype::q4_k},
                                           file_case{"Q5_K_M", dtype::q5_k},
                                           file_case{"Q6_K", dtype::q6_k}),
                         [](const auto& info) { return std::string(info.param.file); });

// ---- round trips ----------------------------------------------------------------------------

using test::gaussian;

double rel_rmse(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(a[i]) * a[i];
  }
  return std::sqrt(num / den);
}

std::vector<float> roundtrip(dtype t, const std::vector<float>& x) {
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<uint8_t> q(row_bytes(t, static_cast<uint64_t>(n)));
  quantize_row(t, x.data(), q.data(), n);
  std::vector<float> y(x.size());
  dequantize_row(t, q.data(), y.data(), n);
  return y;
}

struct rt_case {
  dtype type;
  double max_rel_rmse;  // RMS error / RMS signal on Gaussian data
};

class QuantRoundTrip : public ::testing::TestWithParam<rt_case> {};

// Bounds: uniform quantization noise of a b-bit grid spanning the block's range, with margin.
// Measured on this data: f16 3e-4, q8_0 5e-3, q6_k 1e-2, q5_k 2.5e-2, q4_k 5e-2, q4_0 1e-1.
TEST_P(QuantRoundTrip, ErrorBounded) {
  const auto& c = GetParam();
  for (uint32_t seed : {1u, 2u, 3u}) {
    const auto x = gaussian(256 * 64, seed, 0.02f * static_cast<float>(seed));
    const auto y = roundtrip(c.type, x);
    const double e = rel_rmse(x, y);
    EXPECT_LT(e, c.max_rel_rmse) << dtype_name(c.type) << " seed " << seed;
    EXPECT_GT(e, 0.0) << "suspiciously exact";
  }
}

TEST_P(QuantRoundTrip, ZerosAndConstants) {
  const auto& c = GetParam();
  std::vector<float> zeros(512, 0.0f);
  EXPECT_EQ(roundtrip(c.type, zeros), zeros);
  std::vector<float> ones(512, 0.5f);  // exactly representable in every type (scale 0.5/q)
  const auto y = roundtrip(c.type, ones);
  for (float v : y) EXPECT_NEAR(v, 0.5f, 0.5f * 2e-3f) << dtype_name(c.type);
}

INSTANTIATE_TEST_SUITE_P(QuantTypes, QuantRoundTrip,
                         ::testing::Values(rt_case{dtype::f16, 1e-3}, rt_case{dtype::q8_0, 8e-3},
                                           rt_case{dtype::q6_k, 2e-2}, rt_case{dtype::q5_k, 4e-2},
                                           rt_case{dtype::q4_k, 8e-2},
                                           rt_case{dtype::q4_0, 1.5e-1}),
                         [](const auto& info) { return std::string(dtype_name(info.param.type)); });

TEST(QuantQ8_0, IdempotentOnRepresentableData) {
  // Values d * q with d an exact half and q in [-127, 127], with 127 present in every block.
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> qd(-127, 127);
  std::vector<float> x(32 * 40);
  for (size_t b = 0; b < 40; ++b) {
    const float d = fp16_to_fp32(fp32_to_fp16(0.001f * static_cast<float>(b + 1)));
    for (size_t j = 0; j < 32; ++j)
      x[32 * b + j] = d * static_cast<float>(j == b % 32 ? (b % 2 ? 127 : -127) : qd(rng));
  }
  const auto y = roundtrip(dtype::q8_0, x);
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(x[i], y[i]) << i;
  // And quantizing a second time changes nothing at all.
  std::vector<uint8_t> q1(row_bytes(dtype::q8_0, x.size())), q2(q1.size());
  quantize_row(dtype::q8_0, x.data(), q1.data(), static_cast<int64_t>(x.size()));
  quantize_row(dtype::q8_0, y.data(), q2.data(), static_cast<int64_t>(y.size()));
  EXPECT_EQ(q1, q2);
}

TEST(QuantBlocks, GeometryAgreesWithDtypeTable) {
  EXPECT_EQ(traits(dtype::q4_0).type_size, sizeof(block_q4_0));
  EXPECT_EQ(traits(dtype::q8_0).type_size, sizeof(block_q8_0));
  EXPECT_EQ(traits(dtype::q4_k).type_size, sizeof(block_q4_k));
  EXPECT_EQ(traits(dtype::q5_k).type_size, sizeof(block_q5_k));
  EXPECT_EQ(traits(dtype::q6_k).type_size, sizeof(block_q6_k));
  EXPECT_EQ(traits(dtype::q4_k).block_size, static_cast<uint32_t>(qk_k));
}

TEST(QuantBlocks, RejectsBadRows) {
  std::vector<float> x(100);
  std::vector<uint8_t> q(1024);
  EXPECT_THROW(quantize_row(dtype::q4_k, x.data(), q.data(), 100), error);
  EXPECT_THROW(quantize_row(dtype::q2_k, x.data(), q.data(), 256), error);
  EXPECT_THROW(dequantize_row(dtype::q3_k, q.data(), x.data(), 256), error);
}

TEST(QuantBlocks, NearestIntTiesToEven) {
  EXPECT_EQ(nearest_int(0.5f), 0);
  EXPECT_EQ(nearest_int(1.5f), 2);
  EXPECT_EQ(nearest_int(-2.5f), -2);
  EXPECT_EQ(nearest_int(-2.6f), -3);
  EXPECT_EQ(nearest_int(63.49f), 63);
}

}  // namespace
}  // namespace tandem::cpu
