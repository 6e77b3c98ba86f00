// What `tandem run -p prompt -n n --temp 0` prints, computed in the test's process through the
// engine (its greedy choices, detokenized as the CLI does): a test compares the CLI's output with
// this text, not just its length.
#pragma once
#include <algorithm>
#include <string>
#include <vector>

#include "runtime/engine.h"
#include "runtime/model.h"
#include "runtime/tokenizer.h"

namespace tandem::test {

inline std::string engine_greedy_text(const std::string& path, const std::string& prompt, int n,
                                      const std::string& offload) {
  auto m = model::load(path);
  auto tok = tokenizer::from_gguf(m->file());
  engine_options eo;
  eo.offload = offload;
  engine eng(*m, eo);
  const std::vector<int32_t> ids = tok->encode(prompt, tok->add_bos_default());
  std::vector<float> logits = eng.eval(ids);
  std::string out = prompt;
  int32_t prev = ids.back();
  for (int i = 0; i < n; ++i) {
    const float* l = logits.data();
    const int32_t next = static_cast<int32_t>(std::max_element(l, l + m->hp().n_vocab) - l);
    if (tok->is_eog(next)) break;
    out += tok->piece(next, prev);
    prev = next;
    if (i + 1 < n) logits = eng.eval({next});
  }
  return out;
}

}  // namespace tandem::test
