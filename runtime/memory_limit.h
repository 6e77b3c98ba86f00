// The memory Tandem may use: the least of --mem-budget (when given), the system's available
// memory (MemAvailable in /proc/meminfo) and what the process's own memory cgroup has left (its
// limit minus its usage, for the cgroup and each of its ancestors; cgroup v2 memory.max /
// memory.current, v1 memory.limit_in_bytes / memory.usage_in_bytes). The usage leaves out the
// cgroup's page cache (active_file + inactive_file in memory.stat): the kernel reclaims it before
// it kills anything, and the model file's own pages are in it.
//
// TANDEM_MEM_LIMIT=SIZE (e.g. 320M) acts as one more cgroup limit, with no usage counted against
// it: a way to try the plan for a small machine on a large one, and the tests' hook.
//
// The files are read below injectable roots, so that tests parse fake /proc and /sys/fs/cgroup
// trees. A file that is missing or does not parse contributes nothing (the limit is then what the
// other sources say); a bad TANDEM_MEM_LIMIT is an error.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tandem {

class model;  // runtime/model.h

struct memory_limit_roots {
  std::string proc = "/proc";            // meminfo, self/cgroup
  std::string cgroup = "/sys/fs/cgroup";  // v2 at the root or in unified/; v1 in memory/
  // The TANDEM_MEM_LIMIT value; nullopt: read the environment.
  std::optional<std::string> env_limit;
};

// One bound on the memory, with where it comes from.
struct memory_source {
  std::string name;    // "--mem-budget", "MemAvailable", "cgroup v2 /a/b", "TANDEM_MEM_LIMIT"
  uint64_t bytes = 0;  // what is left under this bound
  std::string detail;  // e.g. "memory.max 512.00 MiB - memory.current 192.00 MiB"
};

struct memory_limit {
  uint64_t bytes = 0;                  // the least of the sources; 0: none known (no limit)
  std::string source;                  // the name of the least
  std::vector<memory_source> sources;  // every bound found, in the order read
  // "320.00 MiB (cgroup v1 /x: memory.limit_in_bytes 512.00 MiB - usage 192.00 MiB)", or
  // "unknown" when no source was found.
  std::string describe() const;
  // Whether the binding bound is --mem-budget (the user's own choice).
  bool from_budget() const { return source == "--mem-budget"; }
};

// Reads every source; mem_budget 0 means no --mem-budget. Throws tandem::error on a bad
// TANDEM_MEM_LIMIT.
memory_limit detect_memory_limit(uint64_t mem_budget = 0, const memory_limit_roots& roots = {});

// "512M", "4G", "1.5GiB", "300K", "1000000" -> bytes; nullopt when it is not a size.
std::optional<uint64_t> parse_memory_size(const std::string& s);

// "1.50 GiB", "320.00 MiB", "12 B".
std::string format_memory(uint64_t n);

// What the engine's memory plan needs to know of a model to see whether its KV cache and scratch
// leave room for streaming at least a few layers (see fit_batch_and_context).
struct memory_shape {
  uint64_t max_layer_bytes = 0;  // the largest layer's weights, as stored in the file
  uint64_t kv_bytes_per_pos = 0;  // KV cache bytes per context position, all CPU layers
  uint64_t scratch_bytes_per_token = 0;  // the CPU backend's per-token buffers
  uint64_t output_bytes = 0;  // the output head: held in memory while the layers stream
};

// The shape of the model for the CPU backend holding all its layers (an estimate of its buffers).
memory_shape memory_shape_of(const model& m);

// When the limit is too small for `ring_layers` streamed layers + the output head + the KV cache
// (n_ctx) + scratch (n_batch) + `overhead`, halves *n_batch (down to 32) and then, when may_shrink_ctx, *n_ctx (down
// to 256) until it fits or neither can shrink further. Returns what it changed as a note for the
// user ("" when nothing).
std::string fit_batch_and_context(const memory_shape& s, const memory_limit& lim,
                                  uint64_t overhead, int ring_layers, int* n_batch, int* n_ctx,
                                  bool may_shrink_ctx);

// What holding a backend's weights takes (bytes), for plan_weights.
struct weights_need {
  uint64_t copies = 0;     // every weight copied as the backend would (repacked); 0: no copies
  uint64_t mapped = 0;     // every weight read from the file mapping instead
  uint64_t layers = 0;     // the layers' weights alone (file bytes)
  uint64_t kv = 0;         // KV cache
  uint64_t scratch = 0;    // per-batch buffers
};

struct weights_plan {
  enum class kind { copies, mapped, stream } how = kind::copies;
  // stream: bytes for the layer cache + KV cache + scratch (+ the output head, automatic)
  uint64_t budget = 0;
  bool automatic = false;  // stream chosen by the limit, not by --mem-budget
};

// Room kept for what no plan counts (heap, threads' stacks, the engine's buffers): 8 MiB + 1/16
// of the limit.
uint64_t memory_margin(uint64_t limit);

// How to hold the weights under the limit: copied (repacked) when the copies, KV cache and
// scratch fit the limit less the margin; else mapped when the mapped weights fit; else streamed
// through the layer cache with a budget of all that is left. A binding --mem-budget keeps its
// own meaning: the layers + KV cache + scratch within it, or streaming with that budget.
weights_plan plan_weights(const weights_need& n, const memory_limit& lim);

}  // namespace tandem
