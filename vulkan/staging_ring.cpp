#include "vulkan/staging_ring.h"

#include <fmt/format.h>

#include <cstdlib>
#include <cstring>

#include "runtime/error.h"
#include "vulkan/check.h"

namespace tandem::vk {

namespace {

// A buffer in memory both device-local and host-visible (coherent), mapped; b.buf stays null
// when the device has none.
buffer create_mapped_device_buffer(context& ctx, uint64_t size) {
  buffer b;
  b.size = size;
  VkBufferCreateInfo bci{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  bci.size = size;
  bci.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
              VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  bci.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  VK_CHECK(fn.vkCreateBuffer(ctx.device(), &bci, nullptr, &b.buf));
  VkMemoryRequirements req;
  fn.vkGetBufferMemoryRequirements(ctx.device(), b.buf, &req);
  const VkMemoryPropertyFlags want = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT |
                                     VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                                     VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
  int type = -1;
  for (uint32_t i = 0; i < ctx.caps().mem.memoryTypeCount; ++i)
    if ((req.memoryTypeBits & (1u << i)) &&
        (ctx.caps().mem.memoryTypes[i].propertyFlags & want) == want) {
      type = static_cast<int>(i);
      break;
    }
  VkMemoryAllocateInfo ai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  ai.allocationSize = req.size;
  ai.memoryTypeIndex = static_cast<uint32_t>(type);
  if (type < 0 || fn.vkAllocateMemory(ctx.device(), &ai, nullptr, &b.mem) != VK_SUCCESS) {
    fn.vkDestroyBuffer(ctx.device(), b.buf, nullptr);
    return buffer{};
  }
  VK_CHECK(fn.vkBindBufferMemory(ctx.device(), b.buf, b.mem, 0));
  VK_CHECK(fn.vkMapMemory(ctx.device(), b.mem, 0, VK_WHOLE_SIZE, 0, &b.data));
  return b;
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace

staging_ring::staging_ring(context& ctx, arena& device_mem, uint64_t slot_bytes, int n_slots,
                           trace_recorder* trace, gpu_timer* timer)
    : ctx_(ctx), trace_(trace), timer_(timer) {
  op_scope scope("create the staging ring");
  slots_.resize(static_cast<size_t>(n_slots));
  // TANDEM_STREAM_COPY=queue forces the queue copy (tests run both).
  const char* force = std::getenv("TANDEM_STREAM_COPY");
  const bool want_host = !ctx.has_transfer_queue() && !(force && std::string(force) == "queue");
  const uint64_t stride = align_up(std::max<uint64_t>(slot_bytes, 16), std::max<uint64_t>(ctx.caps().storage_align, 256));
  if (want_host && stride * slots_.size() <= ctx.caps().max_allocation)
    mapped_ = create_mapped_device_buffer(ctx, stride * slots_.size());
  host_copy_ = mapped_.buf != VK_NULL_HANDLE;
  if (host_copy_) {
    for (size_t i = 0; i < slots_.size(); ++i) slots_[i].range = whole(mapped_).sub(stride * i, slot_bytes);
    thread_ = std::thread([this] { worker(); });
    return;
  }
  VkCommandPoolCreateInfo pci{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  pci.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  pci.queueFamilyIndex = ctx.transfer().family;
  VK_CHECK(fn.vkCreateCommandPool(ctx.device(), &pci, nullptr, &pool_));
  for (auto& sl : slots_) {
    sl.range = device_mem.alloc(slot_bytes);
    VkCommandBufferAllocateInfo ai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
    ai.commandPool = pool_;
    ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    ai.commandBufferCount = 1;
    VK_CHECK(fn.vkAllocateCommandBuffers(ctx.device(), &ai, &sl.cb));
  }
}

staging_ring::~staging_ring() {
  if (thread_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  try {
    for (const auto& sl : slots_) ctx_.wait(ctx_.transfer(), sl.ready);
  } catch (...) {  // a lost device: nothing left to wait for
  }
  if (pool_) fn.vkDestroyCommandPool(ctx_.device(), pool_, nullptr);
  destroy_buffer(ctx_, mapped_);
}

int staging_ring::find(int layer) const {
  for (size_t i = 0; i < slots_.size(); ++i)
    if (slots_[i].layer == layer) return static_cast<int>(i);
  return -1;
}

int staging_ring::prepare(int layer, const buffer_range& src) {
  if (int s = find(layer); s >= 0) return s;
  // Evict the least recently used slot whose layer has run; a slot prepared but not yet used
  // holds a layer about to run, taken only when every slot is such.
  slot* victim = nullptr;
  for (auto& sl : slots_)
    if (sl.used && (!victim || sl.stamp < victim->stamp)) victim = &sl;
  if (!victim)
    for (auto& sl : slots_)
      if (!victim || sl.stamp < victim->stamp) victim = &sl;
  slot& sl = *victim;
  const int index = static_cast<int>(victim - slots_.data());
  if (src.size > sl.range.size)
    throw error(fmt::format("vulkan: streamed layer {} ({} bytes) exceeds its slot ({} bytes)",
                            layer, src.size, sl.range.size));
  sl.layer = layer;
  sl.used = false;
  sl.stamp = ++clock_;
  sl.wait_compute = sl.released;
  bytes_copied_ += src.size;

  if (host_copy_) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      sl.job = ++next_job_;
      jobs_.push_back({sl.job, layer, src.data, sl.range.data, src.size, sl.released});
    }
    cv_.notify_all();
    return index;
  }

  ctx_.wait(ctx_.transfer(), sl.ready);  // its command buffer is free again
  VK_CHECK(fn.vkResetCommandBuffer(sl.cb, 0));
  VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
  VK_CHECK(fn.vkBeginCommandBuffer(sl.cb, &bi));
  const int tq = timer_ ? timer_->begin(sl.cb, ctx_.transfer().family) : -1;
  if (!ctx_.has_transfer_queue()) {
    // One queue: the copy must not overwrite the slot while earlier layers still read it.
    VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
    mb.srcAccessMask = VK_ACCESS_SHADER_READ_BIT;
    mb.dstAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
    fn.vkCmdPipelineBarrier(sl.cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                            VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1, &mb, 0, nullptr, 0, nullptr);
  }
  VkBufferCopy copy{src.offset, sl.range.offset, src.size};
  fn.vkCmdCopyBuffer(sl.cb, src.buf, sl.range.buf, 1, &copy);
  if (timer_) timer_->end(sl.cb, tq, fmt::format("upload layer {}", layer), trace_track::upload, layer);
  VK_CHECK(fn.vkEndCommandBuffer(sl.cb));
  const double t0 = trace_recorder::now_us();
  sl.ready = ctx_.submit(ctx_.transfer(), sl.cb, {{&ctx_.compute(), sl.released}});
  if (trace_ && tq < 0)  // no timestamps on this queue: the host-side submit time only
    trace_->add({fmt::format("upload layer {} (submitted)", layer), trace_track::upload, t0, 0, layer, "host"});
  return index;
}

timeline_wait staging_ring::acquire(int s) {
  slot& sl = slots_[static_cast<size_t>(s)];
  sl.used = true;
  sl.stamp = ++clock_;
  if (!host_copy_) return {&ctx_.transfer(), sl.ready};
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return done_job_ >= sl.job || !error_.empty(); });
  if (!error_.empty()) throw error(error_);
  return {};
}

void staging_ring::release(int s, uint64_t compute_value) {
  slots_[static_cast<size_t>(s)].released = compute_value;
}

void staging_ring::finish() {
  if (host_copy_) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return done_job_ >= next_job_ || !error_.empty(); });
    return;
  }
  for (const auto& sl : slots_) ctx_.wait(ctx_.transfer(), sl.ready);
}

void staging_ring::worker() {
  for (;;) {
    job j;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stop_ with nothing left
      j = jobs_.front();
    }
    try {
      ctx_.wait(ctx_.compute(), j.wait_compute);  // the last reader of the slot has finished
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> lock(mu_);
      error_ = fmt::format("vulkan: streaming layer {}: {}", j.layer, e.what());
      jobs_.clear();
      cv_.notify_all();
      return;
    }
    const double t0 = trace_recorder::now_us();
    std::memcpy(j.dst, j.src, j.bytes);
    const double t1 = trace_recorder::now_us();
    if (trace_) trace_->add({fmt::format("upload layer {}", j.layer), trace_track::upload, t0, t1 - t0, j.layer, "host"});
    {
      std::lock_guard<std::mutex> lock(mu_);
      jobs_.pop_front();
      done_job_ = j.id;
    }
    cv_.notify_all();
  }
}

}  // namespace tandem::vk
