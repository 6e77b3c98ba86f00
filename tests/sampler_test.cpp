// The sampler's penalties, by the definitions they follow (OpenAI's presence and frequency
// penalties; llama.cpp's repetition penalty), checked on greedy picks over crafted logits.
#include <gtest/gtest.h>

#include <vector>

#include "runtime/sampler.h"

namespace tandem {
namespace {

sampler_params greedy() {
  sampler_params p;
  p.temp = 0.0f;
  p.seed = 1;
  return p;
}

TEST(Sampler, GreedyPicksTheLargestLogit) {
  sampler s(greedy());
  std::vector<float> l = {0.1f, 2.0f, 1.9f, -1.0f};
  EXPECT_EQ(s.sample(l.data(), 4), 1);
}

TEST(Sampler, PresencePenaltyIsSubtractedOncePerSeenToken) {
  sampler_params p = greedy();
  p.presence_penalty = 0.5f;
  sampler s(p);
  for (int i = 0; i < 3; ++i) s.accept(1);  // seen three times: still one presence penalty
  std::vector<float> l = {0.0f, 2.0f, 1.6f};
  EXPECT_EQ(s.sample(l.data(), 3), 2);
  EXPECT_FLOAT_EQ(l[1], 1.5f);
  EXPECT_FLOAT_EQ(l[2], 1.6f);
}

TEST(Sampler, FrequencyPenaltyIsSubtractedPerOccurrence) {
  sampler_params p = greedy();
  p.frequency_penalty = 0.25f;
  sampler s(p);
  s.accept(0);
  s.accept(0);
  s.accept(1);
  std::vector<float> l = {3.0f, 2.7f, 2.6f};
  // 0: 3.0 - 2 * 0.25 = 2.5; 1: 2.7 - 0.25 = 2.45; 2: unseen, 2.6
  EXPECT_EQ(s.sample(l.data(), 3), 2);
  EXPECT_FLOAT_EQ(l[0], 2.5f);
  EXPECT_FLOAT_EQ(l[1], 2.45f);
}

TEST(Sampler, PenaltiesCountOnlyTheWindow) {
  sampler_params p = greedy();
  p.frequency_penalty = 1.0f;
  p.presence_penalty = 1.0f;
  p.repeat_last_n = 2;
  sampler s(p);
  s.accept(0);  // falls out of the window
  s.accept(1);
  s.accept(1);
  std::vector<float> l = {1.0f, 5.0f, 0.0f};
  s.sample(l.data(), 3);
  EXPECT_FLOAT_EQ(l[0], 1.0f);
  EXPECT_FLOAT_EQ(l[1], 5.0f - 2.0f - 1.0f);
}

TEST(Sampler, NegativePenaltiesEncourageRepetition) {
  sampler_params p = greedy();
  p.presence_penalty = -1.0f;
  sampler s(p);
  s.accept(2);
  std::vector<float> l = {1.0f, 1.5f, 0.8f};
  EXPECT_EQ(s.sample(l.data(), 3), 2);
}

TEST(Sampler, RepeatPenaltyDividesPositiveAndMultipliesNegativeLogits) {
  sampler_params p = greedy();
  p.repeat_penalty = 2.0f;
  sampler s(p);
  s.accept(0);
  s.accept(1);
  std::vector<float> l = {4.0f, -1.0f, 2.5f};
  EXPECT_EQ(s.sample(l.data(), 3), 2);
  EXPECT_FLOAT_EQ(l[0], 2.0f);
  EXPECT_FLOAT_EQ(l[1], -2.0f);
}

TEST(Sampler, SameSeedSameTokens) {
  sampler_params p;
  p.temp = 1.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.seed = 42;
  sampler a(p), b(p);
  for (int i = 0; i < 50; ++i) {
    std::vector<float> la = {0.1f, 0.2f, 0.3f, 0.0f, 0.25f}, lb = la;
    EXPECT_EQ(a.sample(la.data(), 5), b.sample(lb.data(), 5));
  }
}

}  // namespace
}  // namespace tandem
