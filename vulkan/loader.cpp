#include "vulkan/loader.h"

#include <dlfcn.h>
#include <fmt/format.h>

#include <cstdlib>
#include <mutex>

#include "runtime/error.h"
#include "vulkan/check.h"

namespace tandem::vk {

api fn;

namespace {

std::once_flag g_load_once;
bool g_loaded = false;
std::string g_load_error;

void load_globals() {
  // TANDEM_VK_LOADER names the loader library to use instead (odd installs; tests point it at
  // nothing to see the no-loader path).
  const char* override_path = std::getenv("TANDEM_VK_LOADER");
  const bool overridden = override_path && *override_path;
  const char* names[] = {overridden ? override_path : "libvulkan.so.1",
                         overridden ? nullptr : "libvulkan.so"};
  void* lib = nullptr;
  std::string last;
  for (const char* n : names) {
    if (!n || !*n) continue;
    lib = dlopen(n, RTLD_NOW | RTLD_LOCAL);
    if (lib) break;
    const char* e = dlerror();
    last = e ? e : n;
  }
  if (!lib) {
    g_load_error = fmt::format(
        "no Vulkan loader ({}); install the GPU driver's Vulkan ICD and loader, or run on the CPU",
        last);
    return;
  }
  fn.vkGetInstanceProcAddr =
      reinterpret_cast<PFN_vkGetInstanceProcAddr>(dlsym(lib, "vkGetInstanceProcAddr"));
  if (!fn.vkGetInstanceProcAddr) {
    g_load_error = "the Vulkan loader has no vkGetInstanceProcAddr";
    return;
  }
#define TANDEM_VK_LOAD_GLOBAL(name) \
  fn.name = reinterpret_cast<PFN_##name>(fn.vkGetInstanceProcAddr(nullptr, #name));
  TANDEM_VK_GLOBAL_FUNCTIONS(TANDEM_VK_LOAD_GLOBAL)
#undef TANDEM_VK_LOAD_GLOBAL
  if (!fn.vkCreateInstance || !fn.vkEnumerateInstanceVersion) {
    g_load_error = "the Vulkan loader is older than Vulkan 1.1; Tandem needs Vulkan 1.2";
    return;
  }
  uint32_t version = 0;
  fn.vkEnumerateInstanceVersion(&version);
  if (version < VK_API_VERSION_1_2) {
    g_load_error = fmt::format("the Vulkan loader supports Vulkan {}.{}; Tandem needs 1.2",
                               VK_API_VERSION_MAJOR(version), VK_API_VERSION_MINOR(version));
    return;
  }
  g_loaded = true;
}

thread_local std::string t_current_op;

}  // namespace

bool load_loader(std::string* why) {
  std::call_once(g_load_once, load_globals);
  if (!g_loaded && why) *why = g_load_error;
  return g_loaded;
}

void load_instance_functions(VkInstance instance) {
#define TANDEM_VK_LOAD_INSTANCE(name) \
  fn.name = reinterpret_cast<PFN_##name>(fn.vkGetInstanceProcAddr(instance, #name));
  TANDEM_VK_INSTANCE_FUNCTIONS(TANDEM_VK_LOAD_INSTANCE)
#undef TANDEM_VK_LOAD_INSTANCE
}

// ---- errors ---------------------------------------------------------------------------------

const char* result_name(VkResult r) {
  switch (r) {
#define TANDEM_VK_RESULT(x) \
  case x:                   \
    return #x;
    TANDEM_VK_RESULT(VK_SUCCESS)
    TANDEM_VK_RESULT(VK_NOT_READY)
    TANDEM_VK_RESULT(VK_TIMEOUT)
    TANDEM_VK_RESULT(VK_EVENT_SET)
    TANDEM_VK_RESULT(VK_EVENT_RESET)
    TANDEM_VK_RESULT(VK_INCOMPLETE)
    TANDEM_VK_RESULT(VK_ERROR_OUT_OF_HOST_MEMORY)
    TANDEM_VK_RESULT(VK_ERROR_OUT_OF_DEVICE_MEMORY)
    TANDEM_VK_RESULT(VK_ERROR_INITIALIZATION_FAILED)
    TANDEM_VK_RESULT(VK_ERROR_DEVICE_LOST)
    TANDEM_VK_RESULT(VK_ERROR_MEMORY_MAP_FAILED)
    TANDEM_VK_RESULT(VK_ERROR_LAYER_NOT_PRESENT)
    TANDEM_VK_RESULT(VK_ERROR_EXTENSION_NOT_PRESENT)
    TANDEM_VK_RESULT(VK_ERROR_FEATURE_NOT_PRESENT)
    TANDEM_VK_RESULT(VK_ERROR_INCOMPATIBLE_DRIVER)
    TANDEM_VK_RESULT(VK_ERROR_TOO_MANY_OBJECTS)
    TANDEM_VK_RESULT(VK_ERROR_FORMAT_NOT_SUPPORTED)
    TANDEM_VK_RESULT(VK_ERROR_FRAGMENTED_POOL)
    TANDEM_VK_RESULT(VK_ERROR_UNKNOWN)
    TANDEM_VK_RESULT(VK_ERROR_OUT_OF_POOL_MEMORY)
    TANDEM_VK_RESULT(VK_ERROR_INVALID_EXTERNAL_HANDLE)
    TANDEM_VK_RESULT(VK_ERROR_FRAGMENTATION)
    TANDEM_VK_RESULT(VK_ERROR_INVALID_OPAQUE_CAPTURE_ADDRESS)
#undef TANDEM_VK_RESULT
    default:
      return "VK_RESULT_UNKNOWN";
  }
}

op_scope::op_scope(std::string op) : saved_(std::move(t_current_op)) {
  t_current_op = saved_.empty() ? std::move(op) : saved_ + " / " + op;
}

op_scope::~op_scope() {
  t_current_op = std::move(saved_);
}

const std::string& op_scope::current() {
  return t_current_op;
}

void check_failed(VkResult r, const char* expr, const char* file, int line) {
  const std::string& op = op_scope::current();
  throw error(fmt::format("vulkan: {} failed with {} ({}) at {}:{}{}", expr, result_name(r),
                          static_cast<int>(r), file, line,
                          op.empty() ? std::string() : " (op: " + op + ")"));
}

}  // namespace tandem::vk
