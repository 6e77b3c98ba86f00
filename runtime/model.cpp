#include "runtime/model.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdint>

namespace tandem {

uint64_t layer_weights::nbytes() const {
  uint64_t n = 0;
  for (auto f : layer_vectors)
    if (this->*f) n += (this->*f).nbytes();
  for (const layer_matrix& lm : layer_matrices)
    if (this->*lm.field) n += (this->*lm.field).nbytes();
  return n;
}

uint64_t model::weight_bytes() const {
  uint64_t n = tok_embd_.nbytes() + output_norm_.nbytes() + (output_tied_ ? 0 : output_.nbytes());
  for (auto& l : layers_) n += l.nbytes();
  return n;
}

namespace {

struct loader {
  const gguf_file& f;
  const hparams& hp;

  // A required tensor with the expected shape (ne[0], ne[1]); ne1 == 0 means a vector.
  weight get(const std::string& name, int64_t ne0, int64_t ne1, bool required = true) const {
    const gguf_tensor* t = f.tensor(name);
    if (!t) {
      if (!required) return {};
      throw error(fmt::format("{}: missing tensor '{}'; the file is not a complete {} model",
                              f.path(), name, hp.arch));
    }
    const int64_t want_dims = ne1 == 0 ? 1 : 2;
    bool ok = t->ne[0] == ne0 && (ne1 == 0 ? t->ne[1] == 1 : t->ne[1] == ne1) && t->ne[2] == 1 &&
              t->ne[3] == 1;
    if (!ok) {
      std::string want = ne1 == 0 ? fmt::format("[{}]", ne0) : fmt::format("[{}, {}]", ne0, ne1);
      throw error(fmt::format("{}: tensor '{}' has shape {}, expected {} ({}D)", f.path(), name,
                              t->shape_string(), want, want_dims));
    }
    if (!traits(t->type).computable)
      throw error(fmt::format("{}: tensor '{}' has type {}, which Tandem cannot compute with; "
                              "re-quantize the model to f16, q8_0, q4_0, q4_k, q5_k or q6_k",
                              f.path(), name, dtype_name(t->type)));
    if (ne1 == 0 && t->type != dtype::f32)
      throw error(fmt::format("{}: norm/bias tensor '{}' has type {}, expected f32", f.path(), name,
                              dtype_name(t->type)));
    return weight{t};
  }
};

int positive(const gguf_file& f, const std::string& key, int64_t v, int64_t max) {
  if (v <= 0 || v > max)
    throw error(fmt::format("{}: metadata '{}' = {} is out of range (1 .. {})", f.path(), key, v,
                            max));
  return static_cast<int>(v);
}

// A float that must be finite and above 0 (epsilons, RoPE bases): NaN or inf would not crash,
// they would silently turn every output into NaN.
double finite_positive(const gguf_file& f, const std::string& key, double def) {
  const double v = f.get_float(key, def);
  if (!(v > 0) || !std::isfinite(v))
    throw error(fmt::format("{}: metadata '{}' = {} must be a finite number above 0", f.path(), key,
                            v));
  return v;
}

}  // namespace

std::unique_ptr<model> model::load(const std::string& path) {
  std::unique_ptr<model> m(new model());
  m->file_ = gguf_file::open(path);
  const gguf_file& f = *m->file_;
  hparams& hp = m->hp_;

  hp.arch = f.get_string("general.architecture", "");
  if (hp.arch.empty())
    throw error(fmt::format("{}: metadata 'general.architecture' is missing; is this a model "
                            "(not a vocab-only file)?",
                            path));
  if (hp.arch != "llama" && hp.arch != "mistral" && hp.arch != "qwen2")
    throw error(fmt::format("{}: architecture '{}' is not supported (Tandem runs llama, mistral, "
                            "qwen2)",
                            path, hp.arch));
  const std::string a = hp.arch + ".";
  auto req = [&](const std::string& k, int64_t max) { return positive(f, a + k, f.get_int(a + k), max); };
  hp.n_embd = req("embedding_length", 1 << 16);
  hp.n_layer = req("block_count", 1024);
  hp.n_ff = req("feed_forward_length", 1 << 18);
  hp.n_head = req("attention.head_count", 1024);
  hp.n_head_kv = positive(f, a + "attention.head_count_kv",
                          f.get_int(a + "attention.head_count_kv", hp.n_head), 1024);
  hp.n_ctx_train = positive(f, a + "context_length", f.get_int(a + "context_length", 2048), 1 << 24);
  if (hp.n_head % hp.n_head_kv != 0)
    throw error(fmt::format("{}: head_count {} is not a multiple of head_count_kv {}", path,
                            hp.n_head, hp.n_head_kv));
  // Range-checked as 64-bit numbers before they are narrowed to int.
  const int64_t head_dim = f.get_int(a + "attention.key_length", hp.n_embd / hp.n_head);
  if (head_dim <= 0 || head_dim % 2 != 0 || head_dim > 1024)
    throw error(fmt::format("{}: head dimension {} is not a positive even number up to 1024", path,
                            head_dim));
  hp.head_dim = static_cast<int>(head_dim);
  const int64_t n_rot = f.get_int(a + "rope.dimension_count", hp.head_dim);
  if (n_rot <= 0 || n_rot > hp.head_dim || n_rot % 2 != 0)
    throw error(fmt::format("{}: rope.dimension_count {} must be even and at most the head "
                            "dimension {}",
                            path, n_rot, hp.head_dim));
  hp.n_rot = static_cast<int>(n_rot);
  hp.rope_freq_base = static_cast<float>(finite_positive(
      f, a + "rope.freq_base", hp.arch == "qwen2" ? 1000000.0 : 10000.0));
  const std::string scaling = f.get_string(a + "rope.scaling.type", "none");
  double factor = f.get_float(a + "rope.scaling.factor", 0.0);
  if (factor == 0.0) factor = f.get_float(a + "rope.scale_linear", 1.0);
  if (scaling == "linear" || (scaling == "none" && factor != 1.0)) {
    if (!(factor > 0) || !std::isfinite(factor)) throw error(fmt::format("{}: rope scaling factor {} must be > 0", path, factor));
    hp.rope_freq_scale = static_cast<float>(1.0 / factor);
  } else if (scaling != "none") {
    throw error(fmt::format("{}: rope scaling type '{}' is not supported (none, linear)", path,
                            scaling));
  }
  hp.rms_eps = static_cast<float>(finite_positive(f, a + "attention.layer_norm_rms_epsilon", 1e-5));
  hp.rope = hp.arch == "qwen2" ? rope_style::neox : rope_style::adjacent;

  const gguf_tensor* emb = f.tensor("token_embd.weight");
  if (!emb)
    throw error(fmt::format("{}: missing tensor 'token_embd.weight'; the file is not a complete "
                            "model",
                            path));
  if (emb->ne[1] > INT32_MAX)
    throw error(fmt::format("{}: token_embd.weight has {} rows; token ids are 32-bit", path,
                            emb->ne[1]));
  hp.n_vocab = static_cast<int>(emb->ne[1]);
  if (const gguf_value* toks = f.find("tokenizer.ggml.tokens");
      toks && toks->type == gguf_type::array && static_cast<int64_t>(toks->arr.size()) != hp.n_vocab)
    throw error(fmt::format("{}: the vocabulary has {} tokens but token_embd.weight has {} rows",
                            path, toks->arr.size(), hp.n_vocab));

  loader ld{f, hp};
  m->tok_embd_ = ld.get("token_embd.weight", hp.n_embd, hp.n_vocab);
  m->output_norm_ = ld.get("output_norm.weight", hp.n_embd, 0);
  m->output_ = ld.get("output.weight", hp.n_embd, hp.n_vocab, false);
  if (!m->output_) {
    m->output_ = m->tok_embd_;
    m->output_tied_ = true;
  }
  const bool bias = hp.arch == "qwen2";
  for (int il = 0; il < hp.n_layer; ++il) {
    const std::string p = fmt::format("blk.{}.", il);
    layer_weights l;
    l.attn_norm = ld.get(p + "attn_norm.weight", hp.n_embd, 0);
    l.bq = ld.get(p + "attn_q.bias", hp.n_embd_q(), 0, bias);
    l.bk = ld.get(p + "attn_k.bias", hp.n_embd_kv(), 0, bias);
    l.bv = ld.get(p + "attn_v.bias", hp.n_embd_kv(), 0, bias);
    l.ffn_norm = ld.get(p + "ffn_norm.weight", hp.n_embd, 0);
    for (const layer_matrix& lm : layer_matrices)
      l.*lm.field = ld.get(p + lm.name, size_of(hp, lm.cols), size_of(hp, lm.rows));
    m->layers_.push_back(l);
  }
  return m;
}

}  // namespace tandem
