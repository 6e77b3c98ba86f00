#include "cpu/bandwidth.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "cpu/large_buffer.h"
#include "cpu/parallel.h"

namespace tandem::cpu {

double measure_read_bandwidth(uint64_t bytes, int reps) {
  const size_t n = bytes / sizeof(uint64_t);
  // In large pages like the weights the kernels stream (cpu/large_buffer.h), so that the figure is
  // the limit those reads face, not a TLB-bound one.
  const large_buffer mem(n * sizeof(uint64_t));
  auto* buf = reinterpret_cast<uint64_t*>(mem.data());
  // Touch every page from the threads that will read it (first-touch placement).
  parallel_for(static_cast<int64_t>(n), 1 << 16, [&](int64_t a, int64_t b) {
    for (int64_t i = a; i < b; ++i) buf[static_cast<size_t>(i)] = static_cast<uint64_t>(i);
  });
  std::atomic<uint64_t> sink{0};
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    parallel_for(static_cast<int64_t>(n), 1 << 16, [&](int64_t a, int64_t b) {
      uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      int64_t i = a;
      for (; i + 4 <= b; i += 4) {
        s0 += buf[static_cast<size_t>(i)];
        s1 += buf[static_cast<size_t>(i + 1)];
        s2 += buf[static_cast<size_t>(i + 2)];
        s3 += buf[static_cast<size_t>(i + 3)];
      }
      for (; i < b; ++i) s0 += buf[static_cast<size_t>(i)];
      sink += s0 + s1 + s2 + s3;
    });
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, static_cast<double>(n * sizeof(uint64_t)) / s);
  }
  return sink.load() == 42 ? best + 1e-9 : best;  // keeps the reads alive
}

}  // namespace tandem::cpu
