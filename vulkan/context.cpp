#include "vulkan/context.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "runtime/error.h"
#include "vulkan/check.h"

namespace tandem::vk {

namespace {

std::atomic<int> g_validation_errors{0};

constexpr const char* k_validation_layer = "VK_LAYER_KHRONOS_validation";

VKAPI_ATTR VkBool32 VKAPI_CALL debug_callback(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                              VkDebugUtilsMessageTypeFlagsEXT,
                                              const VkDebugUtilsMessengerCallbackDataEXT* data,
                                              void*) {
  const bool is_error = severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT;
  if (is_error) g_validation_errors.fetch_add(1);
  std::fprintf(stderr, "vulkan validation %s: %s\n", is_error ? "error" : "warning",
               data && data->pMessage ? data->pMessage : "(no message)");
  return VK_FALSE;
}

VkDebugUtilsMessengerCreateInfoEXT messenger_info() {
  VkDebugUtilsMessengerCreateInfoEXT ci{VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT};
  ci.messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT;
  ci.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                   VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                   VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT;
  ci.pfnUserCallback = debug_callback;
  return ci;
}

bool has_instance_layer(const char* name) {
  uint32_t n = 0;
  VK_CHECK(fn.vkEnumerateInstanceLayerProperties(&n, nullptr));
  std::vector<VkLayerProperties> layers(n);
  VK_CHECK(fn.vkEnumerateInstanceLayerProperties(&n, layers.data()));
  for (const auto& l : layers)
    if (std::strcmp(l.layerName, name) == 0) return true;
  return false;
}

bool has_instance_extension(const char* name, const char* layer = nullptr) {
  uint32_t n = 0;
  VK_CHECK(fn.vkEnumerateInstanceExtensionProperties(layer, &n, nullptr));
  std::vector<VkExtensionProperties> exts(n);
  VK_CHECK(fn.vkEnumerateInstanceExtensionProperties(layer, &n, exts.data()));
  for (const auto& e : exts)
    if (std::strcmp(e.extensionName, name) == 0) return true;
  return false;
}

std::vector<std::string> device_extensions(VkPhysicalDevice pd) {
  uint32_t n = 0;
  VK_CHECK(fn.vkEnumerateDeviceExtensionProperties(pd, nullptr, &n, nullptr));
  std::vector<VkExtensionProperties> exts(n);
  VK_CHECK(fn.vkEnumerateDeviceExtensionProperties(pd, nullptr, &n, exts.data()));
  std::vector<std::string> out;
  for (const auto& e : exts) out.emplace_back(e.extensionName);
  return out;
}

bool contains(const std::vector<std::string>& v, const char* s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

// An instance for enumeration or for a context. With validation, the messenger is chained so
// that instance creation itself is checked.
VkInstance create_instance(bool validation, bool* debug_utils, std::string* why) {
  VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
  app.pApplicationName = "tandem";
  app.pEngineName = "tandem";
  app.apiVersion = VK_API_VERSION_1_2;

  std::vector<const char*> layers, exts;
  VkDebugUtilsMessengerCreateInfoEXT dbg = messenger_info();
  const VkValidationFeatureEnableEXT enables[] = {
      VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT};
  VkValidationFeaturesEXT features{VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT};
  features.enabledValidationFeatureCount = 1;
  features.pEnabledValidationFeatures = enables;
  VkInstanceCreateInfo ci{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
  *debug_utils = false;
  if (validation) {
    if (!has_instance_layer(k_validation_layer))
      throw error(
          "TANDEM_VK_VALIDATION=1 but VK_LAYER_KHRONOS_validation is not installed "
          "(Debian/Ubuntu: apt install vulkan-validationlayers)");
    layers.push_back(k_validation_layer);
    if (has_instance_extension(VK_EXT_DEBUG_UTILS_EXTENSION_NAME) ||
        has_instance_extension(VK_EXT_DEBUG_UTILS_EXTENSION_NAME, k_validation_layer)) {
      exts.push_back(VK_EXT_DEBUG_UTILS_EXTENSION_NAME);
      ci.pNext = &dbg;
      *debug_utils = true;
    }
    // Synchronization validation too: a missing barrier between dependent dispatches is exactly
    // the bug that passes on one driver and corrupts results on another.
    if (has_instance_extension(VK_EXT_VALIDATION_FEATURES_EXTENSION_NAME, k_validation_layer)) {
      exts.push_back(VK_EXT_VALIDATION_FEATURES_EXTENSION_NAME);
      features.pNext = ci.pNext;
      ci.pNext = &features;
    }
  }
  // Portability drivers (MoltenVK) are listed only when asked for.
  if (has_instance_extension(VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME)) {
    exts.push_back(VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME);
    ci.flags |= VK_INSTANCE_CREATE_ENUMERATE_PORTABILITY_BIT_KHR;
  }
  ci.pApplicationInfo = &app;
  ci.enabledLayerCount = static_cast<uint32_t>(layers.size());
  ci.ppEnabledLayerNames = layers.data();
  ci.enabledExtensionCount = static_cast<uint32_t>(exts.size());
  ci.ppEnabledExtensionNames = exts.data();
  VkInstance instance = VK_NULL_HANDLE;
  op_scope scope("create instance");
  const VkResult r = fn.vkCreateInstance(&ci, nullptr, &instance);
  if (r == VK_ERROR_INCOMPATIBLE_DRIVER) {  // a loader without any driver (ICD)
    *why =
        "no Vulkan driver found (vkCreateInstance: VK_ERROR_INCOMPATIBLE_DRIVER); install "
        "the GPU's Vulkan driver";
    return VK_NULL_HANDLE;
  }
  VK_CHECK(r);
  load_instance_functions(instance);
  return instance;
}

const char* type_name(VkPhysicalDeviceType t) {
  switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU:
      return "discrete";
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU:
      return "integrated";
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU:
      return "virtual";
    case VK_PHYSICAL_DEVICE_TYPE_CPU:
      return "cpu";
    default:
      return "other";
  }
}

// Lower is better; CPU devices last.
int type_rank(VkPhysicalDeviceType t) {
  switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU:
      return 0;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU:
      return 1;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU:
      return 2;
    case VK_PHYSICAL_DEVICE_TYPE_OTHER:
      return 3;
    default:
      return 4;
  }
}

std::string gib(uint64_t b) {
  return fmt::format("{:.1f} GiB", static_cast<double>(b) / (1ull << 30));
}

// Everything we learn about one physical device before creating it.
struct candidate {
  VkPhysicalDevice pd = VK_NULL_HANDLE;
  device_caps caps;
  gpu_device_info info;
  bool usable = false;
  std::string unusable_why;
  int compute_family = -1;
  int transfer_family = -1;  // a dedicated transfer family, or -1
};

// Compute units of a device whose driver does not say: a mid-range discrete GPU has 30-80
// SMs/CUs, an integrated one 2-12; a CPU device (lavapipe) runs a workgroup per hardware thread.
uint32_t estimated_compute_units(VkPhysicalDeviceType type) {
  switch (type) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return 32;
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return std::max(1u, std::thread::hardware_concurrency());
    default: return 8;
  }
}

// The N of an F16 x F16 -> F32 cooperative-matrix shape 16 x N x 16 at subgroup scope that pd
// offers (16 preferred, else 8), 0 when none (VK_NV_cooperative_matrix).
uint32_t coopmat_shape(VkPhysicalDevice pd) {
  if (!fn.vkGetPhysicalDeviceCooperativeMatrixPropertiesNV) return 0;
  uint32_t n = 0;
  VK_CHECK(fn.vkGetPhysicalDeviceCooperativeMatrixPropertiesNV(pd, &n, nullptr));
  std::vector<VkCooperativeMatrixPropertiesNV> props(
      n, VkCooperativeMatrixPropertiesNV{VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_NV});
  VK_CHECK(fn.vkGetPhysicalDeviceCooperativeMatrixPropertiesNV(pd, &n, props.data()));
  uint32_t best = 0;
  for (const auto& p : props)
    if (p.MSize == 16 && p.KSize == 16 && (p.NSize == 16 || p.NSize == 8) &&
        p.AType == VK_COMPONENT_TYPE_FLOAT16_NV && p.BType == VK_COMPONENT_TYPE_FLOAT16_NV &&
        p.CType == VK_COMPONENT_TYPE_FLOAT32_NV && p.DType == VK_COMPONENT_TYPE_FLOAT32_NV &&
        p.scope == VK_SCOPE_SUBGROUP_NV)
      best = std::max(best, p.NSize);
  return best;
}

candidate describe(VkPhysicalDevice pd, int index) {
  candidate c;
  c.pd = pd;
  auto& caps = c.caps;
  fn.vkGetPhysicalDeviceProperties(pd, &caps.props);
  const auto exts = device_extensions(pd);
  caps.memory_budget = contains(exts, VK_EXT_MEMORY_BUDGET_EXTENSION_NAME);
  caps.portability_subset = contains(exts, "VK_KHR_portability_subset");
  caps.push_descriptor = contains(exts, VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME);

  VkPhysicalDeviceSubgroupProperties sg{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
  VkPhysicalDeviceMaintenance3Properties m3{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES};
  VkPhysicalDeviceProperties2 p2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2};
  p2.pNext = &sg;
  sg.pNext = &m3;
  VkPhysicalDeviceIDProperties idp{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_ID_PROPERTIES};
  m3.pNext = &idp;
  VkPhysicalDeviceShaderSMBuiltinsPropertiesNV nv_sm{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_SM_BUILTINS_PROPERTIES_NV};
  VkPhysicalDeviceShaderCorePropertiesAMD amd_core{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_CORE_PROPERTIES_AMD};
  const bool has_nv_sm = contains(exts, VK_NV_SHADER_SM_BUILTINS_EXTENSION_NAME);
  const bool has_amd_core = contains(exts, VK_AMD_SHADER_CORE_PROPERTIES_EXTENSION_NAME);
  if (has_nv_sm) {
    nv_sm.pNext = m3.pNext;
    m3.pNext = &nv_sm;
  }
  if (has_amd_core) {
    amd_core.pNext = m3.pNext;
    m3.pNext = &amd_core;
  }
  fn.vkGetPhysicalDeviceProperties2(pd, &p2);
  caps.compute_units = estimated_compute_units(caps.props.deviceType);
  if (has_nv_sm && nv_sm.shaderSMCount > 0) {
    caps.compute_units = nv_sm.shaderSMCount;
    caps.compute_units_exact = true;
  } else if (has_amd_core && amd_core.shaderEngineCount * amd_core.shaderArraysPerEngineCount *
                                  amd_core.computeUnitsPerShaderArray > 0) {
    caps.compute_units = amd_core.shaderEngineCount * amd_core.shaderArraysPerEngineCount *
                         amd_core.computeUnitsPerShaderArray;
    caps.compute_units_exact = true;
  }
  std::memcpy(caps.device_uuid, idp.deviceUUID, VK_UUID_SIZE);
  caps.subgroup_size = std::max(1u, sg.subgroupSize);
  caps.subgroup_arithmetic = (sg.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                             (sg.supportedOperations & VK_SUBGROUP_FEATURE_BASIC_BIT) &&
                             (sg.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT);
  const auto& lim = caps.props.limits;
  caps.max_storage_range = lim.maxStorageBufferRange;
  caps.max_allocation = m3.maxMemoryAllocationSize ? m3.maxMemoryAllocationSize : (1ull << 30);
  caps.storage_align = std::max<uint64_t>(16, lim.minStorageBufferOffsetAlignment);
  for (int i = 0; i < 3; ++i) caps.max_groups[i] = lim.maxComputeWorkGroupCount[i];
  caps.max_shared = lim.maxComputeSharedMemorySize;

  VkPhysicalDeviceMemoryBudgetPropertiesEXT budget{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_BUDGET_PROPERTIES_EXT};
  VkPhysicalDeviceMemoryProperties2 mp2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_PROPERTIES_2};
  if (caps.memory_budget) mp2.pNext = &budget;
  fn.vkGetPhysicalDeviceMemoryProperties2(pd, &mp2);
  caps.mem = mp2.memoryProperties;

  VkPhysicalDeviceVulkan12Features f12{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
  VkPhysicalDeviceFeatures2 f2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
  f2.pNext = &f12;
  VkPhysicalDeviceVulkan11Features f11{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES};
  f11.pNext = f12.pNext;
  f12.pNext = &f11;
  VkPhysicalDeviceCooperativeMatrixFeaturesNV fcm{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV};
  const bool has_cm = contains(exts, VK_NV_COOPERATIVE_MATRIX_EXTENSION_NAME);
  VkPhysicalDeviceShaderIntegerDotProductFeatures idot{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES};
  const bool idot_ext = contains(exts, VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME);
  if (has_cm) {
    fcm.pNext = f12.pNext;
    f12.pNext = &fcm;
  }
  if (idot_ext) {
    idot.pNext = f12.pNext;
    f12.pNext = &idot;
  }
  fn.vkGetPhysicalDeviceFeatures2(pd, &f2);
  if (has_cm && fcm.cooperativeMatrix && f12.shaderFloat16 && f12.vulkanMemoryModel &&
      caps.subgroup_size == 32)
    caps.coopmat_n = coopmat_shape(pd);
  caps.integer_dot = idot_ext && idot.shaderIntegerDotProduct;
  caps.storage16 = f11.storageBuffer16BitAccess && f12.storageBuffer8BitAccess;
  if (caps.integer_dot) {
    VkPhysicalDeviceShaderIntegerDotProductProperties idp{
        VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_PROPERTIES};
    VkPhysicalDeviceProperties2 ip2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2};
    ip2.pNext = &idp;
    fn.vkGetPhysicalDeviceProperties2(pd, &ip2);
    caps.integer_dot_accelerated = idp.integerDotProduct4x8BitPackedSignedAccelerated;
  }

  uint32_t nq = 0;
  fn.vkGetPhysicalDeviceQueueFamilyProperties(pd, &nq, nullptr);
  std::vector<VkQueueFamilyProperties> qf(nq);
  fn.vkGetPhysicalDeviceQueueFamilyProperties(pd, &nq, qf.data());
  for (uint32_t i = 0; i < nq; ++i) {
    const auto f = qf[i].queueFlags;
    // A compute family, preferring one without graphics (async compute) only when it is the
    // sole compute family would be wrong: the graphics+compute family is usually the fastest.
    if ((f & VK_QUEUE_COMPUTE_BIT) && c.compute_family < 0) c.compute_family = static_cast<int>(i);
    if ((f & VK_QUEUE_TRANSFER_BIT) && !(f & VK_QUEUE_COMPUTE_BIT) &&
        !(f & VK_QUEUE_GRAPHICS_BIT) && c.transfer_family < 0)
      c.transfer_family = static_cast<int>(i);
  }

  auto& info = c.info;
  info.index = index;
  info.name = caps.props.deviceName;
  info.type = type_name(caps.props.deviceType);
  std::string heaps;
  for (uint32_t h = 0; h < caps.mem.memoryHeapCount; ++h) {
    const auto& heap = caps.mem.memoryHeaps[h];
    const bool local = heap.flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT;
    const uint64_t b = caps.memory_budget ? budget.heapBudget[h] : heap.size;
    if (local) {
      info.device_local_bytes += heap.size;
      info.budget_bytes += b;
    }
    heaps +=
        fmt::format("{}{}: {}{}{}", h ? ", " : "", h, gib(heap.size), local ? " device-local" : "",
                    caps.memory_budget ? " (budget " + gib(b) + ")" : "");
  }
  const uint32_t api = caps.props.apiVersion;
  info.details = fmt::format(
      "Vulkan {}.{}.{}; heaps: {}; queues: compute family {}{}; subgroup {}{}; "
      "maxStorageBufferRange {} MiB; maxMemoryAllocationSize {} MiB",
      VK_API_VERSION_MAJOR(api), VK_API_VERSION_MINOR(api), VK_API_VERSION_PATCH(api), heaps,
      c.compute_family,
      c.transfer_family >= 0 ? fmt::format(", transfer family {}", c.transfer_family) : "",
      caps.subgroup_size, caps.subgroup_arithmetic ? " (arithmetic)" : " (no arithmetic)",
      caps.max_storage_range >> 20, caps.max_allocation >> 20);
  if (caps.coopmat_n)
    info.details += fmt::format("; cooperative matrix 16x{}x16 F16->F32", caps.coopmat_n);

  if (api < VK_API_VERSION_1_2)
    c.unusable_why = "Vulkan 1.2 needed";
  else if (!f12.timelineSemaphore)
    c.unusable_why = "no timeline semaphores";
  else if (c.compute_family < 0)
    c.unusable_why = "no compute queue";
  else
    c.usable = true;
  if (!c.usable) info.details += "; unusable: " + c.unusable_why;
  return c;
}

std::vector<candidate> enumerate(VkInstance instance) {
  uint32_t n = 0;
  VK_CHECK(fn.vkEnumeratePhysicalDevices(instance, &n, nullptr));
  std::vector<VkPhysicalDevice> pds(n);
  if (n) VK_CHECK(fn.vkEnumeratePhysicalDevices(instance, &n, pds.data()));
  std::vector<candidate> out;
  for (uint32_t i = 0; i < n; ++i) out.push_back(describe(pds[i], static_cast<int>(i)));
  return out;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char ch) { return std::tolower(ch); });
  return s;
}

