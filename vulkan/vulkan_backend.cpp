// The Vulkan backend: the weights of its layers (and the output head) resident in device memory,
// uploaded once; per-layer F16 KV caches; scratch activations for n_batch tokens. Consecutive
// layers are recorded into one command buffer and submitted together: when the host needs
// results (download_hidden, forward_output), before and after a streamed layer (its slot's
// timeline waits), and every k_layers_per_submit layers so that the GPU starts early and
// recording the next layers overlaps it running these. Barriers go in where a dispatch's buffers
// overlap earlier unordered work (the recorder's hazard tracking, vulkan/hazard.h), not after
// every op. A resident layer's decode is recorded once per KV sequence and replayed on later
// tokens (vulkan/replay.h: the position from a step buffer the stream updates per token);
// TANDEM_VK_VARIANT=record=fresh records every dispatch every token.
//
// Streamed layers (backend_options::streamed_layers) keep their matrices in pinned host memory,
// packed into one region per layer, and run from one of two device slots: prepare_layer(i+1)
// copies layer i+1 into the free slot on the transfer queue while the compute queue runs layer
// i. Timeline semaphores order the two: a copy waits for the compute work that last read its
// slot, a layer's compute waits for its copy. Norms, biases and the KV cache stay resident.
// vulkan/staging_ring.h owns the slots and the copies (on a device with a single queue and
// host-visible device memory, such as lavapipe, a worker thread memcpys into mapped slots, so
// the copy really runs beside the compute). With backend_options::trace, each layer's command
// buffer and each copy is timed (vulkan/gpu_timer.h) for `--trace`.
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "runtime/fp16.h"
#include "runtime/blocks.h"
#include "runtime/backend_factory.h"
#include "runtime/error.h"
#include "vulkan/check.h"
#include "vulkan/context.h"
#include "vulkan/matmul_variant.h"
#include "vulkan/memory.h"
#include "vulkan/ops.h"
#include "vulkan/pipeline.h"
#include "runtime/trace.h"
#include "vulkan/gpu_timer.h"
#include "vulkan/staging_ring.h"
#include "vulkan/replay.h"
#include "vulkan/variant.h"
#include "shaders/push_constants.h"

namespace tandem::vk {

namespace {

constexpr uint64_t k_mib = 1ull << 20;
// Layers recorded into one command buffer before it is submitted (when nothing asks earlier).
constexpr int k_layers_per_submit = 8;

// One owned layer on the device; bq/bk/bv have no pieces when the model has no biases.
// A layer's seven matrices on the device (runtime/model.h's list).
struct device_matrices {
#define TANDEM_DEVICE_FIELD(field, ...) device_weight field;
  TANDEM_LAYER_MATRICES(TANDEM_DEVICE_FIELD)  // wq .. ffn_down
#undef TANDEM_DEVICE_FIELD
};
// In the order of layer_matrices.
constexpr device_weight device_matrices::*k_matrices[] = {
#define TANDEM_DEVICE_MEMBER(field, ...) &device_matrices::field,
    TANDEM_LAYER_MATRICES(TANDEM_DEVICE_MEMBER)
#undef TANDEM_DEVICE_MEMBER
};

struct device_layer : device_matrices {
  bool present = false;
  device_weight attn_norm;        // (n_embd) F32
  device_weight bq, bk, bv;       // (n_embd_q / n_embd_kv) F32, optional
  device_weight ffn_norm;         // (n_embd) F32
  std::vector<buffer_range> k_cache, v_cache;  // per KV sequence: (n_ctx x n_embd_kv) F16
  bool streamed = false;          // matrices above live in host_region, run from a slot
  buffer_range host_region;       // streamed: the packed matrices in pinned host memory
};

// A device region that holds one streamed layer's matrices at a time (vulkan/staging_ring.h
// owns the regions and orders the copies into them).
struct stream_slot : device_matrices {  // the layer's matrices in this slot
  int layer = -1;
};

std::string tensor_name(const weight& w) {
  return w.t ? w.t->name : std::string("(missing)");
}

class vulkan_backend final : public backend {
 public:
  vulkan_backend(const model& m, const backend_options& opt, std::unique_ptr<context> ctx);
  ~vulkan_backend() override;

  std::string name() const override { return "vulkan (" + ctx_->info().name + ")"; }
  void upload_hidden(const float* x, int n_tokens) override;
  void download_hidden(float* x, int n_tokens) override;
  void forward_layer(int il, int n_tokens, int pos0) override;
  void forward_output(int n_tokens, bool all_tokens, float* logits) override;
  void truncate_kv(int n_past) override { n_past_ = std::min(n_past_, std::max(0, n_past)); }
  void select_seq(int seq) override;
  void set_capture(capture_fn fn) override { capture_ = std::move(fn); }
  bool traces_itself() const override { return true; }  // GPU timestamps (gpu_timer)
  void prepare_layer(int il) override;
  backend_counters counters() const override {
    return stream_ ? stream_->counters() : backend_counters{};
  }

 private:
  device_weight upload_matrix(const weight& w, int64_t cols, int64_t rows);
  device_weight upload_vector(const weight& w, int64_t n);
  void pack_streamed(const layer_weights& lw, device_layer& L);
  int slot_of(int il) const;
  void check_batch(int n_tokens, int pos0) const;
  void warm_up();
  // The sizes the constructor's steps share.
  struct load_sizes {
    uint64_t weight_bytes = 0, n_tensors = 0, stream_bytes = 0, n_streamed = 0, n_slots = 0;
    uint64_t kv_bytes = 0, kv_total = 0, scratch_bytes = 0, rope_bytes = 0;
  };
  load_sizes check_budget(const model& m);
  void make_arenas(const load_sizes& z);
  void upload_weights(const model& m, const load_sizes& z);
  void make_scratch(const load_sizes& z);
  void make_streaming_slots(const load_sizes& z);
  std::array<uint64_t, 4> row_floats() const;
  bool streamed(int il) const;
  // Submits the open frame (see forward_layer); returns its compute timeline value.
  uint64_t submit_frame(std::initializer_list<timeline_wait> waits, bool host_reads);
  void collect_timers();  // after the host waited for every frame submitted
  void record_layer(recorder& r, const device_layer& L, const device_matrices& M, int n, int pos0,
                    const buffer_range& step);
  bool replay_eligible(const device_layer& L, int n, const attention_plan& pl) const;
  void drop_stale_recordings();
  void replay_layer(recorder& r, int il, int pos0, const attention_plan& pl,
                    const std::function<void(recorder&)>& record_fn);

