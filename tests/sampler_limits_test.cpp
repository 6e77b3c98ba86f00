// The sampler under hostile input: parameters out of range are refused with their name; NaN and
// infinite logits and empty vocabularies never reach the sort or the distribution (undefined
// behaviour there, caught by the fuzz target tests/fuzz/fuzz_sampler.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "runtime/error.h"
#include "runtime/sampler.h"

namespace tandem {
namespace {

std::string refusal(const sampler_params& p) {
  try {
    sampler s(p);
  } catch (const error& e) {
    return e.what();
  }
  return "";
}

TEST(SamplerLimits, ParametersOutOfRangeAreNamed) {
  sampler_params p;
  p.temp = NAN;
  EXPECT_EQ(refusal(p), "sampling parameter temp = nan must be a finite number (0 or less: greedy)");
  p = {};
  p.top_p = 1.5f;
  EXPECT_NE(refusal(p).find("top_p = 1.5 must be from 0 to 1"), std::string::npos);
  p = {};
  p.min_p = -0.1f;
  EXPECT_NE(refusal(p).find("min_p = -0.1"), std::string::npos);
  p = {};
  p.repeat_penalty = 0;
  EXPECT_NE(refusal(p).find("repeat_penalty = 0 must be a finite number above 0"),
            std::string::npos);
  p = {};
  p.repeat_penalty = INFINITY;
  EXPECT_NE(refusal(p).find("repeat_penalty = inf"), std::string::npos);
  EXPECT_EQ(refusal(sampler_params{}), "");
}

TEST(SamplerLimits, NanLogitsCountAsMinusInfinity) {
  sampler_params p;
  p.seed = 7;
  sampler s(p);
  std::vector<float> l = {NAN, 1.0f, NAN, 0.5f};
  for (int k = 0; k < 50; ++k) {
    std::vector<float> x = l;
    const int32_t t = s.sample(x.data(), 4);
    EXPECT_TRUE(t == 1 || t == 3) << t;
  }
  p.temp = 0;
  sampler g(p);
  std::vector<float> x = l;
  EXPECT_EQ(g.sample(x.data(), 4), 1);
}

TEST(SamplerLimits, NoFiniteLogitIsGreedy) {
  sampler_params p;
  p.seed = 7;
  sampler s(p);
  std::vector<float> all_nan(5, NAN);
  EXPECT_EQ(s.sample(all_nan.data(), 5), 0);
  std::vector<float> inf = {0.0f, INFINITY, 1.0f, INFINITY};
  EXPECT_EQ(s.sample(inf.data(), 4), 1);
  std::vector<float> minus(3, -INFINITY);
  EXPECT_EQ(s.sample(minus.data(), 3), 0);
}

TEST(SamplerLimits, AnEmptyVocabularyIsAnError) {
  sampler s(sampler_params{});
  float x = 0;
  EXPECT_THROW(s.sample(&x, 0), error);
}

}  // namespace
}  // namespace tandem
