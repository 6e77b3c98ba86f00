// The async layer cache (runtime/layer_cache.h): eviction order and protection, de-duplication of
// in-flight requests, the bounded queue, shutdown in the middle of a load, read errors, many
// threads at once; and end to end, greedy output under --mem-budget equals the golden text.
//
// The cache is driven deterministically through its before_chunk hook (a gate that holds a load in
// the middle) and wait_idle(); nothing here sleeps for a fixed time.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <random>
#include <regex>
#include <thread>
#include <vector>

#include "runtime/error.h"
#include "runtime/layer_cache.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

uint8_t pattern(uint64_t off) { return static_cast<uint8_t>((off * 131u) ^ (off >> 9) ^ (off >> 17)); }

// A file of `size` pattern bytes.
std::string write_pattern_file(const std::string& name, uint64_t size) {
  const std::string path = test::temp_dir() + "/" + name;
  std::vector<char> b(size);
  for (uint64_t i = 0; i < size; ++i) b[i] = static_cast<char>(pattern(i));
  std::ofstream(path, std::ios::binary).write(b.data(), static_cast<std::streamsize>(size));
  return path;
}

// n slots of one extent each, `bytes` long, laid out back to back from `first` with `stride`.
std::vector<std::vector<layer_extent>> simple_slots(int n, uint64_t first, uint64_t stride,
                                                    uint64_t bytes) {
  std::vector<std::vector<layer_extent>> s;
  for (int i = 0; i < n; ++i) s.push_back({{first + stride * static_cast<uint64_t>(i), bytes}});
  return s;
}

bool holds_pattern(const uint8_t* p, uint64_t off, uint64_t n) {
  for (uint64_t i = 0; i < n; ++i)
    if (p[i] != pattern(off + i)) return false;
  return true;
}

// Holds loads at a chosen point until opened (or until the cache stops).
struct gate {
  std::mutex mu;
  std::condition_variable cv;
  bool open = false;
  int entered = 0;
  std::atomic<layer_cache*> cache{nullptr};

  void hold() {
    std::unique_lock<std::mutex> lk(mu);
    ++entered;
    cv.notify_all();
    while (!open) {
      layer_cache* c = cache.load();
      if (c && c->stopping()) return;
      cv.wait_for(lk, std::chrono::milliseconds(1));
    }
  }
  void wait_entered(int n = 1) {
    std::unique_lock<std::mutex> lk(mu);
    cv.wait(lk, [&] { return entered >= n; });
  }
  void release() {
    std::lock_guard<std::mutex> lk(mu);
    open = true;
    cv.notify_all();
  }
};

constexpr uint64_t k_layer = 8192;  // two pages per test layer

layer_cache_config config(const std::string& path, int capacity_layers, int distance) {
  layer_cache_config c;
  c.path = path;
  c.capacity_bytes = k_layer * static_cast<uint64_t>(capacity_layers);
  c.prefetch_distance = distance;
  return c;
}

TEST(LayerCache, ReadsExtentsIntoAlignedBuffers) {
  const std::string path = write_pattern_file("extents.bin", 1 << 20);
  // Slot 0: three tensors at odd offsets, two close together, one far (read separately).
  std::vector<std::vector<layer_extent>> slots = {
      {{1000, 3000}, {5000, 777}, {300000, 4096}},
      {{123457, 10}},
  };
  const uint64_t need = layer_cache::buffer_bytes(slots[0]);
  EXPECT_EQ(need, 8192u + 4096u * 2);  // [0, 8192) and [299008, 307200)
  layer_cache_config cfg;
  cfg.path = path;
  cfg.capacity_bytes = 64 * 1024;
  layer_cache c(cfg, slots);
  EXPECT_EQ(c.slot_bytes(0), need);
  {
    auto h = c.acquire(0);
    EXPECT_TRUE(holds_pattern(h.data(0), 1000, 3000));
    EXPECT_TRUE(holds_pattern(h.data(1), 5000, 777));
    EXPECT_TRUE(holds_pattern(h.data(2), 300000, 4096));
    // Same alignment within a page as in the file (kernels see what the mapping would give).
    EXPECT_EQ(reinterpret_cast<uintptr_t>(h.data(2)) % 4096, 300000u % 4096);
  }
  auto h1 = c.acquire(1);
  EXPECT_TRUE(holds_pattern(h1.data(0), 123457, 10));
  const layer_cache_metrics m = c.metrics();
  EXPECT_TRUE(m.active);
  EXPECT_EQ(m.misses, 2u);
  EXPECT_EQ(m.loads, 2u);
}