  // Destroyed last (declared first): everything below lives on its device.
  std::unique_ptr<context> ctx_;
  hparams hp_;
  backend_options opt_;
  int n_ctx_ = 0;
  int n_logit_rows_ = 1;  // tokens per output-head pass (bounded by the binding limit)
  int n_past_ = 0;
  int seq_ = 0;  // the selected KV sequence

  std::unique_ptr<pipeline_cache> pipes_;
  std::unique_ptr<arena> weights_, device_mem_;
  std::unique_ptr<uploader> uploader_;
  std::unique_ptr<command_stream> stream_;
  buffer upload_staging_, readback_staging_;
  uint64_t upload_busy_until_ = 0;  // compute timeline value of the last copy out of upload staging

  std::vector<device_layer> layers_;
  std::unique_ptr<arena> host_weights_;  // streamed layers' matrices, pinned host memory
  std::vector<stream_slot> slots_;
  std::unique_ptr<gpu_timer> timer_;  // --trace: GPU timestamps of uploads and layers
  std::unique_ptr<dispatch_timer> dispatch_timer_;  // bench --trace: per-dispatch timestamps
  bool upload_in_frame_ = false;  // the open frame copies out of upload_staging_
  int layers_in_frame_ = 0;       // layers recorded into the open frame
  std::unique_ptr<staging_ring> ring_;  // the streaming slots and the copies into them
  // Decode layers recorded once and replayed (vulkan/replay.h): the blocks, the step buffer they
  // read the position from, what was last written into it, the forced variants they baked in.
  std::unique_ptr<replay_cache> replay_;
  buffer_range step_;
  step_params step_written_{};
  std::string replay_variants_;
  device_weight output_norm_, output_;
  buffer_range rope_table_;
  buffer_range x_, h_, q_, k_, v_, att_, gate_, up_, logits_;  // scratch, n_batch rows
  buffer_range xq_;  // decode activations quantized for the integer-dot matvec (if the device has it)

