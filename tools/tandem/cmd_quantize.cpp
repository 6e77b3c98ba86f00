// `tandem quantize IN.gguf OUT.gguf TYPE`: re-encode a model's weight matrices. Mixes follow
// llama.cpp: q4_k_m keeps the output head and about half of attn_v / ffn_down in Q6_K.
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <map>

#include "cpu/convert.h"
#include "runtime/gguf.h"
#include "tools/tandem/commands.h"

namespace tandem::cli {
namespace {

struct quant_opts {
  std::string in, out, type;
};

// llama.cpp's use_more_bits: the first and last eighth of the layers and every third in between.
bool use_more_bits(int il, int n_layer) {
  return il < n_layer / 8 || il >= 7 * n_layer / 8 || (il - n_layer / 8) % 3 == 2;
}

int layer_of(const std::string& name) {
  if (name.rfind("blk.", 0) != 0) return -1;
  return std::stoi(name.substr(4, name.find('.', 4) - 4));
}

bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

// The type a 2-D weight gets in a given mix.
dtype choose(const std::string& mix, const std::string& name, int n_layer) {
  const int il = layer_of(name);
  const bool head = name == "output.weight";
  if (mix == "f16") return dtype::f16;
  if (mix == "q8_0") return dtype::q8_0;
  if (mix == "q6_k") return dtype::q6_k;
  if (mix == "q4_0") return head ? dtype::q6_k : dtype::q4_0;
  // q4_k_m / q5_k_m
  const dtype base = mix == "q4_k_m" ? dtype::q4_k : dtype::q5_k;
  if (head) return dtype::q6_k;
  if ((contains(name, "attn_v.weight") || contains(name, "ffn_down.weight")) && il >= 0 &&
      use_more_bits(il, n_layer))
    return dtype::q6_k;
  return base;
}

// A type that fits a row of cols elements, as close to want as possible.
dtype fit(dtype want, int64_t cols) {
  if (cols % traits(want).block_size == 0) return want;
  if (cols % 32 == 0) return dtype::q8_0;
  return dtype::f16;
}

}  // namespace

command add_quantize(CLI::App& app) {
  auto o = std::make_shared<quant_opts>();
  app.add_option("input", o->in, "source GGUF model")->required();
  app.add_option("output", o->out, "GGUF file to write")->required();
  app.add_option("type", o->type, "f16, q8_0, q4_0, q4_k_m, q5_k_m, q6_k")->required();
  return [o] {
    static const char* mixes[] = {"f16", "q8_0", "q4_0", "q4_k_m", "q5_k_m", "q6_k"};
    std::string mix = o->type;
    for (auto& c : mix) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (std::find(std::begin(mixes), std::end(mixes), mix) == std::end(mixes))
      throw error(fmt::format("unknown quantization type '{}' (f16, q8_0, q4_0, q4_k_m, q5_k_m, "
                              "q6_k)",
                              o->type));
    auto in = gguf_file::open(o->in);
    const int n_layer = static_cast<int>(
        in->get_int(in->get_string("general.architecture", "llama") + ".block_count", 0));
    gguf_writer w;
    for (auto& [k, v] : in->metadata())
      if (k != "general.alignment" && k != "general.file_type") w.set_value(k, v);
    uint64_t bytes_in = 0, bytes_out = 0;
    for (const gguf_tensor& t : in->tensors()) {
      std::vector<int64_t> ne(t.ne, t.ne + t.n_dims);
      bytes_in += t.nbytes;
      const bool matrix = t.n_dims == 2 && t.name.size() > 7 &&
                          t.name.compare(t.name.size() - 7, 7, ".weight") == 0;
      if (!matrix) {
        w.add_tensor(t.name, t.type, ne, std::vector<uint8_t>(t.data, t.data + t.nbytes));
        bytes_out += t.nbytes;
        continue;
      }
      if (!traits(t.type).computable)
        throw error(fmt::format("{}: tensor '{}' has type {}, which Tandem cannot read", o->in,
                                t.name, dtype_name(t.type)));
      const dtype want = choose(mix, t.name, n_layer);
      const dtype got = fit(want, t.ne[0]);
      if (got != want)
        fmt::print(stderr, "tandem quantize: tensor '{}' has rows of {} elements, not a multiple of "
                           "{}'s block of {}; kept as {}\n",
                   t.name, t.ne[0], dtype_name(want), traits(want).block_size, dtype_name(got));
      bytes_out += row_bytes(got, static_cast<uint64_t>(t.ne[0])) * static_cast<uint64_t>(t.ne[1]);
      const gguf_tensor* src = &t;
      w.add_tensor(t.name, got, ne, [src, got] {
        return cpu::quantize_rows(got, src->ne[1], src->ne[0], [&](int64_t r, float* out) {
          cpu::dequantize_matrix_row(src->type, src->data, r, src->ne[0], out);
        });
      });
    }
    w.write(o->out);
    fmt::print(stderr, "tandem quantize: {} -> {} ({}): {} -> {}\n", o->in, o->out, mix,
               format_bytes(bytes_in), format_bytes(bytes_out));
    return 0;
  };
}

}  // namespace tandem::cli