TEST(LayerCache, RejectsALayerLargerThanTheCapacity) {
  const std::string path = write_pattern_file("big.bin", 64 * 1024);
  layer_cache_config cfg = config(path, 1, 0);
  EXPECT_THROW(layer_cache(cfg, simple_slots(1, 0, 0, 3 * 4096)), error);
  EXPECT_THROW(layer_cache(config(path, 4, 0), simple_slots(1, 60000, 0, 8192)), error);  // past EOF
}

TEST(LayerCache, EvictsLeastRecentlyUsedAndNeverAPinnedLayer) {
  const std::string path = write_pattern_file("lru.bin", 8 * k_layer);
  layer_cache c(config(path, 3, 0), simple_slots(8, 0, k_layer, k_layer));
  for (int i : {0, 1, 2}) c.acquire(i);
  c.acquire(0);  // hit; LRU order now 1, 2, 0
  c.acquire(3);  // evicts 1
  EXPECT_TRUE(c.resident(0));
  EXPECT_FALSE(c.resident(1));
  EXPECT_TRUE(c.resident(2));
  EXPECT_TRUE(c.resident(3));
  {
    auto pin2 = c.acquire(2);  // hit, and pinned: order 0, 3, 2
    c.acquire(4);              // evicts 0
    EXPECT_FALSE(c.resident(0));
    c.acquire(5);  // 3 is the least recent unpinned
    EXPECT_FALSE(c.resident(3));
    c.acquire(6);  // 2 is older than 4 but pinned: 4 goes
    EXPECT_TRUE(c.resident(2));
    EXPECT_FALSE(c.resident(4));
    EXPECT_TRUE(holds_pattern(pin2.data(0), 2 * k_layer, k_layer));
  }
  const layer_cache_metrics m = c.metrics();
  EXPECT_EQ(m.hits, 2u);
  EXPECT_EQ(m.misses, 7u);
  EXPECT_EQ(m.evictions, 4u);
  EXPECT_EQ(m.bytes_read, 7 * k_layer);
  // Every miss was an acquire that waited for its read: some time was spent blocked.
  EXPECT_GT(m.blocked_s, 0.0);
}

TEST(LayerCache, ProtectsTheNextLayersFromBackgroundEviction) {
  const std::string path = write_pattern_file("protect.bin", 8 * k_layer);
  layer_cache c(config(path, 3, 1), simple_slots(8, 0, k_layer, k_layer));
  for (int i : {0, 1, 2}) c.acquire(i);
  auto pin0 = c.acquire(0);  // hit; LRU order 1, 2, 0; window {1}
  ASSERT_TRUE(c.prefetch(3));
  c.wait_idle();
  // 1 is the least recently used but is the next layer: 2 goes instead.
  EXPECT_TRUE(c.resident(1));
  EXPECT_FALSE(c.resident(2));
  EXPECT_TRUE(c.resident(3));
  // 0 pinned, 1 protected: only 3 may make room.
  ASSERT_TRUE(c.prefetch(4));
  c.wait_idle();
  EXPECT_TRUE(c.resident(0));
  EXPECT_TRUE(c.resident(1));
  EXPECT_FALSE(c.resident(3));
  EXPECT_TRUE(c.resident(4));
  EXPECT_EQ(c.metrics().prefetch_dropped, 0u);
}

