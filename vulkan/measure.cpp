// The host -> device copy bandwidth for the streaming cost model (runtime/cost_model.h): a pinned
// (host-visible) buffer copied into device-local memory on the transfer queue, best of a few.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "runtime/cost_model.h"
#include "vulkan/check.h"
#include "vulkan/context.h"
#include "vulkan/memory.h"

namespace tandem {

double measure_host_to_device_bandwidth(bool allow_cpu_device, std::string* why) {
  vk::context_options co;
  co.allow_cpu_device = allow_cpu_device;
  auto ctx = vk::context::create(co, why);
  if (!ctx) return 0;
  using namespace vk;
  op_scope scope("measure host -> device bandwidth");
  const uint64_t bytes = std::min<uint64_t>(32ull << 20, ctx->caps().max_allocation);
  buffer src = create_buffer(*ctx, bytes, memory_kind::upload);
  buffer dst = create_buffer(*ctx, bytes, memory_kind::device);
  std::memset(src.data, 1, bytes);
  VkCommandPool pool = VK_NULL_HANDLE;
  VkCommandPoolCreateInfo pci{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  pci.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  pci.queueFamilyIndex = ctx->transfer().family;
  VK_CHECK(fn.vkCreateCommandPool(ctx->device(), &pci, nullptr, &pool));
  VkCommandBuffer cb = VK_NULL_HANDLE;
  VkCommandBufferAllocateInfo ai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  ai.commandPool = pool;
  ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  ai.commandBufferCount = 1;
  VK_CHECK(fn.vkAllocateCommandBuffers(ctx->device(), &ai, &cb));
  double best = 0;
  for (int rep = 0; rep < 4; ++rep) {  // the first warms the pages and the driver up
    VK_CHECK(fn.vkResetCommandBuffer(cb, 0));
    VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
    VK_CHECK(fn.vkBeginCommandBuffer(cb, &bi));
    VkBufferCopy copy{0, 0, bytes};
    fn.vkCmdCopyBuffer(cb, src.buf, dst.buf, 1, &copy);
    VK_CHECK(fn.vkEndCommandBuffer(cb));
    const auto t0 = std::chrono::steady_clock::now();
    ctx->wait(ctx->transfer(), ctx->submit(ctx->transfer(), cb));
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (rep > 0) best = std::max(best, static_cast<double>(bytes) / s);
  }
  fn.vkDestroyCommandPool(ctx->device(), pool, nullptr);
  destroy_buffer(*ctx, src);
  destroy_buffer(*ctx, dst);
  return best;
}

}  // namespace tandem