std::string device_list(const std::vector<candidate>& cs) {
  std::string s;
  for (const auto& c : cs)
    s +=
        fmt::format("{}{}: {} ({})", s.empty() ? "" : ", ", c.info.index, c.info.name, c.info.type);
  return s.empty() ? "none" : s;
}

// The device index to use, or -1 with *why set.
int choose(const std::vector<candidate>& cs, const std::string& selector, bool allow_cpu,
           std::string* why) {
  if (!selector.empty()) {
    const bool numeric = std::all_of(selector.begin(), selector.end(),
                                     [](unsigned char ch) { return std::isdigit(ch); });
    for (size_t i = 0; i < cs.size(); ++i) {
      const bool match = numeric
                             ? std::to_string(cs[i].info.index) == selector
                             : lower(cs[i].info.name).find(lower(selector)) != std::string::npos;
      if (!match) continue;
      if (!cs[i].usable) {
        *why = fmt::format("Vulkan device {} ({}) is not usable: {}", cs[i].info.index,
                           cs[i].info.name, cs[i].unusable_why);
        return -1;
      }
      return static_cast<int>(i);
    }
    *why = fmt::format("TANDEM_VK_DEVICE={} names no Vulkan device (devices: {})", selector,
                       device_list(cs));
    return -1;
  }
  int best = -1;
  for (size_t i = 0; i < cs.size(); ++i) {
    const auto& c = cs[i];
    if (!c.usable) continue;
    if (c.caps.props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU && !allow_cpu) continue;
    if (best < 0 || type_rank(c.caps.props.deviceType) <
                        type_rank(cs[static_cast<size_t>(best)].caps.props.deviceType))
      best = static_cast<int>(i);
  }
  if (best < 0) {
    if (cs.empty())
      *why = "no Vulkan device found (the loader reports none; is a GPU driver installed?)";
    else
      *why = fmt::format("only a CPU device, {}, used when asked for (--offload N)",
                         device_list(cs));
  }
  return best;
}

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

}  // namespace