TEST(LayerCache, DropsABackgroundLoadWithNoEvictableRoom) {
  const std::string path = write_pattern_file("noroom.bin", 8 * k_layer);
  layer_cache c(config(path, 2, 1), simple_slots(8, 0, k_layer, k_layer));
  auto pin0 = c.acquire(0);  // window {1}
  ASSERT_TRUE(c.prefetch(1));
  c.wait_idle();
  EXPECT_TRUE(c.resident(1));
  ASSERT_TRUE(c.prefetch(2));  // queued, but 0 is pinned and 1 protected
  c.wait_idle();
  EXPECT_FALSE(c.resident(2));
  EXPECT_EQ(c.metrics().prefetch_dropped, 1u);
  // A demand load still gets through: acquiring 2 moves the window to {3}, so 1 may go.
  auto pin2 = c.acquire(2);
  EXPECT_TRUE(holds_pattern(pin2.data(0), 2 * k_layer, k_layer));
  EXPECT_FALSE(c.resident(1));
}

TEST(LayerCache, ADemandLoadTakesAProtectedLayerRatherThanDeadlock) {
  const std::string path = write_pattern_file("demand.bin", 8 * k_layer);
  layer_cache c(config(path, 2, 1), simple_slots(8, 0, k_layer, k_layer));
  c.acquire(3);                  // window {4}
  ASSERT_TRUE(c.prefetch(4));
  c.wait_idle();
  auto pin0 = c.acquire(0);      // evicts 3 (unprotected); window {1}
  EXPECT_TRUE(c.resident(4));
  auto pin3 = c.acquire(3);      // window {4}: 4 is protected, 0 pinned; 4 must give way
  EXPECT_FALSE(c.resident(4));
  EXPECT_TRUE(holds_pattern(pin3.data(0), 3 * k_layer, k_layer));
}

TEST(LayerCache, DeduplicatesRequestsInFlight) {
  const std::string path = write_pattern_file("dedup.bin", 4 * k_layer);
  gate g;
  layer_cache_config cfg = config(path, 4, 2);
  cfg.before_chunk = [&](int, uint64_t) { g.hold(); };
  layer_cache c(cfg, simple_slots(4, 0, k_layer, k_layer));
  g.cache = &c;
  ASSERT_TRUE(c.prefetch(0));
  g.wait_entered();  // the loader is in the middle of slot 0
  EXPECT_FALSE(c.prefetch(0));
  EXPECT_FALSE(c.prefetch(0));
  EXPECT_EQ(c.queued(), 0u);
  auto waiter = std::async(std::launch::async, [&] {
    auto h = c.acquire(0);  // waits for the same load, does not read again
    return holds_pattern(h.data(0), 0, k_layer);
  });
  while (c.metrics().misses == 0) std::this_thread::yield();  // the waiter is in acquire
  ASSERT_TRUE(c.prefetch(1));
  EXPECT_FALSE(c.prefetch(1));  // queued already
  EXPECT_EQ(c.queued(), 1u);
  g.release();
  EXPECT_TRUE(waiter.get());
  c.wait_idle();
  EXPECT_FALSE(c.prefetch(0));  // resident
  const layer_cache_metrics m = c.metrics();
  EXPECT_EQ(m.prefetch_requests, 6u);
  EXPECT_EQ(m.prefetch_queued, 2u);
  EXPECT_EQ(m.prefetch_deduped, 4u);
  EXPECT_EQ(m.loads, 2u);
  EXPECT_EQ(m.bytes_read, 2 * k_layer);
  EXPECT_EQ(m.misses, 1u);
  EXPECT_EQ(m.late_prefetches, 1u);
}

