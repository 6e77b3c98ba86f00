// Shared by the Vulkan test suites: one device context per test binary (a CPU device such as
// lavapipe is allowed), a fixture that skips without a device (fails under CI, where lavapipe
// must be present) and fails on any validation-layer error, and the NMSE measure.
#pragma once
#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "vulkan/context.h"
#include "vulkan/memory.h"
#include "vulkan/pipeline.h"

namespace tandem::vk::test {

inline bool in_ci() {
  const char* ci = std::getenv("CI");
  return ci && *ci && std::string(ci) != "0" && std::string(ci) != "false";
}

// The process-wide test context, or nullptr with *why.
inline context* shared_context(std::string* why) {
  static std::string s_why;
  static std::unique_ptr<context> s_ctx = [] {
    context_options o;
    o.allow_cpu_device = true;
    try {
      return context::create(o, &s_why);
    } catch (const std::exception& e) {
      s_why = e.what();
      return std::unique_ptr<context>();
    }
  }();
  if (why) *why = s_why;
  return s_ctx.get();
}

// Base of every Vulkan test: skips (or, with CI set, fails) without a device, and fails when the
// validation layer (TANDEM_VK_VALIDATION=1) reported an error during the test.
class vulkan_test : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    ctx_ = shared_context(&why);
    if (!ctx_) {
      if (in_ci()) FAIL() << "no Vulkan device under CI (lavapipe expected): " << why;
      GTEST_SKIP() << "no Vulkan device: " << why;
    }
    errors_before_ = validation_error_count();
  }
  void TearDown() override {
    if (ctx_) {
      EXPECT_EQ(validation_error_count(), errors_before_)
          << "the Vulkan validation layer reported errors (printed above)";
    }
  }
  context& ctx() { return *ctx_; }
  // For tests that provoke validation errors on purpose: accept those seen so far.
  void accept_validation_errors() { errors_before_ = validation_error_count(); }

 private:
  context* ctx_ = nullptr;
  int errors_before_ = 0;
};

// Normalised mean squared error of got against the reference: sum (ref - got)^2 / sum ref^2.
inline double nmse(const float* ref, const float* got, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(ref[i]) - got[i];
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return den > 0 ? num / den : num;
}
inline double nmse(const std::vector<float>& ref, const std::vector<float>& got) {
  EXPECT_EQ(ref.size(), got.size());
  return nmse(ref.data(), got.data(), std::min(ref.size(), got.size()));
}

inline std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

}  // namespace tandem::vk::test
