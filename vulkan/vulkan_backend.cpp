// The Vulkan backend: the weights of its layers (and the output head) resident in device memory,
// uploaded once; per-layer F16 KV caches; scratch activations for n_batch tokens. A layer is one
// command buffer, one submit; the host waits only when results come back (download_hidden,
// forward_output), so recording layer i+1 overlaps the GPU running layer i.
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
#include <cstring>
#include <vector>

#include "runtime/fp16.h"
#include "runtime/blocks.h"
#include "runtime/backend_factory.h"
#include "runtime/error.h"
#include "vulkan/check.h"
#include "vulkan/context.h"
#include "vulkan/memory.h"
#include "vulkan/ops.h"
#include "vulkan/pipeline.h"
#include "runtime/trace.h"
#include "vulkan/gpu_timer.h"
#include "vulkan/staging_ring.h"

namespace tandem::vk {

namespace {

constexpr uint64_t k_mib = 1ull << 20;

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

 private:
  device_weight upload_matrix(const weight& w, int64_t cols, int64_t rows);
  device_weight upload_vector(const weight& w, int64_t n);
  void pack_streamed(const layer_weights& lw, device_layer& L);
  int slot_of(int il) const;
  void check_batch(int n_tokens, int pos0) const;
  void warm_up();

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
  std::unique_ptr<staging_ring> ring_;  // the streaming slots and the copies into them
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
// buffer, between barriers. Sized at the layer's first capture for the largest layer.
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
  r.barrier();
  r.copy(src, whole(capture_buf_->b).sub(capture_used_, bytes), bytes);
  r.barrier();
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
  const auto& hp = hp_;
  n_ctx_ = opt.n_ctx > 0 ? opt.n_ctx : hp.n_ctx_train;
  if (opt_.n_batch <= 0) opt_.n_batch = 512;
  const uint64_t n_batch = static_cast<uint64_t>(opt_.n_batch);
  const uint64_t f = sizeof(float);

  // ---- what it takes: weights, KV cache, scratch; checked against the budget first ----------
  auto streamed = [&](int il) {
    return std::find(opt.streamed_layers.begin(), opt.streamed_layers.end(), il) !=
           opt.streamed_layers.end();
  };
  uint64_t weight_bytes = 0, n_tensors = 0, stream_bytes = 0, n_streamed = 0;
  for (int il : opt.layers) {
    if (il < 0 || il >= hp.n_layer) throw error(fmt::format("vulkan: no layer {}", il));
    n_tensors += 12;
    if (streamed(il)) {
      stream_bytes = std::max(stream_bytes, m.layer(il).nbytes() + 64 * 1024);
      ++n_streamed;
    } else {
      weight_bytes += m.layer(il).nbytes();
    }
  }
  const uint64_t n_slots = std::min<uint64_t>(2, n_streamed);
  if (opt.output) {
    weight_bytes += m.output_norm().nbytes() + m.output().nbytes();
    n_tensors += 2;
  }
  const uint64_t kv_row = static_cast<uint64_t>(hp.n_embd_kv()) * 2;
  const uint64_t kv_bytes = static_cast<uint64_t>(n_ctx_) * kv_row;
  if (kv_bytes > ctx_->caps().max_storage_range)
    throw error(
        fmt::format("vulkan: a KV cache of {} positions ({} MiB per layer) exceeds the "
                    "device's maxStorageBufferRange ({} MiB); use a smaller --ctx",
                    n_ctx_, kv_bytes / k_mib, ctx_->caps().max_storage_range / k_mib));
  const uint64_t max_binding = std::min<uint64_t>(ctx_->caps().max_storage_range, 64 * k_mib);
  n_logit_rows_ = static_cast<int>(
      std::clamp<uint64_t>(max_binding / (static_cast<uint64_t>(hp.n_vocab) * f), 1, n_batch));
  const uint64_t row_floats[] = {
      static_cast<uint64_t>(hp.n_embd), static_cast<uint64_t>(hp.n_embd_q()),
      static_cast<uint64_t>(hp.n_embd_kv()), static_cast<uint64_t>(hp.n_ff)};
  uint64_t scratch_bytes = 0;
  for (uint64_t r : row_floats) {
    if (n_batch * r * f > ctx_->caps().max_storage_range)
      throw error(
          fmt::format("vulkan: scratch for a batch of {} tokens exceeds the device's "
                      "maxStorageBufferRange; use a smaller batch",
                      n_batch));
  }
  scratch_bytes =
      n_batch * f * (2 * row_floats[0] + 2 * row_floats[1] + 2 * row_floats[2] + 2 * row_floats[3]);
  if (opt.output) scratch_bytes += static_cast<uint64_t>(n_logit_rows_) * hp.n_vocab * f;
  const uint64_t rope_bytes = static_cast<uint64_t>(n_ctx_) * static_cast<uint64_t>(hp.n_rot) * f;
  if (opt.n_seq < 1) throw error(fmt::format("vulkan: {} KV sequences (at least 1)", opt.n_seq));
  const uint64_t kv_total = 2 * kv_bytes * opt.layers.size() * static_cast<uint64_t>(opt.n_seq);
  const uint64_t need =
      weight_bytes + n_slots * stream_bytes + kv_total + scratch_bytes + rope_bytes;
  const uint64_t budget = ctx_->device_local_budget();
  if (budget > 0 && need > budget)
    throw error(
        fmt::format("vulkan: {} layers need {} MiB of device memory (weights {}, KV "
                    "cache {}, scratch {}), but {} has {} MiB free; offload fewer layers",
                    opt.layers.size(), need / k_mib, weight_bytes / k_mib, kv_total / k_mib,
                    scratch_bytes / k_mib, ctx_->info().name, budget / k_mib));

