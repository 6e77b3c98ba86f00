#include "vulkan/gpu_timer.h"

#include <fmt/format.h>

#include <limits>

#include "runtime/error.h"
#include "vulkan/check.h"

namespace tandem::vk {

gpu_timer::gpu_timer(context& ctx, trace_recorder& trace) : ctx_(ctx), trace_(trace) {
  uint32_t n = 0;
  fn.vkGetPhysicalDeviceQueueFamilyProperties(ctx.physical(), &n, nullptr);
  std::vector<VkQueueFamilyProperties> qf(n);
  fn.vkGetPhysicalDeviceQueueFamilyProperties(ctx.physical(), &n, qf.data());
  for (const auto& f : qf) valid_bits_.push_back(f.timestampValidBits);
  ns_per_tick_ = ctx.caps().props.limits.timestampPeriod;
  auto load = [&](const char* name) { return fn.vkGetDeviceProcAddr(ctx.device(), name); };
  create_pool_ = reinterpret_cast<PFN_vkCreateQueryPool>(load("vkCreateQueryPool"));
  destroy_pool_ = reinterpret_cast<PFN_vkDestroyQueryPool>(load("vkDestroyQueryPool"));
  cmd_reset_ = reinterpret_cast<PFN_vkCmdResetQueryPool>(load("vkCmdResetQueryPool"));
  cmd_write_ = reinterpret_cast<PFN_vkCmdWriteTimestamp>(load("vkCmdWriteTimestamp"));
  get_results_ = reinterpret_cast<PFN_vkGetQueryPoolResults>(load("vkGetQueryPoolResults"));
  if (!create_pool_ || !destroy_pool_ || !cmd_reset_ || !cmd_write_ || !get_results_ ||
      !supported(ctx.compute().family) || ns_per_tick_ <= 0) {
    valid_bits_.assign(valid_bits_.size(), 0);  // host-side times only
    return;
  }
  capacity_ = 1024;
  VkQueryPoolCreateInfo ci{VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO};
  ci.queryType = VK_QUERY_TYPE_TIMESTAMP;
  ci.queryCount = capacity_;
  VK_CHECK(create_pool_(ctx.device(), &ci, nullptr, &pool_));
  calibrate();
}

gpu_timer::~gpu_timer() {
  if (pool_) destroy_pool_(ctx_.device(), pool_, nullptr);
}

bool gpu_timer::supported(uint32_t family) const {
  return family < valid_bits_.size() && valid_bits_[family] > 0;
}

// One empty submit with a timestamp, between two host times; the GPU wrote it somewhere in
// between. The narrowest bracket of a few tries sets the offset.
void gpu_timer::calibrate() {
  op_scope scope("calibrate GPU timestamps");
  VkCommandPool cp = VK_NULL_HANDLE;
  VkCommandPoolCreateInfo pci{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  pci.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  pci.queueFamilyIndex = ctx_.compute().family;
  VK_CHECK(fn.vkCreateCommandPool(ctx_.device(), &pci, nullptr, &cp));
  VkCommandBuffer cb = VK_NULL_HANDLE;
  VkCommandBufferAllocateInfo ai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  ai.commandPool = cp;
  ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  ai.commandBufferCount = 1;
  VK_CHECK(fn.vkAllocateCommandBuffers(ctx_.device(), &ai, &cb));
  double best = std::numeric_limits<double>::max();
  for (int i = 0; i < 5; ++i) {
    VK_CHECK(fn.vkResetCommandBuffer(cb, 0));
    VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
    VK_CHECK(fn.vkBeginCommandBuffer(cb, &bi));
    cmd_reset_(cb, pool_, 0, 1);
    cmd_write_(cb, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, pool_, 0);
    VK_CHECK(fn.vkEndCommandBuffer(cb));
    const double h0 = trace_recorder::now_us();
    ctx_.wait(ctx_.compute(), ctx_.submit(ctx_.compute(), cb));
    const double h1 = trace_recorder::now_us();
    uint64_t ticks = 0;
    VK_CHECK(get_results_(ctx_.device(), pool_, 0, 1, sizeof(ticks), &ticks, sizeof(ticks),
                          VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT));
    if (h1 - h0 < best) {
      best = h1 - h0;
      offset_us_ = (h0 + h1) / 2 - static_cast<double>(ticks) * ns_per_tick_ / 1000.0;
    }
  }
  fn.vkDestroyCommandPool(ctx_.device(), cp, nullptr);
}

int gpu_timer::begin(VkCommandBuffer cb, uint32_t family) {
  if (!pool_ || !supported(family)) return -1;
  // Full: the queries in use may belong to a command buffer not submitted yet, so reading them
  // here could never finish (VK_NOT_READY); the span goes untimed until the next collect().
  if (next_ + 2 > capacity_) {
    ++dropped_;
    return -1;
  }
  const uint32_t q = next_;
  next_ += 2;
  cmd_reset_(cb, pool_, q, 2);
  // When the work before it has finished: layers share a command buffer without a barrier
  // between them, so a span starts when the layer before it ends, not when it is reached.
  cmd_write_(cb, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, pool_, q);
  return static_cast<int>(q);
}

void gpu_timer::end(VkCommandBuffer cb, int handle, std::string name, trace_track track,
                    int layer) {
  if (handle < 0) return;
  const auto q = static_cast<uint32_t>(handle);
  cmd_write_(cb, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, pool_, q + 1);
  pending_.push_back({q, std::move(name), track, layer});
}

void gpu_timer::collect() {
  if (pending_.empty()) return;
  op_scope scope("read GPU timestamps");
  for (const pending& p : pending_) {
    uint64_t t[2] = {0, 0};
    VK_CHECK(get_results_(ctx_.device(), pool_, p.query, 2, sizeof(t), t, sizeof(uint64_t),
                          VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT));
    const uint32_t bits = valid_bits_[ctx_.compute().family];
    if (bits < 64) {
      const uint64_t mask = (1ull << bits) - 1;
      t[0] &= mask;
      t[1] &= mask;
    }
    const double a = static_cast<double>(t[0]) * ns_per_tick_ / 1000.0 + offset_us_;
    const double b = static_cast<double>(t[1]) * ns_per_tick_ / 1000.0 + offset_us_;
    trace_.add({p.name, p.track, a, b - a, p.layer, "gpu"});
  }
  pending_.clear();
  next_ = 0;  // every span begun so far has been read
}

// ---- dispatch_timer -------------------------------------------------------------------------

dispatch_timer::dispatch_timer(context& ctx, trace_recorder& trace) : ctx_(ctx), trace_(trace) {
  uint32_t n = 0;
  fn.vkGetPhysicalDeviceQueueFamilyProperties(ctx.physical(), &n, nullptr);
  std::vector<VkQueueFamilyProperties> qf(n);
  fn.vkGetPhysicalDeviceQueueFamilyProperties(ctx.physical(), &n, qf.data());
  const uint32_t family = ctx.compute().family;
  valid_bits_ = family < qf.size() ? qf[family].timestampValidBits : 0;
  ns_per_tick_ = ctx.caps().props.limits.timestampPeriod;
  auto load = [&](const char* name) { return fn.vkGetDeviceProcAddr(ctx.device(), name); };
  auto create_pool = reinterpret_cast<PFN_vkCreateQueryPool>(load("vkCreateQueryPool"));
  destroy_pool_ = reinterpret_cast<PFN_vkDestroyQueryPool>(load("vkDestroyQueryPool"));
  cmd_reset_ = reinterpret_cast<PFN_vkCmdResetQueryPool>(load("vkCmdResetQueryPool"));
  cmd_write_ = reinterpret_cast<PFN_vkCmdWriteTimestamp>(load("vkCmdWriteTimestamp"));
  get_results_ = reinterpret_cast<PFN_vkGetQueryPoolResults>(load("vkGetQueryPoolResults"));
  if (!create_pool || !destroy_pool_ || !cmd_reset_ || !cmd_write_ || !get_results_ ||
      valid_bits_ == 0 || ns_per_tick_ <= 0)
    return;
  capacity_ = 16384;  // 8192 dispatches between reads: a token of a 500-layer model
  VkQueryPoolCreateInfo ci{VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO};
  ci.queryType = VK_QUERY_TYPE_TIMESTAMP;
  ci.queryCount = capacity_;
  VK_CHECK(create_pool(ctx.device(), &ci, nullptr, &pool_));
}

dispatch_timer::~dispatch_timer() {
  if (pool_) destroy_pool_(ctx_.device(), pool_, nullptr);
}

int dispatch_timer::begin(VkCommandBuffer cb) {
  if (!pool_) return -1;
  if (next_ + 2 > capacity_) {
    ++dropped_;
    return -1;
  }
  const uint32_t q = next_;
  next_ += 2;
  cmd_reset_(cb, pool_, q, 2);
  cmd_write_(cb, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, pool_, q);
  return static_cast<int>(q);
}

void dispatch_timer::end(VkCommandBuffer cb, int handle, const char* name, uint64_t bytes,
                         uint64_t flops) {
  if (handle < 0) return;
  const auto q = static_cast<uint32_t>(handle);
  cmd_write_(cb, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, pool_, q + 1);
  pending_.push_back({q, name, bytes, flops});
}

void dispatch_timer::collect() {
  if (pending_.empty()) return;
  op_scope scope("read dispatch timestamps");
  std::vector<uint64_t> t(next_);
  VK_CHECK(get_results_(ctx_.device(), pool_, 0, next_, t.size() * sizeof(uint64_t), t.data(),
                        sizeof(uint64_t), VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT));
  const uint64_t mask = valid_bits_ < 64 ? (1ull << valid_bits_) - 1 : ~0ull;
  for (const pending& p : pending_) {
    const uint64_t ticks = ((t[p.query + 1] & mask) - (t[p.query] & mask)) & mask;
    trace_.add_kernel(p.name, static_cast<double>(ticks) * ns_per_tick_ / 1000.0, p.bytes,
                      p.flops);
  }
  pending_.clear();
  next_ = 0;
}

}  // namespace tandem::vk
