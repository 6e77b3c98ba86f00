// The scalar reference kernels against hand-checked cases (values worked out on paper).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "runtime/fp16.h"
#include "cpu/ops_ref.h"
#include "runtime/blocks.h"

namespace tandem::cpu {
namespace {

TEST(Fp16, KnownValues) {
  EXPECT_EQ(fp32_to_fp16(1.0f), 0x3c00);
  EXPECT_EQ(fp32_to_fp16(-2.0f), 0xc000);
  EXPECT_EQ(fp32_to_fp16(0.1f), 0x2e66);
  EXPECT_EQ(fp32_to_fp16(65504.0f), 0x7bff);
  EXPECT_EQ(fp32_to_fp16(65520.0f), 0x7c00);   // rounds to infinity
  EXPECT_EQ(fp32_to_fp16(1e-7f), 0x0002);      // subnormal: 1e-7 / 2^-24 = 1.68 -> 2
  EXPECT_EQ(fp32_to_fp16(0.0f), 0x0000);
  EXPECT_EQ(fp32_to_fp16(INFINITY), 0x7c00);
  EXPECT_FLOAT_EQ(fp16_to_fp32(0x3555), 0.333251953125f);
  EXPECT_FLOAT_EQ(fp16_to_fp32(0x0001), 5.9604644775390625e-08f);
  EXPECT_FLOAT_EQ(fp16_to_fp32(0x8400), -6.103515625e-05f);
  EXPECT_TRUE(std::isinf(fp16_to_fp32(0xfc00)));
  // Every finite half round-trips exactly.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00) continue;
    ASSERT_EQ(fp32_to_fp16(fp16_to_fp32(static_cast<uint16_t>(h))), h) << h;
  }
}

TEST(OpsRef, RmsNorm) {
  const float x[4] = {1, 2, 3, 4}, w[4] = {1, 1, 1, 2};
  float y[4];
  ref::rms_norm(y, x, w, 4, 0.0f);  // mean square 7.5
  const float s = 1.0f / std::sqrt(7.5f);
  EXPECT_NEAR(y[0], s, 1e-6);
  EXPECT_NEAR(y[1], 2 * s, 1e-6);
  EXPECT_NEAR(y[2], 3 * s, 1e-6);
  EXPECT_NEAR(y[3], 8 * s, 1e-6);
}

TEST(OpsRef, RopeAdjacentPairs) {
  float x[4] = {1, 0, 0, 1};  // one head, head_dim 4; theta_0 = 1, theta_1 = 10000^-0.5 = 0.01
  ref::rope(x, 1, 4, 4, 1, 10000.0f, 1.0f, rope_style::adjacent);
  EXPECT_NEAR(x[0], std::cos(1.0), 1e-6);
  EXPECT_NEAR(x[1], std::sin(1.0), 1e-6);
  EXPECT_NEAR(x[2], -std::sin(0.01), 1e-6);
  EXPECT_NEAR(x[3], std::cos(0.01), 1e-6);
}

TEST(OpsRef, RopeNeox) {
  float x[4] = {1, 0, 0, 1};  // pairs (0,2) and (1,3)
  ref::rope(x, 1, 4, 4, 1, 10000.0f, 1.0f, rope_style::neox);
  EXPECT_NEAR(x[0], std::cos(1.0), 1e-6);
  EXPECT_NEAR(x[1], -std::sin(0.01), 1e-6);
  EXPECT_NEAR(x[2], std::sin(1.0), 1e-6);
  EXPECT_NEAR(x[3], std::cos(0.01), 1e-6);
}

TEST(OpsRef, RopeScaleAndPartialRotation) {
  // freq_scale 0.5 at pos 2 equals pos 1; dims beyond n_rot stay untouched.
  float a[6] = {1, 0, 0, 1, 5, 6}, b[6] = {1, 0, 0, 1, 5, 6};
  ref::rope(a, 1, 6, 4, 2, 10000.0f, 0.5f, rope_style::adjacent);
  ref::rope(b, 1, 6, 4, 1, 10000.0f, 1.0f, rope_style::adjacent);
  for (int i = 0; i < 6; ++i) EXPECT_NEAR(a[i], b[i], 1e-6);
  EXPECT_EQ(a[4], 5);
  EXPECT_EQ(a[5], 6);
}

TEST(OpsRef, Softmax) {
  float x[3] = {1, 2, 3};
  ref::softmax(x, 3);
  EXPECT_NEAR(x[0], 0.0900306, 1e-6);
  EXPECT_NEAR(x[1], 0.2447285, 1e-6);
  EXPECT_NEAR(x[2], 0.6652410, 1e-6);
  float big[2] = {1000, 1000};  // no overflow
  ref::softmax(big, 2);
  EXPECT_NEAR(big[0], 0.5, 1e-6);
}

TEST(OpsRef, SwiGlu) {
  const float g[2] = {1, -1}, u[2] = {2, 3};
  float o[2];
  ref::swiglu(o, g, u, 2);
  EXPECT_NEAR(o[0], 2 * 0.7310586, 1e-6);
  EXPECT_NEAR(o[1], 3 * -0.2689414, 1e-6);
}

TEST(OpsRef, MatmulF32AndF16) {
  const float w[6] = {1, 2, 3, 4, 5, 6};  // 2 rows of 3
  const float x[6] = {1, 1, 1, 1, 0, -1};  // 2 tokens
  float y[4] = {};
  ref::matmul(dtype::f32, w, 3, 2, x, 2, y, 0, 2);
  EXPECT_FLOAT_EQ(y[0], 6);
  EXPECT_FLOAT_EQ(y[1], 15);
  EXPECT_FLOAT_EQ(y[2], -2);
  EXPECT_FLOAT_EQ(y[3], -2);
  uint16_t wh[6];
  quantize_row(dtype::f16, w, wh, 6);
  float z[4] = {-7, -7, -7, -7};
  ref::matmul(dtype::f16, wh, 3, 2, x, 2, z, 1, 2);  // only row 1
  EXPECT_FLOAT_EQ(z[0], -7);
  EXPECT_FLOAT_EQ(z[1], 15);
  EXPECT_FLOAT_EQ(z[3], -2);
  EXPECT_FLOAT_EQ(ref::dot_row(dtype::f16, wh + 3, x, 3), 15);
}

TEST(OpsRef, AttentionCausalWithGroupedHeads) {
  // Two query heads share one KV head (head_dim 2). K = [[1,0],[0,1]], V = [[1,2],[3,4]].
  std::vector<uint16_t> k(4), v(4);
  const float kf[4] = {1, 0, 0, 1}, vf[4] = {1, 2, 3, 4};
  quantize_row(dtype::f16, kf, k.data(), 4);
  quantize_row(dtype::f16, vf, v.data(), 4);
  const float s = std::sqrt(2.0f) * std::log(3.0f);
  // token 0 (pos 0): any q sees only V0. token 1 (pos 1): head 0 q=[s,0] gives scores
  // (ln 3, 0) -> weights (3/4, 1/4); head 1 q=[0,0] gives (1/2, 1/2).
  const float q[8] = {5, 5, -3, 1, s, 0, 0, 0};
  float out[8];
  ref::attention(out, q, k.data(), v.data(), 2, 0, 2, 1, 2, 0, 2);
  EXPECT_NEAR(out[0], 1, 1e-6);
  EXPECT_NEAR(out[1], 2, 1e-6);
  EXPECT_NEAR(out[2], 1, 1e-6);
  EXPECT_NEAR(out[3], 2, 1e-6);
  EXPECT_NEAR(out[4], 1.5, 1e-5);
  EXPECT_NEAR(out[5], 2.5, 1e-5);
  EXPECT_NEAR(out[6], 2, 1e-6);
  EXPECT_NEAR(out[7], 3, 1e-6);
  // Decoding token 1 alone (pos0 = 1) gives the same as in the batch.
  float out1[4];
  ref::attention(out1, q + 4, k.data(), v.data(), 1, 1, 2, 1, 2, 0, 2);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(out1[i], out[4 + i], 1e-6);
}

}  // namespace
}  // namespace tandem::cpu
