// The staging ring of streamed layers: two (or n) device weight slots, each sized for the largest
// streamed layer, and the uploads that fill them. A streamed layer's matrices live packed in
// pinned host memory (vulkan_backend packs them); prepare() copies one into the least recently
// used slot whose layer has run, while the compute queue runs the layer before.
//
// Two ways to copy, chosen at construction:
//  - queue copy: vkCmdCopyBuffer on the transfer queue (the compute queue when the device has no
//    separate one). Timeline semaphores order it: the copy waits for the compute work that last
//    read its slot; the compute work that reads the slot waits for the copy.
//  - host copy: when the device has no separate transfer queue (a copy on the compute queue would
//    run after the layer before it, never beside it) and has device-local memory the host can map
//    (integrated GPUs, ReBAR, lavapipe), the slots are mapped and a worker thread memcpys into
//    them. It first waits (vkWaitSemaphores) for the compute work that last read the slot; the
//    compute submit that reads the slot waits on the host until the copy has finished.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "runtime/trace.h"
#include "vulkan/context.h"
#include "vulkan/gpu_timer.h"
#include "vulkan/memory.h"

namespace tandem::vk {

class staging_ring {
 public:
  // n_slots slots of slot_bytes. Queue-copy slots come from device_mem; host-copy slots get their
  // own device-local, host-visible buffer. trace / timer may be null (no trace).
  staging_ring(context& ctx, arena& device_mem, uint64_t slot_bytes, int n_slots,
               trace_recorder* trace, gpu_timer* timer);
  ~staging_ring();
  staging_ring(const staging_ring&) = delete;
  staging_ring& operator=(const staging_ring&) = delete;

  int size() const { return static_cast<int>(slots_.size()); }
  bool host_copy() const { return host_copy_; }
  const char* mode() const { return host_copy_ ? "host copy into mapped device memory" : "transfer queue copy"; }
  // The device range of slot s.
  const buffer_range& range(int s) const { return slots_[static_cast<size_t>(s)].range; }
  // The slot holding (or receiving) layer, or -1.
  int find(int layer) const;
  // Starts copying src (a packed streamed layer in pinned host memory) for layer into a slot;
  // returns the slot. Returns at once (the host copy runs on the worker).
  int prepare(int layer, const buffer_range& src);
  // Before the compute submit that reads slot s: blocks until a host copy has finished; returns
  // the wait a queue copy needs (q == nullptr: none).
  timeline_wait acquire(int s);
  // After that submit: compute timeline value at which the slot is free again.
  void release(int s, uint64_t compute_value);
  // The compute timeline value the latest copy into slot s waits for before it writes: that of
  // the last work that read the slot (0: none). Lets tests check the order of the ring.
  uint64_t copy_waits_for(int s) const { return slots_[static_cast<size_t>(s)].wait_compute; }
  // Waits for every copy (the destructor does too).
  void finish();
  // Bytes copied and seconds spent copying (host copy: the memcpy; queue copy: not measured).
  uint64_t bytes_copied() const { return bytes_copied_; }

 private:
  struct slot {
    buffer_range range;
    int layer = -1;
    bool used = true;       // the layer it holds has run since it was copied (it may be evicted)
    uint64_t stamp = 0;     // last prepare or use, least recently used is evicted first
    uint64_t ready = 0;     // queue copy: transfer timeline value of its copy
    uint64_t released = 0;  // compute timeline value of the last work that read it
    uint64_t wait_compute = 0;  // what the latest copy into it waits for (released, then)
    uint64_t job = 0;       // host copy: the job number of its copy
    VkCommandBuffer cb = VK_NULL_HANDLE;
  };
  struct job {
    uint64_t id;
    int layer;
    const void* src;
    void* dst;
    uint64_t bytes;
    uint64_t wait_compute;  // compute timeline value to wait for before writing
  };
  void worker();

  context& ctx_;
  trace_recorder* trace_;
  gpu_timer* timer_;
  bool host_copy_ = false;
  std::vector<slot> slots_;
  uint64_t clock_ = 0;
  uint64_t bytes_copied_ = 0;
  // queue copy
  VkCommandPool pool_ = VK_NULL_HANDLE;
  // host copy
  buffer mapped_{};
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<job> jobs_;
  uint64_t next_job_ = 0, done_job_ = 0;
  std::string error_;  // a failed wait on the worker, rethrown by acquire
  bool stop_ = false;
};

}  // namespace tandem::vk
