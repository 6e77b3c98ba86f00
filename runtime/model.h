// The model description: hyper-parameters from GGUF metadata and the per-layer tensor table.
// Weights stay views into the mapped file; nothing here computes.
#pragma once
#include <cstdint>
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

// The seven matrices of a layer, in the order of the forward pass: the one list of them.
// X(field, GGUF name after "blk.<il>.", cols, rows): cols (ne[0]) and rows (ne[1]) are `dim`s.
// The backends declare their own copies of the matrices from this list (vulkan: device_layer,
// cpu: packed_layer) and walk layer_matrices to load, pack or upload them.
#define TANDEM_LAYER_MATRICES(X)                \
  X(wq, "attn_q.weight", n_embd, n_embd_q)      \
  X(wk, "attn_k.weight", n_embd, n_embd_kv)     \
  X(wv, "attn_v.weight", n_embd, n_embd_kv)     \
  X(wo, "attn_output.weight", n_embd_q, n_embd) \
  X(ffn_gate, "ffn_gate.weight", n_embd, n_ff)  \
  X(ffn_up, "ffn_up.weight", n_embd, n_ff)      \
  X(ffn_down, "ffn_down.weight", n_ff, n_embd)

// A size of the model's hyper-parameters.
enum class dim : uint8_t { n_embd, n_embd_q, n_embd_kv, n_ff };
inline int64_t size_of(const hparams& hp, dim d) {
  switch (d) {
    case dim::n_embd: return hp.n_embd;
    case dim::n_embd_q: return hp.n_embd_q();
    case dim::n_embd_kv: return hp.n_embd_kv();
    case dim::n_ff: return hp.n_ff;
  }
  return 0;
}

struct layer_weights {
  weight attn_norm;                 // (n_embd)
  weight bq, bk, bv;                // optional biases (qwen2): (n_embd_q / n_embd_kv)
  weight ffn_norm;                  // (n_embd)
#define TANDEM_LAYER_FIELD(field, ...) weight field;
  TANDEM_LAYER_MATRICES(TANDEM_LAYER_FIELD)  // wq, wk, wv, wo, ffn_gate, ffn_up, ffn_down
#undef TANDEM_LAYER_FIELD
  uint64_t nbytes() const;          // all weights of the layer
};

struct layer_matrix {
  weight layer_weights::*field;
  const char* name;  // GGUF name after "blk.<il>."
  dim cols, rows;
};
inline constexpr layer_matrix layer_matrices[] = {
#define TANDEM_LAYER_ROW(field, name, cols, rows) \
  {&layer_weights::field, name, dim::cols, dim::rows},
    TANDEM_LAYER_MATRICES(TANDEM_LAYER_ROW)
#undef TANDEM_LAYER_ROW
};

// Every weight of a layer: the vectors (norms, biases), then the matrices.
inline constexpr weight layer_weights::*layer_vectors[] = {
    &layer_weights::attn_norm, &layer_weights::bq, &layer_weights::bk, &layer_weights::bv,
    &layer_weights::ffn_norm};

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