TEST(LayerCache, TheRequestQueueIsBounded) {
  const std::string path = write_pattern_file("queue.bin", 8 * k_layer);
  gate g;
  layer_cache_config cfg = config(path, 8, 0);
  cfg.queue_capacity = 2;
  cfg.before_chunk = [&](int slot, uint64_t) {
    if (slot == 0) g.hold();
  };
  layer_cache c(cfg, simple_slots(8, 0, k_layer, k_layer));
  g.cache = &c;
  ASSERT_TRUE(c.prefetch(0));
  g.wait_entered();
  EXPECT_TRUE(c.prefetch(1));
  EXPECT_TRUE(c.prefetch(2));
  EXPECT_FALSE(c.prefetch(3));  // full: refused at once, not blocked
  EXPECT_EQ(c.queued(), 2u);
  EXPECT_EQ(c.metrics().prefetch_dropped, 1u);
  // A queued layer that is acquired is taken off the queue and read by the caller.
  auto h2 = c.acquire(2);
  EXPECT_EQ(c.queued(), 1u);
  EXPECT_TRUE(holds_pattern(h2.data(0), 2 * k_layer, k_layer));
  g.release();
  c.wait_idle();
  EXPECT_TRUE(c.resident(0));
  EXPECT_TRUE(c.resident(1));
  EXPECT_FALSE(c.resident(3));
  auto h3 = c.acquire(3);  // the dropped request costs a miss, nothing else
  EXPECT_TRUE(holds_pattern(h3.data(0), 3 * k_layer, k_layer));
}

TEST(LayerCache, ShutdownStopsALoadInTheMiddle) {
  const uint64_t big = 16 * 4096;  // 16 chunks of 4 KiB
  const std::string path = write_pattern_file("shutdown.bin", 4 * big);
  gate g;
  layer_cache_config cfg;
  cfg.path = path;
  cfg.capacity_bytes = 4 * big;
  cfg.chunk_bytes = 4096;
  cfg.before_chunk = [&](int slot, uint64_t off) {
    if (slot == 0 && off == 2 * 4096) g.hold();  // after two chunks of slot 0
  };
  layer_cache c(cfg, simple_slots(4, 0, big, big));
  g.cache = &c;
  ASSERT_TRUE(c.prefetch(0));
  ASSERT_TRUE(c.prefetch(1));
  g.wait_entered();
  auto waiter = std::async(std::launch::async, [&] {
    try {
      c.acquire(0);
      return std::string("acquired");
    } catch (const error& e) {
      return std::string(e.what());
    }
  });
  c.shutdown();  // returns although the gate never opens: the loader sees the stop flag
  EXPECT_NE(waiter.get().find("shut down"), std::string::npos);
  EXPECT_FALSE(c.resident(0));
  EXPECT_FALSE(c.resident(1));
  EXPECT_EQ(c.queued(), 0u);
  const layer_cache_metrics m = c.metrics();
  EXPECT_EQ(m.bytes_read, 2 * 4096u);  // abandoned after the chunks before the stop
  EXPECT_EQ(m.loads, 0u);
  EXPECT_FALSE(c.prefetch(2));
  EXPECT_THROW(c.acquire(2), error);
  c.shutdown();  // idempotent
}

