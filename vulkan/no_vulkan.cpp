// Built instead of the Vulkan backend when the build machine lacks glslangValidator or the Vulkan
// headers: the factory functions exist and say why there is no GPU path.
#include "runtime/backend_factory.h"
#include "runtime/cost_model.h"

namespace tandem {

std::vector<gpu_device_info> list_gpu_devices(std::string* why) {
  if (why) *why = "this build has no Vulkan backend (glslangValidator or Vulkan headers missing)";
  return {};
}

std::optional<gpu_device_info> select_gpu_device(bool, std::string* why) {
  if (why) *why = "this build has no Vulkan backend (glslangValidator or Vulkan headers missing)";
  return std::nullopt;
}

std::unique_ptr<backend> make_vulkan_backend(const model&, const backend_options&, bool,
                                             std::string* why) {
  if (why) *why = "this build has no Vulkan backend (glslangValidator or Vulkan headers missing)";
  return nullptr;
}

double measure_host_to_device_bandwidth(bool, std::string* why) {
  if (why) *why = "this build has no Vulkan backend (glslangValidator or Vulkan headers missing)";
  return 0;
}

}  // namespace tandem
