// What checks of the shaders against the CPU reference share (tools/op_check, the op level of
// gpu-cpu-parity, run by tests/vulkan_test.cpp too): host-visible buffers that shaders bind
// directly, and a runner that records ops on one pipeline cache and waits for them. The backend
// itself keeps its tensors in device memory.
#pragma once
#include <algorithm>
#include <cstring>
#include <vector>

#include "vulkan/context.h"
#include "vulkan/memory.h"
#include "vulkan/ops.h"
#include "vulkan/pipeline.h"

namespace tandem::vk {

class host_buffer {
 public:
  host_buffer(context& ctx, size_t bytes) : ctx_(ctx), bytes_(bytes) {
    b_ = create_buffer(ctx, (bytes + 64 + 15) / 16 * 16, memory_kind::readback);
    std::memset(b_.data, 0, b_.size);
  }
  ~host_buffer() { destroy_buffer(ctx_, b_); }
  host_buffer(const host_buffer&) = delete;
  host_buffer& operator=(const host_buffer&) = delete;

  buffer_range range() const { return {b_.buf, 0, std::max<size_t>(bytes_, 4), b_.data}; }
  operator buffer_range() const { return range(); }
  template <class T>
  void set(const std::vector<T>& v) {
    std::memcpy(b_.data, v.data(), v.size() * sizeof(T));
  }
  std::vector<float> floats(size_t n) const {
    const float* p = static_cast<const float*>(b_.data);
    return {p, p + n};
  }
  const uint16_t* halves() const { return static_cast<const uint16_t*>(b_.data); }

 private:
  context& ctx_;
  buffer b_;
  size_t bytes_ = 0;
};

// One pipeline cache (subgroup or shared-memory reductions) and a stream to run ops on.
class runner {
 public:
  // push = false: descriptor sets from pools even where push descriptors are available.
  runner(context& ctx, bool subgroups, bool push = true)
      : pipes_(ctx, subgroups, push), stream_(pipes_, 1) {}
  template <class F>
  void run(F&& record) {
    recorder& r = stream_.begin();
    record(r);
    stream_.wait(stream_.submit());
  }
  bool subgroups() const { return pipes_.subgroups(); }
  pipeline_cache& pipes() { return pipes_; }

 private:
  pipeline_cache pipes_;
  command_stream stream_;
};

}  // namespace tandem::vk
