// Construction of the backends. runtime/ declares these; cpu/ and vulkan/ define them, so the
// runtime never includes a backend's headers.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/backend.h"
#include "runtime/model.h"

namespace tandem {

struct layer_cache_metrics;  // runtime/layer_cache.h
class trace_recorder;        // runtime/trace.h

struct backend_options {
  int n_ctx = 0;                 // KV cache positions
  int n_seq = 1;                 // KV caches per layer (backend::select_seq picks one)
  int n_batch = 512;             // largest batch forward_layer will see
  std::vector<int> layers;       // the layers placed on this backend (it owns their KV cache)
  bool output = true;            // whether forward_output runs here
  int n_threads = 0;             // CPU threads (0 = physical cores)
  std::vector<int> streamed_layers;  // of `layers`: kept in host memory, uploaded when used
  // CPU layer cache (runtime/layer_cache.h): with a budget smaller than the layers' weights + KV
  // cache + scratch, layers are read into a bounded cache instead of used from the mapping.
  uint64_t mem_budget = 0;       // bytes; 0 = no limit
  int prefetch_distance = -1;    // layers loaded ahead (-1: chosen from the budget, 0: off)
  bool direct_io = false;        // cache reads with O_DIRECT (also TANDEM_DIRECT_IO=1)
  layer_cache_metrics* metrics = nullptr;  // when set, kept up to date by the CPU backend
  trace_recorder* trace = nullptr;  // --trace: per-layer upload/compute spans (runtime/trace.h)
};

// Defined in cpu/cpu_backend.cpp.
std::unique_ptr<backend> make_cpu_backend(const model& m, const backend_options& opt);

struct gpu_device_info {
  int index = 0;
  std::string name;
  std::string type;  // "discrete", "integrated", "virtual", "cpu", "other"
  uint64_t device_local_bytes = 0;
  uint64_t budget_bytes = 0;  // VK_EXT_memory_budget, or device_local_bytes when absent
  std::string details;        // heaps, queues, subgroup size: printed by `tandem info`
};

// Defined in vulkan/. The devices a Vulkan loader reports; empty (and *why set) when there is no
// loader or no device.
std::vector<gpu_device_info> list_gpu_devices(std::string* why);

// Defined in vulkan/. The device make_vulkan_backend would pick with the same arguments (same
// rules as below), or nullopt with *why set. Lets the scheduler plan before anything is uploaded.
std::optional<gpu_device_info> select_gpu_device(bool allow_cpu_device, std::string* why);

// Defined in vulkan/. Picks the device (TANDEM_VK_DEVICE=<index or name substring>, else discrete
// before integrated; a CPU-type device such as lavapipe only when allow_cpu_device). Returns
// nullptr and sets *why when no usable device exists; throws tandem::error on a device failure.
std::unique_ptr<backend> make_vulkan_backend(const model& m, const backend_options& opt,
                                             bool allow_cpu_device, std::string* why);

// ---- gpu-cpu-parity, op level: every shader against the CPU reference (cpu/ops_ref.h) on
// random data with odd shapes, by NMSE = sum (ref - gpu)^2 / sum ref^2 against a threshold per op.
struct op_check_options {
  bool allow_cpu_device = true;  // lavapipe is a fine device to check
  std::string filter;            // only cases whose op or op_type contains this (empty: all)
  uint32_t seed = 1;             // of the random data
};

struct op_check {
  std::string op;       // kernel: rms_norm, rope, swiglu, add, kv_store, attention, matvec, matmul
  std::string type;     // weight type (matvec, matmul), else f32 (kv_store: f16)
  std::string variant;  // reductions: "subgroup" or "shared"; else "-"
  std::string shape;    // e.g. "cols=96 rows=67 n_tok=5 acc"
  double nmse = 0;
  double max_abs_err = 0;
  double threshold = 0;  // pass: nmse <= threshold
  bool pass = false;
};

// Defined in vulkan/. Runs every case; returns an empty list with *why set when there is no
// device. Throws tandem::error on a device failure. TANDEM_PARITY_BREAK (vulkan/ops.cpp) breaks
// one kernel on purpose.
std::vector<op_check> check_gpu_ops(const op_check_options& opt, std::string* why);

}  // namespace tandem
