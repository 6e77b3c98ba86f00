#include "cpu/large_buffer.h"

#include <sys/mman.h>

#include <cstdlib>
#include <new>

namespace tandem::cpu {

void large_buffer::free_aligned::operator()(void* p) const {
  std::free(p);
}

large_buffer::large_buffer(size_t bytes) {
  if (bytes == 0) return;
  constexpr size_t huge = size_t{1} << 21;
  const size_t align = bytes >= huge ? huge : 64;
  const size_t alloc = (bytes + align - 1) / align * align;
  void* p = std::aligned_alloc(align, alloc);
  if (p == nullptr) throw std::bad_alloc();
  if (align == huge) (void)madvise(p, alloc, MADV_HUGEPAGE);
  buf_.reset(static_cast<uint8_t*>(p));
}

}  // namespace tandem::cpu
