// Compute pipelines and command recording. The op table (op_table.h) has one row per shader;
// pipelines are built on first use per (op, weight type, specialization constants) and cached;
// later lookups of the common keys (at most one specialization constant below 4) are a flat
// array index, not a map search. recorder::dispatch is the one-line call site of every op: it
// checks the push-constant size, puts in a barrier where the dispatch's buffers overlap earlier
// unordered work (vulkan/hazard.h), binds the buffers (push descriptors where the device has
// VK_KHR_push_descriptor, else a descriptor set from a per-frame pool) and dispatches.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "runtime/backend.h"
#include "runtime/dtype.h"
#include "vulkan/context.h"
#include "vulkan/hazard.h"
#include "vulkan/memory.h"
#include "vulkan/op_table.h"

namespace tandem::vk {

class dispatch_timer;  // vulkan/gpu_timer.h

struct pipeline {
  VkPipeline pipe = VK_NULL_HANDLE;
  VkPipelineLayout layout = VK_NULL_HANDLE;
  VkDescriptorSetLayout set_layout = VK_NULL_HANDLE;
  uint32_t bindings = 0;
  uint32_t push_size = 0;
  uint32_t wg = 0;  // workgroup size (x)
  uint32_t writes = 0;  // the op table's written-bindings mask
  const char* name = "";
};

class pipeline_cache {
 public:
  // allow_subgroups = false forces the shared-memory reductions (tests run both variants; so does
  // TANDEM_VK_NO_SUBGROUPS=1). allow_push = false forces descriptor sets from pools where the
  // device has push descriptors (tests run both paths; so does TANDEM_VK_NO_PUSH_DESCRIPTORS=1).
  explicit pipeline_cache(context& ctx, bool allow_subgroups = true, bool allow_push = true);
  ~pipeline_cache();
  pipeline_cache(const pipeline_cache&) = delete;
  pipeline_cache& operator=(const pipeline_cache&) = delete;

  // The pipeline of op k; typed ops (matvec, matmul) take the weight type, others ignore it.
  // spec holds the values of specialization constants 1, 2, ... (constant 0 is the workgroup
  // size, from the op table).
  const pipeline& get(kernel k, dtype t = dtype::f32, std::initializer_list<uint32_t> spec = {});
  // The same for a variant of op k built from its own shader (<op>_<variant>_<type>, e.g.
  // matmul_vec4_q4_0); an empty variant is get(k, t, spec).
  const pipeline& get(kernel k, const std::string& variant, dtype t,
                      std::initializer_list<uint32_t> spec = {});
  // Whether the matrix kernels of weight type t read its blocks with 16/8-bit loads (their
  // `_u16` builds; only Q4_0, Q8_0 and Q6_K, whose blocks are 2-byte aligned): where the device
  // has 16- and 8-bit storage access, unless TANDEM_VK_VARIANT=loads=u32 (loads=u16 forces them;
  // an error where the device lacks the features). Read on every call (tests switch it).
  bool loads16(dtype t) const;
  // Whether the reduction kernels use their subgroup variant on this device.
  bool subgroups() const { return subgroups_; }
  // Whether dispatches bind their buffers with vkCmdPushDescriptorSetKHR (no descriptor sets).
  bool push_descriptors() const { return push_ != nullptr; }
  PFN_vkCmdPushDescriptorSetKHR push_fn() const { return push_; }
  context& ctx() { return ctx_; }

