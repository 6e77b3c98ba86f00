#include "runtime/cost_model.h"

#include <fmt/format.h>

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "runtime/error.h"

namespace tandem {

namespace {

std::string cache_file(const std::string& device) {
  std::filesystem::path dir;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) {
    dir = std::filesystem::path(x) / "tandem";
  } else if (const char* h = std::getenv("HOME"); h && *h) {
    dir = std::filesystem::path(h) / ".cache" / "tandem";
  } else {
    return "";
  }
  std::string key;
  for (char c : device) key += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return (dir / ("speeds-" + key + ".txt")).string();
}

uint64_t layer_params(const model& m, int il) {
  const layer_weights& lw = m.layer(il);
  uint64_t n = 0;
  for (const layer_matrix& lm : layer_matrices)
    if (lw.*lm.field) n += static_cast<uint64_t>((lw.*lm.field).t->n_elements());
  return n;
}

}  // namespace

machine_speeds get_machine_speeds(const std::string& device, bool allow_cpu_device) {
  machine_speeds s;
  s.cache_path = cache_file(device);
  if (!s.cache_path.empty()) {
    std::ifstream in(s.cache_path);
    std::string key;
    double v = 0;
    while (in >> key >> v) {
      if (key == "h2d_bytes_per_s") s.h2d_bytes_per_s = v;
      if (key == "cpu_read_bytes_per_s") s.cpu_read_bytes_per_s = v;
      if (key == "cpu_flops") s.cpu_flops = v;
    }
    if (s.h2d_bytes_per_s > 0 && s.cpu_read_bytes_per_s > 0 && s.cpu_flops > 0) {
      s.from_cache = true;
      return s;
    }
  }
  std::string why;
  s.h2d_bytes_per_s = measure_host_to_device_bandwidth(allow_cpu_device, &why);
  const cpu_speeds c = measure_cpu_speeds();
  s.cpu_read_bytes_per_s = c.read_bytes_per_s;
  s.cpu_flops = c.flops;
  if (s.h2d_bytes_per_s <= 0) {
    s.cache_path.clear();  // nothing worth keeping
    return s;
  }
  if (!s.cache_path.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(s.cache_path).parent_path(), ec);
    const std::string tmp = s.cache_path + ".tmp" + std::to_string(::getpid());
    std::ofstream out(tmp);
    out << fmt::format("h2d_bytes_per_s {:.6e}\ncpu_read_bytes_per_s {:.6e}\ncpu_flops {:.6e}\n",
                       s.h2d_bytes_per_s, s.cpu_read_bytes_per_s, s.cpu_flops);
    out.close();
    if (!out || (std::filesystem::rename(tmp, s.cache_path, ec), ec)) {
      std::filesystem::remove(tmp, ec);
      s.cache_path.clear();
    }
  }
  return s;
}

void check_stream_policy(const std::string& policy) {
  if (policy != "auto" && policy != "gpu" && policy != "cpu")
    throw error(fmt::format("--stream '{}': choose auto, gpu or cpu", policy));
}

std::string apply_stream_policy(const model& m, const std::string& policy, int n_batch,
                                const gpu_device_info* dev, plan& p) {
  check_stream_policy(policy);
  std::vector<int> streamed;
  for (size_t il = 0; il < p.layers.size(); ++il)
    if (p.layers[il] == placement::gpu_streamed) streamed.push_back(static_cast<int>(il));
  if (streamed.empty() || !dev) return "";
  if (policy == "gpu")
    return fmt::format("streaming: --stream gpu: {} layers stream on the GPU in every phase (cost "
                       "model not consulted)\n",
                       streamed.size());
  if (policy == "cpu") {
    for (int il : streamed) p.layers[static_cast<size_t>(il)] = placement::cpu;
    return fmt::format("streaming: --stream cpu: the {} layers that do not fit run on the CPU\n",
                       streamed.size());
  }
  const bool cpu_device = dev->type == "cpu";
  const machine_speeds s = get_machine_speeds(dev->name, cpu_device);
  if (s.h2d_bytes_per_s <= 0)
    return "streaming: no host->device bandwidth measured; layers stay streamed on the GPU\n";
  std::string out = fmt::format(
      "streaming cost model ({} {}): host->device {:.2f} GB/s, CPU read {:.2f} GB/s, CPU {:.1f} "
      "GFLOP/s; GPU compute {}\n",
      s.from_cache ? "cached in" : "measured now, saved to",
      s.cache_path.empty() ? "(nowhere)" : s.cache_path, s.h2d_bytes_per_s / 1e9,
      s.cpu_read_bytes_per_s / 1e9, s.cpu_flops / 1e9,
      cpu_device ? "= the CPU's (a CPU-type device)" : "taken as hidden behind the upload");
  out += fmt::format("  {:<6} {:>24} {:>24}  {}\n", "layer",
                     fmt::format("prompt ({} tok) GPU/CPU", n_batch), "decode (1 tok) GPU/CPU", "choice");
  int moved = 0;
  for (int il : streamed) {
    const double bytes = static_cast<double>(p.layer_bytes[static_cast<size_t>(il)]);
    const double params = static_cast<double>(layer_params(m, il));
    auto cpu_ms = [&](int n) {
      return 1e3 * std::max(bytes / s.cpu_read_bytes_per_s, 2.0 * params * n / s.cpu_flops);
    };
    auto gpu_ms = [&](int n) {
      const double up = bytes / s.h2d_bytes_per_s;
      return 1e3 * std::max(up, cpu_device ? 2.0 * params * n / s.cpu_flops : 0.0);
    };
    const double pg = gpu_ms(n_batch), pc = cpu_ms(n_batch), dg = gpu_ms(1), dc = cpu_ms(1);
    std::string choice;
    if (pc <= pg && dc <= dg) {
      p.layers[static_cast<size_t>(il)] = placement::cpu;
      ++moved;
      choice = "CPU (faster in both phases; its KV cache goes with it)";
    } else if (dc < dg) {
      choice = "GPU streamed (prompt); decode too, though the CPU would be faster: the KV cache lives on the GPU";
    } else {
      choice = "GPU streamed (both phases)";
    }
    out += fmt::format("  {:<6} {:>12.3f} / {:<9.3f} {:>12.3f} / {:<9.3f}  {}\n", il, pg, pc, dg, dc,
                       choice);
  }
  if (moved)
    out += fmt::format("  {} of {} streamed layers moved to the CPU (--stream gpu keeps them streamed)\n",
                       moved, streamed.size());
  return out;
}

}  // namespace tandem