  pipes_ = std::make_unique<pipeline_cache>(*ctx_);
  const uint64_t slack = ctx_->caps().storage_align * 2 + 64;
  weights_ = std::make_unique<arena>(
      *ctx_, memory_kind::device,
      std::clamp<uint64_t>(weight_bytes + n_tensors * slack, k_mib, 256 * k_mib));
  device_mem_ =
      std::make_unique<arena>(*ctx_, memory_kind::device,
                              std::clamp<uint64_t>(kv_total + scratch_bytes + rope_bytes +
                                                       n_slots * stream_bytes + 32 * slack,
                                                   k_mib, 256 * k_mib));
  if (n_streamed)
    host_weights_ = std::make_unique<arena>(
        *ctx_, memory_kind::upload,
        std::clamp<uint64_t>(n_streamed * stream_bytes, k_mib, 1024 * k_mib));
  uploader_ = std::make_unique<uploader>(
      *ctx_, std::clamp<uint64_t>(weight_bytes + rope_bytes, k_mib, 64 * k_mib));

  // ---- weights, uploaded once --------------------------------------------------------------
  const int64_t n_embd = hp.n_embd, n_q = hp.n_embd_q(), n_kv = hp.n_embd_kv();
  layers_.resize(static_cast<size_t>(hp.n_layer));
  for (int il : opt.layers) {
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
    for (int s = 0; s < opt.n_seq; ++s) {
      L.k_cache.push_back(device_mem_->alloc(kv_bytes));
      L.v_cache.push_back(device_mem_->alloc(kv_bytes));
    }
  }
  if (opt.output) {
    output_norm_ = upload_vector(m.output_norm(), n_embd);
    output_ = upload_matrix(m.output(), n_embd, hp.n_vocab);
  }
  const auto table = rope_table(n_ctx_, hp.n_rot, hp.rope_freq_base, hp.rope_freq_scale);
  rope_table_ = device_mem_->alloc(std::max<uint64_t>(rope_bytes, 16));
  if (!table.empty()) uploader_->upload(rope_table_, 0, table.data(), table.size() * f);
  uploader_->finish();

