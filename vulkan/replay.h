// Decode layers recorded once and replayed. llama.cpp (and the fresh path here) records every
// dispatch of every layer again for each token: binding, push constants, barriers, descriptor
// writes, on the host, in the token's latency. A decode layer's commands are the same from one
// token to the next except for the position (and flash decoding's split of the context), so the
// backend (vulkan/vulkan_backend.cpp) records each resident layer's decode once per KV sequence
// into a secondary command buffer and executes it from the token's frame
// (vkCmdExecuteCommands). What changes per token lives in a small device buffer, the step
// (struct step_params, shaders/push_constants.h): the host writes it into the command stream
// (vkCmdUpdateBuffer, ordered by the hazard tracking) before the token's first replayed layer;
// rotary_kv, flash_attn and flash_reduce read the position and the split from it (STEP
// specialization, shaders/step.glsl), and flash_attn's group counts come from it through an
// indirect dispatch. A layer has one recording per (KV sequence, one split or several): the
// reduce pass exists only in the second.
//
// Barriers: a block is recorded with a tracker of its own; the accesses before its first barrier
// (head) and after its last (tail) stand for it in the primary's tracker (recorder::execute), so
// the work around it is ordered exactly as if its dispatches had been recorded there.
// Simultaneous use: a block may be executed by a frame while an earlier frame that executes it
// is pending (VK_COMMAND_BUFFER_USAGE_SIMULTANEOUS_USE_BIT). Descriptor sets (devices without
// push descriptors) come from the block's own pools, kept as long as the block.
// Invalidation: the caller clears the cache (after the frames that use it have finished) when
// what a recording baked in changes: the forced variants (TANDEM_VK_VARIANT) or the buffers; the
// position does not (a rewind or a new sequence needs nothing), nor does the split count.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>

#include "vulkan/pipeline.h"

namespace tandem::vk {

class replay_cache {
 public:
  explicit replay_cache(pipeline_cache& pipes);
  ~replay_cache();  // the frames that executed its blocks must have finished
  replay_cache(const replay_cache&) = delete;
  replay_cache& operator=(const replay_cache&) = delete;

  // The block recorded under key, or null.
  const recorded_block* find(uint64_t key) const;
  // Records fn's commands into a new block under key (replacing none: key must be new).
  const recorded_block& record(uint64_t key, const std::function<void(recorder&)>& fn);
  // Frees every block (the frames that executed them must have finished).
  void clear();
  size_t size() const { return blocks_.size(); }

 private:
  struct entry {
    recorded_block block;
    std::unique_ptr<descriptor_allocator> desc;
  };
  pipeline_cache& pipes_;
  VkCommandPool pool_ = VK_NULL_HANDLE;
  std::map<uint64_t, entry> blocks_;
};

}  // namespace tandem::vk
