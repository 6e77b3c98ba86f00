// The one place that knows about threads: a oneTBB task_arena sized by -t, and a parallel loop
// over row ranges. Kernels only ever see [r0, r1).
#pragma once
#include <cstdint>
#include <functional>

namespace tandem::cpu {

// Sets the number of worker threads (0 = the number of physical cores).
void set_num_threads(int n);
int num_threads();
int physical_cores();

// Calls f(r0, r1) over disjoint ranges covering [0, n), in parallel, chunks of at least grain.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& f);

}  // namespace tandem::cpu