  // ---- scratch and staging -----------------------------------------------------------------
  auto scratch = [&](uint64_t row) { return device_mem_->alloc(n_batch * row * f); };
  x_ = scratch(row_floats[0]);
  h_ = scratch(row_floats[0]);
  q_ = scratch(row_floats[1]);
  att_ = scratch(row_floats[1]);
  k_ = scratch(row_floats[2]);
  v_ = scratch(row_floats[2]);
  gate_ = scratch(row_floats[3]);
  up_ = scratch(row_floats[3]);
  if (ctx_->caps().integer_dot)
    xq_ = device_mem_->alloc(quantized_bytes(4, static_cast<int64_t>(std::max(
                                                    {row_floats[0], row_floats[1], row_floats[3]}))));
  const uint64_t logit_bytes = static_cast<uint64_t>(n_logit_rows_) * hp.n_vocab * f;
  if (opt.output) logits_ = device_mem_->alloc(logit_bytes);
  upload_staging_ = create_buffer(*ctx_, n_batch * row_floats[0] * f, memory_kind::upload);
  readback_staging_ = create_buffer(*ctx_, std::max(n_batch * row_floats[0] * f, logit_bytes),
                                    memory_kind::readback);
  stream_ = std::make_unique<command_stream>(*pipes_);

  // ---- the streaming slots -------------------------------------------------------------------
  if (opt.trace) timer_ = std::make_unique<gpu_timer>(*ctx_, *opt.trace);
  if (n_slots) {
    uint64_t region = 0;
    for (const auto& L : layers_)
      if (L.streamed) region = std::max<uint64_t>(region, L.host_region.size);
    ring_ = std::make_unique<staging_ring>(*ctx_, *device_mem_, region, static_cast<int>(n_slots),
                                           opt.trace, timer_.get());
    slots_.resize(n_slots);
  }
  warm_up();
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
    if (row.use == op_use::integer_dot && !ctx_->caps().integer_dot) continue;
    const std::vector<dtype> row_types = row.typed ? types : std::vector<dtype>{dtype::f32};
    for (dtype t : row_types) {
      if (row.k == kernel::matvec_dot && !has_dot_kernel(t)) continue;
      switch (row.spec) {
        case op_spec::none: pipes_->get(row.k, t); break;
        case op_spec::accumulate:
          for (uint32_t acc : {0u, 1u}) pipes_->get(row.k, t, {acc});
          break;
        case op_spec::rope_style: pipes_->get(row.k, t, {neox}); break;
        case op_spec::accumulate_glu:
          for (uint32_t acc : {0u, 1u}) pipes_->get(row.k, t, {acc, 0u, 1u});
          pipes_->get(row.k, t, {1u, 1u, 1u});
          for (uint32_t parts : {2u, 3u}) pipes_->get(row.k, t, {0u, 0u, parts});
          break;
        case op_spec::accumulate_parts:
          for (uint32_t acc : {0u, 1u}) pipes_->get(row.k, t, {acc, 1u});
          for (uint32_t parts : {2u, 3u}) pipes_->get(row.k, t, {0u, parts});
          break;
        case op_spec::glu:
          for (uint32_t glu : {0u, 1u}) pipes_->get(row.k, t, {glu});
          break;
      }
    }
  }
}

vulkan_backend::~vulkan_backend() {
  try {
    if (stream_) stream_->finish();
  } catch (...) {  // a lost device: nothing left to wait for
  }
  stream_.reset();
  ring_.reset();
  try {
    if (timer_) timer_->collect();
  } catch (...) {
  }
  timer_.reset();
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
  stream_->wait(upload_busy_until_);
  std::memcpy(upload_staging_.data, x, n);
  recorder& r = stream_->begin();
  r.copy(whole(upload_staging_), x_, n);
  upload_busy_until_ = stream_->submit();
}

void vulkan_backend::download_hidden(float* x, int n_tokens) {
  op_scope scope("download_hidden");
  check_batch(n_tokens, 0);
  const uint64_t n = static_cast<uint64_t>(n_tokens) * hp_.n_embd * sizeof(float);
  recorder& r = stream_->begin();
  r.copy(x_, whole(readback_staging_), n);
  stream_->wait(stream_->submit());
  std::memcpy(x, readback_staging_.data, n);
  if (timer_) timer_->collect();
}

void vulkan_backend::select_seq(int seq) {
  if (seq < 0 || seq >= opt_.n_seq)
    throw error(fmt::format("vulkan: no KV sequence {} (the backend holds {})", seq, opt_.n_seq));
  seq_ = seq;
}

