// Heap memory for data the kernels stream: weights kept in memory, the bandwidth probe.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

namespace tandem::cpu {

// A 64-byte aligned heap buffer, in 2 MiB pages when it is large and the kernel allows (THP
// "madvise" mode): decode streams whole matrices, and 4 KiB pages would cost a TLB miss every
// 4 KiB.
class large_buffer {
 public:
  large_buffer() = default;
  explicit large_buffer(size_t bytes);
  uint8_t* data() const { return buf_.get(); }

 private:
  struct free_aligned {
    void operator()(void* p) const;
  };
  std::unique_ptr<uint8_t, free_aligned> buf_;
};

}  // namespace tandem::cpu
