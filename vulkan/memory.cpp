#include "vulkan/memory.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "runtime/error.h"
#include "vulkan/check.h"

namespace tandem::vk {

namespace {

VkDeviceSize align_up(VkDeviceSize x, VkDeviceSize a) {
  return (x + a - 1) / a * a;
}

const char* kind_name(memory_kind k) {
  switch (k) {
    case memory_kind::device:
      return "device-local";
    case memory_kind::upload:
      return "upload staging";
    default:
      return "readback staging";
  }
}

}  // namespace

buffer create_buffer(context& ctx, VkDeviceSize size, memory_kind kind) {
  op_scope scope(fmt::format("allocate {} MiB of {} memory", size >> 20, kind_name(kind)));
  buffer b;
  b.size = size;
  VkBufferCreateInfo bci{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  bci.size = size;
  bci.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
              VK_BUFFER_USAGE_TRANSFER_DST_BIT | VK_BUFFER_USAGE_INDIRECT_BUFFER_BIT;
  const auto& fam = ctx.families();
  // Weights are written by the transfer queue and read by the compute queue: concurrent sharing
  // avoids queue-family ownership transfers, and costs nothing for buffers on current drivers.
  bci.sharingMode = fam.size() > 1 ? VK_SHARING_MODE_CONCURRENT : VK_SHARING_MODE_EXCLUSIVE;
  bci.queueFamilyIndexCount = fam.size() > 1 ? static_cast<uint32_t>(fam.size()) : 0;
  bci.pQueueFamilyIndices = fam.size() > 1 ? fam.data() : nullptr;
  VK_CHECK(fn.vkCreateBuffer(ctx.device(), &bci, nullptr, &b.buf));

  VkMemoryRequirements req;
  fn.vkGetBufferMemoryRequirements(ctx.device(), b.buf, &req);
  VkMemoryPropertyFlags required = 0, preferred = 0;
  switch (kind) {
    case memory_kind::device:
      required = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT;
      break;
    case memory_kind::upload:
      required = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
      break;
    case memory_kind::readback:
      required = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
      preferred = VK_MEMORY_PROPERTY_HOST_CACHED_BIT;
      break;
  }
  VkMemoryAllocateInfo ai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  ai.allocationSize = req.size;
  ai.memoryTypeIndex = ctx.memory_type(req.memoryTypeBits, required, preferred);
  VkResult r = injected_fault(fault_point::alloc);
  if (r == VK_SUCCESS) r = fn.vkAllocateMemory(ctx.device(), &ai, nullptr, &b.mem);
  if (r != VK_SUCCESS) {
    fn.vkDestroyBuffer(ctx.device(), b.buf, nullptr);
    if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY)
      throw error(fmt::format("vulkan: out of {} memory allocating {} MiB on {} ({})",
                              kind_name(kind), size >> 20, ctx.info().name, result_name(r)));
    check_failed(r, "vkAllocateMemory(...)", __FILE__, __LINE__);
  }
  VK_CHECK(fn.vkBindBufferMemory(ctx.device(), b.buf, b.mem, 0));
  if (kind != memory_kind::device)
    VK_CHECK(fn.vkMapMemory(ctx.device(), b.mem, 0, VK_WHOLE_SIZE, 0, &b.data));
  return b;
}

void destroy_buffer(context& ctx, buffer& b) {
  if (b.data) fn.vkUnmapMemory(ctx.device(), b.mem);
  if (b.buf) fn.vkDestroyBuffer(ctx.device(), b.buf, nullptr);
  if (b.mem) fn.vkFreeMemory(ctx.device(), b.mem, nullptr);
  b = buffer{};
}

// ---- arena ----------------------------------------------------------------------------------

arena::arena(context& ctx, memory_kind kind, VkDeviceSize block_size)
    : ctx_(ctx), kind_(kind), max_block_(ctx.caps().max_allocation) {
  block_size_ = std::min(block_size, max_block_);
}

arena::~arena() {
  for (auto& b : blocks_) destroy_buffer(ctx_, b.b);
}

buffer_range arena::alloc(VkDeviceSize size) {
  const VkDeviceSize align = ctx_.caps().storage_align;
  const VkDeviceSize padded = align_up(std::max<VkDeviceSize>(size, 16), 16);
  if (padded > max_block_)
    throw error(
        fmt::format("vulkan: a single allocation of {} MiB exceeds the device's "
                    "maxMemoryAllocationSize ({} MiB)",
                    padded >> 20, max_block_ >> 20));
  for (auto& b : blocks_) {
    const VkDeviceSize off = align_up(b.used, align);
    if (off + padded <= b.b.size) {
      b.used = off + padded;
      return {b.b.buf, off, size, b.b.data ? static_cast<char*>(b.b.data) + off : nullptr};
    }
  }
  block nb;
  nb.b = create_buffer(ctx_, std::max(block_size_, padded), kind_);
  nb.used = padded;
  blocks_.push_back(nb);
  return {nb.b.buf, 0, size, nb.b.data};
}

VkDeviceSize arena::bytes_reserved() const {
  VkDeviceSize n = 0;
  for (const auto& b : blocks_) n += b.b.size;
  return n;
}

// ---- uploader -------------------------------------------------------------------------------

uploader::uploader(context& ctx, VkDeviceSize staging_bytes) : ctx_(ctx) {
  staging_ = create_buffer(ctx, align_up(staging_bytes, 2 * 256), memory_kind::upload);
  VkCommandPoolCreateInfo pci{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  pci.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  pci.queueFamilyIndex = ctx.transfer().family;
  VK_CHECK(fn.vkCreateCommandPool(ctx.device(), &pci, nullptr, &pool_));
  VkCommandBufferAllocateInfo ai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  ai.commandPool = pool_;
  ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  ai.commandBufferCount = 1;
  for (auto& s : slots_) VK_CHECK(fn.vkAllocateCommandBuffers(ctx.device(), &ai, &s.cb));
}

uploader::~uploader() {
  try {
    finish();
  } catch (...) {  // a destructor must not throw; the device is lost anyway
  }
  if (pool_) fn.vkDestroyCommandPool(ctx_.device(), pool_, nullptr);
  destroy_buffer(ctx_, staging_);
}

void uploader::upload(const buffer_range& dst, VkDeviceSize dst_offset, const void* src,
                      VkDeviceSize n) {
  const VkDeviceSize half = staging_.size / 2;
  const auto* p = static_cast<const uint8_t*>(src);
  while (n > 0) {
    slot& s = slots_[next_];
    const VkDeviceSize base = static_cast<VkDeviceSize>(next_) * half;
    next_ ^= 1;
    ctx_.wait(ctx_.transfer(), s.value);
    const VkDeviceSize chunk = std::min(n, half);
    std::memcpy(static_cast<uint8_t*>(staging_.data) + base, p, chunk);

    VK_CHECK(fn.vkResetCommandBuffer(s.cb, 0));
    VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
    VK_CHECK(fn.vkBeginCommandBuffer(s.cb, &bi));
    VkBufferCopy copy{base, dst.offset + dst_offset, chunk};
    fn.vkCmdCopyBuffer(s.cb, staging_.buf, dst.buf, 1, &copy);
    VK_CHECK(fn.vkEndCommandBuffer(s.cb));
    s.value = ctx_.submit(ctx_.transfer(), s.cb);

    p += chunk;
    dst_offset += chunk;
    n -= chunk;
  }
}

void uploader::finish() {
  uint64_t last = 0;
  for (auto& s : slots_) {
    ctx_.wait(ctx_.transfer(), s.value);
    last = std::max(last, s.value);
  }
  // The host has seen the copies complete; the compute queue must also see their writes.
  if (last) ctx_.depend(ctx_.compute(), ctx_.transfer(), last);
}

}  // namespace tandem::vk
