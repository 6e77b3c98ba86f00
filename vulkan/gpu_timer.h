// GPU timestamps for the timeline trace (runtime/trace.h): a timestamp query pair around a
// command buffer's work, read back once the host has waited for that work, converted to the
// host's steady clock by a calibration taken at start-up (a timestamp written by an otherwise
// empty submit, bracketed by host times; the narrowest of a few brackets wins). Queue families
// with timestampValidBits == 0 get no queries: callers fall back to host-side times.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/trace.h"
#include "vulkan/context.h"

namespace tandem::vk {

class gpu_timer {
 public:
  gpu_timer(context& ctx, trace_recorder& trace);
  ~gpu_timer();
  gpu_timer(const gpu_timer&) = delete;
  gpu_timer& operator=(const gpu_timer&) = delete;

  // Whether command buffers of queue family `family` can write timestamps.
  bool supported(uint32_t family) const;
  // Records the start of a span into cb (of queue family `family`); returns a handle for end(),
  // or -1 when that family has no timestamps (nothing recorded).
  int begin(VkCommandBuffer cb, uint32_t family);
  // Records the end and names the span; it is read back by collect().
  void end(VkCommandBuffer cb, int handle, std::string name, trace_track track, int layer);
  // Reads every recorded span (waiting for results that are not ready yet), adds it to the trace
  // and frees the queries. Call only when every command buffer holding a span was submitted.
  void collect();
  // Spans left untimed because the pool was full (more than capacity/2 spans between collects).
  uint64_t dropped() const { return dropped_; }

 private:
  void calibrate();
  context& ctx_;
  trace_recorder& trace_;
  VkQueryPool pool_ = VK_NULL_HANDLE;
  uint32_t capacity_ = 0;  // queries (pairs x 2)
  uint32_t next_ = 0;
  uint64_t dropped_ = 0;
  std::vector<uint32_t> valid_bits_;  // per queue family
  double ns_per_tick_ = 1.0;
  double offset_us_ = 0;  // host_us = ticks * ns_per_tick / 1000 + offset_us
  struct pending {
    uint32_t query;
    std::string name;
    trace_track track;
    int layer;
  };
  std::vector<pending> pending_;
  PFN_vkCreateQueryPool create_pool_ = nullptr;
  PFN_vkDestroyQueryPool destroy_pool_ = nullptr;
  PFN_vkCmdResetQueryPool cmd_reset_ = nullptr;
  PFN_vkCmdWriteTimestamp cmd_write_ = nullptr;
  PFN_vkGetQueryPoolResults get_results_ = nullptr;
};

// Per-dispatch timestamps for `tandem bench --trace`: a pair around each dispatch (the recorder
// calls begin/end), read back once the host has waited for the work and summed per kernel name
// into the trace (trace_recorder::add_kernel) with the dispatch's cost, for achieved GB/s and
// FLOP/s. Without timestamps on the compute queue, supported() is false and nothing is recorded.
class dispatch_timer {
 public:
  dispatch_timer(context& ctx, trace_recorder& trace);
  ~dispatch_timer();
  dispatch_timer(const dispatch_timer&) = delete;
  dispatch_timer& operator=(const dispatch_timer&) = delete;

  bool supported() const { return pool_ != VK_NULL_HANDLE; }
  // Before a dispatch: a handle for end(), or -1 (unsupported, or the pool is full until the
  // next collect(): that dispatch goes untimed and is counted in dropped()).
  int begin(VkCommandBuffer cb);
  void end(VkCommandBuffer cb, int handle, const char* name, uint64_t bytes, uint64_t flops);
  // Reads every pending pair (their command buffers must have been submitted and waited for).
  void collect();
  uint64_t dropped() const { return dropped_; }

 private:
  context& ctx_;
  trace_recorder& trace_;
  VkQueryPool pool_ = VK_NULL_HANDLE;
  uint32_t capacity_ = 0, next_ = 0;
  uint32_t valid_bits_ = 0;
  double ns_per_tick_ = 1.0;
  uint64_t dropped_ = 0;
  struct pending {
    uint32_t query;
    const char* name;
    uint64_t bytes, flops;
  };
  std::vector<pending> pending_;
  PFN_vkDestroyQueryPool destroy_pool_ = nullptr;
  PFN_vkCmdResetQueryPool cmd_reset_ = nullptr;
  PFN_vkCmdWriteTimestamp cmd_write_ = nullptr;
  PFN_vkGetQueryPoolResults get_results_ = nullptr;
};

}  // namespace tandem::vk
