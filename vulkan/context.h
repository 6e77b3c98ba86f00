// The device layer: one instance, one physical device, a compute queue and (where the device has
// a dedicated one) a transfer queue, each with a timeline semaphore. Also the validation-layer
// hook used by the tests and the device listing behind `tandem info`.
#pragma once
#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "runtime/backend_factory.h"
#include "vulkan/loader.h"

namespace tandem::vk {

// Whether dev_root (normally /dev) holds a node that a Vulkan GPU driver needs: Mesa's and AMD's
// drivers open /dev/dri/renderD*, NVIDIA's /dev/nvidia<N>, WSL's /dev/dxg. Without one only
// software devices (lavapipe, SwiftShader: CPU type) can exist, which --offload auto never uses,
// so auto skips creating an instance (it loads every installed driver: 25 ms warm, 200-400 ms
// cold). Always true outside Linux, where the rule is not known to hold.
bool gpu_device_node_present(const std::string& dev_root = "/dev");

struct context_options {
  // Accept a CPU-type device (lavapipe) without TANDEM_VK_DEVICE naming it.
  bool allow_cpu_device = false;
  // Device choice: an index or a case-insensitive name substring. Empty: TANDEM_VK_DEVICE.
  std::string device;
  // Enable VK_LAYER_KHRONOS_validation; also on when TANDEM_VK_VALIDATION=1.
  bool validation = false;
};

// A queue and the timeline semaphore that counts its submissions.
struct queue {
  VkQueue handle = VK_NULL_HANDLE;
  uint32_t family = 0;
  VkSemaphore timeline = VK_NULL_HANDLE;
  uint64_t last_value = 0;  // the value the latest submit will signal
  uint64_t pending = 0;     // the next submit waits for the other queue to reach this value
};

// "Wait (on the GPU) until q's timeline reaches value".
struct timeline_wait {
  queue* q = nullptr;
  uint64_t value = 0;
};

struct device_caps {
  VkPhysicalDeviceProperties props{};
  VkPhysicalDeviceMemoryProperties mem{};
  uint32_t subgroup_size = 1;
  bool subgroup_arithmetic = false;  // subgroupAdd/Max in compute shaders
  bool memory_budget = false;        // VK_EXT_memory_budget
  bool portability_subset = false;
  bool push_descriptor = false;      // VK_KHR_push_descriptor (enabled when present)
  bool integer_dot = false;              // VK_KHR_shader_integer_dot_product, enabled
  bool integer_dot_accelerated = false;  // 4x8-bit packed signed dot products run in hardware
  uint64_t max_storage_range = 0;  // maxStorageBufferRange
  uint64_t max_allocation = 0;     // maxMemoryAllocationSize
  uint64_t storage_align = 16;     // minStorageBufferOffsetAlignment
  uint32_t max_groups[3] = {65535, 65535, 65535};
  uint32_t max_shared = 16384;
  // Compute units (SMs, CUs): VK_NV_shader_sm_builtins or VK_AMD_shader_core_properties where
  // the driver has them; else an estimate by device type (discrete 32, integrated 8, CPU: its
  // hardware threads, other 8). Sizes work splits (flash-decoding's KV split).
  uint32_t compute_units = 8;
  bool compute_units_exact = false;  // from a driver extension, not the estimate
  uint8_t device_uuid[VK_UUID_SIZE] = {};  // VkPhysicalDeviceIDProperties::deviceUUID
  // VK_NV_cooperative_matrix with an F16 x F16 -> F32 shape of 16 x coopmat_n x 16 at subgroup
  // scope, 32-lane subgroups, shaderFloat16 and the Vulkan memory model (the matmul_coopmat
  // kernel's needs): coopmat_n is 16 or 8, 0 when the device lacks any of them.
  uint32_t coopmat_n = 0;
  // storageBuffer16BitAccess and storageBuffer8BitAccess (enabled when both are present): the
  // 16/8-bit loads of the 2-byte-aligned weight blocks (TANDEM_VK_VARIANT=loads=u16, the
  // default where present; vulkan/pipeline.h).
  bool storage16 = false;
};

class context {
 public:
  // Creates the instance and device. Returns nullptr and sets *why (one line) when there is no
  // loader or no usable device; throws tandem::error when a Vulkan call fails.
  static std::unique_ptr<context> create(const context_options& opt, std::string* why);
  ~context();
  context(const context&) = delete;
  context& operator=(const context&) = delete;

  VkDevice device() const { return device_; }
  VkPhysicalDevice physical() const { return phys_; }
  const device_caps& caps() const { return caps_; }
  const gpu_device_info& info() const { return info_; }
  bool is_cpu_device() const { return caps_.props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU; }

  queue& compute() { return compute_; }
  // The transfer queue; the compute queue itself when the device has no separate one.
  queue& transfer() { return has_transfer_ ? transfer_ : compute_; }
  bool has_transfer_queue() const { return has_transfer_; }
  // Queue family indices for VK_SHARING_MODE_CONCURRENT buffers (1 or 2 entries).
  const std::vector<uint32_t>& families() const { return families_; }

  // Submits one command buffer to q. It first waits (on the GPU) for the dependencies noted
  // with depend() and for the waits given; waits on q itself are implied by submission order
  // and the barrier each command buffer begins with. Returns the timeline value that signals
  // its completion.
  uint64_t submit(queue& q, VkCommandBuffer cb, std::initializer_list<timeline_wait> waits = {});
  // The next submit to waiter waits until signaler's timeline reaches value (no-op when both are
  // the same queue). Used for work whose consumer is not known yet, such as weight uploads.
  void depend(queue& waiter, queue& signaler, uint64_t value);
  // Blocks until q's timeline reaches value.
  void wait(queue& q, uint64_t value);
  void wait_idle();

  // Memory type index with all of required (and, if possible, preferred) flags for type_bits;
  // throws when none.
  uint32_t memory_type(uint32_t type_bits, VkMemoryPropertyFlags required,
                       VkMemoryPropertyFlags preferred) const;
  // Device-local bytes the process may still use (VK_EXT_memory_budget), else the heap size.
  uint64_t device_local_budget() const;

 private:
  context() = default;
  VkInstance instance_ = VK_NULL_HANDLE;
  VkDebugUtilsMessengerEXT messenger_ = VK_NULL_HANDLE;
  PFN_vkDestroyDebugUtilsMessengerEXT destroy_messenger_ = nullptr;
  VkPhysicalDevice phys_ = VK_NULL_HANDLE;
  VkDevice device_ = VK_NULL_HANDLE;
  device_caps caps_;
  gpu_device_info info_;
  queue compute_, transfer_;
  bool has_transfer_ = false;
  std::vector<uint32_t> families_;
};

// Error-severity validation messages seen by any context of this process (tests compare it
// before and after). Messages are also printed to stderr.
int validation_error_count();
// Whether TANDEM_VK_VALIDATION=1 is set.
bool validation_requested();

}  // namespace tandem::vk