bool gpu_device_node_present(const std::string& dev_root) {
#ifdef __linux__
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path root(dev_root);
  if (fs::exists(root / "dxg", ec)) return true;
  auto any_named = [&](const fs::path& dir, const std::string& prefix, bool digits_after) {
    std::error_code e;
    for (fs::directory_iterator it(dir, e), end; !e && it != end; it.increment(e)) {
      const std::string n = it->path().filename().string();
      if (n.rfind(prefix, 0) != 0 || n.size() == prefix.size()) continue;
      if (!digits_after || std::all_of(n.begin() + static_cast<long>(prefix.size()), n.end(),
                                       [](unsigned char ch) { return std::isdigit(ch); }))
        return true;
    }
    return false;
  };
  return any_named(root / "dri", "renderD", true) || any_named(root, "nvidia", true);
#else
  (void)dev_root;
  return true;
#endif
}

int validation_error_count() {
  return g_validation_errors.load();
}

bool validation_requested() {
  return env("TANDEM_VK_VALIDATION") == "1";
}

// ---- context --------------------------------------------------------------------------------

std::unique_ptr<context> context::create(const context_options& opt, std::string* why) {
  std::string local_why;
  if (!why) why = &local_why;
  if (!load_loader(why)) return nullptr;
  std::unique_ptr<context> ctx(new context());
  const bool validation = opt.validation || validation_requested();
  bool debug_utils = false;
  ctx->instance_ = create_instance(validation, &debug_utils, why);
  if (!ctx->instance_) return nullptr;
  if (debug_utils && fn.vkCreateDebugUtilsMessengerEXT) {
    const auto ci = messenger_info();
    VK_CHECK(fn.vkCreateDebugUtilsMessengerEXT(ctx->instance_, &ci, nullptr, &ctx->messenger_));
    ctx->destroy_messenger_ = fn.vkDestroyDebugUtilsMessengerEXT;
  }

  const auto cs = enumerate(ctx->instance_);
  const std::string selector = opt.device.empty() ? env("TANDEM_VK_DEVICE") : opt.device;
  const int pick = choose(cs, selector, opt.allow_cpu_device, why);
  if (pick < 0) return nullptr;
  const candidate& c = cs[static_cast<size_t>(pick)];
  ctx->phys_ = c.pd;
  ctx->caps_ = c.caps;
  ctx->info_ = c.info;
  ctx->has_transfer_ = c.transfer_family >= 0;

  // One queue per family we use.
  const float priority = 1.0f;
  std::vector<VkDeviceQueueCreateInfo> qci;
  auto add_queue = [&](uint32_t family) {
    VkDeviceQueueCreateInfo q{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
    q.queueFamilyIndex = family;
    q.queueCount = 1;
    q.pQueuePriorities = &priority;
    qci.push_back(q);
  };
  add_queue(static_cast<uint32_t>(c.compute_family));
  ctx->families_.push_back(static_cast<uint32_t>(c.compute_family));
  if (ctx->has_transfer_) {
    add_queue(static_cast<uint32_t>(c.transfer_family));
    ctx->families_.push_back(static_cast<uint32_t>(c.transfer_family));
  }

  std::vector<const char*> exts;
  if (c.caps.memory_budget) exts.push_back(VK_EXT_MEMORY_BUDGET_EXTENSION_NAME);
  if (c.caps.portability_subset) exts.push_back("VK_KHR_portability_subset");
  if (c.caps.push_descriptor) exts.push_back(VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME);
  if (c.caps.integer_dot) exts.push_back(VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME);

  VkPhysicalDeviceVulkan12Features f12{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
  f12.timelineSemaphore = VK_TRUE;
  VkPhysicalDeviceFeatures2 f2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
  f2.pNext = &f12;
  // The cooperative-matrix kernel (matmul_coopmat), only where the device has all it needs.
  VkPhysicalDeviceCooperativeMatrixFeaturesNV fcm{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV};
  if (c.caps.coopmat_n) {
    exts.push_back(VK_NV_COOPERATIVE_MATRIX_EXTENSION_NAME);
    fcm.cooperativeMatrix = VK_TRUE;
    f12.shaderFloat16 = VK_TRUE;
    f12.vulkanMemoryModel = VK_TRUE;
    fcm.pNext = f12.pNext;
    f12.pNext = &fcm;
  }
  // 16/8-bit storage-buffer loads of the weight blocks (the matrix kernels' loads=u16 variant).
  VkPhysicalDeviceVulkan11Features f11{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES};
  if (c.caps.storage16) {
    f11.storageBuffer16BitAccess = VK_TRUE;
    f12.storageBuffer8BitAccess = VK_TRUE;
    f11.pNext = f12.pNext;
    f12.pNext = &f11;
  }
  // The integer-dot matvec (matvec_dot), where the device has the feature.
  VkPhysicalDeviceShaderIntegerDotProductFeatures idot{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES};
  idot.shaderIntegerDotProduct = VK_TRUE;
  if (c.caps.integer_dot) {
    idot.pNext = f12.pNext;
    f12.pNext = &idot;
  }

  VkDeviceCreateInfo dci{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO};
  dci.pNext = &f2;
  dci.queueCreateInfoCount = static_cast<uint32_t>(qci.size());
  dci.pQueueCreateInfos = qci.data();
  dci.enabledExtensionCount = static_cast<uint32_t>(exts.size());
  dci.ppEnabledExtensionNames = exts.data();
  {
    op_scope scope("create device " + c.info.name);
    VK_CHECK(fn.vkCreateDevice(ctx->phys_, &dci, nullptr, &ctx->device_));
  }

  auto init_queue = [&](queue& q, uint32_t family) {
    q.family = family;
    fn.vkGetDeviceQueue(ctx->device_, family, 0, &q.handle);
    VkSemaphoreTypeCreateInfo tci{VK_STRUCTURE_TYPE_SEMAPHORE_TYPE_CREATE_INFO};
    tci.semaphoreType = VK_SEMAPHORE_TYPE_TIMELINE;
    tci.initialValue = 0;
    VkSemaphoreCreateInfo sci{VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO};
    sci.pNext = &tci;
    VK_CHECK(fn.vkCreateSemaphore(ctx->device_, &sci, nullptr, &q.timeline));
  };
  init_queue(ctx->compute_, static_cast<uint32_t>(c.compute_family));
  if (ctx->has_transfer_) init_queue(ctx->transfer_, static_cast<uint32_t>(c.transfer_family));
  return ctx;
}

context::~context() {
  if (device_) {
    fn.vkDeviceWaitIdle(device_);
    if (compute_.timeline) fn.vkDestroySemaphore(device_, compute_.timeline, nullptr);
    if (transfer_.timeline) fn.vkDestroySemaphore(device_, transfer_.timeline, nullptr);
    fn.vkDestroyDevice(device_, nullptr);
  }
  if (messenger_ && destroy_messenger_) destroy_messenger_(instance_, messenger_, nullptr);
  if (instance_) fn.vkDestroyInstance(instance_, nullptr);
}

uint64_t context::submit(queue& q, VkCommandBuffer cb, std::initializer_list<timeline_wait> waits) {
  // At most one wait per other queue: the largest value asked for.
  queue* other = has_transfer_ ? (&q == &compute_ ? &transfer_ : &compute_) : nullptr;
  uint64_t wait_value = other ? q.pending : 0;
  for (const auto& w : waits)
    if (w.q && w.q != &q) wait_value = std::max(wait_value, w.value);
  const bool do_wait = other && wait_value > 0;
  const uint64_t signal = q.last_value + 1;
  VkPipelineStageFlags wait_stage = VK_PIPELINE_STAGE_ALL_COMMANDS_BIT;

  VkTimelineSemaphoreSubmitInfo tsi{VK_STRUCTURE_TYPE_TIMELINE_SEMAPHORE_SUBMIT_INFO};
  tsi.waitSemaphoreValueCount = do_wait ? 1 : 0;
  tsi.pWaitSemaphoreValues = &wait_value;
  tsi.signalSemaphoreValueCount = 1;
  tsi.pSignalSemaphoreValues = &signal;
  VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  si.pNext = &tsi;
  si.waitSemaphoreCount = do_wait ? 1 : 0;
  si.pWaitSemaphores = do_wait ? &other->timeline : nullptr;
  si.pWaitDstStageMask = &wait_stage;
  si.commandBufferCount = 1;
  si.pCommandBuffers = &cb;
  si.signalSemaphoreCount = 1;
  si.pSignalSemaphores = &q.timeline;
  VkResult r = injected_fault(fault_point::submit);
  if (r == VK_SUCCESS) r = fn.vkQueueSubmit(q.handle, 1, &si, VK_NULL_HANDLE);
  if (r != VK_SUCCESS) check_failed(r, "vkQueueSubmit(...)", __FILE__, __LINE__);
  q.last_value = signal;
  q.pending = 0;
  return signal;
}

void context::depend(queue& waiter, queue& signaler, uint64_t value) {
  if (&waiter == &signaler) return;
  waiter.pending = std::max(waiter.pending, value);
}

void context::wait(queue& q, uint64_t value) {
  if (value == 0) return;
  VkSemaphoreWaitInfo wi{VK_STRUCTURE_TYPE_SEMAPHORE_WAIT_INFO};
  wi.semaphoreCount = 1;
  wi.pSemaphores = &q.timeline;
  wi.pValues = &value;
  VK_CHECK(fn.vkWaitSemaphores(device_, &wi, UINT64_MAX));
}

void context::wait_idle() {
  wait(compute_, compute_.last_value);
  if (has_transfer_) wait(transfer_, transfer_.last_value);
}

uint32_t context::memory_type(uint32_t type_bits, VkMemoryPropertyFlags required,
                              VkMemoryPropertyFlags preferred) const {
  int fallback = -1;
  for (uint32_t i = 0; i < caps_.mem.memoryTypeCount; ++i) {
    if (!(type_bits & (1u << i))) continue;
    const auto f = caps_.mem.memoryTypes[i].propertyFlags;
    if ((f & required) != required) continue;
    if ((f & preferred) == preferred) return i;
    if (fallback < 0) fallback = static_cast<int>(i);
  }
  if (fallback < 0)
    throw error(fmt::format("vulkan: no memory type with flags {:#x} on {}", required, info_.name));
  return static_cast<uint32_t>(fallback);
}

uint64_t context::device_local_budget() const {
  VkPhysicalDeviceMemoryBudgetPropertiesEXT budget{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_BUDGET_PROPERTIES_EXT};
  VkPhysicalDeviceMemoryProperties2 mp2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_PROPERTIES_2};
  if (caps_.memory_budget) mp2.pNext = &budget;
  fn.vkGetPhysicalDeviceMemoryProperties2(phys_, &mp2);
  uint64_t total = 0;
  for (uint32_t h = 0; h < mp2.memoryProperties.memoryHeapCount; ++h) {
    const auto& heap = mp2.memoryProperties.memoryHeaps[h];
    if (!(heap.flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT)) continue;
    total += caps_.memory_budget
                 ? budget.heapBudget[h] - std::min(budget.heapBudget[h], budget.heapUsage[h])
                 : heap.size;
  }
  return total;
}

}  // namespace tandem::vk

