// `tandem info -m MODEL`: metadata, hyper-parameters and the tensor table.
#include <fmt/format.h>

#include "runtime/gguf.h"
#include "runtime/memory_limit.h"
#include "runtime/model.h"
#include "runtime/scheduler.h"
#include "tools/tandem/commands.h"

namespace tandem::cli {
namespace {
struct info_opts {
  std::string model;
  std::string offload;
  std::string vram_budget;
  int n_ctx = 0;
  int n_batch = 512;
};

void print_devices() {
  std::string why;
  auto devs = list_gpu_devices(&why);
  if (devs.empty()) {
    fmt::print("Vulkan devices: none ({})\n", why);
    return;
  }
  fmt::print("Vulkan devices:\n");
  for (auto& d : devs)
    fmt::print("  [{}] {} ({}): device-local {}, budget {}\n{}", d.index, d.name, d.type,
               format_bytes(d.device_local_bytes), format_bytes(d.budget_bytes),
               d.details.empty() ? "" : "      " + d.details + "\n");
}
// The memory limit the CPU path plans with (runtime/memory_limit.h), and each bound found.
void print_memory_limit() {
  const memory_limit lim = detect_memory_limit();
  fmt::print("memory limit: {}\n", lim.describe());
  for (const memory_source& s : lim.sources)
    fmt::print("  {:<28} {:>12} left{}\n", s.name, format_bytes(s.bytes),
               s.detail.empty() ? "" : "  (" + s.detail + ")");
}
}  // namespace

command add_info(CLI::App& app) {
  auto o = std::make_shared<info_opts>();
  app.add_option("-m,--model", o->model, "GGUF model file (without: only the Vulkan devices)");
  app.add_option("--offload,--ngl", o->offload,
                 "print the placement plan for this --offload value (N, all, auto)");
  app.add_option("--vram-budget", o->vram_budget, "device memory to plan with (e.g. 2G)");
  app.add_option("-c,--ctx-size", o->n_ctx, "context size the plan assumes (0 = the model's, at most 4096)");
  return [o] {
    if (o->model.empty()) {
      print_memory_limit();
      print_devices();
      return 0;
    }
    auto f = gguf_file::open(o->model);
    fmt::print("file: {}\nGGUF version {}, {} bytes, alignment {}, data at byte {}\n\n", f->path(),
               f->version(), f->file_size(), f->alignment(), f->data_offset());
    fmt::print("metadata ({} keys):\n", f->metadata().size());
    for (auto& [key, v] : f->metadata()) {
      std::string s = v.to_string(8);
      if (s.size() > 160) s = s.substr(0, 157) + "...";
      std::string type = v.type == gguf_type::array
                             ? fmt::format("{}[{}]", gguf_type_name(v.elem_type), v.arr.size())
                             : gguf_type_name(v.type);
      fmt::print("  {:<44} {:<12} {}\n", key, type, s);
    }
    uint64_t total = 0;
    fmt::print("\ntensors ({}):\n  {:<36} {:<6} {:<20} {:>14}\n", f->tensors().size(), "name",
               "type", "shape", "bytes");
    for (auto& t : f->tensors()) {
      fmt::print("  {:<36} {:<6} {:<20} {:>14}\n", t.name, dtype_name(t.type), t.shape_string(),
                 t.nbytes);
      total += t.nbytes;
    }
    fmt::print("  total {} ({})\n", total, format_bytes(total));
    if (f->find("general.architecture") && !f->tensors().empty()) {
      f.reset();
      auto m = model::load(o->model);
      const hparams& hp = m->hp();
      fmt::print("\nmodel: {} | n_vocab {} | n_embd {} | n_layer {} | n_head {} | n_head_kv {} | "
                 "head_dim {} | n_ff {} | n_rot {} | rope base {} scale {} | rms_eps {:g} | "
                 "n_ctx_train {}{}\n",
                 hp.arch, hp.n_vocab, hp.n_embd, hp.n_layer, hp.n_head, hp.n_head_kv, hp.head_dim,
                 hp.n_ff, hp.n_rot, hp.rope_freq_base, hp.rope_freq_scale, hp.rms_eps,
                 hp.n_ctx_train, m->output_tied() ? " | output tied to token_embd" : "");
      if (!o->offload.empty()) {
        const offload_spec spec = parse_offload(o->offload);
        const bool explicit_gpu =
            spec.kind == offload_spec::all || (spec.kind == offload_spec::count && spec.n > 0);
        std::string why;
        auto dev = spec.kind == offload_spec::count && spec.n == 0
                       ? std::nullopt
                       : select_gpu_device(explicit_gpu, &why);
        plan_request req;
        req.offload = o->offload;
        req.n_ctx = o->n_ctx > 0 ? o->n_ctx : std::min(hp.n_ctx_train, 4096);
        req.n_batch = o->n_batch;
        if (!o->vram_budget.empty()) req.vram_budget = parse_size(o->vram_budget);
        if (!dev && !why.empty()) fmt::print("\nno GPU: {}\n", why);
        fmt::print("\n{}", format_plan(make_plan(*m, req, dev ? &*dev : nullptr), *m));
      }
    }
    fmt::print("\n");
    print_memory_limit();
    print_devices();
    return 0;
  };
}

}  // namespace tandem::cli
