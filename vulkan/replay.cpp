#include "vulkan/replay.h"

#include <stdexcept>

#include "vulkan/check.h"

namespace tandem::vk {

replay_cache::replay_cache(pipeline_cache& pipes) : pipes_(pipes) {
  VkCommandPoolCreateInfo pci{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  pci.queueFamilyIndex = pipes_.ctx().compute().family;
  VK_CHECK(fn.vkCreateCommandPool(pipes_.ctx().device(), &pci, nullptr, &pool_));
}

replay_cache::~replay_cache() {
  blocks_.clear();
  if (pool_) fn.vkDestroyCommandPool(pipes_.ctx().device(), pool_, nullptr);
}

const recorded_block* replay_cache::find(uint64_t key) const {
  const auto it = blocks_.find(key);
  return it == blocks_.end() ? nullptr : &it->second.block;
}

const recorded_block& replay_cache::record(uint64_t key,
                                           const std::function<void(recorder&)>& record_fn) {
  if (blocks_.count(key)) throw std::logic_error("replay_cache::record: the key is recorded");
  const VkDevice dev = pipes_.ctx().device();
  entry e;
  e.desc = std::make_unique<descriptor_allocator>(pipes_.ctx());
  VkCommandBufferAllocateInfo ai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  ai.commandPool = pool_;
  ai.level = VK_COMMAND_BUFFER_LEVEL_SECONDARY;
  ai.commandBufferCount = 1;
  VK_CHECK(fn.vkAllocateCommandBuffers(dev, &ai, &e.block.cb));
  try {
    VkCommandBufferInheritanceInfo inh{VK_STRUCTURE_TYPE_COMMAND_BUFFER_INHERITANCE_INFO};
    VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    bi.flags = VK_COMMAND_BUFFER_USAGE_SIMULTANEOUS_USE_BIT;
    bi.pInheritanceInfo = &inh;
    VK_CHECK(fn.vkBeginCommandBuffer(e.block.cb, &bi));
    hazard_tracker hazards;  // the block's own: it starts with nothing unordered
    recorder::access_log log;
    recorder rec(pipes_, *e.desc, e.block.cb, &e.block.counts, &hazards);
    rec.set_access_log(&log);
    record_fn(rec);
    VK_CHECK(fn.vkEndCommandBuffer(e.block.cb));
    e.block.head = std::move(log.head);
    e.block.has_barrier = log.barrier;
    e.block.tail = hazards.pending();
  } catch (...) {
    fn.vkFreeCommandBuffers(dev, pool_, 1, &e.block.cb);
    throw;
  }
  return blocks_.emplace(key, std::move(e)).first->second.block;
}

void replay_cache::clear() {
  for (auto& [key, e] : blocks_) fn.vkFreeCommandBuffers(pipes_.ctx().device(), pool_, 1, &e.block.cb);
  blocks_.clear();
}

}  // namespace tandem::vk
