// Token sampling: the penalties (repetition; OpenAI's presence and frequency), then greedy at
// temperature 0, otherwise top-k, top-p, min-p and temperature, in llama.cpp's order, drawn from
// a seeded generator (same seed, same tokens).
#pragma once
#include <cstdint>
#include <deque>
#include <random>
#include <vector>

namespace tandem {

struct sampler_params {
  float temp = 0.8f;
  int top_k = 40;          // 0: off
  float top_p = 0.95f;     // 1: off
  float min_p = 0.05f;     // 0: off
  float repeat_penalty = 1.0f;  // 1: off
  int repeat_last_n = 64;       // window of the penalties (the last N accepted tokens)
  // OpenAI's: a token seen c > 0 times in the window has its logit lowered by
  // c * frequency_penalty + presence_penalty. 0: off.
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  uint32_t seed = 0xFFFFFFFF;   // 0xFFFFFFFF: random
};

class sampler {
 public:
  explicit sampler(const sampler_params& p);
  // Picks the next token from n_vocab logits (which it may modify) and remembers it for the
  // repetition penalty.
  int32_t sample(float* logits, int n_vocab);
  // Tokens the repetition penalty should consider (e.g. the prompt).
  void accept(int32_t token);
  uint32_t seed() const { return seed_; }

 private:
  sampler_params p_;
  uint32_t seed_;
  std::mt19937 rng_;
  std::deque<int32_t> recent_;
  std::vector<std::pair<float, int32_t>> cand_;
};

}  // namespace tandem