TEST(LayerCache, AReadErrorIsReportedToTheCaller) {
  const std::string path = write_pattern_file("truncated.bin", 4 * k_layer);
  layer_cache c(config(path, 4, 1), simple_slots(4, 0, k_layer, k_layer));
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(k_layer + k_layer / 2)), 0);
  // A demand load of a layer past the new end.
  try {
    c.acquire(3);
    FAIL() << "no error";
  } catch (const error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find("offset " + std::to_string(3 * k_layer)), std::string::npos) << msg;
    EXPECT_NE(msg.find("end of file"), std::string::npos) << msg;
  }
  // A background load that fails: the error waits for the acquire, never dropped.
  ASSERT_TRUE(c.prefetch(2));
  c.wait_idle();
  EXPECT_FALSE(c.prefetch(2));  // the pending error is not overwritten by a new request
  try {
    c.acquire(2);
    FAIL() << "no error";
  } catch (const error& e) {
    EXPECT_NE(std::string(e.what()).find("offset " + std::to_string(2 * k_layer)),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(c.acquire(2), error);  // tried again, fails again
  // Partly cut: the half that is left is not enough either.
  EXPECT_THROW(c.acquire(1), error);
  auto h0 = c.acquire(0);  // the intact layer still loads
  EXPECT_TRUE(holds_pattern(h0.data(0), 0, k_layer));
  EXPECT_EQ(c.metrics().load_errors, 4u);
}

TEST(LayerCache, DirectIoReadsTheSameBytesOrFallsBack) {
  const std::string path = write_pattern_file("direct.bin", 6 * k_layer + 100);
  layer_cache_config cfg = config(path, 2, 1);
  cfg.direct_io = true;
  layer_cache c(cfg, {{{10, k_layer - 20}}, {{k_layer + 7, 5000}}, {{6 * k_layer, 100}}});
  for (int round = 0; round < 2; ++round) {
    auto a = c.acquire(0);
    EXPECT_TRUE(holds_pattern(a.data(0), 10, k_layer - 20));
    a.reset();
    auto b = c.acquire(1);
    EXPECT_TRUE(holds_pattern(b.data(0), k_layer + 7, 5000));
    b.reset();
    auto t = c.acquire(2);  // the file's last bytes: the aligned read runs past the end
    EXPECT_TRUE(holds_pattern(t.data(0), 6 * k_layer, 100));
  }
  EXPECT_EQ(c.metrics().load_errors, 0u);
}

TEST(LayerCache, ManyThreadsAcquireAtOnce) {
  const int n_slots = 12, n_threads = 8, iters = 300;
  const std::string path = write_pattern_file("threads.bin", n_slots * k_layer);
  layer_cache_config cfg = config(path, 4, 1);
  cfg.queue_capacity = 3;
  cfg.chunk_bytes = 4096;
  layer_cache c(cfg, simple_slots(n_slots, 0, k_layer, k_layer));
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < n_threads; ++t)
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<uint32_t>(t));
      for (int i = 0; i < iters; ++i) {
        const int s = static_cast<int>(rng() % n_slots);
        if (rng() % 2) c.prefetch((s + 1) % n_slots);
        auto h = c.acquire(s);
        if (!holds_pattern(h.data(0), static_cast<uint64_t>(s) * k_layer, k_layer)) ++bad;
        if (i % 50 == 0) (void)c.metrics();
      }
    });
  for (auto& th : threads) th.join();
  c.wait_idle();
  EXPECT_EQ(bad.load(), 0);
  const layer_cache_metrics m = c.metrics();
  EXPECT_EQ(m.hits + m.misses, static_cast<uint64_t>(n_threads * iters));
  EXPECT_EQ(m.load_errors, 0u);
  EXPECT_EQ(m.bytes_read, m.loads * k_layer);
  int resident = 0;
  for (int s = 0; s < n_slots; ++s) resident += c.resident(s);
  EXPECT_LE(resident, 4);
}

// One pass over the slots 0 .. n-1 as the CPU backend walks them: acquire, queue the next ones,
// compute (here: check the bytes), release. wait_idle after each prefetch makes the background
// loads land in a fixed order.
void walk(layer_cache& c, int distance) {
  for (int s = 0; s < c.n_slots(); ++s) {
    auto h = c.acquire(s);
    c.prefetch_ahead(s, distance);
    c.wait_idle();
    EXPECT_TRUE(holds_pattern(h.data(0), static_cast<uint64_t>(s) * k_layer, k_layer)) << s;
  }
}

TEST(LayerCache, PlainLruOverACyclicWalkReadsEveryLayerEveryPass) {
  const std::string path = write_pattern_file("lru-walk.bin", 10 * k_layer);
  layer_cache c(config(path, 6, 0), simple_slots(10, 0, k_layer, k_layer));
  walk(c, 0);
  const layer_cache_metrics first = c.metrics();
  for (int pass = 0; pass < 3; ++pass) walk(c, 0);
  const layer_cache_metrics d = c.metrics() - first;
  EXPECT_EQ(d.passes, 3u);
  EXPECT_EQ(d.bytes_read, 3 * 10 * k_layer);  // the layer needed next is always the one evicted
}

