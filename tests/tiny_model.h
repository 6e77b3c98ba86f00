// Writes small random llama GGUF files for tests (any shape, optional tied output head).
#pragma once
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "runtime/blocks.h"
#include "runtime/gguf.h"

namespace tandem::test {

struct tiny_shape {
  int n_embd = 32, n_layer = 2, n_head = 4, n_head_kv = 2, n_ff = 64, n_vocab = 64;
  dtype type = dtype::f32;
  bool tied_output = false;
  bool qwen2 = false;  // architecture qwen2: q/k/v biases and NeoX RoPE
  int n_rot = 0;       // rotated dimensions per head (0: all)
};

inline void write_tiny_model(const std::string& path, const tiny_shape& s, uint32_t seed = 1) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  gguf_writer w;
  const std::string arch = s.qwen2 ? "qwen2" : "llama", a = arch + ".";
  w.set_string("general.architecture", arch);
  w.set_u32(a + "embedding_length", static_cast<uint32_t>(s.n_embd));
  w.set_u32(a + "block_count", static_cast<uint32_t>(s.n_layer));
  w.set_u32(a + "feed_forward_length", static_cast<uint32_t>(s.n_ff));
  w.set_u32(a + "attention.head_count", static_cast<uint32_t>(s.n_head));
  w.set_u32(a + "attention.head_count_kv", static_cast<uint32_t>(s.n_head_kv));
  w.set_u32(a + "context_length", 256);
  w.set_f32(a + "attention.layer_norm_rms_epsilon", 1e-5f);
  if (s.n_rot > 0) w.set_u32(a + "rope.dimension_count", static_cast<uint32_t>(s.n_rot));
  std::vector<std::string> toks;
  std::vector<float> scores;
  std::vector<int32_t> types;
  for (int i = 0; i < s.n_vocab; ++i) {
    toks.push_back(i == 0   ? "<unk>"
                   : i == 1 ? "<s>"
                   : i == 2 ? "</s>"
                            : "\xe2\x96\x81t" + std::to_string(i));
    scores.push_back(-static_cast<float>(i));
    types.push_back(i < 3 ? (i == 0 ? 2 : 3) : 1);
  }
  w.set_string("tokenizer.ggml.model", "llama");
  w.set_array_string("tokenizer.ggml.tokens", toks);
  w.set_array_f32("tokenizer.ggml.scores", scores);
  w.set_array_i32("tokenizer.ggml.token_type", types);
  w.set_u32("tokenizer.ggml.bos_token_id", 1);
  w.set_u32("tokenizer.ggml.eos_token_id", 2);
  auto mat = [&](const std::string& name, int cols, int rows, dtype t, float scale) {
    std::vector<float> f(static_cast<size_t>(cols) * rows);
    for (auto& v : f) v = nd(rng) * scale;
    const auto& tr = traits(t);
    std::vector<uint8_t> b(static_cast<size_t>(rows) * (cols / tr.block_size) * tr.type_size);
    for (int r = 0; r < rows; ++r)
      quantize_row(t, f.data() + static_cast<size_t>(r) * cols,
                        b.data() + static_cast<size_t>(r) * (b.size() / rows), cols);
    w.add_tensor(name, t, {cols, rows}, std::move(b));
  };
  auto vec = [&](const std::string& name, int n) {
    std::vector<float> f(static_cast<size_t>(n));
    for (auto& v : f) v = 1.0f + 0.1f * nd(rng);
    std::vector<uint8_t> b(f.size() * 4);
    std::memcpy(b.data(), f.data(), b.size());
    w.add_tensor(name, dtype::f32, {n}, std::move(b));
  };
  const int hd = s.n_embd / s.n_head;
  const float sc = 1.0f / std::sqrt(static_cast<float>(s.n_embd));
  mat("token_embd.weight", s.n_embd, s.n_vocab, s.type, 1.0f);
  for (int il = 0; il < s.n_layer; ++il) {
    const std::string p = "blk." + std::to_string(il) + ".";
    vec(p + "attn_norm.weight", s.n_embd);
    mat(p + "attn_q.weight", s.n_embd, s.n_head * hd, s.type, sc);
    mat(p + "attn_k.weight", s.n_embd, s.n_head_kv * hd, s.type, sc);
    mat(p + "attn_v.weight", s.n_embd, s.n_head_kv * hd, s.type, sc);
    if (s.qwen2) {
      vec(p + "attn_q.bias", s.n_head * hd);
      vec(p + "attn_k.bias", s.n_head_kv * hd);
      vec(p + "attn_v.bias", s.n_head_kv * hd);
    }
    mat(p + "attn_output.weight", s.n_head * hd, s.n_embd, s.type, sc);
    vec(p + "ffn_norm.weight", s.n_embd);
    mat(p + "ffn_gate.weight", s.n_embd, s.n_ff, s.type, sc);
    mat(p + "ffn_up.weight", s.n_embd, s.n_ff, s.type, sc);
    mat(p + "ffn_down.weight", s.n_ff, s.n_embd, s.type,
        1.0f / std::sqrt(static_cast<float>(s.n_ff)));
  }
  vec("output_norm.weight", s.n_embd);
  if (!s.tied_output) mat("output.weight", s.n_embd, s.n_vocab, s.type, sc);
  w.write(path);
}

}  // namespace tandem::test
