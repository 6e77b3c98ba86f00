#include "runtime/memory_limit.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "runtime/error.h"
#include "runtime/model.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;

// The file's text, or nullopt when it cannot be read.
std::optional<std::string> read_text(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A file holding one unsigned decimal number (surrounding white space allowed).
std::optional<uint64_t> read_number(const std::string& path, bool* is_max = nullptr) {
  const auto text = read_text(path);
  if (!text) return std::nullopt;
  std::string s = *text;
  s.erase(0, s.find_first_not_of(" \t\r\n"));
  s.erase(s.find_last_not_of(" \t\r\n") + 1);
  if (is_max) *is_max = s == "max";
  if (s.empty() || s.size() > 20 || !std::all_of(s.begin(), s.end(), [](char c) {
        return std::isdigit(static_cast<unsigned char>(c));
      }))
    return std::nullopt;
  errno = 0;
  const unsigned long long v = std::strtoull(s.c_str(), nullptr, 10);
  if (errno == ERANGE) return std::nullopt;
  return static_cast<uint64_t>(v);
}

std::optional<memory_source> mem_available(const std::string& proc) {
  const auto text = read_text(proc + "/meminfo");
  if (!text) return std::nullopt;
  std::istringstream in(*text);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string key, unit;
    uint64_t kb = 0;
    if (!(ls >> key) || key != "MemAvailable:") continue;
    if (!(ls >> kb) || !(ls >> unit) || unit != "kB") return std::nullopt;
    return memory_source{"MemAvailable", kb * 1024, "/proc/meminfo"};
  }
  return std::nullopt;
}

// The memory cgroup paths of the process: (v2 path, v1 path); empty where there is none.
std::pair<std::string, std::string> own_cgroups(const std::string& proc) {
  std::pair<std::string, std::string> r;
  const auto text = read_text(proc + "/self/cgroup");
  if (!text) return r;
  std::istringstream in(*text);
  std::string line;
  while (std::getline(in, line)) {
    const size_t a = line.find(':');
    const size_t b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    const std::string id = line.substr(0, a), ctrls = line.substr(a + 1, b - a - 1);
    const std::string path = line.substr(b + 1);
    if (path.empty() || path[0] != '/') continue;
    if (id == "0" && ctrls.empty()) {
      r.first = path;
      continue;
    }
    std::istringstream cs(ctrls);
    std::string c;
    while (std::getline(cs, c, ','))
      if (c == "memory") r.second = path;
  }
  return r;
}

// The cgroup directory of `path` under `base`; `base` itself when that directory is missing (a
// container that sees the host's path but mounts its own cgroup at the root).
std::string cgroup_dir(const std::string& base, const std::string& path) {
  std::error_code ec;
  const std::string dir = base + (path == "/" ? "" : path);
  return fs::is_directory(dir, ec) ? dir : base;
}

// The page cache of a cgroup (file pages on its LRU lists, which the kernel reclaims before it
// kills anything), from its memory.stat; 0 when unknown.
uint64_t reclaimable_file_bytes(const std::string& dir, bool v2) {
  const auto text = read_text(dir + "/memory.stat");
  if (!text) return 0;
  std::istringstream in(*text);
  std::string key;
  uint64_t v = 0, active = 0, inactive = 0, total_active = 0, total_inactive = 0;
  bool have_total = false;
  while (in >> key >> v) {
    if (key == "active_file") active = v;
    if (key == "inactive_file") inactive = v;
    if (key == "total_active_file") total_active = v, have_total = true;  // v1, hierarchical
    if (key == "total_inactive_file") total_inactive = v, have_total = true;
  }
  return !v2 && have_total ? total_active + total_inactive : active + inactive;
}