void vulkan_backend::forward_layer(int il, int n, int pos0) {
  op_scope scope(fmt::format("forward_layer {}", il));
  if (il < 0 || il >= hp_.n_layer || !layers_[static_cast<size_t>(il)].present)
    throw error(fmt::format("vulkan: layer {} is not placed on this backend", il));
  check_batch(n, pos0);
  const device_layer& L = layers_[static_cast<size_t>(il)];
  const buffer_range& k_cache = L.k_cache[static_cast<size_t>(seq_)];
  const buffer_range& v_cache = L.v_cache[static_cast<size_t>(seq_)];
  const int n_embd = hp_.n_embd, n_q = hp_.n_embd_q(), n_kv = hp_.n_embd_kv(), n_ff = hp_.n_ff;
  const int hd = hp_.head_dim;
  // The matrices: resident, or in the slot the layer was streamed into.
  stream_slot* sl = nullptr;
  int slot = -1;
  if (L.streamed) {
    prepare_layer(il);  // at once, if the engine did not ask ahead
    slot = slot_of(il);
    sl = &slots_[static_cast<size_t>(slot)];
  }
  const device_matrices& M = sl ? static_cast<const device_matrices&>(*sl) : L;
  const device_weight &wq = M.wq, &wk = M.wk, &wv = M.wv, &wo = M.wo;
  const device_weight &ffn_gate = M.ffn_gate, &ffn_up = M.ffn_up, &ffn_down = M.ffn_down;

  recorder& r = stream_->begin();
  const int tq = timer_ ? timer_->begin(r.cb(), ctx_->compute().family) : -1;
  // attention block: h = norm(x); q, k, v; rope; append to the cache; attend; x += o Wo^T
  ops::rms_norm(r, x_, L.attn_norm.pieces[0].range, h_, n_embd, n, 0, n_embd, n_embd, hp_.rms_eps);
  cap(r, "rms_norm:attn_norm", h_, n, n_embd);
  r.barrier();
  ops::matmul_multi(r, {{&wq, q_, n_q}, {&wk, k_, n_kv}, {&wv, v_, n_kv}}, h_, n, n_embd,
                    matmul_kernel::automatic, xq_);
  cap(r, "matmul:wq", q_, n, n_q);
  cap(r, "matmul:wk", k_, n, n_kv);
  cap(r, "matmul:wv", v_, n, n_kv);
  r.barrier();
  if (!L.bq.pieces.empty() || !L.bk.pieces.empty() || !L.bv.pieces.empty()) {
    if (!L.bq.pieces.empty()) ops::add(r, q_, L.bq.pieces[0].range, n * n_q, n_q);
    if (!L.bk.pieces.empty()) ops::add(r, k_, L.bk.pieces[0].range, n * n_kv, n_kv);
    if (!L.bv.pieces.empty()) ops::add(r, v_, L.bv.pieces[0].range, n * n_kv, n_kv);
    if (!L.bq.pieces.empty()) cap(r, "add:bq", q_, n, n_q);
    if (!L.bk.pieces.empty()) cap(r, "add:bk", k_, n, n_kv);
    if (!L.bv.pieces.empty()) cap(r, "add:bv", v_, n, n_kv);
    r.barrier();
  }
  ops::rope(r, q_, rope_table_, n, hp_.n_head, hd, hp_.n_rot, pos0, n_q, hp_.rope);
  ops::rope(r, k_, rope_table_, n, hp_.n_head_kv, hd, hp_.n_rot, pos0, n_kv, hp_.rope);
  cap(r, "rope:q", q_, n, n_q);
  cap(r, "rope:k", k_, n, n_kv);
  ops::kv_store(r, v_, v_cache, n_kv, n, pos0, n_kv);
  cap(r, "kv_store:v", v_cache.sub(2ull * pos0 * n_kv, 2ull * n * n_kv), n, n_kv, true);
  r.barrier();
  ops::kv_store(r, k_, k_cache, n_kv, n, pos0, n_kv);
  cap(r, "kv_store:k", k_cache.sub(2ull * pos0 * n_kv, 2ull * n * n_kv), n, n_kv, true);
  r.barrier();
  ops::attention(r, q_, k_cache, v_cache, att_, n, pos0, hp_.n_head, hp_.n_head_kv, hd);
  cap(r, "attention", att_, n, n_q);
  r.barrier();
  ops::matmul(r, wo, att_, x_, n, n_q, n_embd, true, matmul_kernel::automatic, xq_);
  cap(r, "matmul:wo", x_, n, n_embd);
  r.barrier();
  // feed-forward block: h = norm(x); x += (silu(h Wg^T) * (h Wu^T)) Wd^T
  ops::rms_norm(r, x_, L.ffn_norm.pieces[0].range, h_, n_embd, n, 0, n_embd, n_embd, hp_.rms_eps);
  cap(r, "rms_norm:ffn_norm", h_, n, n_embd);
  r.barrier();
  ops::matmul_multi(r, {{&ffn_gate, gate_, n_ff}, {&ffn_up, up_, n_ff}}, h_, n, n_embd,
                    matmul_kernel::automatic, xq_);
  cap(r, "matmul:ffn_gate", gate_, n, n_ff);
  cap(r, "matmul:ffn_up", up_, n, n_ff);
  r.barrier();
  if (ops::matmul_fuses(r, n)) {
    // SwiGLU is read by the down product; the capture still gets its value, from the swiglu
    // kernel run after the product (capture only), and matmul:ffn_down checks the fused input.
    ops::matmul_swiglu(r, ffn_down, gate_, up_, x_, n, n_ff, n_embd, true,
                       matmul_kernel::automatic, xq_);
    if (capture_) {
      r.barrier();
      ops::swiglu(r, gate_, up_, gate_, n * n_ff);
      cap(r, "swiglu", gate_, n, n_ff);
    }
  } else {
    ops::swiglu(r, gate_, up_, gate_, n * n_ff);
    cap(r, "swiglu", gate_, n, n_ff);
    r.barrier();
    ops::matmul(r, ffn_down, gate_, x_, n, n_ff, n_embd, true);
  }
  cap(r, "matmul:ffn_down", x_, n, n_embd);
  if (timer_)
    timer_->end(r.cb(), tq, fmt::format("layer {}{}", il, sl ? " (streamed)" : ""),
                trace_track::gpu_compute, il);
  const double t_submit = opt_.trace && tq < 0 ? trace_recorder::now_us() : 0.0;
  if (sl) {
    ring_->release(slot, stream_->submit({ring_->acquire(slot)}));
  } else {
    stream_->submit();
  }
  if (opt_.trace && tq < 0)  // no timestamps on this device: the host-side submit time only
    opt_.trace->add({fmt::format("layer {} (submitted)", il), trace_track::gpu_compute, t_submit,
                     trace_recorder::now_us() - t_submit, il, "host"});
  deliver_capture(il);
  n_past_ = std::max(n_past_, pos0 + n);
}

