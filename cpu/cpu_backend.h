// The CPU backend's class, private to cpu/ (runtime/ sees it through make_cpu_backend). Its
// members are defined by concept, one file each:
//   cpu/cpu_backend.cpp   the contract: embedding, the general forward_layer, output, KV cache
//   cpu/cpu_weights.cpp   weights and residency: the memory plan, repacked copies, layer cache
//   cpu/decode_plan.cpp   a decode token as steps of cpu::run_steps (decode_steps, forward_layers)
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "cpu/large_buffer.h"
#include "cpu/matmul.h"
#include "cpu/parallel.h"
#include "cpu/repack.h"
#include "runtime/backend_factory.h"
#include "runtime/layer_cache.h"
#include "runtime/memory_limit.h"
#include "runtime/model.h"

namespace tandem {

class cpu_backend final : public backend {
 public:
  cpu_backend(const model& m, const backend_options& opt);

  std::string name() const override;
  void embed(const int32_t* tokens, int n_tokens, float* x) override;
  void upload_hidden(const float* x, int n) override;
  void download_hidden(float* x, int n) override;
  void prepare_layer(int il) override;
  void forward_layer(int il, int n, int pos0) override;
  void forward_output(int n, bool all_tokens, float* logits) override;
  void truncate_kv(int) override {}  // positions past n_past are overwritten before use
  void select_seq(int seq) override;
  void set_capture(capture_fn fn) override { capture_ = std::move(fn); }
  std::vector<std::string> notes() const override { return notes_; }
  // A decode token through a run of resident layers as one parallel region (decode_plan.cpp).
  bool runs_layers(int n_tokens) const override;
  void forward_layers(int il0, int il1, int n, int pos0, float* logits) override;

 private:
  using f16 = uint16_t;

  // ---- the KV cache (cpu_backend.cpp) ----

  // 64-byte aligned, so that a head's row of the cache (head_dim F16 values, 128 bytes for
  // head_dim 64) spans whole cache lines: from malloc's 16-byte alignment every row touched one
  // line more than it held.
  template <typename T>
  struct aligned64 {
    using value_type = T;
    aligned64() = default;
    template <typename U>
    explicit aligned64(const aligned64<U>&) {}
    T* allocate(size_t n) {
      return static_cast<T*>(::operator new (n * sizeof(T), std::align_val_t{64}));
    }
    void deallocate(T* p, size_t) { ::operator delete (p, std::align_val_t{64}); }
    bool operator==(const aligned64&) const { return true; }
  };
  // Head-major: KV head h's vectors of every position back to back (n_head_kv x n_ctx x
  // head_dim), so that attention streams each head's rows instead of reading head_dim values out
  // of every position's n_embd_kv.
  struct kv_cache {
    std::vector<f16, aligned64<f16>> k, v;
  };
  // Layer il's cache in the selected sequence.
  kv_cache& kv_of(int il) { return kv_[static_cast<size_t>(seq_)][static_cast<size_t>(il)]; }
  int64_t kv_head_stride() const { return static_cast<int64_t>(opt_.n_ctx) * hp_.head_dim; }
  // Where element i (0 .. n_embd_kv) of position pos's K or V vector lives.
  size_t kv_index(int pos, int i) const;
  // Position pos's K and V vectors (n_embd_kv floats each), rounded to F16, into the cache.
  void kv_store(kv_cache& kv, const float* k, const float* v, int pos);

  // ---- ops on the scratch buffers (cpu_backend.cpp) ----

  void cap(int il, const char* op, const float* data, size_t n) const {
    if (capture_) capture_(il, op, data, n);
  }
  // h = rms_norm(x) * w over n rows.
  void norm(const weight& w, int n);
  // y[i] += bias[off + i] for i < n (one head's slice of a bias vector).
  static void add_bias_slice(const weight& b, float* y, int off, int n);
  static void add_bias(const weight& b, float* y, int n, int dim);
  void add_compute(std::chrono::steady_clock::time_point t0);

  // ---- weights and residency (cpu_weights.cpp) ----

