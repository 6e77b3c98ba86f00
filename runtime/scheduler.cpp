#include "runtime/scheduler.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

namespace tandem {

const char* placement_name(placement p) {
  switch (p) {
    case placement::cpu: return "CPU";
    case placement::gpu_resident: return "GPU resident";
    case placement::gpu_streamed: return "GPU streamed";
  }
  return "?";
}

int plan::n_gpu_layers() const {
  return static_cast<int>(std::count_if(layers.begin(), layers.end(),
                                        [](placement p) { return p != placement::cpu; }));
}

offload_spec parse_offload(const std::string& s) {
  offload_spec o;
  if (s == "all" || s == "max") {
    o.kind = offload_spec::all;
    return o;
  }
  if (s == "auto") {
    o.kind = offload_spec::automatic;
    return o;
  }
  if (s.empty() || s.size() > 6 || !std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); }))
    throw error(fmt::format("--offload '{}': give a number of layers, 'all' or 'auto'", s));
  o.n = std::stoi(s);
  return o;
}

static std::string mib(uint64_t b) { return fmt::format("{:.1f} MiB", b / 1048576.0); }

plan make_plan(const model& m, const plan_request& req, const gpu_device_info* dev) {
  const hparams& hp = m.hp();
  plan p;
  p.layers.assign(static_cast<size_t>(hp.n_layer), placement::cpu);
  for (int il = 0; il < hp.n_layer; ++il) p.layer_bytes.push_back(m.layer(il).nbytes());
  p.output_bytes = m.output().nbytes() + m.output_norm().nbytes();
  p.kv_bytes_per_layer = 2ull * static_cast<uint64_t>(std::max(req.n_ctx, 1)) * hp.n_embd_kv() *
                         2 * static_cast<uint64_t>(std::max(req.n_seq, 1));
  const uint64_t nb = static_cast<uint64_t>(std::max(req.n_batch, 1));
  p.scratch_bytes = nb * 4 * (3ull * hp.n_embd + hp.n_embd_q() * 2ull + 2ull * hp.n_embd_kv() +
                              2ull * hp.n_ff) +
                    4ull * hp.n_vocab * nb;

  const offload_spec spec = parse_offload(req.offload);
  const int want = spec.kind == offload_spec::all ? hp.n_layer
                   : spec.kind == offload_spec::count ? std::min(spec.n, hp.n_layer)
                                                      : -1;
  if (spec.kind == offload_spec::count && spec.n == 0) {
    p.reason = "--offload 0: every layer on the CPU";
    return p;
  }
  if (!dev) {
    p.reason = "no usable GPU: every layer on the CPU";
    return p;
  }
  if (spec.kind == offload_spec::automatic && dev->type == "cpu") {
    p.reason = fmt::format("--offload auto skips {} (a CPU-type device is slower than the CPU "
                           "path; ask with --offload N|all): every layer on the CPU",
                           dev->name);
    return p;
  }
  p.device = dev->name;
  const uint64_t budget = req.vram_budget ? req.vram_budget
                          : dev->budget_bytes ? dev->budget_bytes
                                              : dev->device_local_bytes;
  p.gpu_budget = budget;
  // Keep a margin for the driver and other programs: 5% of the budget, at most 512 MiB.
  const uint64_t margin = std::min<uint64_t>(budget / 20, 512ull << 20);
  // Two weight slots for streaming take the largest layer each.
  const uint64_t largest = *std::max_element(p.layer_bytes.begin(), p.layer_bytes.end());

  if (spec.kind == offload_spec::automatic) {
    // The output head first (most valuable), then blocks from the last backwards while they fit
    // with their KV cache.
    uint64_t free = budget > margin + p.scratch_bytes ? budget - margin - p.scratch_bytes : 0;
    int n = 0;
    if (free >= p.output_bytes) {
      free -= p.output_bytes;
      for (int il = hp.n_layer - 1; il >= 0; --il) {
        const uint64_t need = p.layer_bytes[static_cast<size_t>(il)] + p.kv_bytes_per_layer;
        if (need > free) break;
        free -= need;
        ++n;
      }
    }
    if (n == 0 && free < p.output_bytes) {
      p.device.clear();
      p.reason = fmt::format("--offload auto: {} has {} free after scratch and margin, not enough "
                             "for the output head ({}): every layer on the CPU",
                             dev->name, mib(free), mib(p.output_bytes));
      return p;
    }
    for (int il = hp.n_layer - n; il < hp.n_layer; ++il)
      p.layers[static_cast<size_t>(il)] = placement::gpu_resident;
    p.output = placement::gpu_resident;
    p.reason = fmt::format("--offload auto: {} of {} layers + output fit in {} of {} ({} budget)",
                           n, hp.n_layer, dev->name, mib(budget), req.vram_budget ? "--vram-budget" : "device");
    return p;
  }

  // An explicit count or "all": the last `want` blocks go to the GPU with the output head. What
  // does not fit stays in host memory and is streamed through two device slots.
  uint64_t fixed = margin + p.scratch_bytes + p.output_bytes +
                   p.kv_bytes_per_layer * static_cast<uint64_t>(want);
  uint64_t free = budget > fixed ? budget - fixed : 0;
  const int first = hp.n_layer - want;
  std::vector<placement> gpu(static_cast<size_t>(want), placement::gpu_resident);
  uint64_t total = 0;
  for (int il = first; il < hp.n_layer; ++il) total += p.layer_bytes[static_cast<size_t>(il)];
  int streamed = 0;
  if (total > free) {
    // Reserve the two streaming slots, then keep resident the layers that still fit, from the
    // last backwards; the rest stream.
    free = free > 2 * largest ? free - 2 * largest : 0;
    for (int il = hp.n_layer - 1; il >= first; --il) {
      auto& slot = p.layers[static_cast<size_t>(il)];
      const uint64_t b = p.layer_bytes[static_cast<size_t>(il)];
      if (b <= free) {
        free -= b;
        slot = placement::gpu_resident;
      } else {
        slot = placement::gpu_streamed;
        ++streamed;
      }
    }
  } else {
    for (int il = first; il < hp.n_layer; ++il) p.layers[static_cast<size_t>(il)] = placement::gpu_resident;
  }
  if (want > 0 || spec.kind == offload_spec::all) p.output = placement::gpu_resident;
  p.reason = fmt::format("--offload {}: last {} of {} layers + output on {} ({} budget {}){}", req.offload,
                         want, hp.n_layer, dev->name, req.vram_budget ? "--vram-budget" : "device",
                         mib(budget),
                         streamed ? fmt::format("; {} layers do not fit and stream through two "
                                                "{} slots",
                                                streamed, mib(largest))
                                  : "");
  return p;
}

