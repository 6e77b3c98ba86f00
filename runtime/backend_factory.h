// Construction of the backends. runtime/ declares these; cpu/ and vulkan/ define them, so the
// runtime never includes a backend's headers.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "runtime/backend.h"
#include "runtime/model.h"

namespace tandem {

struct backend_options {
  int n_ctx = 0;                 // KV cache positions
  int n_batch = 512;             // largest batch forward_layer will see
  std::vector<int> layers;       // the layers placed on this backend (it owns their KV cache)
  bool output = true;            // whether forward_output runs here
  int n_threads = 0;             // CPU threads (0 = physical cores)
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

// Defined in vulkan/. Picks the device (TANDEM_VK_DEVICE=<index or name substring>, else discrete
// before integrated; a CPU-type device such as lavapipe only when allow_cpu_device). Returns
// nullptr and sets *why when no usable device exists; throws tandem::error on a device failure.
std::unique_ptr<backend> make_vulkan_backend(const model& m, const backend_options& opt,
                                             bool allow_cpu_device, std::string* why);

}  // namespace tandem
