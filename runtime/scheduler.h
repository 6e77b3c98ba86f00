// The scheduler: one placement per layer and for the output head, from --offload and the GPU's
// measured memory. The plan is printed at start-up and by `tandem info --offload`.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runtime/backend_factory.h"
#include "runtime/model.h"

namespace tandem {

enum class placement { cpu, gpu_resident, gpu_streamed };
const char* placement_name(placement p);

struct plan_request {
  std::string offload = "0";     // N (the last N blocks), "all", "auto"
  int n_ctx = 0;
  int n_batch = 512;
  uint64_t vram_budget = 0;      // 0: from the device (heaps / VK_EXT_memory_budget)
  int n_seq = 1;                 // KV caches per layer (sessions)
};

struct plan {
  std::vector<placement> layers;  // one per block
  placement output = placement::cpu;
  std::vector<uint64_t> layer_bytes;
  uint64_t output_bytes = 0;     // norm + head
  uint64_t kv_bytes_per_layer = 0;  // every sequence's
  uint64_t scratch_bytes = 0;
  uint64_t gpu_budget = 0;       // what fitting used (0 when no GPU)
  std::string device;            // GPU name, or "" when everything is on the CPU
  std::string reason;            // why the plan looks as it does, one line
  int n_gpu_layers() const;
  bool uses_gpu() const { return n_gpu_layers() > 0 || output != placement::cpu; }
};

// Parses an --offload value: a count >= 0, "all" or "auto". Throws tandem::error otherwise.
struct offload_spec {
  enum kind_t { count, all, automatic } kind = count;
  int n = 0;
};
offload_spec parse_offload(const std::string& s);

// Builds the plan. dev is the chosen GPU (nullptr: none). A CPU-type device is only used when the
// request names an explicit count or "all"; "auto" never picks it.
plan make_plan(const model& m, const plan_request& req, const gpu_device_info* dev);

// The plan as a table (layer, device, resident/streamed, bytes) plus totals.
std::string format_plan(const plan& p, const model& m);

}  // namespace tandem