TEST(LayerCache, KeepResidentReadsOnlyTheStreamedLayersPerPass) {
  const std::string path = write_pattern_file("keep-walk.bin", 10 * k_layer);
  for (int distance : {0, 1, 2}) {
    layer_cache_config cfg = config(path, 6, distance);
    cfg.keep_resident = true;
    layer_cache c(cfg, simple_slots(10, 0, k_layer, k_layer));
    const int ring = distance + 1, kept = 6 - ring;
    layer_cache_metrics m = c.metrics();
    EXPECT_EQ(m.resident_layers, kept);
    EXPECT_EQ(m.streamed_layers, 10 - kept);
    EXPECT_EQ(m.streamed_bytes, static_cast<uint64_t>(10 - kept) * k_layer);
    int n_kept = 0, longest_run = 0, run = 0;  // spread out: no long run of kept slots
    for (int s = 0; s < 10; ++s) {
      n_kept += c.kept(s);
      run = c.kept(s) ? run + 1 : 0;
      longest_run = std::max(longest_run, run);
    }
    EXPECT_EQ(n_kept, kept);
    EXPECT_LE(longest_run, (kept + 9) / (10 - kept) + 1) << distance;
    // The first pass reads everything (and a streamed slot again where a kept slot's first load
    // took its buffer); the second may still find a streamed slot left from it.
    walk(c, distance);
    EXPECT_GE(c.metrics().bytes_read, 10 * k_layer);
    EXPECT_LE(c.metrics().bytes_read, static_cast<uint64_t>(10 + ring) * k_layer);
    walk(c, distance);
    const layer_cache_metrics first = c.metrics();
    for (int pass = 0; pass < 4; ++pass) walk(c, distance);
    m = c.metrics() - first;
    EXPECT_EQ(m.passes, 4u);
    EXPECT_EQ(m.bytes_read, 4 * m.streamed_bytes) << "distance " << distance;
    EXPECT_EQ(m.load_errors, 0u);
    for (int s = 0; s < 10; ++s)
      if (c.kept(s)) EXPECT_TRUE(c.resident(s)) << s;
  }
  // A capacity that holds every slot keeps them all: later passes read nothing.
  layer_cache_config cfg = config(path, 10, 2);
  cfg.keep_resident = true;
  layer_cache all(cfg, simple_slots(10, 0, k_layer, k_layer));
  EXPECT_EQ(all.metrics().streamed_layers, 0);
  walk(all, 2);
  const uint64_t once = all.metrics().bytes_read;
  walk(all, 2);
  EXPECT_EQ(all.metrics().bytes_read, once);
}

TEST(LayerCache, MetricsTellLoadBoundFromComputeBound) {
  layer_cache_metrics m;
  EXPECT_EQ(m.bound(), "mapped");
  m.active = true;
  m.blocked_s = 1.0;
  m.compute_s = 2.0;
  EXPECT_EQ(m.bound(), "load-bound");
  m.blocked_s = 0.05;
  EXPECT_EQ(m.bound(), "compute-bound");
  layer_cache_metrics later = m;
  later.hits = 10;
  later.compute_s = 5.0;
  const layer_cache_metrics d = later - m;
  EXPECT_EQ(d.hits, 10u);
  EXPECT_DOUBLE_EQ(d.compute_s, 3.0);
  EXPECT_NE(later.summary().find("10 hits"), std::string::npos);
}

// ---- end to end through the CLI ------------------------------------------------------------

const std::string k_stories = test::model_path("stories260K.gguf");
// --offload 0: the layer cache is the CPU path's; on a machine with a GPU, the default
// (--offload auto) would put every layer there.
const std::string k_once = " -p 'Once upon a time' -n 60 --temp 0 --offload 0";

// The smallest workable budget, from the error a too small one gets.
std::string minimum_budget() {
  auto r = test::run_cli("run -m " + k_stories + k_once + " --mem-budget 1K");
  EXPECT_EQ(r.status, 1);
  std::smatch mm;
  const std::regex re(R"(error: --mem-budget 1K is too small: one layer needs .+ \+ KV cache .+ \+ scratch .+; use at least ([0-9.]+[KMG])\n)");
  if (!std::regex_search(r.err, mm, re)) {
    ADD_FAILURE() << r.err;
    return "";
  }
  return mm[1].str();
}

