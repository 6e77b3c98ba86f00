// Measures the machine's memory read bandwidth: a streaming read of a buffer much larger than the
// caches, over all worker threads. The limit that decode (tg) speed is compared against.
#pragma once
#include <cstdint>

#include "cpu/large_buffer.h"

namespace tandem::cpu {

// A buffer of `bytes` (in 2 MiB pages, touched once at construction) that can be read again and
// again, so that bandwidth can be measured next to each repetition of a benchmark.
class read_probe {
 public:
  explicit read_probe(uint64_t bytes);
  // Best of `reps` passes over the buffer, in bytes per second.
  double measure(int reps) const;
  // The mean over `reps` passes (total bytes over total time): the bandwidth over a stretch of
  // time, where the best pass is the quietest moment in it.
  double measure_mean(int reps) const;

 private:
  double pass(int reps, bool mean) const;
  large_buffer mem_;
  uint64_t n_ = 0;  // 64-bit words
};

// Best of `reps` passes over `bytes` bytes, in bytes per second.
double measure_read_bandwidth(uint64_t bytes = 1ull << 30, int reps = 5);

}  // namespace tandem::cpu