// Bounds of the cgroup at `dir` and of each ancestor up to `base` that has a limit.
void cgroup_bounds(const std::string& base, const std::string& dir, bool v2,
                   std::vector<memory_source>* out) {
  const char* limit_file = v2 ? "memory.max" : "memory.limit_in_bytes";
  const char* usage_file = v2 ? "memory.current" : "memory.usage_in_bytes";
  fs::path p(dir);
  const fs::path root(base);
  for (;;) {
    bool is_max = false;
    const auto limit = read_number((p / limit_file).string(), &is_max);
    // v1 writes "no limit" as a page-rounded 2^63 - 1; anything past 2^60 is no limit.
    if (limit && *limit < (1ull << 60)) {
      // The usage counts the page cache (the model file's pages too): only the rest is taken.
      const uint64_t charged = read_number((p / usage_file).string()).value_or(0);
      const uint64_t cache = std::min(charged, reclaimable_file_bytes(p.string(), v2));
      const uint64_t usage = charged - cache;
      std::string rel = p.lexically_relative(root).generic_string();
      rel = rel == "." ? "/" : "/" + rel;
      out->push_back({fmt::format("cgroup {} {}", v2 ? "v2" : "v1", rel),
                      *limit > usage ? *limit - usage : 0,
                      fmt::format("{} {} - {} {}{}", limit_file, format_memory(*limit), usage_file,
                                  format_memory(usage),
                                  cache ? fmt::format(" (less {} of page cache)", format_memory(cache))
                                        : std::string())});
    }
    if (p == root || !p.has_parent_path() || p.parent_path() == p) break;
    p = p.parent_path();
    if (p.lexically_relative(root).generic_string().rfind("..", 0) == 0) break;  // left the tree
  }
}

}  // namespace