  // A layer's matrices repacked for the kernels (x16, cpu/repack.h; empty where a format runs
  // from the file).
  struct packed_layer {
#define TANDEM_PACKED_FIELD(field, ...) cpu::packed_matrix field;
    TANDEM_LAYER_MATRICES(TANDEM_PACKED_FIELD)
#undef TANDEM_PACKED_FIELD
  };
  static constexpr cpu::packed_matrix packed_layer::*k_packed[] = {
#define TANDEM_PACKED_MEMBER(field, ...) &packed_layer::field,
      TANDEM_LAYER_MATRICES(TANDEM_PACKED_MEMBER)
#undef TANDEM_PACKED_MEMBER
  };
  static const cpu::packed_matrix* pk(const cpu::packed_matrix& m) {
    return m ? &m : nullptr;
  }
  const packed_layer& packed(int il) const;
  // A layer's tensors as copies whose data point elsewhere: into the layer cache's buffer, or
  // into the arena.
  struct cached_layer {
    std::vector<gguf_tensor> tensors;             // copies; data points into the cache buffer
    std::vector<weight layer_weights::*> fields;  // which field each tensor is
    layer_weights lw;
  };

  // Bytes of w's packed copy, or 0 when it would not be packed.
  static uint64_t packed_bytes(const weight& w);
  // Bytes w takes in memory once resident: packed, or copied as it is.
  static uint64_t resident_bytes(const weight& w);
  // Space for one resident copy in the arena (64-byte aligned).
  uint8_t* take(uint64_t bytes);
  // A copy of w's bytes in the arena; t (a copy of w's tensor) is pointed at it.
  void copy(const weight& w, gguf_tensor* t);
  // Packs w when the active kernels have an x16 layout for it (TANDEM_REPACK=0 turns this off),
  // then drops its pages of the mapping: from here on only the packed copy is read.
  void pack(const weight& w, cpu::packed_matrix* out);
  // How the weights are held under the memory limit (runtime/memory_limit.h): what the copies,
  // the mapping and the layer cache would take.
  weights_plan plan_memory(uint64_t layer_bytes, uint64_t kv_bytes, uint64_t scratch);
  void setup_weights();
  // Everything fits: copies in one arena (repacked where the kernels have a layout).
  void setup_resident(const weights_plan& wp);
  // The layers go through the layer cache (runtime/layer_cache.h) within budget_.
  void setup_layer_cache(const weights_plan& wp, uint64_t kv_bytes, uint64_t scratch);
  // The layer cache's buffers: one slot per layer of this backend; returns the largest.
  uint64_t cache_slots(std::vector<std::vector<layer_extent>>* slots);
  // Bytes of the output head's copy beside a layer cache (0: it stays mapped); others: the
  // rest the budget holds.
  uint64_t output_copy_bytes(const weights_plan& wp, uint64_t others, bool repack);
  void note_streaming(uint64_t kv_bytes, uint64_t scratch);
  // Layer il's weights without a layer cache: its resident copy, or the model's views.
  const layer_weights& resident_layer(int il) const;
  // Layer il's weights: the model's views, or the cached copy pinned by `pin` (acquired here,
  // with the next layers queued for prefetch).
  const layer_weights& layer(int il, layer_cache::handle& pin);

  // ---- the decode plan (decode_plan.cpp) ----

