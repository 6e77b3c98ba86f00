// The model description: hyper-parameters from GGUF metadata and the per-layer tensor table.
// Weights stay views into the mapped file; nothing here computes.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "runtime/gguf.h"

namespace tandem {

enum class rope_style { adjacent, neox };  // llama rotates (x[2i], x[2i+1]); qwen2 the halves

struct hparams {
  std::string arch;
  int n_vocab = 0;
  int n_ctx_train = 0;
  int n_embd = 0;
  int n_layer = 0;
  int n_head = 0;
  int n_head_kv = 0;
  int head_dim = 0;  // n_embd / n_head unless the file says otherwise
  int n_ff = 0;
  int n_rot = 0;     // rotated dimensions per head
  float rope_freq_base = 10000.0f;
  float rope_freq_scale = 1.0f;  // 1 / linear scaling factor
  float rms_eps = 1e-5f;
  rope_style rope = rope_style::adjacent;
  int n_embd_q() const { return n_head * head_dim; }
  int n_embd_kv() const { return n_head_kv * head_dim; }
};

// A weight matrix or vector: ne[0] is the input (row) length, ne[1] the number of rows.
struct weight {
  const gguf_tensor* t = nullptr;
  dtype type() const { return t->type; }
  int64_t cols() const { return t->ne[0]; }
  int64_t rows() const { return t->ne[1]; }
  const void* data() const { return t->data; }
  uint64_t nbytes() const { return t->nbytes; }
  explicit operator bool() const { return t != nullptr; }
};

struct layer_weights {
  weight attn_norm;                 // (n_embd)
  weight wq, wk, wv;                // (n_embd -> n_embd_q / n_embd_kv)
  weight bq, bk, bv;                // optional biases (qwen2)
  weight wo;                        // (n_embd_q -> n_embd)
  weight ffn_norm;                  // (n_embd)
  weight ffn_gate, ffn_up;          // (n_embd -> n_ff)
  weight ffn_down;                  // (n_ff -> n_embd)
  uint64_t nbytes() const;          // all weights of the layer
};

class model {
 public:
  // Opens, validates and describes a model file. Throws tandem::error naming the problem.
  static std::unique_ptr<model> load(const std::string& path);

  const gguf_file& file() const { return *file_; }
  const hparams& hp() const { return hp_; }
  const weight& tok_embd() const { return tok_embd_; }    // (n_embd) x n_vocab
  const weight& output_norm() const { return output_norm_; }
  const weight& output() const { return output_; }        // tied to tok_embd when absent
  bool output_tied() const { return output_tied_; }
  const layer_weights& layer(int il) const { return layers_[static_cast<size_t>(il)]; }
  uint64_t weight_bytes() const;

 private:
  std::unique_ptr<gguf_file> file_;
  hparams hp_;
  weight tok_embd_, output_norm_, output_;
  bool output_tied_ = false;
  std::vector<layer_weights> layers_;
};

}  // namespace tandem
