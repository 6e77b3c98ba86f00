#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

namespace tandem {

sampler::sampler(const sampler_params& p)
    : p_(p), seed_(p.seed == 0xFFFFFFFF ? std::random_device{}() : p.seed), rng_(seed_) {}

void sampler::accept(int32_t token) {
  recent_.push_back(token);
  while (static_cast<int>(recent_.size()) > std::max(0, p_.repeat_last_n)) recent_.pop_front();
}

int32_t sampler::sample(float* logits, int n_vocab) {
  if (p_.repeat_penalty != 1.0f || p_.presence_penalty != 0.0f || p_.frequency_penalty != 0.0f) {
    std::unordered_map<int32_t, int> count;
    for (int32_t t : recent_) ++count[t];
    for (const auto& [t, c] : count) {
      if (t < 0 || t >= n_vocab) continue;
      float& l = logits[t];
      if (p_.repeat_penalty != 1.0f) l = l > 0 ? l / p_.repeat_penalty : l * p_.repeat_penalty;
      l -= static_cast<float>(c) * p_.frequency_penalty + p_.presence_penalty;
    }
  }
  int32_t chosen = 0;
  if (p_.temp <= 0.0f) {
    chosen = static_cast<int32_t>(std::max_element(logits, logits + n_vocab) - logits);
  } else {
    cand_.resize(static_cast<size_t>(n_vocab));
    for (int i = 0; i < n_vocab; ++i) cand_[static_cast<size_t>(i)] = {logits[i], i};
    auto by_logit = [](const auto& a, const auto& b) {
      return a.first > b.first || (a.first == b.first && a.second < b.second);
    };
    size_t n = cand_.size();
    if (p_.top_k > 0 && static_cast<size_t>(p_.top_k) < n) {
      std::partial_sort(cand_.begin(), cand_.begin() + p_.top_k, cand_.end(), by_logit);
      n = static_cast<size_t>(p_.top_k);
    } else {
      std::sort(cand_.begin(), cand_.end(), by_logit);
    }
    cand_.resize(n);
    // Probabilities at temperature 1 for the top-p and min-p cuts (llama.cpp applies the
    // temperature last).
    std::vector<double> prob(n);
    const double mx = cand_[0].first;
    double sum = 0;
    for (size_t i = 0; i < n; ++i) sum += prob[i] = std::exp(cand_[i].first - mx);
    for (auto& q : prob) q /= sum;
    if (p_.top_p < 1.0f) {
      double cum = 0;
      size_t keep = n;
      for (size_t i = 0; i < n; ++i) {
        cum += prob[i];
        if (cum >= p_.top_p) { keep = i + 1; break; }
      }
      n = keep;
    }
    if (p_.min_p > 0.0f) {
      size_t keep = 1;
      while (keep < n && prob[keep] >= p_.min_p * prob[0]) ++keep;
      n = keep;
    }
    std::vector<double> w(n);
    for (size_t i = 0; i < n; ++i) w[i] = std::exp((cand_[i].first - mx) / p_.temp);
    std::discrete_distribution<size_t> dist(w.begin(), w.end());
    chosen = cand_[dist(rng_)].second;
  }
  accept(chosen);
  return chosen;
}

}  // namespace tandem
