#include "cpu/parallel.h"

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>
#include <unistd.h>
#include <xmmintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace tandem::cpu {
namespace {
std::mutex g_mu;
std::unique_ptr<tbb::task_arena> g_arena;
int g_threads = 0;

// The thread count when none is asked for: TANDEM_THREADS where set (tools/sanitize.sh sets 1:
// ThreadSanitizer cannot see oneTBB's uninstrumented hand-offs, so its reports through the TBB
// scheduler would be noise), else one per physical core.
int default_threads() {
  if (const char* e = std::getenv("TANDEM_THREADS"); e && std::atoi(e) > 0) return std::atoi(e);
  return physical_cores();
}

tbb::task_arena& arena() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_arena) {
    if (g_threads <= 0) g_threads = default_threads();
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
  g_threads = n > 0 ? n : default_threads();
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

namespace {

// A unit step's share of one thread: [front, back) packed into one word (front in the low half),
// so that the owner takes from the front with one fetch_add and a thief from the back with one
// compare-exchange. front may pass back (the owner's last fetch_add): the share is then empty.
struct alignas(64) share {
  std::atomic<uint64_t> v{0};
};
uint64_t pack(int64_t front, int64_t back) {
  return static_cast<uint64_t>(front) | static_cast<uint64_t>(back) << 32;
}
int64_t front_of(uint64_t v) {
  return static_cast<int64_t>(v & 0xffffffffu);
}
int64_t back_of(uint64_t v) {
  return static_cast<int64_t>(v >> 32);
}

// The most grains a thread takes from its own share at a time (parallel.h: run_steps).
constexpr int64_t max_grains = 8;

struct alignas(64) counter {
  std::atomic<int64_t> v{0};
};

// Reused from call to call (a region per run of layers per token): the unit steps' shares and
// the item steps' counters.
struct region_state {
  std::unique_ptr<share[]> shares;
  std::unique_ptr<counter[]> next;
  size_t n_shares = 0, n_next = 0;
  void reset(size_t shares_needed, size_t steps) {
    if (shares_needed > n_shares) {
      shares = std::make_unique<share[]>(shares_needed);
      n_shares = shares_needed;
    }
    if (steps > n_next) {
      next = std::make_unique<counter[]>(steps);
      n_next = steps;
    }
    for (size_t s = 0; s < steps; ++s) next[s].v.store(0, std::memory_order_relaxed);
  }
};

// start[s]: the work before step s (its items or units, and its `last` as one more); the total
// at start[n_steps].
void count_work(const step* steps, int n_steps, std::vector<int64_t>& start) {
  start.assign(static_cast<size_t>(n_steps) + 1, 0);
  for (int s = 0; s < n_steps; ++s) {
    if (steps[s].last && steps[s].n <= 0)
      throw std::invalid_argument("run_steps: a step with `last` and no work");
    start[static_cast<size_t>(s) + 1] =
        start[static_cast<size_t>(s)] + std::max<int64_t>(0, steps[s].n) + (steps[s].last ? 1 : 0);
  }
  for (int s = 0; s < n_steps; ++s)
    if (steps[s].range && steps[s].n >= (int64_t{1} << 31))
      throw std::length_error("run_steps: a unit step of 2^31 units or more");
}

// The steps in order on the calling thread.
void run_serial(const step* steps, int n_steps) {
  for (int s = 0; s < n_steps; ++s) {
    if (steps[s].n <= 0) continue;
    if (steps[s].range)
      steps[s].range(0, steps[s].n);
    else
      for (int64_t i = 0; i < steps[s].n; ++i) steps[s].item(i);
    if (steps[s].last) steps[s].last();
  }
}

// Each unit step's units cut into one share per thread: share t is [at(t), at(t + 1)).
void cut_shares(const step* steps, int n_steps, int threads, region_state& rs) {
  const auto T = static_cast<size_t>(threads);
  for (int s = 0; s < n_steps; ++s) {
    const step& S = steps[s];
    if (!S.range) continue;
    const int64_t n = std::max<int64_t>(0, S.n);
    const auto at = [&](int k) {
      if (k >= threads) return n;
      return std::clamp<int64_t>(S.split ? S.split(k, threads) : n * k / threads, 0, n);
    };
    int64_t front = 0;  // each cut asked for once
    for (int t = 0; t < threads; ++t) {
      const int64_t back = std::max(front, at(t + 1));
      rs.shares[static_cast<size_t>(s) * T + static_cast<size_t>(t)].v.store(
          pack(front, back), std::memory_order_relaxed);
      front = back;
    }
  }
}

// One parallel region of run_steps: what its threads share, and what each of them runs.
class region {
 public:
  region(const step* steps, int n_steps, const int64_t* start, region_state& rs, int threads)
      : steps_(steps), n_steps_(n_steps), st_(start), rs_(rs), T_(static_cast<size_t>(threads)) {}

  // Thread t's part: every step in order, its items or its share of units (then stolen ones).
  void work(int t) {
    for (int s = 0; s < n_steps_; ++s) {
      if (steps_[s].n <= 0) continue;
      if (steps_[s].range)
        run_units(s, t);
      else
        run_items(s);
    }
  }
  // The first exception an item, a unit or a `last` threw, after the region.
  void rethrow() const {
    if (failed_) std::rethrow_exception(failed_);
  }

 private:
  template <typename F>
  void guarded(F&& f) {
    try {
      f();
    } catch (...) {
      if (!has_failed_.exchange(true)) failed_ = std::current_exception();
    }
  }
  // The thread whose `added` items or units (done was `prev` before them) complete step s runs
  // the step's `last`, at once, as one more unit of the step.
  void finish(int s, int64_t prev, int64_t added) {
    const step& S = steps_[s];
    if (!S.last || added <= 0 || prev + added != st_[s] + S.n) return;
    guarded([&] { S.last(); });
    done_.fetch_add(1, std::memory_order_acq_rel);
  }
  // Spins until every item and unit of the steps before s is done; warm() first if it must.
  template <typename W>
  void wait_for(int s, W&& warm) {
    if (done_.load(std::memory_order_acquire) >= st_[s]) return;
    warm();
    while (done_.load(std::memory_order_acquire) < st_[s]) _mm_pause();
  }
  void run_items(int s) {
    const step& S = steps_[s];
    for (int64_t i; (i = rs_.next[s].v.fetch_add(1, std::memory_order_relaxed)) < S.n;) {
      wait_for(s, [&] {
        if (S.warm) S.warm(i);
      });
      guarded([&] { S.item(i); });
      finish(s, done_.fetch_add(1, std::memory_order_acq_rel), 1);
    }
  }
  void run_units(int s, int t) {
    const step& S = steps_[s];
    share* sh = &rs_.shares[static_cast<size_t>(s) * T_];
    std::atomic<uint64_t>& own = sh[t].v;
    wait_for(s, [&] {
      const uint64_t v = own.load(std::memory_order_relaxed);
      if (S.warm && front_of(v) < back_of(v)) S.warm(front_of(v));
    });
    do {
      const int64_t ran = run_share(S, own);
      // Published once per share, not per grain: both threads bumping the one line every
      // grain would pass it back and forth.
      finish(s, done_.fetch_add(ran, std::memory_order_acq_rel), ran);
    } while (steal(s, sh, own));
  }
  // The own share from the front, in runs of half of what is left of it, at least a grain and at
  // most max_grains grains: each run costs a kernel call and a locked instruction (which waits
  // for the loads before it), and the short runs at the end of the share keep what another
  // thread may wait out to about a grain. Returns the units run.
  int64_t run_share(const step& S, std::atomic<uint64_t>& own) {
    const int64_t grain = std::max<int64_t>(1, S.grain);
    int64_t ran = 0;
    for (;;) {
      const uint64_t seen = own.load(std::memory_order_relaxed);  // a hint: a thief may cut it
      const int64_t take =
          std::clamp<int64_t>((back_of(seen) - front_of(seen)) / 2, grain, max_grains * grain);
      const uint64_t v = own.fetch_add(static_cast<uint64_t>(take), std::memory_order_relaxed);
      const int64_t f = front_of(v), b = back_of(v);
      if (f >= b) return ran;
      const int64_t u1 = std::min(b, f + take);
      guarded([&] { S.range(f, u1); });
      ran += u1 - f;
    }
  }
  // The back half of the largest share left, as the own share; not a look at the other shares
  // (lines the other threads write) once every unit of the step is done. False: none left.
  bool steal(int s, share* sh, std::atomic<uint64_t>& own) {
    while (done_.load(std::memory_order_acquire) < st_[s] + steps_[s].n) {
      size_t victim = T_;
      int64_t most = 0;
      uint64_t seen = 0;
      for (size_t k = 0; k < T_; ++k) {
        const uint64_t v = sh[k].v.load(std::memory_order_relaxed);
        if (back_of(v) - front_of(v) > most) {
          most = back_of(v) - front_of(v);
          victim = k;
          seen = v;
        }
      }
      if (victim == T_) return false;
      const int64_t f = front_of(seen), b = back_of(seen), half = (b - f + 1) / 2;
      if (sh[victim].v.compare_exchange_weak(seen, pack(f, b - half), std::memory_order_relaxed)) {
        own.store(pack(b - half, b), std::memory_order_relaxed);
        return true;
      }
    }
    return false;
  }

  const step* steps_;
  int n_steps_;
  const int64_t* st_;  // count_work's start
  region_state& rs_;
  size_t T_;  // threads
  // Items and units done, on a line of its own: every item bumps it.
  counter done_c_;
  std::atomic<int64_t>& done_ = done_c_.v;
  std::exception_ptr failed_;
  std::atomic<bool> has_failed_{false};
};

}  // namespace

void run_steps(const step* steps, int n_steps) {
  if (n_steps <= 0) return;
  thread_local std::vector<int64_t> start;
  count_work(steps, n_steps, start);
  if (start[static_cast<size_t>(n_steps)] == 0) return;
  auto& a = arena();
  const int threads = g_threads;
  if (threads == 1) return run_serial(steps, n_steps);
  thread_local region_state t_rs;
  region_state& rs = t_rs;  // the caller's: the workers' lambda must not name the thread_local
  rs.reset(static_cast<size_t>(n_steps) * static_cast<size_t>(threads),
           static_cast<size_t>(n_steps));
  cut_shares(steps, n_steps, threads, rs);
  region reg(steps, n_steps, start.data(), rs, threads);
  a.execute([&] {
    tbb::parallel_for(
        tbb::blocked_range<int>(0, threads, 1),
        [&](const tbb::blocked_range<int>& r) {
          for (int k = r.begin(); k < r.end(); ++k) reg.work(k);
        },
        tbb::simple_partitioner());
  });
  reg.rethrow();
}

}  // namespace tandem::cpu