  // gpu-cpu-parity's per-op capture (backend::set_capture), off unless set: each op's output is
  // copied into a readback buffer as the layer runs and handed over once the layer has finished.
  struct captured_op {
    const char* op;
    uint64_t offset, n;  // bytes into the buffer, elements
    bool f16;
  };
  struct owned_buffer {
    context* ctx = nullptr;
    buffer b;
    ~owned_buffer() { if (ctx) destroy_buffer(*ctx, b); }
  };
  void cap(recorder& r, const char* op, const buffer_range& src, int n_tokens, int width,
           bool f16 = false);
  void deliver_capture(int il);
  capture_fn capture_;
  std::unique_ptr<owned_buffer> capture_buf_;
  std::vector<captured_op> captured_;
  uint64_t capture_used_ = 0;
};

// Records a copy of n_tokens rows of width elements (F32, or F16 cache rows) into the capture
// buffer (ordered after the op that wrote them by the hazard tracking). Sized at the layer's first capture for the largest layer.
void vulkan_backend::cap(recorder& r, const char* op, const buffer_range& src, int n_tokens,
                         int width, bool f16) {
  if (!capture_) return;
  if (captured_.empty()) {
    const uint64_t per_token = 4ull * hp_.n_embd + 4ull * hp_.n_embd_q() +
                               7ull * hp_.n_embd_kv() + 3ull * hp_.n_ff;
    const uint64_t need = (static_cast<uint64_t>(n_tokens) * per_token + 32) * sizeof(float);
    if (!capture_buf_ || capture_buf_->b.size < need) {
      stream_->finish();
      capture_buf_.reset();
      auto nb = std::make_unique<owned_buffer>();
      nb->b = create_buffer(*ctx_, need, memory_kind::readback);
      nb->ctx = ctx_.get();
      capture_buf_ = std::move(nb);
    }
  }
  const uint64_t n = static_cast<uint64_t>(n_tokens) * static_cast<uint64_t>(width);
  const uint64_t bytes = n * (f16 ? 2 : 4);
  if (capture_used_ + bytes > capture_buf_->b.size)
    throw std::logic_error("vulkan: capture buffer too small");
  r.copy(src, whole(capture_buf_->b).sub(capture_used_, bytes), bytes);
  captured_.push_back({op, capture_used_, n, f16});
  capture_used_ += (bytes + 3) / 4 * 4;
}

void vulkan_backend::deliver_capture(int il) {
  if (!capture_) return;
  stream_->finish();
  std::vector<float> tmp;
  for (const captured_op& c : captured_) {
    const auto* p = static_cast<const uint8_t*>(capture_buf_->b.data) + c.offset;
    if (c.f16) {
      tmp.resize(c.n);
      for (uint64_t i = 0; i < c.n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        tmp[i] = fp16_to_fp32(h);
      }
      capture_(il, c.op, tmp.data(), c.n);
    } else {
      tmp.assign(reinterpret_cast<const float*>(p), reinterpret_cast<const float*>(p) + c.n);
      capture_(il, c.op, tmp.data(), c.n);
    }
  }
  captured_.clear();
  capture_used_ = 0;
}

vulkan_backend::vulkan_backend(const model& m, const backend_options& opt,
                               std::unique_ptr<context> ctx)
    : ctx_(std::move(ctx)), hp_(m.hp()), opt_(opt) {
  op_scope scope("load model onto " + ctx_->info().name);
  n_ctx_ = opt.n_ctx > 0 ? opt.n_ctx : hp_.n_ctx_train;
  if (opt_.n_batch <= 0) opt_.n_batch = 512;
  const load_sizes sz = check_budget(m);
  pipes_ = std::make_unique<pipeline_cache>(*ctx_);
  make_arenas(sz);
  upload_weights(m, sz);
  make_scratch(sz);
  make_streaming_slots(sz);
  warm_up();
}

// The scratch rows per token: n_embd, n_embd_q, n_embd_kv, n_ff floats.
std::array<uint64_t, 4> vulkan_backend::row_floats() const {
  return {static_cast<uint64_t>(hp_.n_embd), static_cast<uint64_t>(hp_.n_embd_q()),
          static_cast<uint64_t>(hp_.n_embd_kv()), static_cast<uint64_t>(hp_.n_ff)};
}

bool vulkan_backend::streamed(int il) const {
  const auto& s = opt_.streamed_layers;
  return std::find(s.begin(), s.end(), il) != s.end();
}

// What it takes: weights, KV cache, scratch; checked against the device's limits and budget
// before anything is allocated.
vulkan_backend::load_sizes vulkan_backend::check_budget(const model& m) {
  const auto& hp = hp_;
  const uint64_t n_batch = static_cast<uint64_t>(opt_.n_batch), f = sizeof(float);
  load_sizes z;
  for (int il : opt_.layers) {
    if (il < 0 || il >= hp.n_layer) throw error(fmt::format("vulkan: no layer {}", il));
    z.n_tensors += 12;
    if (streamed(il)) {
      z.stream_bytes = std::max(z.stream_bytes, m.layer(il).nbytes() + 64 * 1024);
      ++z.n_streamed;
    } else {
      z.weight_bytes += m.layer(il).nbytes();
    }
  }
  z.n_slots = std::min<uint64_t>(2, z.n_streamed);
  if (opt_.output) {
    z.weight_bytes += m.output_norm().nbytes() + m.output().nbytes();
    z.n_tensors += 2;
  }
  const uint64_t kv_row = static_cast<uint64_t>(hp.n_embd_kv()) * 2;
  z.kv_bytes = static_cast<uint64_t>(n_ctx_) * kv_row;
  if (z.kv_bytes > ctx_->caps().max_storage_range)
    throw error(
        fmt::format("vulkan: a KV cache of {} positions ({} MiB per layer) exceeds the "
                    "device's maxStorageBufferRange ({} MiB); use a smaller --ctx",
                    n_ctx_, z.kv_bytes / k_mib, ctx_->caps().max_storage_range / k_mib));
  const uint64_t max_binding = std::min<uint64_t>(ctx_->caps().max_storage_range, 64 * k_mib);
  n_logit_rows_ = static_cast<int>(
      std::clamp<uint64_t>(max_binding / (static_cast<uint64_t>(hp.n_vocab) * f), 1, n_batch));
  const auto rows = row_floats();
  for (uint64_t r : rows) {
    if (n_batch * r * f > ctx_->caps().max_storage_range)
      throw error(
          fmt::format("vulkan: scratch for a batch of {} tokens exceeds the device's "
                      "maxStorageBufferRange; use a smaller batch",
                      n_batch));
  }
  z.scratch_bytes = n_batch * f * 2 * (rows[0] + rows[1] + rows[2] + rows[3]);
  if (opt_.output) z.scratch_bytes += static_cast<uint64_t>(n_logit_rows_) * hp.n_vocab * f;
  z.rope_bytes = static_cast<uint64_t>(n_ctx_) * static_cast<uint64_t>(hp.n_rot) * f;
  if (opt_.n_seq < 1) throw error(fmt::format("vulkan: {} KV sequences (at least 1)", opt_.n_seq));
  z.kv_total = 2 * z.kv_bytes * opt_.layers.size() * static_cast<uint64_t>(opt_.n_seq);
  const uint64_t need =
      z.weight_bytes + z.n_slots * z.stream_bytes + z.kv_total + z.scratch_bytes + z.rope_bytes;
  const uint64_t budget = ctx_->device_local_budget();
  if (budget > 0 && need > budget)
    throw error(
        fmt::format("vulkan: {} layers need {} MiB of device memory (weights {}, KV "
                    "cache {}, scratch {}), but {} has {} MiB free; offload fewer layers",
                    opt_.layers.size(), need / k_mib, z.weight_bytes / k_mib, z.kv_total / k_mib,
                    z.scratch_bytes / k_mib, ctx_->info().name, budget / k_mib));
  return z;
}

void vulkan_backend::make_arenas(const load_sizes& z) {
  const uint64_t slack = ctx_->caps().storage_align * 2 + 64;
  weights_ = std::make_unique<arena>(
      *ctx_, memory_kind::device,
      std::clamp<uint64_t>(z.weight_bytes + z.n_tensors * slack, k_mib, 256 * k_mib));
  device_mem_ = std::make_unique<arena>(
      *ctx_, memory_kind::device,
      std::clamp<uint64_t>(z.kv_total + z.scratch_bytes + z.rope_bytes +
                               z.n_slots * z.stream_bytes + 32 * slack,
                           k_mib, 256 * k_mib));
  if (z.n_streamed)
    host_weights_ = std::make_unique<arena>(
        *ctx_, memory_kind::upload,
        std::clamp<uint64_t>(z.n_streamed * z.stream_bytes, k_mib, 1024 * k_mib));
  uploader_ = std::make_unique<uploader>(
      *ctx_, std::clamp<uint64_t>(z.weight_bytes + z.rope_bytes, k_mib, 64 * k_mib));
}

// The weights, uploaded once (streamed layers' matrices packed into pinned host memory), the KV
// caches and the RoPE table.
void vulkan_backend::upload_weights(const model& m, const load_sizes& z) {
  const int64_t n_embd = hp_.n_embd, n_q = hp_.n_embd_q(), n_kv = hp_.n_embd_kv();
  layers_.resize(static_cast<size_t>(hp_.n_layer));
  for (int il : opt_.layers) {
    const layer_weights& lw = m.layer(il);
    device_layer& L = layers_[static_cast<size_t>(il)];
    L.present = true;
    L.attn_norm = upload_vector(lw.attn_norm, n_embd);
    if (lw.bq) L.bq = upload_vector(lw.bq, n_q);
    if (lw.bk) L.bk = upload_vector(lw.bk, n_kv);
    if (lw.bv) L.bv = upload_vector(lw.bv, n_kv);
    L.ffn_norm = upload_vector(lw.ffn_norm, n_embd);
    if (streamed(il)) {
      pack_streamed(lw, L);
    } else {
      for (size_t i = 0; i < std::size(layer_matrices); ++i) {
        const layer_matrix& lm = layer_matrices[i];
        L.*k_matrices[i] =
            upload_matrix(lw.*lm.field, size_of(hp_, lm.cols), size_of(hp_, lm.rows));
      }
    }
    for (int s = 0; s < opt_.n_seq; ++s) {
      L.k_cache.push_back(device_mem_->alloc(z.kv_bytes));
      L.v_cache.push_back(device_mem_->alloc(z.kv_bytes));
    }
  }
  if (opt_.output) {
    output_norm_ = upload_vector(m.output_norm(), n_embd);
    output_ = upload_matrix(m.output(), n_embd, hp_.n_vocab);
  }
  const auto table = rope_table(n_ctx_, hp_.n_rot, hp_.rope_freq_base, hp_.rope_freq_scale);
  rope_table_ = device_mem_->alloc(std::max<uint64_t>(z.rope_bytes, 16));
  if (!table.empty()) uploader_->upload(rope_table_, 0, table.data(), table.size() * sizeof(float));
  uploader_->finish();
}

// Scratch activations for n_batch tokens, the host staging buffers and the command stream.
void vulkan_backend::make_scratch(const load_sizes&) {
  const uint64_t n_batch = static_cast<uint64_t>(opt_.n_batch), f = sizeof(float);
  const auto rows = row_floats();
  auto scratch = [&](uint64_t row) { return device_mem_->alloc(n_batch * row * f); };
  x_ = scratch(rows[0]);
  h_ = scratch(rows[0]);
  q_ = scratch(rows[1]);
  att_ = scratch(rows[1]);
  k_ = scratch(rows[2]);
  v_ = scratch(rows[2]);
  gate_ = scratch(rows[3]);
  up_ = scratch(rows[3]);
  if (ctx_->caps().integer_dot)  // decode's activations quantized for the integer-dot matvec
    xq_ = device_mem_->alloc(
        quantized_bytes(4, static_cast<int64_t>(std::max({rows[0], rows[1], rows[3]}))));
  const uint64_t logit_bytes = static_cast<uint64_t>(n_logit_rows_) * hp_.n_vocab * f;
  if (opt_.output) logits_ = device_mem_->alloc(logit_bytes);
  upload_staging_ = create_buffer(*ctx_, n_batch * rows[0] * f, memory_kind::upload);
  readback_staging_ = create_buffer(*ctx_, std::max(n_batch * rows[0] * f, logit_bytes),
                                    memory_kind::readback);
  stream_ = std::make_unique<command_stream>(*pipes_);
  step_ = device_mem_->alloc(sizeof(step_params));
  step_written_.n_split = 0;  // (no plan has 0 splits: the first decode step writes it)
  replay_ = std::make_unique<replay_cache>(*pipes_);
  const char* env = std::getenv("TANDEM_VK_VARIANT");
  replay_variants_ = env ? env : "";
}

// The trace's timers and the slots streamed layers run from.
void vulkan_backend::make_streaming_slots(const load_sizes& z) {
  if (opt_.trace) {
    timer_ = std::make_unique<gpu_timer>(*ctx_, *opt_.trace);
    if (opt_.trace->kernel_timing()) {
      dispatch_timer_ = std::make_unique<dispatch_timer>(*ctx_, *opt_.trace);
      if (dispatch_timer_->supported()) stream_->set_dispatch_timer(dispatch_timer_.get());
    }
  }
  if (!z.n_slots) return;
  uint64_t region = 0;
  for (const auto& L : layers_)
    if (L.streamed) region = std::max<uint64_t>(region, L.host_region.size);
  ring_ = std::make_unique<staging_ring>(*ctx_, *device_mem_, region, static_cast<int>(z.n_slots),
                                         opt_.trace, timer_.get());
  slots_.resize(z.n_slots);
}

// Packs a streamed layer's matrices into one region of pinned host memory, laid out exactly as
// they will sit in a device slot, so that one copy moves the whole layer.
void vulkan_backend::pack_streamed(const layer_weights& lw, device_layer& L) {
  const uint64_t limit = max_piece_bytes(*ctx_), align = ctx_->caps().storage_align;
  struct item {
    const weight* w;
    int64_t cols, rows;
    device_weight* out;
  };
  std::vector<item> items;
  for (size_t i = 0; i < std::size(layer_matrices); ++i) {
    const layer_matrix& lm = layer_matrices[i];
    items.push_back({&(lw.*lm.field), size_of(hp_, lm.cols), size_of(hp_, lm.rows),
                     &(L.*k_matrices[i])});
  }
  uint64_t cursor = 0;
  for (const item& it : items) {
    const weight& w = *it.w;
    if (!w || w.cols() != it.cols || w.rows() != it.rows)
      throw error(
          fmt::format("vulkan: tensor '{}' is missing or has the wrong shape", tensor_name(w)));
    *it.out = layout_weight(w.type(), it.cols, it.rows, limit, align, &cursor);
  }
  if (cursor > host_weights_->max_alloc())
    throw error(
        fmt::format("vulkan: a streamed layer of {} MiB exceeds the device's "
                    "maxMemoryAllocationSize; keep it resident or on the CPU",
                    cursor / k_mib));
  L.host_region = host_weights_->alloc(cursor);
  L.streamed = true;
  for (const item& it : items) {
    *it.out = rebase(*it.out, L.host_region);
    const auto* src = static_cast<const uint8_t*>(it.w->data());
    for (const auto& p : it.out->pieces)
      std::memcpy(p.range.data, src + it.out->row_bytes * static_cast<uint64_t>(p.row0),
                  p.range.size);
  }
}

int vulkan_backend::slot_of(int il) const {
  return ring_ ? ring_->find(il) : -1;
}

void vulkan_backend::prepare_layer(int il) {
  if (il < 0 || il >= hp_.n_layer || !layers_[static_cast<size_t>(il)].streamed) return;
  if (slot_of(il) >= 0) return;
  op_scope scope(fmt::format("stream layer {}", il));
  const device_layer& L = layers_[static_cast<size_t>(il)];
  const int index = ring_->prepare(il, L.host_region);
  stream_slot& sl = slots_[static_cast<size_t>(index)];
  const buffer_range& range = ring_->range(index);
  sl.layer = il;
  const buffer_range base{range.buf, range.offset - L.host_region.offset, 0, nullptr};
  for (auto m : k_matrices) sl.*m = rebase(L.*m, base);
}

// Builds every pipeline the forward pass will use now, at load time, instead of in the first
// token's latency (drivers compile SPIR-V to machine code here).
void vulkan_backend::warm_up() {
  op_scope scope("build pipelines");
  std::vector<dtype> types;
  auto note = [&](const device_weight& w) {
    if (!w.pieces.empty() && std::find(types.begin(), types.end(), w.type) == types.end())
      types.push_back(w.type);
  };
  bool bias = false;
  for (const auto& L : layers_) {
    if (!L.present) continue;
    for (auto m : k_matrices) note(L.*m);
    bias |= !L.bq.pieces.empty() || !L.bk.pieces.empty() || !L.bv.pieces.empty();
  }
  note(output_);
  // Every op of the table this backend will run, in each variant it will run.
  const uint32_t neox = hp_.rope == rope_style::neox ? 1u : 0u;
  for (int i = 0; i < n_ops; ++i) {
    const op_row& row = op_rows[i];
    if ((row.use == op_use::layers && opt_.layers.empty()) || (row.use == op_use::bias && !bias))
      continue;
    if (row.use == op_use::integer_dot && !dot_may_run(*ctx_)) continue;
    const std::vector<dtype> row_types = row.typed ? types : std::vector<dtype>{dtype::f32};
    for (dtype t : row_types) {
      if ((row.k == kernel::matvec_dot || row.k == kernel::matvec_dot_rope) &&
          !has_dot_kernel(t))
        continue;
      if (row.k == kernel::matvec_dot_rope && opt_.layers.empty()) continue;  // layers only
      switch (row.spec) {
        case op_spec::none: pipes_->get(row.k, t); break;
        case op_spec::accumulate:
          for (uint32_t acc : {0u, 1u})
            if (row.k == kernel::matmul)  // the prompt variant this device runs (self-checked)
              pipes_->get(row.k,
                          matmul_shader_variant(pipes_->ctx(), pick_matmul_variant(*pipes_, t)), t,
                          {acc});
            else
              pipes_->get(row.k, t, {acc});
          break;
        case op_spec::rope_style: pipes_->get(row.k, t, {neox}); break;
        case op_spec::accumulate_glu:
          for (uint32_t acc : {0u, 1u}) pipes_->get(row.k, t, {acc, 0u, 1u});
          pipes_->get(row.k, t, {1u, 1u, 1u});
          pipes_->get(row.k, t, {0u, 0u, 1u, 1u});  // the output head's norm fused (NORM)
          for (uint32_t parts : {2u, 3u}) {
            pipes_->get(row.k, t, {0u, 0u, parts});
            pipes_->get(row.k, t, {0u, 0u, parts, 1u});  // the rms norm fused (NORM)
          }
          break;
        case op_spec::accumulate_parts:
          for (uint32_t acc : {0u, 1u}) pipes_->get(row.k, t, {acc, 1u});
          for (uint32_t parts : {2u, 3u}) pipes_->get(row.k, t, {0u, parts});
          break;
        case op_spec::glu:
          for (uint32_t glu : {0u, 1u}) pipes_->get(row.k, t, {glu});
          if (row.k == kernel::quantize_q8) pipes_->get(row.k, t, {0u, 1u});  // the norm (NORM)
          break;
      }
    }
  }
  // The replayed decode layers' kernels, which read the position from the step buffer (STEP).
  if (!opt_.layers.empty()) {
    pipes_->get(kernel::flash_attn, dtype::f32, {1u});
    pipes_->get(kernel::flash_reduce, dtype::f32, {1u});
    pipes_->get(kernel::rotary_kv, dtype::f32, {neox, 1u});
    for (const dtype t : types) pipes_->get(kernel::matvec_rope, t, {neox, 1u});
    if (dot_may_run(*ctx_))
      for (const dtype t : types)
        if (has_dot_kernel(t)) pipes_->get(kernel::matvec_dot_rope, t, {neox, 1u});
  }
}

vulkan_backend::~vulkan_backend() {
  try {
    if (stream_) stream_->finish();
  } catch (...) {  // a lost device: nothing left to wait for
  }
  replay_.reset();  // (its blocks' frames finished above)
  stream_.reset();
  ring_.reset();
  try {
    if (timer_) timer_->collect();
  } catch (...) {
  }
  timer_.reset();
  dispatch_timer_.reset();
  host_weights_.reset();
  uploader_.reset();
  destroy_buffer(*ctx_, upload_staging_);
  destroy_buffer(*ctx_, readback_staging_);
  weights_.reset();
  device_mem_.reset();
  pipes_.reset();
}

device_weight vulkan_backend::upload_matrix(const weight& w, int64_t cols, int64_t rows) {
  if (!w) throw error(fmt::format("vulkan: missing weight of shape {} x {}", cols, rows));
  if (w.cols() != cols || w.rows() != rows)
    throw error(fmt::format("vulkan: tensor '{}' has shape {} x {}, expected {} x {}",
                            tensor_name(w), w.cols(), w.rows(), cols, rows));
  if (auto why = weight_unsupported(w.type(), cols); !why.empty())
    throw error(fmt::format("vulkan: tensor '{}': {}", tensor_name(w), why));
  return upload_weight(*weights_, *uploader_, w.type(), cols, rows, w.data());
}

// Norm weights and biases go up as F32 whatever their file type.
device_weight vulkan_backend::upload_vector(const weight& w, int64_t n) {
  if (!w) throw error(fmt::format("vulkan: missing vector of {} elements", n));
  if (w.t->n_elements() != n)
    throw error(fmt::format("vulkan: tensor '{}' has {} elements, expected {}", tensor_name(w),
                            w.t->n_elements(), n));
  std::vector<float> v(static_cast<size_t>(n));
  dequantize_row(w.type(), w.data(), v.data(), n);
  return upload_weight(*weights_, *uploader_, dtype::f32, n, 1, v.data());
}

void vulkan_backend::check_batch(int n_tokens, int pos0) const {
  if (n_tokens <= 0 || n_tokens > opt_.n_batch)
    throw error(fmt::format("vulkan: a batch of {} tokens (the backend was made for at most {})",
                            n_tokens, opt_.n_batch));
  if (pos0 < 0 || pos0 + n_tokens > n_ctx_)
    throw error(fmt::format("vulkan: positions {}..{} do not fit the context of {}", pos0,
                            pos0 + n_tokens - 1, n_ctx_));
}

void vulkan_backend::upload_hidden(const float* x, int n_tokens) {
  op_scope scope("upload_hidden");
  check_batch(n_tokens, 0);
  const uint64_t n = static_cast<uint64_t>(n_tokens) * hp_.n_embd * sizeof(float);
  if (upload_in_frame_) submit_frame({}, false);  // its copy must run before staging is reused
  stream_->wait(upload_busy_until_);
  std::memcpy(upload_staging_.data, x, n);
  recorder& r = stream_->open();  // submitted with the layers that follow
  r.copy(whole(upload_staging_), x_, n);
  upload_in_frame_ = true;
}

uint64_t vulkan_backend::submit_frame(std::initializer_list<timeline_wait> waits,
                                      bool host_reads) {
  const uint64_t v = stream_->submit(waits, host_reads);
  if (upload_in_frame_) upload_busy_until_ = v;
  upload_in_frame_ = false;
  layers_in_frame_ = 0;
  return v;
}

void vulkan_backend::download_hidden(float* x, int n_tokens) {
  op_scope scope("download_hidden");
  check_batch(n_tokens, 0);
  const uint64_t n = static_cast<uint64_t>(n_tokens) * hp_.n_embd * sizeof(float);
  recorder& r = stream_->open();
  r.copy(x_, whole(readback_staging_), n);
  stream_->wait(submit_frame({}, true));
  std::memcpy(x, readback_staging_.data, n);
  collect_timers();
}

void vulkan_backend::collect_timers() {
  if (timer_) timer_->collect();
  if (dispatch_timer_) dispatch_timer_->collect();
}

void vulkan_backend::select_seq(int seq) {
  if (seq < 0 || seq >= opt_.n_seq)
    throw error(fmt::format("vulkan: no KV sequence {} (the backend holds {})", seq, opt_.n_seq));
  seq_ = seq;
}

// How forward_layer records a layer: TANDEM_VK_VARIANT=record=replay (the default) records a
// decode layer once and replays it where it can (replay_eligible), fresh records every dispatch
// of every token.
bool replay_wanted() {
  const std::string f = forced_variant("record");
  if (f.empty() || f == "replay") return true;
  if (f == "fresh") return false;
  throw error(fmt::format(
      "TANDEM_VK_VARIANT: unknown record variant '{}' (known: replay, fresh)", f));
}

// A decode layer may be replayed when it is resident, no capture or per-dispatch timing records
// into the stream, and its kernels read the position from the step buffer (fused RoPE + KV
// store, flash attention).
bool vulkan_backend::replay_eligible(const device_layer& L, int n,
                                     const attention_plan& pl) const {
  return n == 1 && !L.streamed && !capture_ && !dispatch_timer_ && pl.flash && replay_wanted() &&
         ops::fused_rope_kv();
}

// Frees the recorded layers when the forced variants they were recorded with changed (tests set
// TANDEM_VK_VARIANT between cases): the frames that execute them are submitted (the open one)
// and finished first.
void vulkan_backend::drop_stale_recordings() {
  const char* env = std::getenv("TANDEM_VK_VARIANT");
  const std::string variants = env ? env : "";
  if (variants == replay_variants_) return;
  if (replay_->size()) {
    if (stream_->is_open()) submit_frame({}, false);
    stream_->finish();
    replay_->clear();
  }
  replay_variants_ = variants;
}

// The step buffer's values for a decode token at pos0 (written when they change) and the
// recorded layer for (layer, KV sequence, split or not), recorded now if it was not; what the
// recordings baked in from the environment (the forced variants) invalidates them all.
void vulkan_backend::replay_layer(recorder& r, int il, int pos0, const attention_plan& pl,
                                  const std::function<void(recorder&)>& record_fn) {
  step_params sp{};
  sp.pos0 = static_cast<uint32_t>(pos0);
  sp.n_split = pl.n_split;
  sp.split_len = pl.split_len;
  sp.ml_off = pl.n_split * static_cast<uint32_t>(hp_.n_embd_q());
  sp.groups_x = pl.groups_x;
  sp.groups_y = pl.groups_y;
  sp.groups_z = pl.n_split;
  if (std::memcmp(&sp, &step_written_, sizeof sp) != 0) {
    r.update(step_, &sp, sizeof sp);
    step_written_ = sp;
  }
  const uint64_t key = (static_cast<uint64_t>(il) * static_cast<uint64_t>(opt_.n_seq) +
                        static_cast<uint64_t>(seq_)) * 2 + (pl.n_split > 1 ? 1 : 0);
  const recorded_block* b = replay_->find(key);
  const bool fresh = b == nullptr;
  if (!b) b = &replay_->record(key, record_fn);
  r.execute(*b, fresh);
}

void vulkan_backend::forward_layer(int il, int n, int pos0) {
  op_scope scope(fmt::format("forward_layer {}", il));
  if (il < 0 || il >= hp_.n_layer || !layers_[static_cast<size_t>(il)].present)
    throw error(fmt::format("vulkan: layer {} is not placed on this backend", il));
  check_batch(n, pos0);
  const device_layer& L = layers_[static_cast<size_t>(il)];
  // The matrices: resident, or in the slot the layer was streamed into.
  stream_slot* sl = nullptr;
  int slot = -1;
  if (L.streamed) {
    prepare_layer(il);  // at once, if the engine did not ask ahead
    slot = slot_of(il);
    sl = &slots_[static_cast<size_t>(slot)];
  }
  const device_matrices& M = sl ? static_cast<const device_matrices&>(*sl) : L;
  const attention_plan pl = plan_attention(*ctx_, n, pos0, hp_.n_head, hp_.n_head_kv,
                                           hp_.head_dim, gate_.size);
  const bool replay = replay_eligible(L, n, pl);
  if (replay) drop_stale_recordings();

  // A streamed layer waits for its slot's copy: the layers before it go ahead without that wait.
  if (sl && stream_->is_open()) submit_frame({}, false);
  recorder& r = stream_->open();
  const int tq = timer_ ? timer_->begin(r.cb(), ctx_->compute().family) : -1;
  if (replay) {
    replay_layer(r, il, pos0, pl,
                 [&](recorder& rec) { record_layer(rec, L, M, n, pos0, step_); });
  } else {
    record_layer(r, L, M, n, pos0, {});
  }
  if (timer_)
    timer_->end(r.cb(), tq, fmt::format("layer {}{}", il, sl ? " (streamed)" : ""),
                trace_track::gpu_compute, il);
  const double t_submit = opt_.trace && tq < 0 ? trace_recorder::now_us() : 0.0;
  ++layers_in_frame_;
  if (sl) {
    ring_->release(slot, submit_frame({ring_->acquire(slot)}, false));
  } else if (capture_ || layers_in_frame_ >= k_layers_per_submit) {
    submit_frame({}, capture_ != nullptr);
  }
  if (opt_.trace && tq < 0)  // no timestamps on this device: the host-side record time only
    opt_.trace->add({fmt::format("layer {} (recorded)", il), trace_track::gpu_compute, t_submit,
                     trace_recorder::now_us() - t_submit, il, "host"});
  deliver_capture(il);
  n_past_ = std::max(n_past_, pos0 + n);
}

// The dispatches of one layer for n tokens at pos0 (with a step buffer: a decode layer recorded
// once, whose kernels read the position from it; pos0 then only picks the attention's shape).
void vulkan_backend::record_layer(recorder& r, const device_layer& L, const device_matrices& M,
                                  int n, int pos0, const buffer_range& step) {
  const buffer_range& k_cache = L.k_cache[static_cast<size_t>(seq_)];
  const buffer_range& v_cache = L.v_cache[static_cast<size_t>(seq_)];
  const int n_embd = hp_.n_embd, n_q = hp_.n_embd_q(), n_kv = hp_.n_embd_kv(), n_ff = hp_.n_ff;
  const int hd = hp_.head_dim;
  const device_weight &wq = M.wq, &wk = M.wk, &wv = M.wv, &wo = M.wo;
  const device_weight &ffn_gate = M.ffn_gate, &ffn_up = M.ffn_up, &ffn_down = M.ffn_down;
  // attention block: h = norm(x); q, k, v; rope; append to the cache; attend; x += o Wo^T
  // On decode the norm, the biases, RoPE and the cache append all go into the Q/K/V product's one
  // dispatch where it can (ops::matmul_qkv_rope); a capture then runs the unfused product first
  // for the matmul:* and add:* captures, and the fused kernel's own results for the rest.
  const ops::matmul_out oq{&wq, q_, n_q}, ok{&wk, k_, n_kv}, ov{&wv, v_, n_kv};
  const bool bias = !L.bq.pieces.empty() && !L.bk.pieces.empty() && !L.bv.pieces.empty();
  const bool no_bias = L.bq.pieces.empty() && L.bk.pieces.empty() && L.bv.pieces.empty();
  ops::rope_kv_in rk{rope_table_,        k_cache,       v_cache, {},        {},   {},
                     hp_.n_head,         hp_.n_head_kv, hd,      hp_.n_rot, pos0, hp_.rope,
                     capture_ != nullptr};
  if (bias) {
    rk.bq = L.bq.pieces[0].range;
    rk.bk = L.bk.pieces[0].range;
    rk.bv = L.bv.pieces[0].range;
  }
  rk.step = step;
  const bool qkv_rope = (bias || no_bias) && ops::qkv_rope_fuses(r, oq, ok, ov, n, rk, xq_);
  if (!qkv_rope || capture_) {
    ops::matmul_multi_norm(r, {oq, ok, ov}, x_,
                           {L.attn_norm.pieces[0].range, hp_.rms_eps, h_, capture_ != nullptr}, n,
                           n_embd, matmul_kernel::automatic, xq_);
    cap(r, "rms_norm:attn_norm", h_, n, n_embd);
    cap(r, "matmul:wq", q_, n, n_q);
    cap(r, "matmul:wk", k_, n, n_kv);
    cap(r, "matmul:wv", v_, n, n_kv);
    if (!L.bq.pieces.empty() || !L.bk.pieces.empty() || !L.bv.pieces.empty()) {
      if (!L.bq.pieces.empty()) ops::add(r, q_, L.bq.pieces[0].range, n * n_q, n_q);
      if (!L.bk.pieces.empty()) ops::add(r, k_, L.bk.pieces[0].range, n * n_kv, n_kv);
      if (!L.bv.pieces.empty()) ops::add(r, v_, L.bv.pieces[0].range, n * n_kv, n_kv);
      if (!L.bq.pieces.empty()) cap(r, "add:bq", q_, n, n_q);
      if (!L.bk.pieces.empty()) cap(r, "add:bk", k_, n, n_kv);
      if (!L.bv.pieces.empty()) cap(r, "add:bv", v_, n, n_kv);
    }
  }
  const bool fused_rope_kv = !qkv_rope && ops::fused_rope_kv();
  if (qkv_rope) {  // q_ roped; k, v into the caches (and k_, v_ as F32 for a capture)
    ops::matmul_qkv_rope(r, oq, ok, ov, x_, {L.attn_norm.pieces[0].range, hp_.rms_eps, h_, false},
                         rk, n, n_embd, xq_);
  } else if (fused_rope_kv) {  // one dispatch; k_ gets the roped rows too, so the captures stay
    ops::rotary_kv(r, q_, k_, v_, rope_table_, k_cache, v_cache, n, hp_.n_head, hp_.n_head_kv, hd,
                   hp_.n_rot, pos0, n_q, n_kv, hp_.rope, step);
  } else {
    ops::rope(r, q_, rope_table_, n, hp_.n_head, hd, hp_.n_rot, pos0, n_q, hp_.rope);
    ops::rope(r, k_, rope_table_, n, hp_.n_head_kv, hd, hp_.n_rot, pos0, n_kv, hp_.rope);
  }
  cap(r, "rope:q", q_, n, n_q);
  cap(r, "rope:k", k_, n, n_kv);
  if (!qkv_rope && !fused_rope_kv) ops::kv_store(r, v_, v_cache, n_kv, n, pos0, n_kv);
  cap(r, "kv_store:v", v_cache.sub(2ull * pos0 * n_kv, 2ull * n * n_kv), n, n_kv, true);
  if (!qkv_rope && !fused_rope_kv) ops::kv_store(r, k_, k_cache, n_kv, n, pos0, n_kv);
  cap(r, "kv_store:k", k_cache.sub(2ull * pos0 * n_kv, 2ull * n * n_kv), n, n_kv, true);
  // gate_ (free until the feed-forward block) holds flash-decoding's partials.
  ops::attention(r, q_, k_cache, v_cache, att_, n, pos0, hp_.n_head, hp_.n_head_kv, hd, gate_, {},
                 step);
  cap(r, "attention", att_, n, n_q);
  ops::matmul(r, wo, att_, x_, n, n_q, n_embd, true, matmul_kernel::automatic, xq_);
  cap(r, "matmul:wo", x_, n, n_embd);
  // feed-forward block: h = norm(x); x += (silu(h Wg^T) * (h Wu^T)) Wd^T
  ops::matmul_multi_norm(r, {{&ffn_gate, gate_, n_ff}, {&ffn_up, up_, n_ff}}, x_,
                         {L.ffn_norm.pieces[0].range, hp_.rms_eps, h_, capture_ != nullptr}, n,
                         n_embd, matmul_kernel::automatic, xq_);
  cap(r, "rms_norm:ffn_norm", h_, n, n_embd);
  cap(r, "matmul:ffn_gate", gate_, n, n_ff);
  cap(r, "matmul:ffn_up", up_, n, n_ff);
  if (ops::matmul_fuses(r, n)) {
    // SwiGLU is read by the down product; the capture still gets its value, from the swiglu
    // kernel run after the product (capture only), and matmul:ffn_down checks the fused input.
    ops::matmul_swiglu(r, ffn_down, gate_, up_, x_, n, n_ff, n_embd, true,
                       matmul_kernel::automatic, xq_);
    if (capture_) {
      ops::swiglu(r, gate_, up_, gate_, n * n_ff);
      cap(r, "swiglu", gate_, n, n_ff);
    }
  } else {
    ops::swiglu(r, gate_, up_, gate_, n * n_ff);
    cap(r, "swiglu", gate_, n, n_ff);
    ops::matmul(r, ffn_down, gate_, x_, n, n_ff, n_embd, true);
  }
  cap(r, "matmul:ffn_down", x_, n, n_embd);
}

void vulkan_backend::forward_output(int n_tokens, bool all_tokens, float* logits) {
  op_scope scope("forward_output");
  if (!opt_.output) throw error("vulkan: forward_output on a backend without the output head");
  check_batch(n_tokens, 0);
  const int n_embd = hp_.n_embd, n_vocab = hp_.n_vocab;
  const int first = all_tokens ? 0 : n_tokens - 1;
  for (int t0 = first; t0 < n_tokens; t0 += n_logit_rows_) {
    const int cnt = std::min(n_logit_rows_, n_tokens - t0);
    recorder& r = stream_->open();  // after the layers recorded last, if not submitted yet
    const int tq = timer_ ? timer_->begin(r.cb(), ctx_->compute().family) : -1;
    if (t0 == 0) {  // the norm fused into the head product where it can (matmul_multi_norm)
      ops::matmul_multi_norm(r, {{&output_, logits_, n_vocab}}, x_,
                             {output_norm_.pieces[0].range, hp_.rms_eps, h_, false}, cnt, n_embd);
    } else {
      ops::rms_norm(r, x_, output_norm_.pieces[0].range, h_, n_embd, cnt, t0, n_embd, n_embd,
                    hp_.rms_eps);
      ops::matmul(r, output_, h_, logits_, cnt, n_embd, n_vocab, false);
    }
    const uint64_t bytes = static_cast<uint64_t>(cnt) * n_vocab * sizeof(float);
    r.copy(logits_, whole(readback_staging_), bytes);
    if (timer_) timer_->end(r.cb(), tq, "output head", trace_track::gpu_compute, hp_.n_layer);
    stream_->wait(submit_frame({}, true));
    std::memcpy(logits + static_cast<int64_t>(t0 - first) * n_vocab, readback_staging_.data, bytes);
  }
  collect_timers();
}

}  // namespace
}  // namespace tandem::vk

namespace tandem {

std::unique_ptr<backend> make_vulkan_backend(const model& m, const backend_options& opt,
                                             bool allow_cpu_device, std::string* why) {
  vk::context_options co;
  co.allow_cpu_device = allow_cpu_device;
  auto ctx = vk::context::create(co, why);
  if (!ctx) return nullptr;
  const auto& hp = m.hp();
  if (hp.head_dim % 2 != 0 || hp.head_dim > 256 || hp.n_rot > hp.head_dim || hp.n_rot % 2 != 0)
    throw error(
        fmt::format("vulkan: head_dim {} / n_rot {} unsupported (the attention kernel "
                    "needs an even head_dim of at most 256)",
                    hp.head_dim, hp.n_rot));
  return std::make_unique<vk::vulkan_backend>(m, opt, std::move(ctx));
}

}  // namespace tandem
