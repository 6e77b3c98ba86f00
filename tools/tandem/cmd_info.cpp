// `tandem info -m MODEL`: metadata, hyper-parameters and the tensor table.
#include <fmt/format.h>

#include "runtime/gguf.h"
#include "runtime/model.h"
#include "tools/tandem/commands.h"

namespace tandem::cli {
namespace {
struct info_opts {
  std::string model;
};
}  // namespace

command add_info(CLI::App& app) {
  auto o = std::make_shared<info_opts>();
  app.add_option("-m,--model", o->model, "GGUF model file")->required();
  return [o] {
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
    }
    return 0;
  };
}

}  // namespace tandem::cli