 private:
  const pipeline& build(kernel k, const std::string& variant, dtype t,
                        std::initializer_list<uint32_t> spec);
  context& ctx_;
  bool subgroups_ = false;
  PFN_vkCmdPushDescriptorSetKHR push_ = nullptr;
  // The pipelines of (kernel, type < 32, one spec constant < 4 or none) by flat index.
  static constexpr size_t k_types = 32, k_specs = 5;
  std::vector<const pipeline*> flat_;
  std::map<std::tuple<uint32_t, uint32_t, std::vector<uint32_t>, std::string>,
           std::unique_ptr<pipeline>>
      cache_;
  std::map<uint32_t, VkDescriptorSetLayout> set_layouts_;  // by binding count
};

// Descriptor sets for one frame of recording: pools are added as needed and reset together.
class descriptor_allocator {
 public:
  explicit descriptor_allocator(context& ctx) : ctx_(ctx) {}
  ~descriptor_allocator();
  descriptor_allocator(const descriptor_allocator&) = delete;
  descriptor_allocator& operator=(const descriptor_allocator&) = delete;
  VkDescriptorSet allocate(VkDescriptorSetLayout layout);
  void reset();

 private:
  VkDescriptorPool new_pool();
  context& ctx_;
  std::vector<VkDescriptorPool> pools_;
  size_t current_ = 0;
};

// What one dispatch must move and compute at the least: the bytes it has to read and write
// (weights in their file type, activations, KV cache) and its arithmetic operations (a multiply-
// add counts 2). The ops set it before each dispatch (recorder::cost); GPU timestamps divided
// into it give the achieved GB/s and FLOP/s per kernel (`tandem bench --trace`).
struct dispatch_cost {
  uint64_t bytes = 0;
  uint64_t flops = 0;
};

// Work recorded once into a secondary command buffer (vulkan/replay.h: a decode layer) and
// executed by primaries (recorder::execute), as a primary's hazard tracking sees it: the accesses
// before its first barrier (ordered against the primary's unordered work by a barrier before it)
// and those after its last (left unordered for what follows), and its counts.
struct recorded_block {
  VkCommandBuffer cb = VK_NULL_HANDLE;
  backend_counters counts;                // its dispatches and barriers (recorded: dispatches)
  std::vector<tracked_access> head, tail;
  bool has_barrier = false;               // tail is only what came after its last barrier
};

class recorder {
 public:
  // counts (may be null) receives the dispatches and barriers recorded; hazards is the tracker
  // shared by the frames of a command stream (their submits are in queue order).
  recorder(pipeline_cache& pipes, descriptor_allocator& desc, VkCommandBuffer cb,
           backend_counters* counts, hazard_tracker* hazards)
      : pipes_(pipes), desc_(desc), cb_(cb), counts_(counts), hazards_(hazards) {}

  template <class Push>
  void dispatch(const pipeline& p, uint32_t gx, uint32_t gy, uint32_t gz, const Push& push,
                std::initializer_list<buffer_range> bufs) {
    dispatch_raw(p, gx, gy, gz, &push, sizeof(Push), bufs);
  }
  // The same with the group counts read by the device from args (a VkDispatchIndirectCommand,
  // 12 bytes, written before by update() or a shader; ordered like a buffer the dispatch reads).
  template <class Push>
  void dispatch_indirect(const pipeline& p, const buffer_range& args, const Push& push,
                         std::initializer_list<buffer_range> bufs) {
    indirect_ = &args;
    dispatch_raw(p, 1, 1, 1, &push, sizeof(Push), bufs);
    indirect_ = nullptr;
  }
  // Writes n bytes (a multiple of 4, at most 65536) of data into dst in the command stream
  // (vkCmdUpdateBuffer: ordered like a copy into dst).
  void update(const buffer_range& dst, const void* data, VkDeviceSize n);
  // Executes a recorded block (a barrier before it where its head overlaps unordered work; its
  // counts added to this recorder's, and its recorded dispatches where just_recorded).
  void execute(const recorded_block& b, bool just_recorded);
  // Recording a block: where the accesses before the first barrier are collected (null: off).
  struct access_log {
    std::vector<tracked_access> head;
    bool barrier = false;
  };
  void set_access_log(access_log* log) { log_ = log; }
  // The cost of the next dispatch (consumed by it; a dispatch without one costs {0, 0}).
  void cost(uint64_t bytes, uint64_t flops) { next_cost_ = {bytes, flops}; }
  // The cost of the last dispatch recorded.
  const dispatch_cost& last_cost() const { return last_cost_; }
  // All earlier compute and transfer writes become visible to later compute, transfer and host
  // work (also across command buffers on the queue). Dispatches and copies put one in themselves
  // where they need it; call it only before the host reads results.
  void barrier();
  // A buffer copy (ordered against the dispatches around it like a dispatch that reads src and
  // writes dst).
  void copy(const buffer_range& src, const buffer_range& dst, VkDeviceSize n);
  // Per-dispatch GPU timing (tandem bench --trace): each dispatch gets a barrier before it and a
  // timestamp pair around it, named after its pipeline, with its cost. Null: off.
  void set_dispatch_timer(dispatch_timer* t) { timer_ = t; }
  pipeline_cache& pipes() { return pipes_; }
  context& ctx() { return pipes_.ctx(); }
  VkCommandBuffer cb() const { return cb_; }
  // Splits n workgroups into an (x, y) grid within the device's limits.
  void split_groups(uint64_t n, uint32_t* gx, uint32_t* gy) const;

