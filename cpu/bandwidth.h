// Measures the machine's memory read bandwidth: a streaming read of a buffer much larger than the
// caches, over all worker threads. The limit that decode (tg) speed is compared against.
#pragma once
#include <cstdint>

namespace tandem::cpu {

// Best of `reps` passes over `bytes` bytes, in bytes per second.
double measure_read_bandwidth(uint64_t bytes = 1ull << 30, int reps = 5);

}  // namespace tandem::cpu
