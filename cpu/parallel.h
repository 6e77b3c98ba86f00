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

// One step of run_steps, of one of two kinds.
// - Items (range unset): n independent items, item(i) for i in [0, n), taken in order from one
//   counter. warm(i), where set, is called by a thread that has taken item i but must wait for
//   the step before: it prefetches what item i will read, so that time goes into the memory
//   stream instead of a spin.
// - Units (range set): n units of one stream of work (the rows of matrix-vector products), each
//   thread starting on its own share [split(t, T), split(t + 1, T)) (equal counts where split is
//   unset) and taking runs from its front (half of what is left of the share, at least grain
//   units and at most 8 grains), so that it reads one contiguous stream; a thread whose share is
//   done takes the back half of the largest share left, until
//   none is. range(u0, u1) computes units [u0, u1); warm(u) prefetches from unit u, the first of
//   the thread's share, while it waits for the step before.
// - last, where set (n > 0): run once the step's items or units are all done, before the next
//   step starts, by the thread that completed them (at once: no other thread has to see the step
//   end and take a serial item of its own).
struct step {
  int64_t n = 0;
  std::function<void(int64_t)> item;
  std::function<void(int64_t)> warm = {};
  std::function<void(int64_t, int64_t)> range = {};
  int64_t grain = 1;
  std::function<int64_t(int, int)> split = {};
  std::function<void()> last = {};
};

// Software prefetch of [p, p + bytes) towards the L2 cache.
void prefetch_l2(const void* p, size_t bytes);

// Runs the steps in order in one parallel region: every item or unit of a step finishes before
// any of a later step starts, but the threads go from step to step without a fork-join. A thread
// waits (spins) for a step only once it holds work of it, and every item or unit is held by a
// thread that is running, so the steps complete on any number of threads, one included. Decode
// runs a layer (norm, QKV, attention, output, FFN: short products with serial work between) as one
// region instead of five fork-joins. An exception from an item is rethrown after the region.
void run_steps(const step* steps, int n_steps);

}  // namespace tandem::cpu