 private:
  void dispatch_raw(const pipeline& p, uint32_t gx, uint32_t gy, uint32_t gz, const void* push,
                    size_t push_size, std::initializer_list<buffer_range> bufs);
  void order(const tracked_access* a, size_t n);
  void barrier_raw(bool host);
  pipeline_cache& pipes_;
  descriptor_allocator& desc_;
  VkCommandBuffer cb_;
  backend_counters* counts_;
  hazard_tracker* hazards_;
  dispatch_timer* timer_ = nullptr;
  dispatch_cost next_cost_, last_cost_;
  const buffer_range* indirect_ = nullptr;  // dispatch_indirect's arguments
  access_log* log_ = nullptr;
};

// Command buffers on the compute queue, a small ring of frames so that recording the next one
// overlaps the GPU running the last. begin() waits only for the frame it reuses.
class command_stream {
 public:
  command_stream(pipeline_cache& pipes, int n_frames = 3);
  ~command_stream();
  command_stream(const command_stream&) = delete;
  command_stream& operator=(const command_stream&) = delete;

  recorder& begin();
  // The frame being recorded, begun if none is.
  recorder& open() { return open_ >= 0 ? *frames_[static_cast<size_t>(open_)].rec : begin(); }
  bool is_open() const { return open_ >= 0; }
  // Ends and submits the frame begun last, after the given waits on the transfer queue;
  // returns the compute timeline value of its completion. host_reads: the host will read what
  // it wrote (a final barrier makes it visible); without, later frames order themselves against
  // it through the shared hazard tracker.
  uint64_t submit(std::initializer_list<timeline_wait> waits = {}, bool host_reads = true);
  void wait(uint64_t value);
  void finish();  // waits for everything submitted
  // Dispatches, barriers and submits recorded through this stream so far.
  const backend_counters& counters() const { return counts_; }

 private:
  struct frame {
    VkCommandBuffer cb = VK_NULL_HANDLE;
    std::unique_ptr<descriptor_allocator> desc;
    std::unique_ptr<recorder> rec;
    uint64_t value = 0;
  };
  pipeline_cache& pipes_;
  context& ctx_;
  VkCommandPool pool_ = VK_NULL_HANDLE;
  std::vector<frame> frames_;
  size_t next_ = 0;
  int open_ = -1;
  backend_counters counts_;
  hazard_tracker hazards_;
  dispatch_timer* timer_ = nullptr;

 public:
  // Per-dispatch GPU timing for every frame from now on (null: off).
  void set_dispatch_timer(dispatch_timer* t) {
    timer_ = t;
    for (auto& f : frames_) f.rec->set_dispatch_timer(t);
  }
};

}  // namespace tandem::vk
