// The backend contract: what the engine asks of the CPU and Vulkan paths. The engine walks the
// plan and never branches on the kind of backend. Each backend owns the KV cache of the layers
// placed on it and a hidden-state buffer (n_tokens x n_embd floats) on its own device.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace tandem {

// Called with the output of one op of a layer, n floats (n_tokens rows of that op's width),
// for gpu-cpu-parity. The names ("kernel:tensor") are shared by every backend, in this order:
//   rms_norm:attn_norm, matmul:wq, matmul:wk, matmul:wv, add:bq, add:bk, add:bv (biases, when
//   the model has them), rope:q, rope:k, kv_store:v, kv_store:k (the rows written to the F16
//   cache, as floats), attention, matmul:wo (the hidden state after the residual add),
//   rms_norm:ffn_norm, matmul:ffn_gate, matmul:ffn_up, swiglu, matmul:ffn_down (after the
//   residual add: the layer's output).
using capture_fn = std::function<void(int layer, const char* op, const float* data, size_t n)>;

// Work a GPU backend has recorded since it was made: kernel dispatches, pipeline barriers and
// queue submits (the fixed costs per token that `tandem bench` reports). Zero on the CPU.
struct backend_counters {
  uint64_t dispatches = 0, barriers = 0, submits = 0;
  // Dispatches the host recorded (a layer recorded once and replayed counts its dispatches in
  // `dispatches` each time it runs, here only when it was recorded).
  uint64_t recorded = 0;
};

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
  // Whether forward_layers runs a run of this backend's layers for n_tokens tokens in one go
  // (faster than layer by layer, e.g. one parallel region instead of one per layer), with the
  // same results. The engine then calls it instead of forward_layer for each layer of the run,
  // where it needs nothing between the layers (no per-layer capture or trace).
  virtual bool runs_layers(int /*n_tokens*/) const { return false; }
  // Layers [il0, il1) as forward_layer would run them one after the other; with logits, then
  // forward_output(n_tokens, false, logits) (the last layers on the backend that runs the output
  // head: one go for both).
  virtual void forward_layers(int il0, int il1, int n_tokens, int pos0, float* logits = nullptr) {
    for (int il = il0; il < il1; ++il) forward_layer(il, n_tokens, pos0);
    if (logits) forward_output(n_tokens, false, logits);
  }
  // Final norm and output head. With all_tokens, logits holds n_tokens x n_vocab floats, else
  // only the last token's n_vocab.
  virtual void forward_output(int n_tokens, bool all_tokens, float* logits) = 0;
  // Forget KV entries at positions >= n_past (of the selected sequence).
  virtual void truncate_kv(int n_past) = 0;
  // KV sequences: the backend holds backend_options::n_seq KV caches per layer (one per
  // session; the weights shared). forward_layer and forward_layers read and append the one
  // selected here (0 until called). Throws tandem::error for seq outside 0 .. n_seq - 1.
  virtual void select_seq(int seq) = 0;
  // Optional per-op capture (see capture_fn); an empty fn turns it off. Costs nothing when off;
  // on a GPU it downloads every intermediate, so it is for checking, not for speed.
  virtual void set_capture(capture_fn /*fn*/) {}
  // Whether the backend puts its own spans in the --trace (runtime/trace.h), e.g. from device
  // timestamps. When false its calls return when the work is done, and the engine records each
  // one as a span of host compute.
  virtual bool traces_itself() const { return false; }
  // One-line notices for the user about choices made at construction (e.g. a fallback).
  virtual std::vector<std::string> notes() const { return {}; }
  // What the backend has recorded so far (see backend_counters).
  virtual backend_counters counters() const { return {}; }
};

inline void backend::embed(const int32_t*, int, float*) {
  throw std::logic_error("embed: " + name() + " backend does not hold the embedding table");
}

}  // namespace tandem
