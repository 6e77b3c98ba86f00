// The Vulkan entry points, loaded at run time from libvulkan.so.1 so that the tandem binary has no
// link-time dependency on a Vulkan loader and starts on machines without one. Every file of
// vulkan/ includes this header instead of <vulkan/vulkan.h> and calls through tandem::vk::fn.
#pragma once
#ifndef VK_NO_PROTOTYPES
#define VK_NO_PROTOTYPES
#endif
#include <vulkan/vulkan.h>

#include <string>

namespace tandem::vk {

// Entry points that need no instance.
#define TANDEM_VK_GLOBAL_FUNCTIONS(X)   \
  X(vkCreateInstance)                   \
  X(vkEnumerateInstanceVersion)         \
  X(vkEnumerateInstanceLayerProperties) \
  X(vkEnumerateInstanceExtensionProperties)

// Entry points loaded through vkGetInstanceProcAddr once the instance exists. Device-level calls
// are loaded here too (the loader's trampolines dispatch them): one device per process keeps that
// simple and the cost of the trampoline is nothing next to a dispatch.
#define TANDEM_VK_INSTANCE_FUNCTIONS(X)       \
  X(vkDestroyInstance)                        \
  X(vkEnumeratePhysicalDevices)               \
  X(vkGetPhysicalDeviceProperties)            \
  X(vkGetPhysicalDeviceProperties2)           \
  X(vkGetPhysicalDeviceFeatures2)             \
  X(vkGetPhysicalDeviceMemoryProperties)      \
  X(vkGetPhysicalDeviceMemoryProperties2)     \
  X(vkGetPhysicalDeviceQueueFamilyProperties) \
  X(vkEnumerateDeviceExtensionProperties)     \
  X(vkCreateDevice)                           \
  X(vkGetDeviceProcAddr)                      \
  X(vkCreateDebugUtilsMessengerEXT)           \
  X(vkDestroyDebugUtilsMessengerEXT)          \
  X(vkDestroyDevice)                          \
  X(vkGetDeviceQueue)                         \
  X(vkDeviceWaitIdle)                         \
  X(vkQueueSubmit)                            \
  X(vkQueueWaitIdle)                          \
  X(vkAllocateMemory)                         \
  X(vkFreeMemory)                             \
  X(vkMapMemory)                              \
  X(vkUnmapMemory)                            \
  X(vkFlushMappedMemoryRanges)                \
  X(vkInvalidateMappedMemoryRanges)           \
  X(vkCreateBuffer)                           \
  X(vkDestroyBuffer)                          \
  X(vkGetBufferMemoryRequirements)            \
  X(vkBindBufferMemory)                       \
  X(vkCreateShaderModule)                     \
  X(vkDestroyShaderModule)                    \
  X(vkCreateComputePipelines)                 \
  X(vkDestroyPipeline)                        \
  X(vkCreatePipelineLayout)                   \
  X(vkDestroyPipelineLayout)                  \
  X(vkCreateDescriptorSetLayout)              \
  X(vkDestroyDescriptorSetLayout)             \
  X(vkCreateDescriptorPool)                   \
  X(vkDestroyDescriptorPool)                  \
  X(vkResetDescriptorPool)                    \
  X(vkAllocateDescriptorSets)                 \
  X(vkUpdateDescriptorSets)                   \
  X(vkCreateCommandPool)                      \
  X(vkDestroyCommandPool)                     \
  X(vkAllocateCommandBuffers)                 \
  X(vkFreeCommandBuffers)                     \
  X(vkBeginCommandBuffer)                     \
  X(vkEndCommandBuffer)                       \
  X(vkResetCommandBuffer)                     \
  X(vkCmdBindPipeline)                        \
  X(vkCmdBindDescriptorSets)                  \
  X(vkCmdPushConstants)                       \
  X(vkCmdDispatch)                            \
  X(vkCmdPipelineBarrier)                     \
  X(vkCmdCopyBuffer)                          \
  X(vkCmdFillBuffer)                          \
  X(vkCmdUpdateBuffer)                        \
  X(vkCmdDispatchIndirect)                    \
  X(vkCmdExecuteCommands)                     \
  X(vkCreateSemaphore)                        \
  X(vkDestroySemaphore)                       \
  X(vkWaitSemaphores)                         \
  X(vkGetSemaphoreCounterValue)              \
  X(vkGetPhysicalDeviceCooperativeMatrixPropertiesNV)

struct api {
#define TANDEM_VK_DECLARE(name) PFN_##name name = nullptr;
  PFN_vkGetInstanceProcAddr vkGetInstanceProcAddr = nullptr;
  TANDEM_VK_GLOBAL_FUNCTIONS(TANDEM_VK_DECLARE)
  TANDEM_VK_INSTANCE_FUNCTIONS(TANDEM_VK_DECLARE)
#undef TANDEM_VK_DECLARE
};

// The process-wide table. Filled by load_loader() and load_instance_functions().
extern api fn;

// Opens libvulkan.so.1 (once) and loads the global entry points. Returns false and sets *why to
// one line when there is no loader or it lacks Vulkan 1.2.
bool load_loader(std::string* why);

// Loads the instance- and device-level entry points for instance. Entry points of extensions that
// are not enabled stay null.
void load_instance_functions(VkInstance instance);

}  // namespace tandem::vk