  // A layer's decode token as steps of cpu::run_steps: the same ops and kernels as
  // forward_layer's general path, so the same bits, but the threads go from one product to the
  // next without a fork-join (at 2 threads on stories110M, five per layer were ~15% of the time
  // per token). Its plans and steps are kept from token to token (where the weights stay where
  // they are); they read the position from decode_pos_.
  struct alignas(64) units_done {
    std::atomic<int64_t> v{0};
  };
  struct layer_decode {
    cpu::matvec_plan qkv, wo, gate_up, down;
    // SwiGLU by groups of FFN rows: the gate/up units done per group this token (or null).
    std::unique_ptr<units_done[]> ff_done;
    std::function<void()> head;        // the norm and quantization of the QKV input
    std::vector<cpu::step> steps;      // empty: a product wants the tiled kernels
    const layer_weights* L = nullptr;  // what they were built for
    const cpu::kernel_table* kt = nullptr;
    int threads = 0;
    bool by_rows = false;  // the QKV step finishes its rows (biases, RoPE, KV store)
    // steps: head, qkv, attention, wo, gate_up, down; a run of layers (forward_layers) folds
    // each layer's head into the step before it and takes the rest from here.
    static constexpr size_t after_head = 1;
  };
  layer_decode& decode_steps(int il, const layer_weights& L, const packed_layer& P);
  bool build_decode_plans(layer_decode& D, const layer_weights& L, const packed_layer& P);
  std::function<void()> decode_head(layer_decode& D, const layer_weights& L);
  cpu::step residual_step(const cpu::matvec_plan& p, const weight* next_norm);
  cpu::step qkv_step(layer_decode& D, int il, const layer_weights& L);
  cpu::step attention_step(layer_decode& D, int il, const layer_weights& L);
  cpu::step wo_step(layer_decode& D, const layer_weights& L);
  cpu::step gate_up_step(layer_decode& D);
  cpu::step down_step(layer_decode& D, int il);
  // A decode token through layer il as one parallel region; false when a product wants the
  // tiled kernels.
  bool decode_layer(int il, const layer_weights& L, const packed_layer& P, int pos);
  // forward_layers' steps for layers [il0, il1), ending with the output head when out is set.
  void build_run_steps(int il0, int il1, float* out);

  const model& m_;
  const hparams& hp_;
  backend_options opt_;
  std::vector<float> x_, h_, q_, k_, v_, att_, gate_, up_;
  // RoPE's angles for position rope_pos_ (cpu::rope_angles): every layer of a decode token uses
  // the same ones.
  std::vector<float> rope_cs_;
  int rope_pos_ = -1;
  std::vector<std::unique_ptr<layer_decode>> decode_;  // per layer (decode_steps)
  uint64_t decode_generation_ = 0;  // bumped whenever a layer's steps are rebuilt
  int decode_pos_ = 0;              // the position the decode steps compute
  // forward_layers' steps: those of layers [run_il0_, run_il1_) as of run_generation_.
  std::vector<cpu::step> run_steps_;
  int run_il0_ = -1, run_il1_ = -1;
  uint64_t run_generation_ = 0;
  float* run_out_ = nullptr;  // the logits they end with (the output head's step), or none
  // The output head's plan at the end of forward_layers' region: for logits out_y_, as of
  // out_generation_; out_ok_ false where the plan does not suit it (forward_output then).
  cpu::matvec_plan out_plan_;
  float* out_y_ = nullptr;
  uint64_t out_generation_ = 0;
  bool out_ok_ = false;
  std::vector<std::vector<kv_cache>> kv_;  // per KV sequence, per layer (empty: not placed here)
  int seq_ = 0;                            // the selected sequence (select_seq)
  std::vector<cached_layer> cached_;
  // Without --mem-budget: per layer, x16 copies of the matrices that have a layout (packed_) and
  // views whose tensors point at plain copies of everything else (resident_); empty with
  // TANDEM_REPACK=0 or when the copies would not fit.
  std::vector<packed_layer> packed_;
  std::vector<cached_layer> resident_;
  cpu::packed_matrix packed_output_;
  gguf_tensor output_tensor_;
  gguf_tensor embd_tensor_;
  weight embd_;              // the token embedding's copy, where the weights are copied
  cpu::large_buffer arena_;  // every packed or plain copy
  uint64_t arena_used_ = 0;
  weight output_;  // the output head as forward_output reads it (a copy, or the mapping's view)
  std::vector<std::string> notes_;
  std::vector<int> slot_of_;  // layer -> cache slot (-1: not on this backend)
  int prefetch_distance_ = 0;
  memory_limit limit_;   // found before anything was allocated
  uint64_t budget_ = 0;  // the layer cache's budget: --mem-budget or the automatic plan's
  double compute_s_ = 0;
  layer_cache_metrics mapped_;
  std::unique_ptr<layer_cache> cache_;  // null: weights are views into the mapping
  capture_fn capture_;                  // gpu-cpu-parity's per-op hook (empty: off)
};

}  // namespace tandem
