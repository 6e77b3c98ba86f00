// Memory: plain buffers (niagara-style), an arena that sub-allocates ranges from a few large
// blocks, and the uploader that copies host data to device memory through a double-buffered
// staging ring on the transfer queue.
#pragma once
#include <cstdint>
#include <vector>

#include "vulkan/context.h"

namespace tandem::vk {

enum class memory_kind {
  device,    // device-local: weights, KV cache, scratch
  upload,    // host-visible, coherent: staging for host -> device
  readback,  // host-visible, coherent, cached where possible: device -> host
};

struct buffer {
  VkBuffer buf = VK_NULL_HANDLE;
  VkDeviceMemory mem = VK_NULL_HANDLE;
  VkDeviceSize size = 0;
  void* data = nullptr;  // mapped pointer of host-visible kinds
};

// Creates a storage + transfer buffer of its own allocation (size <= maxMemoryAllocationSize).
buffer create_buffer(context& ctx, VkDeviceSize size, memory_kind kind);
void destroy_buffer(context& ctx, buffer& b);

// What a shader binds: a range of a buffer. data is the host pointer of the range when mapped.
struct buffer_range {
  VkBuffer buf = VK_NULL_HANDLE;
  VkDeviceSize offset = 0;
  VkDeviceSize size = 0;
  void* data = nullptr;
  buffer_range sub(VkDeviceSize off, VkDeviceSize n) const {
    return {buf, offset + off, n, data ? static_cast<char*>(data) + off : nullptr};
  }
};

inline buffer_range whole(const buffer& b) {
  return {b.buf, 0, b.size, b.data};
}

// Sub-allocates aligned ranges from blocks of block_size bytes (a larger request gets a block of
// its own). Ranges live as long as the arena; nothing is freed one by one.
class arena {
 public:
  arena(context& ctx, memory_kind kind, VkDeviceSize block_size);
  ~arena();
  arena(const arena&) = delete;
  arena& operator=(const arena&) = delete;

  // size bytes at an offset aligned for storage-buffer binding; the range is padded to a multiple
  // of 16 bytes so that shaders may read whole words past an odd-sized tensor's end.
  buffer_range alloc(VkDeviceSize size);
  // The largest single allocation this arena can make.
  VkDeviceSize max_alloc() const { return max_block_; }
  context& ctx() const { return ctx_; }
  VkDeviceSize bytes_reserved() const;

 private:
  context& ctx_;
  memory_kind kind_;
  VkDeviceSize block_size_;
  VkDeviceSize max_block_;
  struct block {
    buffer b;
    VkDeviceSize used = 0;
  };
  std::vector<block> blocks_;
};

// Host -> device copies on the transfer queue. Consecutive calls overlap the memcpy into one
// staging half with the GPU copy out of the other. finish() waits for all of them.
class uploader {
 public:
  uploader(context& ctx, VkDeviceSize staging_bytes);
  ~uploader();
  uploader(const uploader&) = delete;
  uploader& operator=(const uploader&) = delete;

  void upload(const buffer_range& dst, VkDeviceSize dst_offset, const void* src, VkDeviceSize n);
  void finish();

 private:
  context& ctx_;
  buffer staging_;
  VkCommandPool pool_ = VK_NULL_HANDLE;
  struct slot {
    VkCommandBuffer cb = VK_NULL_HANDLE;
    uint64_t value = 0;  // transfer timeline value of its last copy
  };
  slot slots_[2];
  int next_ = 0;
};

}  // namespace tandem::vk