std::string format_plan(const plan& p, const model& m) {
  std::string s = fmt::format("plan: {}\n", p.reason);
  s += fmt::format("  {:<8} {:<14} {:>12} {:>12}\n", "layer", "device", "weights", "KV cache");
  uint64_t cpu = 0, gpu = 0;
  for (size_t il = 0; il < p.layers.size(); ++il) {
    s += fmt::format("  {:<8} {:<14} {:>12} {:>12}\n", il, placement_name(p.layers[il]),
                     mib(p.layer_bytes[il]), mib(p.kv_bytes_per_layer));
    (p.layers[il] == placement::cpu ? cpu : gpu) += p.layer_bytes[il] + p.kv_bytes_per_layer;
  }
  s += fmt::format("  {:<8} {:<14} {:>12}\n", "output", placement_name(p.output), mib(p.output_bytes));
  s += fmt::format("  {:<8} {:<14} {:>12}\n", "embed", "CPU", mib(m.tok_embd().nbytes()));
  (p.output == placement::cpu ? cpu : gpu) += p.output_bytes;
  s += fmt::format("  total: CPU {}, GPU {}{}\n", mib(cpu + m.tok_embd().nbytes()), mib(gpu),
                   p.device.empty() ? "" : fmt::format(" on {} (+ scratch {})", p.device, mib(p.scratch_bytes)));
  return s;
}

}  // namespace tandem
