// The engine: runs batches of tokens through the layers on their backends, walking the plan.
// Embedding on the CPU, layers 0..n-1 on their backends with the hidden state handed across at
// device boundaries, then norm + output head where the plan puts it.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/backend.h"
#include "runtime/error.h"
#include "runtime/model.h"
#include "runtime/scheduler.h"

namespace tandem {

struct layer_cache_metrics;  // runtime/layer_cache.h
class trace_recorder;        // runtime/trace.h

struct engine_options {
  int n_ctx = 0;      // 0: the model's training context, capped at 4096
  int n_batch = 512;  // prompt tokens per forward pass
  int n_threads = 0;  // CPU threads (0 = physical cores)
  int n_seq = 1;      // KV sequences (one per session), each with n_ctx positions
  std::string offload = "0";  // layers on the GPU: N (the last N), "all" or "auto"
  uint64_t vram_budget = 0;   // bytes of device memory to plan with (0: the device's budget)
  uint64_t mem_budget = 0;     // CPU layer cache budget in bytes (0 = no limit; --mem-budget)
  int prefetch_distance = -1;  // layers the cache loads ahead (-1: from the budget, 0: off)
  bool direct_io = false;      // layer cache reads bypass the page cache (O_DIRECT)
  layer_cache_metrics* metrics = nullptr;  // filled with the CPU layer cache's counters
  trace_recorder* trace = nullptr;  // --trace: per-layer upload and compute spans
  // Layers that do not fit the VRAM: "auto" (the cost model, runtime/cost_model.h), "gpu"
  // (always streamed), "cpu" (run on the CPU).
  std::string stream_policy = "auto";
  // Called during construction with the share of the backends built so far (0 .. 1): after the
  // plan, after the GPU backend (weights uploaded), after the CPU backend (weights placed).
  // Returning false stops the construction with load_cancelled.
  std::function<bool(float)> progress;
};

// Thrown by the engine's constructor when engine_options::progress returned false.
class load_cancelled : public error {
 public:
  load_cancelled() : error("the model load was cancelled") {}
};

class engine {
 public:
  engine(const model& m, const engine_options& opt);
  ~engine();

  // Evaluates tokens at positions n_past() .. of the selected sequence and advances n_past().
  // Returns the logits of the last token (n_vocab floats), or with all_logits those of every
  // token (tokens.size() x n_vocab). Throws tandem::error when the tokens do not fit in the
  // context.
  const std::vector<float>& eval(const std::vector<int32_t>& tokens, bool all_logits = false);

  // KV sequences (engine_options::n_seq): each has its own KV cache and n_past; eval, n_past,
  // set_n_past and reset act on the selected one (0 until select_seq). Not thread-safe: callers
  // that share an engine between threads hold a lock around select_seq + eval.
  void select_seq(int seq);
  int seq() const { return seq_; }
  int n_seq() const { return static_cast<int>(n_past_.size()); }

  void reset() { set_n_past(0); }
  int n_past() const { return n_past_[static_cast<size_t>(seq_)]; }
  // Keeps the first n positions of the selected sequence's KV cache (0 <= n <= n_past()); the
  // next eval starts at position n.
  void set_n_past(int n);
  int n_ctx() const { return n_ctx_; }
  const model& get_model() const { return m_; }
  // Where the layers run, e.g. "CPU (2 threads): 5 layers + output".
  std::string describe() const;
  // The placement plan (see runtime/scheduler.h) as a printable table.
  const std::string& plan_text() const { return plan_text_; }
  const plan& get_plan() const { return plan_; }
  // Things the user should know about how the request was met (e.g. no GPU: running on the CPU).
  const std::vector<std::string>& notes() const { return notes_; }
  // The backend running layer il (nullptr for il = n_layer: the output head's), for reports.
  const backend* layer_backend(int il) const;
  // Every backend's counters summed (dispatches, barriers, submits; backend::counters).
  backend_counters counters() const;

  // Checking hooks (gpu-cpu-parity); empty functions turn them off. The layer capture gets the
  // hidden state after each layer (op "hidden", n_tokens x n_embd floats, downloaded from the
  // layer's device); the op capture is handed to every backend (backend::set_capture).
  void set_layer_capture(capture_fn fn) { layer_capture_ = std::move(fn); }
  void set_op_capture(const capture_fn& fn);

 private:
  const model& m_;
  int n_ctx_ = 0;
  int n_batch_ = 0;
  std::vector<int> n_past_;  // per sequence
  int seq_ = 0;
  std::vector<std::unique_ptr<backend>> backends_;
  backend* cpu_ = nullptr;                 // embedding
  std::vector<backend*> layer_backend_;    // one per layer
  backend* output_backend_ = nullptr;
  std::vector<float> hidden_, logits_;
  capture_fn layer_capture_;
  trace_recorder* trace_ = nullptr;
  std::string plan_text_;
  plan plan_;
  std::vector<std::string> notes_;
};

}  // namespace tandem
