#include "runtime/engine.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "runtime/backend_factory.h"
#include "runtime/cost_model.h"
#include "runtime/memory_limit.h"
#include "runtime/scheduler.h"
#include "runtime/trace.h"

namespace tandem {

engine::engine(const model& m, const engine_options& opt) : m_(m) {
  const hparams& hp = m.hp();
  n_ctx_ = opt.n_ctx > 0 ? opt.n_ctx : std::min(hp.n_ctx_train, 4096);
  if (n_ctx_ > (1 << 20))
    throw error(fmt::format("context size {} is too large (at most {})", n_ctx_, 1 << 20));
  n_batch_ = std::max(1, std::min(opt.n_batch, n_ctx_));
  if (opt.n_seq < 1 || opt.n_seq > 256)
    throw error(fmt::format("{} KV sequences: use 1 to 256 sessions", opt.n_seq));
  n_past_.assign(static_cast<size_t>(opt.n_seq), 0);
  // A memory limit too small for the KV cache and scratch beside a few streamed layers gets a
  // smaller batch, then (unless -c set it) context (runtime/memory_limit.h).
  const memory_limit lim = detect_memory_limit(opt.mem_budget);
  memory_shape shape = memory_shape_of(m);
  shape.kv_bytes_per_pos *= static_cast<uint64_t>(std::max(1, opt.n_seq));
  const std::string fit = fit_batch_and_context(shape, lim, memory_margin(lim.bytes), 3, &n_batch_,
                                                &n_ctx_, opt.n_ctx <= 0);
  if (!fit.empty()) notes_.push_back(fit);

  // Plan: which layers (and the output head) go to the GPU.
  plan_request req;
  req.offload = opt.offload;
  req.n_ctx = n_ctx_;
  req.n_batch = n_batch_;
  req.vram_budget = opt.vram_budget;
  req.n_seq = opt.n_seq;
  const offload_spec spec = parse_offload(opt.offload);
  const bool explicit_gpu =
      spec.kind == offload_spec::all || (spec.kind == offload_spec::count && spec.n > 0);
  std::optional<gpu_device_info> dev;
  std::string why;
  if (explicit_gpu || spec.kind == offload_spec::automatic) {
    dev = select_gpu_device(explicit_gpu, &why);
    if (!dev && explicit_gpu)
      notes_.push_back(fmt::format("no GPU for --offload {}: {}; running every layer on the CPU",
                                   opt.offload, why));
  }
  plan p = make_plan(m, req, dev ? &*dev : nullptr);
  const std::string stream_text =
      apply_stream_policy(m, opt.stream_policy, n_batch_, dev ? &*dev : nullptr, p);
  const auto report = [&opt](float done) {
    if (opt.progress && !opt.progress(done)) throw load_cancelled();
  };
  report(0.1f);
  if (spec.kind == offload_spec::automatic && !p.uses_gpu())
    notes_.push_back(dev ? p.reason : fmt::format("no GPU ({}); running on the CPU", why));

  backend* gpu = nullptr;
  if (p.uses_gpu()) {
    backend_options gpu_opt;
    gpu_opt.n_ctx = n_ctx_;
    gpu_opt.n_batch = n_batch_;
    gpu_opt.n_seq = opt.n_seq;
    for (int il = 0; il < hp.n_layer; ++il) {
      const placement pl = p.layers[static_cast<size_t>(il)];
      if (pl != placement::cpu) gpu_opt.layers.push_back(il);
      if (pl == placement::gpu_streamed) gpu_opt.streamed_layers.push_back(il);
    }
    gpu_opt.output = p.output != placement::cpu;
    gpu_opt.trace = opt.trace;
    std::string gwhy;
    try {
      auto b = make_vulkan_backend(m, gpu_opt, explicit_gpu, &gwhy);
      if (b) {
        gpu = b.get();
        backends_.push_back(std::move(b));
      } else {
        notes_.push_back(fmt::format("no GPU: {}; running every layer on the CPU", gwhy));
      }
    } catch (const error& e) {
      // Out of device memory or device loss at load: the CPU can still run the model.
      notes_.push_back(
          fmt::format("GPU backend failed ({}); running every layer on the CPU", e.what()));
    }
    if (!gpu) p = make_plan(m, plan_request{"0", n_ctx_, n_batch_, 0, opt.n_seq}, nullptr);
  }
  plan_text_ = format_plan(p, m) + (gpu ? stream_text : std::string());
  plan_ = p;
  report(gpu ? 0.7f : 0.2f);

  backend_options bo;
  bo.n_ctx = n_ctx_;
  bo.n_batch = n_batch_;
  bo.n_seq = opt.n_seq;
  for (int il = 0; il < hp.n_layer; ++il)
    if (p.layers[static_cast<size_t>(il)] == placement::cpu) bo.layers.push_back(il);
  bo.output = p.output == placement::cpu;
  bo.n_threads = opt.n_threads;
  bo.mem_budget = opt.mem_budget;
  bo.prefetch_distance = opt.prefetch_distance;
  bo.direct_io = opt.direct_io;
  bo.metrics = opt.metrics;
  backends_.insert(backends_.begin(), make_cpu_backend(m, bo));
  for (std::string& n : backends_.front()->notes()) notes_.push_back(std::move(n));
  cpu_ = backends_.front().get();
  for (int il = 0; il < hp.n_layer; ++il)
    layer_backend_.push_back(p.layers[static_cast<size_t>(il)] == placement::cpu ? cpu_ : gpu);
  output_backend_ = p.output == placement::cpu ? cpu_ : gpu;
  hidden_.resize(static_cast<size_t>(n_batch_) * hp.n_embd);
  trace_ = opt.trace;
  report(1.0f);
}

engine::~engine() = default;

std::string engine::describe() const {
  std::string s;
  for (auto& b : backends_) {
    int n = 0;
    for (backend* lb : layer_backend_) n += lb == b.get();
    if (!s.empty()) s += ", ";
    s += fmt::format("{}: {} layers{}", b->name(), n, output_backend_ == b.get() ? " + output" : "");
  }
  return s;
}

const backend* engine::layer_backend(int il) const {
  if (il == m_.hp().n_layer) return output_backend_;
  return il >= 0 && il < m_.hp().n_layer ? layer_backend_[static_cast<size_t>(il)] : nullptr;
}

backend_counters engine::counters() const {
  backend_counters sum;
  for (const auto& b : backends_) {
    const backend_counters c = b->counters();
    sum.dispatches += c.dispatches;
    sum.barriers += c.barriers;
    sum.submits += c.submits;
    sum.recorded += c.recorded;
  }
  return sum;
}

void engine::select_seq(int seq) {
  if (seq < 0 || seq >= n_seq())
    throw error(fmt::format("no KV sequence {} (the engine holds {})", seq, n_seq()));
  if (seq == seq_) return;
  for (auto& b : backends_) b->select_seq(seq);
  seq_ = seq;
}

void engine::set_n_past(int n) {
  if (n < 0 || n > n_past())
    throw error(fmt::format("set_n_past({}): keep 0 .. {} positions", n, n_past()));
  for (auto& b : backends_) b->truncate_kv(n);
  n_past_[static_cast<size_t>(seq_)] = n;
}

void engine::set_op_capture(const capture_fn& fn) {
  for (auto& b : backends_) b->set_capture(fn);
}

const std::vector<float>& engine::eval(const std::vector<int32_t>& tokens, bool all_logits) {
  const hparams& hp = m_.hp();
  const int n_total = static_cast<int>(tokens.size());
  if (n_total == 0) throw error("eval: no tokens to evaluate");
  const int n_past0 = n_past();
  if (n_past0 + n_total > n_ctx_)
    throw error(fmt::format("{} tokens do not fit in the context: {} already used of {}; raise "
                            "the context size with -c or use a shorter prompt",
                            n_total, n_past0, n_ctx_));
  const size_t nv = static_cast<size_t>(hp.n_vocab);
  // No fill: forward_output writes every logit it returns (the fill of a 32000-token vocabulary's
  // 128 KiB took 2-4 us of each decode token, out of cache after the weights streamed by).
  logits_.resize(all_logits ? nv * n_total : nv);

  for (int start = 0; start < n_total; start += n_batch_) {
    const int n = std::min(n_batch_, n_total - start);
    const bool last_chunk = start + n == n_total;
    cpu_->embed(tokens.data() + start, n, hidden_.data());
    backend* cur = nullptr;
    bool output_done = false;
    if (hp.n_layer > 0) layer_backend_[0]->prepare_layer(0);  // streamed: start its upload now
    for (int il = 0; il < hp.n_layer; ++il) {
      backend* b = layer_backend_[static_cast<size_t>(il)];
      if (b != cur) {
        if (cur) cur->download_hidden(hidden_.data(), n);
        b->upload_hidden(hidden_.data(), n);
        cur = b;
      }
      // The layers from il on that b runs, in one go where b can (one span in the trace).
      int il1 = il + 1;
      while (il1 < hp.n_layer && layer_backend_[static_cast<size_t>(il1)] == b) ++il1;
      if (il1 - il > 1 && !layer_capture_ && b->runs_layers(n)) {
        if (il1 < hp.n_layer) layer_backend_[static_cast<size_t>(il1)]->prepare_layer(il1);
        const bool host_span = trace_ && !b->traces_itself();
        const double t_run = host_span ? trace_recorder::now_us() : 0.0;
        // The last layers and the output head in one go where one backend runs both.
        output_done = il1 == hp.n_layer && b == output_backend_ && !all_logits && last_chunk;
        b->forward_layers(il, il1, n, n_past(), output_done ? logits_.data() : nullptr);
        if (host_span)
          trace_->add(
              {fmt::format("layers {}-{}{} (CPU)", il, il1 - 1, output_done ? " + output" : ""),
               trace_track::cpu_compute, t_run, trace_recorder::now_us() - t_run, il, "host"});
        il = il1 - 1;
        continue;
      }
      if (il + 1 < hp.n_layer) layer_backend_[static_cast<size_t>(il + 1)]->prepare_layer(il + 1);
      const bool host_span = trace_ && !b->traces_itself();
      const double t_layer = host_span ? trace_recorder::now_us() : 0.0;
      b->forward_layer(il, n, n_past());
      if (host_span)  // the backend returned when the layer was done
        trace_->add({fmt::format("layer {} (CPU)", il), trace_track::cpu_compute, t_layer,
                     trace_recorder::now_us() - t_layer, il, "host"});
      if (layer_capture_) {
        std::vector<float> h(static_cast<size_t>(n) * hp.n_embd);
        b->download_hidden(h.data(), n);
        layer_capture_(il, "hidden", h.data(), h.size());
      }
    }
    if (output_done) {
      n_past_[static_cast<size_t>(seq_)] += n;
      continue;
    }
    if (output_backend_ != cur) {
      cur->download_hidden(hidden_.data(), n);
      output_backend_->upload_hidden(hidden_.data(), n);
    }
    if (all_logits) {
      output_backend_->forward_output(n, true, logits_.data() + nv * static_cast<size_t>(start));
    } else if (last_chunk) {
      output_backend_->forward_output(n, false, logits_.data());
    }
    n_past_[static_cast<size_t>(seq_)] += n;
  }
  return logits_;
}

}  // namespace tandem
