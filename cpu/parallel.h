// The one place that knows about threads: a oneTBB task_arena sized by -t, and a parallel loop
// over row ranges. Kernels only ever see [r0, r1).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>

namespace tandem::cpu {

// Sets the number of worker threads (0 = the number of physical cores).
void set_num_threads(int n);
int num_threads();
int physical_cores();

// Calls f(r0, r1) over disjoint ranges covering [0, n), in parallel, chunks of at least grain.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& f);

// One step of run_steps: n independent items, item(i) for i in [0, n). warm(i), where set, is
// called by a thread that has taken item i but must wait for the step before: it prefetches what
// item i will read, so that time goes into the memory stream instead of a spin.
struct step {
  int64_t n = 0;
  std::function<void(int64_t)> item;
  std::function<void(int64_t)> warm = {};
};

// Software prefetch of [p, p + bytes) towards the L2 cache.
void prefetch_l2(const void* p, size_t bytes);

// Runs the steps in order in one parallel region: every item of a step finishes before any item
// of a later step starts, but the threads go from step to step without a fork-join. Items are
// handed out in order from one counter, and a thread that takes an item of a later step spins
// until every item before that step is done (the items before it were all taken by threads that
// are running them), so the steps complete on any number of threads, one included. Decode runs a
// layer (norm, QKV, attention, output, FFN: short products with serial work between) as one
// region instead of five fork-joins. An exception from an item is rethrown after the region.
void run_steps(const step* steps, int n_steps);

}  // namespace tandem::cpu