TEST(LayerCacheEndToEnd, TooSmallABudgetIsRefusedWithTheMinimum) {
  EXPECT_FALSE(minimum_budget().empty());
  auto r = test::run_cli("run -m " + k_stories + k_once + " --mem-budget lots");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("not a size"), std::string::npos) << r.err;
}

TEST(LayerCacheEndToEnd, GreedyOutputUnderABudgetEqualsTheGolden) {
  const std::string golden = test::read_file(test::model_path("golden/stories260K_t0_n64_once.txt"));
  const std::string min = minimum_budget();
  ASSERT_FALSE(min.empty());
  const double min_k = std::stod(min) * (min.back() == 'M' ? 1024 : min.back() == 'G' ? 1048576 : 1);
  const std::string roomy = std::to_string(static_cast<int>(min_k + 600)) + "K";  // a few layers
  // With -b 2 the scratch shrinks by about 1.3M: this still holds only part of the layers.
  const std::string small_batch = std::to_string(static_cast<int>(min_k - 1000)) + "K";
  for (const std::string& args :
       {" --mem-budget " + min, " --mem-budget " + min + " --direct-io",
        " --mem-budget " + roomy + " --prefetch-distance 0", " --mem-budget " + roomy,
        " --mem-budget " + small_batch + " -b 2 --prefetch-distance 1"}) {
    auto r = test::run_cli("run -m " + k_stories + k_once + args + " --verbose");
    ASSERT_EQ(r.status, 0) << args << "\n" << r.err;
    EXPECT_EQ(r.out, golden) << args;
    EXPECT_NE(r.err.find("layer cache: "), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(" misses"), std::string::npos) << r.err;
    EXPECT_TRUE(r.err.find("load-bound") != std::string::npos ||
                r.err.find("compute-bound") != std::string::npos)
        << r.err;
  }
  // A budget that holds everything keeps the weights mapped.
  auto r = test::run_cli("run -m " + k_stories + k_once + " --mem-budget 1G --verbose");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, golden);
  EXPECT_NE(r.err.find("layer cache: off"), std::string::npos) << r.err;
}

TEST(LayerCacheEndToEnd, GeneratedStories110MQ4_0UnderAQuarterBudgetMatchesInMemory) {
  const std::string path = test::temp_dir() + "/layer-cache-stories110M-q4_0.gguf";
  auto mk = test::run_cli("make-model --shape stories110M --type q4_0 --vocab " +
                          test::model_path("vocab/ggml-vocab-llama-spm.gguf") + " -o " + path);
  ASSERT_EQ(mk.status, 0) << mk.err;
  const uint64_t quarter_k = std::filesystem::file_size(path) / 4 / 1024;
  const std::string args = "run -m " + path + " -p 'Once upon a time' -n 24 --temp 0 -c 128 -b 16 --offload 0";
  // In memory the weights would be repacked (cpu/repack.h), whose kernels sum in another order;
  // layers read through the cache keep the GGUF layout, so compare against that.
  auto whole = test::run_cli_env("TANDEM_REPACK=0", args);
  ASSERT_EQ(whole.status, 0) << whole.err;
  for (const std::string& extra : {std::string(""), std::string(" --prefetch-distance 0")}) {
    auto r = test::run_cli(args + " --mem-budget " + std::to_string(quarter_k) + "K --verbose" + extra);
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, whole.out) << extra;
    EXPECT_NE(r.err.find(" misses"), std::string::npos) << r.err;  // the cache was in use
  }
}

TEST(LayerCacheEndToEnd, BenchJsonReportsTheCacheMetrics) {
  // bench's context and batch are small: 300K holds one layer of stories260K and the rest.
  auto r = test::run_cli("bench -m " + k_stories + " -p 8 -n 4 -r 1 -o json --mem-budget 300K");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("\"layer_cache\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"active\": true"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"bound\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"misses\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"blocked_s\""), std::string::npos) << r.out;
}

}  // namespace
}  // namespace tandem