// ---- the factory's device listing -----------------------------------------------------------

namespace tandem {

std::vector<gpu_device_info> list_gpu_devices(std::string* why) {
  using namespace tandem::vk;
  std::string local_why;
  if (!why) why = &local_why;
  if (!load_loader(why)) return {};
  std::vector<gpu_device_info> out;
  bool debug_utils = false;
  VkInstance instance = VK_NULL_HANDLE;
  try {
    instance = create_instance(validation_requested(), &debug_utils, why);
    if (instance)
      for (auto& c : enumerate(instance)) out.push_back(c.info);
  } catch (const error& e) {
    *why = e.what();
    out.clear();
  }
  if (instance) fn.vkDestroyInstance(instance, nullptr);
  if (out.empty() && why->empty())
    *why = "no Vulkan device found (the loader reports none; is a GPU driver installed?)";
  return out;
}

std::optional<gpu_device_info> select_gpu_device(bool allow_cpu_device, std::string* why) {
  using namespace tandem::vk;
  std::string local_why;
  if (!why) why = &local_why;
  // A GPU, not a CPU-type device, and none named: without a GPU's device node the answer is
  // known without loading the drivers.
  if (!allow_cpu_device && env("TANDEM_VK_DEVICE").empty() && !gpu_device_node_present()) {
    *why = "no GPU device node in /dev";
    return std::nullopt;
  }
  if (!load_loader(why)) return std::nullopt;
  VkInstance instance = VK_NULL_HANDLE;
  bool debug_utils = false;
  std::optional<gpu_device_info> out;
  try {
    instance = create_instance(false, &debug_utils, why);
    if (instance) {
      auto cs = enumerate(instance);
      const int pick = choose(cs, env("TANDEM_VK_DEVICE"), allow_cpu_device, why);
      if (pick >= 0) out = cs[static_cast<size_t>(pick)].info;
    }
  } catch (const error& e) {
    *why = e.what();
    out.reset();
  }
  if (instance) fn.vkDestroyInstance(instance, nullptr);
  return out;
}

}  // namespace tandem