std::optional<uint64_t> parse_memory_size(const std::string& s) {
  size_t pos = 0;
  double v = 0;
  try {
    v = std::stod(s, &pos);
  } catch (...) {
    return std::nullopt;
  }
  std::string unit = s.substr(pos);
  for (auto& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (!unit.empty() && unit.back() == 'B') unit.pop_back();
  if (!unit.empty() && unit.back() == 'I') unit.pop_back();
  const double mul = unit.empty() ? 1 : unit == "K" ? 1024.0 : unit == "M" ? 1048576.0
                   : unit == "G" ? 1073741824.0 : unit == "T" ? 1099511627776.0 : -1;
  if (mul < 0 || v < 0 || !std::isfinite(v) || v * mul >= 1.8e19) return std::nullopt;
  return static_cast<uint64_t>(v * mul);
}

std::string format_memory(uint64_t n) {
  if (n >= (1ull << 30)) return fmt::format("{:.2f} GiB", n / 1073741824.0);
  if (n >= (1ull << 20)) return fmt::format("{:.2f} MiB", n / 1048576.0);
  if (n >= (1ull << 10)) return fmt::format("{:.2f} KiB", n / 1024.0);
  return fmt::format("{} B", n);
}

std::string memory_limit::describe() const {
  for (const memory_source& s : sources)
    if (s.name == source)
      return fmt::format("{} ({}{})", format_memory(bytes), s.name,
                         s.detail.empty() ? "" : ": " + s.detail);
  return "unknown";
}

memory_limit detect_memory_limit(uint64_t mem_budget, const memory_limit_roots& roots) {
  memory_limit lim;
  if (mem_budget > 0) lim.sources.push_back({"--mem-budget", mem_budget, ""});
  if (auto s = mem_available(roots.proc)) lim.sources.push_back(*s);
  const auto [v2_path, v1_path] = own_cgroups(roots.proc);
  if (!v2_path.empty()) {  // v2 at the root (unified), or beside v1 in unified/ (hybrid)
    for (const std::string& base : {roots.cgroup, roots.cgroup + "/unified"}) {
      std::error_code ec;
      if (!fs::exists(base + "/cgroup.controllers", ec)) continue;
      cgroup_bounds(base, cgroup_dir(base, v2_path), true, &lim.sources);
      break;
    }
  }
  if (!v1_path.empty()) {
    const std::string base = roots.cgroup + "/memory";
    std::error_code ec;
    if (fs::is_directory(base, ec)) cgroup_bounds(base, cgroup_dir(base, v1_path), false, &lim.sources);
  }
  const std::optional<std::string> env =
      roots.env_limit ? roots.env_limit
                      : (std::getenv("TANDEM_MEM_LIMIT") ? std::optional<std::string>(
                                                               std::getenv("TANDEM_MEM_LIMIT"))
                                                         : std::nullopt);
  if (env && !env->empty()) {
    const auto v = parse_memory_size(*env);
    if (!v || *v == 0)
      throw error(fmt::format("TANDEM_MEM_LIMIT='{}' is not a size; write e.g. 512M or 2G, or "
                              "unset it",
                              *env));
    lim.sources.push_back({"TANDEM_MEM_LIMIT", *v, ""});
  }
  for (const memory_source& s : lim.sources)
    if (lim.source.empty() || s.bytes < lim.bytes) {
      lim.bytes = s.bytes;
      lim.source = s.name;
    }
  return lim;
}

memory_shape memory_shape_of(const model& m) {
  const hparams& hp = m.hp();
  memory_shape s;
  for (int il = 0; il < hp.n_layer; ++il) s.max_layer_bytes = std::max(s.max_layer_bytes, m.layer(il).nbytes());
  s.kv_bytes_per_pos = static_cast<uint64_t>(hp.n_layer) * 2 * hp.n_embd_kv() * sizeof(uint16_t);
  // The CPU backend's x, h, q, k, v, attention, gate and up rows, and the engine's hidden state.
  s.scratch_bytes_per_token =
      sizeof(float) * (3ull * hp.n_embd + 2ull * hp.n_embd_q() + 2ull * hp.n_embd_kv() + 2ull * hp.n_ff);
  s.output_bytes = m.output().nbytes() + m.output_norm().nbytes();
  return s;
}

std::string fit_batch_and_context(const memory_shape& s, const memory_limit& lim,
                                  uint64_t overhead, int ring_layers, int* n_batch, int* n_ctx,
                                  bool may_shrink_ctx) {
  if (lim.bytes == 0 || lim.from_budget()) return "";
  const auto need = [&] {
    return overhead + s.output_bytes + s.max_layer_bytes * static_cast<uint64_t>(ring_layers) +
           s.kv_bytes_per_pos * static_cast<uint64_t>(*n_ctx) +
           s.scratch_bytes_per_token * static_cast<uint64_t>(*n_batch);
  };
  const int batch0 = *n_batch, ctx0 = *n_ctx;
  while (need() > lim.bytes && *n_batch > 32) *n_batch = std::max(32, *n_batch / 2);
  while (may_shrink_ctx && need() > lim.bytes && *n_ctx > 256) *n_ctx = std::max(256, *n_ctx / 2);
  if (*n_batch == batch0 && *n_ctx == ctx0) return "";
  std::string what;
  if (*n_batch != batch0) what = fmt::format("batch size {} -> {}", batch0, *n_batch);
  if (*n_ctx != ctx0)
    what += fmt::format("{}context {} -> {} (-c sets it)", what.empty() ? "" : ", ", ctx0, *n_ctx);
  return fmt::format("memory limit {}: {} to leave room for the weights", format_memory(lim.bytes),
                     what);
}

uint64_t memory_margin(uint64_t limit) { return (8ull << 20) + limit / 16; }

weights_plan plan_weights(const weights_need& n, const memory_limit& lim) {
  using kind = weights_plan::kind;
  uint64_t other = 0;  // the least bound that is not --mem-budget (0: none)
  for (const memory_source& s : lim.sources)
    if (s.name != "--mem-budget" && (other == 0 || s.bytes < other)) other = std::max<uint64_t>(s.bytes, 1);
  const bool bounded = other > 0;
  const uint64_t usable = !bounded ? UINT64_MAX
                          : other > memory_margin(other) ? other - memory_margin(other) : 0;
  const auto fits = [&](uint64_t w) { return w + n.kv + n.scratch <= usable; };
  const kind held = n.copies && fits(n.copies) ? kind::copies : kind::mapped;
  if (lim.from_budget()) {
    if (n.layers + n.kv + n.scratch > lim.bytes) return {kind::stream, lim.bytes, false};
    return {held, 0, false};
  }
  if (!bounded || held == kind::copies || fits(n.mapped)) return {held, 0, false};
  return {kind::stream, usable, true};
}

}  // namespace tandem