void vulkan_backend::forward_output(int n_tokens, bool all_tokens, float* logits) {
  op_scope scope("forward_output");
  if (!opt_.output) throw error("vulkan: forward_output on a backend without the output head");
  check_batch(n_tokens, 0);
  const int n_embd = hp_.n_embd, n_vocab = hp_.n_vocab;
  const int first = all_tokens ? 0 : n_tokens - 1;
  for (int t0 = first; t0 < n_tokens; t0 += n_logit_rows_) {
    const int cnt = std::min(n_logit_rows_, n_tokens - t0);
    recorder& r = stream_->begin();
    const int tq = timer_ ? timer_->begin(r.cb(), ctx_->compute().family) : -1;
    ops::rms_norm(r, x_, output_norm_.pieces[0].range, h_, n_embd, cnt, t0, n_embd, n_embd,
                  hp_.rms_eps);
    r.barrier();
    ops::matmul(r, output_, h_, logits_, cnt, n_embd, n_vocab, false);
    r.barrier();
    const uint64_t bytes = static_cast<uint64_t>(cnt) * n_vocab * sizeof(float);
    r.copy(logits_, whole(readback_staging_), bytes);
    if (timer_) timer_->end(r.cb(), tq, "output head", trace_track::gpu_compute, hp_.n_layer);
    stream_->wait(stream_->submit());
    std::memcpy(logits + static_cast<int64_t>(t0 - first) * n_vocab, readback_staging_.data, bytes);
  }
  if (timer_) timer_->collect();
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
