// The backend contract: what the engine asks of the CPU and Vulkan paths. The engine walks the
// plan and never branches on the kind of backend. Each backend owns the KV cache of the layers
// placed on it and a hidden-state buffer (n_tokens x n_embd floats) on its own device.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

namespace tandem {

class backend {
 public:
  virtual ~backend() = default;
  virtual std::string name() const = 0;

  // Token embedding lookup into host floats (n_tokens x n_embd). Only the CPU backend does this:
  // the embedding table stays in host memory.
  virtual void embed(const int32_t* tokens, int n_tokens, float* x);

  // Make layer il's weights usable soon (prefetch or start an upload). Returns at once.
  virtual void prepare_layer(int /*il*/) {}
  // Hand-off of the hidden state at device boundaries (host floats, n_tokens x n_embd).
  virtual void upload_hidden(const float* x, int n_tokens) = 0;
  virtual void download_hidden(float* x, int n_tokens) = 0;
  // Attention + feed-forward of layer il on the backend's hidden state, for n_tokens tokens at
  // positions pos0 .. pos0 + n_tokens - 1, appending to that layer's KV cache.
  virtual void forward_layer(int il, int n_tokens, int pos0) = 0;
  // Final norm and output head. With all_tokens, logits holds n_tokens x n_vocab floats, else
  // only the last token's n_vocab.
  virtual void forward_output(int n_tokens, bool all_tokens, float* logits) = 0;
  // Forget KV entries at positions >= n_past.
  virtual void truncate_kv(int n_past) = 0;
};

inline void backend::embed(const int32_t*, int, float*) {
  throw std::logic_error("embed: " + name() + " backend does not hold the embedding table");
}

}  // namespace tandem
