#include "cpu/parallel.h"

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>
#include <unistd.h>
#include <xmmintrin.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <fstream>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace tandem::cpu {
namespace {
std::mutex g_mu;
std::unique_ptr<tbb::task_arena> g_arena;
int g_threads = 0;

tbb::task_arena& arena() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_arena) {
    if (g_threads <= 0) g_threads = physical_cores();
    g_arena = std::make_unique<tbb::task_arena>(g_threads);
  }
  return *g_arena;
}
}  // namespace

int physical_cores() {
  // Count distinct (physical id, core id) pairs; fall back to the logical count.
  std::ifstream in("/proc/cpuinfo");
  std::set<std::pair<int, int>> cores;
  std::string line;
  int phys = 0;
  while (std::getline(in, line)) {
    auto value = [&] { return std::stoi(line.substr(line.find(':') + 1)); };
    if (line.rfind("physical id", 0) == 0) phys = value();
    if (line.rfind("core id", 0) == 0) cores.insert({phys, value()});
  }
  int logical = static_cast<int>(std::thread::hardware_concurrency());
  if (cores.empty()) return logical > 0 ? logical : 1;
  return static_cast<int>(cores.size());
}

void set_num_threads(int n) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_threads = n > 0 ? n : physical_cores();
  g_arena.reset();
}

int num_threads() {
  arena();
  return g_threads;
}

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& f) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  auto& a = arena();
  if (g_threads == 1 || n <= grain) {
    f(0, n);
    return;
  }
  a.execute([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, n, grain),
                      [&](const tbb::blocked_range<int64_t>& r) { f(r.begin(), r.end()); });
  });
}

void prefetch_l2(const void* p, size_t bytes) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  for (uintptr_t l = a & ~uintptr_t{63}; l < a + bytes; l += 64)
    _mm_prefetch(reinterpret_cast<const char*>(l), _MM_HINT_T1);
}

void run_steps(const step* steps, int n_steps) {
  thread_local std::vector<int64_t> start;  // start[s]: the first item number of step s
  start.assign(static_cast<size_t>(n_steps) + 1, 0);
  for (int s = 0; s < n_steps; ++s)
    start[static_cast<size_t>(s) + 1] =
        start[static_cast<size_t>(s)] + std::max<int64_t>(0, steps[s].n);
  const int64_t total = start[static_cast<size_t>(n_steps)];
  if (total == 0) return;
  auto& a = arena();
  if (g_threads == 1) {
    for (int s = 0; s < n_steps; ++s)
      for (int64_t i = 0; i < steps[s].n; ++i) steps[s].item(i);
    return;
  }
  // The two counters on lines of their own: every item takes one and bumps the other, and on one
  // line both threads' read-modify-writes would take it from each other twice per item.
  struct alignas(64) counter {
    std::atomic<int64_t> v{0};
  };
  counter next_c, done_c;
  std::atomic<int64_t>& next = next_c.v;
  std::atomic<int64_t>& done = done_c.v;
  std::exception_ptr failed;
  std::atomic<bool> has_failed{false};
  const int64_t* st = start.data();
  auto work = [&] {
    int s = 0;
    for (int64_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < total;) {
      while (st[s + 1] <= i) ++s;
      if (done.load(std::memory_order_acquire) < st[s]) {
        if (steps[s].warm) steps[s].warm(i - st[s]);
        while (done.load(std::memory_order_acquire) < st[s]) _mm_pause();
      }
      try {
        steps[s].item(i - st[s]);
      } catch (...) {
        if (!has_failed.exchange(true)) failed = std::current_exception();
      }
      done.fetch_add(1, std::memory_order_release);
    }
  };
  const int threads = g_threads;
  a.execute([&] {
    tbb::parallel_for(
        tbb::blocked_range<int>(0, threads, 1),
        [&](const tbb::blocked_range<int>& r) {
          for (int k = r.begin(); k < r.end(); ++k) work();
        },
        tbb::simple_partitioner());
  });
  if (failed) std::rethrow_exception(failed);
}

}  // namespace tandem::cpu
