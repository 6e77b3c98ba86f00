// A "chain" model for tests of stop rules: its greedy continuation is fixed by construction.
// Every layer's matrices are zero, so the hidden state is the token's embedding; the chain's
// tokens have one-hot embeddings (the i-th distinct token: unit i), every other token a zero
// one; output row chain[i+1] is unit i, so that after chain[i] the largest logit is chain[i+1]'s.
#pragma once
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "runtime/gguf.h"

namespace tandem::test {

// Adds the model's keys and tensors to w (which holds the tokenizer.* keys of an n_vocab
// vocabulary) and writes it to path.
inline void write_chain_model(gguf_writer& w, int n_vocab, const std::vector<int32_t>& chain,
                              const std::string& path) {
  std::vector<int32_t> units;  // the distinct tokens of the chain, in order
  for (int32_t t : chain)
    if (std::find(units.begin(), units.end(), t) == units.end()) units.push_back(t);
  const auto unit = [&](int32_t t) {
    return static_cast<size_t>(std::find(units.begin(), units.end(), t) - units.begin());
  };
  const int d = std::max<int>(16, (static_cast<int>(units.size()) + 7) / 8 * 8);
  const int n_ff = 16, n_head = 2, n_head_kv = 1, hd = d / n_head;
  w.set_string("general.architecture", "llama");
  w.set_string("general.name", "chain");
  w.set_u32("llama.embedding_length", static_cast<uint32_t>(d));
  w.set_u32("llama.block_count", 1);
  w.set_u32("llama.feed_forward_length", n_ff);
  w.set_u32("llama.attention.head_count", n_head);
  w.set_u32("llama.attention.head_count_kv", n_head_kv);
  w.set_u32("llama.context_length", 64);
  w.set_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  const auto tensor = [&](const std::string& name, int cols, int rows, const std::vector<float>& f) {
    std::vector<uint8_t> b(f.size() * 4);
    std::memcpy(b.data(), f.data(), b.size());
    if (rows == 0)
      w.add_tensor(name, dtype::f32, {cols}, std::move(b));
    else
      w.add_tensor(name, dtype::f32, {cols, rows}, std::move(b));
  };
  const auto zeros = [](size_t n) { return std::vector<float>(n, 0.0f); };
  const auto ones = [](size_t n) { return std::vector<float>(n, 1.0f); };
  const size_t dd = static_cast<size_t>(d), nv = static_cast<size_t>(n_vocab);
  std::vector<float> embd = zeros(dd * nv), out = zeros(dd * nv);
  for (int32_t t : units) embd[static_cast<size_t>(t) * dd + unit(t)] = 1.0f;
  for (size_t i = 0; i + 1 < chain.size(); ++i)
    out[static_cast<size_t>(chain[i + 1]) * dd + unit(chain[i])] = 1.0f;
  const size_t q = static_cast<size_t>(n_head * hd), kv = static_cast<size_t>(n_head_kv * hd);
  const size_t ff = static_cast<size_t>(n_ff);
  tensor("token_embd.weight", d, n_vocab, embd);
  tensor("blk.0.attn_norm.weight", d, 0, ones(dd));
  tensor("blk.0.attn_q.weight", d, n_head * hd, zeros(dd * q));
  tensor("blk.0.attn_k.weight", d, n_head_kv * hd, zeros(dd * kv));
  tensor("blk.0.attn_v.weight", d, n_head_kv * hd, zeros(dd * kv));
  tensor("blk.0.attn_output.weight", n_head * hd, d, zeros(dd * q));
  tensor("blk.0.ffn_norm.weight", d, 0, ones(dd));
  tensor("blk.0.ffn_gate.weight", d, n_ff, zeros(dd * ff));
  tensor("blk.0.ffn_up.weight", d, n_ff, zeros(dd * ff));
  tensor("blk.0.ffn_down.weight", n_ff, d, zeros(dd * ff));
  tensor("output_norm.weight", d, 0, ones(dd));
  tensor("output.weight", d, n_vocab, out);
  w.write(path);
}

}  // namespace tandem::test
