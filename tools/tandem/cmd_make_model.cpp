// `tandem make-model`: a valid GGUF with random weights and the shape of a real model, for
// benchmarks (no larger real model can be downloaded). The vocabulary comes from a vocab GGUF.
#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>

#include "cpu/convert.h"
#include "runtime/chat_template.h"
#include "runtime/gguf.h"
#include "tools/tandem/commands.h"

namespace tandem::cli {
namespace {

struct shape {
  int n_embd, n_layer, n_head, n_head_kv, n_ff, n_ctx;
  float rope_base;
  const char* arch = "llama";
  float eps = 1e-5f;
  bool qkv_bias = false;     // qwen2: biases on Q, K and V
  bool tied_output = false;  // no output.weight: the head reuses token_embd
  const char* vocab = "../shared/models/vocab/ggml-vocab-llama-spm.gguf";  // default --vocab
};

const std::map<std::string, shape>& shapes() {
  static const std::map<std::string, shape> s = {
      // For tests of the vocabularies, templates and the API: small layers, any --vocab.
      {"tiny", {64, 2, 4, 2, 128, 2048, 10000.0f, "llama", 1e-5f, false, true}},
      {"stories15M", {288, 6, 6, 6, 768, 256, 10000.0f}},
      {"stories110M", {768, 12, 12, 12, 2048, 1024, 10000.0f}},
      {"tinyllama-1.1b", {2048, 22, 32, 4, 5632, 2048, 10000.0f}},
      {"llama2-7b", {4096, 32, 32, 32, 11008, 4096, 10000.0f}},
      // Qwen2.5-0.5B's layers (its 151936-token vocabulary is not available here: the model gets
      // the --vocab file's, by default GPT-2's byte-level BPE).
      {"qwen2.5-0.5b",
       {896, 24, 14, 2, 4864, 32768, 1000000.0f, "qwen2", 1e-6f, true, true,
        "../shared/models/vocab/ggml-vocab-gpt-2.gguf"}},
  };
  return s;
}

struct make_opts {
  std::string shape_name, out, type = "f16", vocab;  // vocab: the shape's default when empty
  std::string chat_template;  // written as tokenizer.chat_template: a built-in name or a file
  uint64_t seed = 1;
};

// Deterministic per (tensor, row) so the file does not depend on the thread count.
uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// --chat-template: a built-in template's name or a Jinja file.
std::string template_text(const std::string& arg) {
  if (std::filesystem::is_regular_file(arg)) {
    std::ifstream in(arg, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }
  for (const std::string& n : chat_template::builtin_names())
    if (n == arg) return chat_template::builtin(n);
  std::string known;
  for (const std::string& n : chat_template::builtin_names())
    known += (known.empty() ? "" : ", ") + n;
  throw error(fmt::format("--chat-template '{}' is neither a built-in template ({}) nor a file",
                          arg, known));
}

// The vocabulary file whose tokenizer the model gets; n_vocab its size.
std::unique_ptr<gguf_file> open_vocab(const std::string& path, int* n_vocab) {
  std::unique_ptr<gguf_file> vocab;
  try {
    vocab = gguf_file::open(path);
  } catch (const error& e) {
    throw error(fmt::format("{} (give the vocabulary with --vocab VOCAB.gguf)", e.what()));
  }
  const gguf_value* toks = vocab->find("tokenizer.ggml.tokens");
  if (!toks || toks->type != gguf_type::array || toks->arr.empty())
    throw error(fmt::format("{}: has no tokenizer.ggml.tokens; not a vocab file", path));
  *n_vocab = static_cast<int>(toks->arr.size());
  return vocab;
}

void write_metadata(gguf_writer& w, const shape& s, const make_opts& o, const gguf_file& vocab) {
  const std::string a = std::string(s.arch) + ".";
  w.set_string("general.architecture", s.arch);
  w.set_string("general.name", fmt::format("{} (random weights, {})", o.shape_name, o.type));
  w.set_u32(a + "context_length", static_cast<uint32_t>(s.n_ctx));
  w.set_u32(a + "embedding_length", static_cast<uint32_t>(s.n_embd));
  w.set_u32(a + "block_count", static_cast<uint32_t>(s.n_layer));
  w.set_u32(a + "feed_forward_length", static_cast<uint32_t>(s.n_ff));
  w.set_u32(a + "attention.head_count", static_cast<uint32_t>(s.n_head));
  w.set_u32(a + "attention.head_count_kv", static_cast<uint32_t>(s.n_head_kv));
  w.set_u32(a + "rope.dimension_count", static_cast<uint32_t>(s.n_embd / s.n_head));
  w.set_f32(a + "rope.freq_base", s.rope_base);
  w.set_f32(a + "attention.layer_norm_rms_epsilon", s.eps);
  for (auto& [k, v] : vocab.metadata())
    if (k.rfind("tokenizer.", 0) == 0) w.set_value(k, v);
  if (!o.chat_template.empty())
    w.set_string("tokenizer.chat_template", template_text(o.chat_template));
}

// The model's tensors, each a function of the seed and its place in the file.
struct tensor_maker {
  gguf_writer& w;
  uint64_t seed;
  uint64_t tensor_id = 0;
  int n_fallback = 0;  // matrices stored as Q8_0 or F16: rows that do not fill the type's blocks

  // Uniform weights with standard deviation std (uniform in [-a, a], a = std * sqrt(3)). Rows
  // that do not fill whole blocks of the type (896 columns in K-quants) become Q8_0 (or F16),
  // as `tandem quantize` and llama-quantize do.
  void mat(const std::string& name, int cols, int rows, dtype type, float stddev) {
    dtype tt = type;
    if (cols % static_cast<int>(traits(tt).block_size) != 0) {
      tt = cols % 32 == 0 ? dtype::q8_0 : dtype::f16;
      ++n_fallback;
    }
    const uint64_t id = seed * 1000003ull + tensor_id++;
    w.add_tensor(name, tt, {cols, rows}, [=] {
      const float a = stddev * std::sqrt(3.0f);
      return cpu::quantize_rows(tt, rows, cols, [&](int64_t r, float* out) {
        uint64_t st = id * 0x100000001b3ull + static_cast<uint64_t>(r);
        for (int c = 0; c < cols; ++c)
          out[c] = a * (static_cast<float>(splitmix(st) >> 40) * (2.0f / 16777216.0f) - 1.0f);
      });
    });
  }
  void ones(const std::string& name, int n) {
    std::vector<uint8_t> b(static_cast<size_t>(n) * 4);
    const float one = 1.0f;
    for (int i = 0; i < n; ++i) std::memcpy(b.data() + 4 * i, &one, 4);
    w.add_tensor(name, dtype::f32, {n}, std::move(b));
  }
  void bias(const std::string& name, int n) {  // small uniform F32 values
    std::vector<uint8_t> b(static_cast<size_t>(n) * 4);
    uint64_t st = seed * 1000003ull + tensor_id++;
    for (int i = 0; i < n; ++i) {
      const float v =
          0.02f * (static_cast<float>(splitmix(st) >> 40) * (2.0f / 16777216.0f) - 1.0f);
      std::memcpy(b.data() + 4 * i, &v, 4);
    }
    w.add_tensor(name, dtype::f32, {n}, std::move(b));
  }
  void layer(const shape& s, int il, dtype t) {
    const int hd = s.n_embd / s.n_head;
    const float sd_in = 1.0f / std::sqrt(static_cast<float>(s.n_embd));
    const float sd_ff = 1.0f / std::sqrt(static_cast<float>(s.n_ff));
    const std::string p = fmt::format("blk.{}.", il);
    ones(p + "attn_norm.weight", s.n_embd);
    mat(p + "attn_q.weight", s.n_embd, s.n_head * hd, t, sd_in);
    mat(p + "attn_k.weight", s.n_embd, s.n_head_kv * hd, t, sd_in);
    mat(p + "attn_v.weight", s.n_embd, s.n_head_kv * hd, t, sd_in);
    if (s.qkv_bias) {
      bias(p + "attn_q.bias", s.n_head * hd);
      bias(p + "attn_k.bias", s.n_head_kv * hd);
      bias(p + "attn_v.bias", s.n_head_kv * hd);
    }
    mat(p + "attn_output.weight", s.n_head * hd, s.n_embd, t, sd_in);
    ones(p + "ffn_norm.weight", s.n_embd);
    mat(p + "ffn_gate.weight", s.n_embd, s.n_ff, t, sd_in);
    mat(p + "ffn_up.weight", s.n_embd, s.n_ff, t, sd_in);
    mat(p + "ffn_down.weight", s.n_ff, s.n_embd, t, sd_ff);
  }
};

int make_model(make_opts o) {
  auto it = shapes().find(o.shape_name);
  if (it == shapes().end())
    throw error(fmt::format("unknown shape '{}'; see tandem make-model --help", o.shape_name));
  const shape& s = it->second;
  if (o.vocab.empty()) o.vocab = s.vocab;
  auto t = parse_dtype(o.type);
  if (!t || !traits(*t).computable)
    throw error(
        fmt::format("unknown or unsupported type '{}' (f32, f16, q8_0, q4_0, q4_k, q5_k, "
                    "q6_k)",
                    o.type));
  int n_vocab = 0;
  const std::unique_ptr<gguf_file> vocab = open_vocab(o.vocab, &n_vocab);
  gguf_writer w;
  write_metadata(w, s, o, *vocab);
  tensor_maker tm{.w = w, .seed = o.seed};
  const float sd_in = 1.0f / std::sqrt(static_cast<float>(s.n_embd));
  tm.mat("token_embd.weight", s.n_embd, n_vocab, *t, 1.0f);
  for (int il = 0; il < s.n_layer; ++il) tm.layer(s, il, *t);
  tm.ones("output_norm.weight", s.n_embd);
  if (!s.tied_output) tm.mat("output.weight", s.n_embd, n_vocab, *t, sd_in * 4.0f);
  w.write(o.out);
  fmt::print(stderr, "wrote {}: {} shape, {} weights, vocab of {} tokens from {}\n", o.out,
             o.shape_name, o.type, n_vocab, o.vocab);
  if (tm.n_fallback > 0)
    fmt::print(stderr,
               "{} tensors have rows that do not fill {} blocks; they are stored as "
               "q8_0 (or f16)\n",
               tm.n_fallback, o.type);
  return 0;
}

}  // namespace

command add_make_model(CLI::App& app) {
  auto o = std::make_shared<make_opts>();
  std::string names;
  for (auto& [n, _] : shapes()) names += (names.empty() ? "" : ", ") + n;
  app.add_option("--shape", o->shape_name, "model shape: " + names)->required();
  app.add_option("-o,--output", o->out, "output GGUF file")->required();
  app.add_option("--type", o->type, "weight type: f32, f16, q8_0, q4_0, q4_k, q5_k, q6_k")
      ->capture_default_str();
  app.add_option("--seed", o->seed, "random seed")->capture_default_str();
  app.add_option("--vocab", o->vocab,
                 "vocab-only GGUF whose tokenizer the model gets (default: "
                 "../shared/models/vocab/ggml-vocab-llama-spm.gguf; gpt-2's for qwen2.5-0.5b)");
  app.add_option("--chat-template", o->chat_template,
                 "write tokenizer.chat_template: a built-in template's name (chatml, llama3, ...) "
                 "or a Jinja file");
  return [o] { return make_model(*o); };
}

}  // namespace tandem::cli
