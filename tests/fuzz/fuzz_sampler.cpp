// Fuzz target: the sampler with any parameters (as a request would set them) and any logits
// (NaN and infinities included, as a broken model would produce). Input: the five float
// parameters, top_k and repeat_last_n (i32), the seed, a vocabulary size (1..512), then logits
// and tokens to remember, as raw bytes.
#include <cstring>
#include <vector>

#include "runtime/error.h"
#include "runtime/sampler.h"
#include "tests/fuzz/fuzz.h"

namespace tandem::fuzz {

void sampler(const uint8_t* data, size_t size) {
  size_t at = 0;
  auto take = [&](auto& v) {
    std::memset(&v, 0, sizeof v);
    const size_t n = std::min(sizeof v, size - at);
    std::memcpy(&v, data + at, n);
    at += n;
  };
  sampler_params p;
  take(p.temp), take(p.top_p), take(p.min_p), take(p.repeat_penalty);
  take(p.top_k), take(p.repeat_last_n), take(p.seed);
  if (p.seed == 0xFFFFFFFF) p.seed = 0;  // random seeds would make runs irreproducible
  p.repeat_last_n %= 4096;
  uint16_t n_vocab16;
  take(n_vocab16);
  const int n_vocab = 1 + n_vocab16 % 512;
  std::vector<float> logits(static_cast<size_t>(n_vocab));
  for (auto& l : logits) take(l);
  std::vector<int32_t> recent;
  while (at < size) {
    int16_t t;
    take(t);
    recent.push_back(t);
  }
  try {
    tandem::sampler s(p);
    for (int32_t t : recent) s.accept(t);
    for (int round = 0; round < 3; ++round) {
      std::vector<float> l = logits;
      const int32_t id = s.sample(l.data(), n_vocab);
      if (id < 0 || id >= n_vocab) broken("sample returned an id outside the vocabulary");
    }
  } catch (const error&) {
  }
}

}  // namespace tandem::fuzz

TANDEM_FUZZ_ENTRY(sampler)
