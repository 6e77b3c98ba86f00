// The async layer cache of the CPU path (see docs/ARCHITECTURE.md, "The async layer cache").
//
// When the layers' weights do not fit the memory budget (--mem-budget), they are read from the
// model file with pread into a bounded set of aligned buffers instead of being used through the
// mapping. The cache knows nothing of tensors: each slot (one layer) is a list of byte extents of
// the file, and a pinned slot hands out one pointer per extent.
//
//   acquire(slot)   blocks only on a miss (reading the layer in the calling thread, or waiting for
//                   the background load already in flight) and returns an RAII pin;
//   prefetch(slot)  queues a background load and returns at once; a slot already resident, queued
//                   or in flight is not queued twice, and a full queue refuses the request;
//   eviction        never touches a pinned slot, nor (for background loads) one of the next
//                   `prefetch_distance` slots after the last acquired one (wrapping round, so that
//                   the end of one token protects the start of the next); the rest go by least
//                   recent use. A demand load that finds only protected slots takes the one needed
//                   last rather than deadlock;
//   keep_resident   the policy for a cyclic walk of the slots (0, 1, .., n-1, 0, ..): plain LRU
//                   over such a walk evicts exactly the slot needed next, so that every pass reads
//                   every slot. With keep_resident, a fixed set of slots (as many as the capacity
//                   holds beside a ring of prefetch_distance + 1 buffers, spread evenly over the
//                   walk) is never evicted once loaded, and only the others stream through the
//                   ring: a pass reads the streamed slots' bytes, not all of them. Among the
//                   streamed slots, the one the walk needs last is evicted first;
//   shutdown()      stops and joins the loader, even in the middle of a load (reads go in chunks and
//                   check a stop flag between them); later acquires throw;
//   errors          a failed read (I/O error, file truncated) is thrown by acquire as a
//                   tandem::error naming the file and the offset, whether the read was the
//                   caller's own or a background one.
//
// Thread-safe: any number of threads may acquire and prefetch at once. A thread that holds more
// pins than the capacity holds layers and asks for one more waits for ever: hold few pins.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace tandem {

// Counters of one cache (or, for a run whose weights are all mapped, only compute_s). The CLI
// prints them with --verbose and `tandem bench -o json` reports them.
struct layer_cache_metrics {
  bool active = false;            // false: every weight is a view into the mapped file
  uint64_t budget_bytes = 0;      // --mem-budget (0 = none)
  uint64_t capacity_bytes = 0;    // what the cache may hold (budget - KV cache - scratch)
  uint64_t slot_bytes = 0;        // buffer size of the largest layer
  int capacity_layers = 0;        // capacity_bytes / slot_bytes
  int prefetch_distance = 0;      // effective (clamped to capacity_layers - 1)
  bool direct_io = false;         // reads bypass the page cache (O_DIRECT)
  // keep_resident policy (0 streamed layers and 0 bytes when off: every layer may be evicted).
  int resident_layers = 0;        // slots kept once loaded
  int streamed_layers = 0;        // slots read on every pass
  uint64_t streamed_bytes = 0;    // their buffer bytes: what a pass reads once warm

  uint64_t hits = 0;              // acquire found the layer resident
  uint64_t misses = 0;            // acquire had to wait: its own read or a load in flight
  uint64_t late_prefetches = 0;   // misses that waited for a background load already in flight
  uint64_t loads = 0;             // layers read (background + demand)
  uint64_t bytes_read = 0;
  uint64_t prefetch_requests = 0;
  uint64_t prefetch_queued = 0;
  uint64_t prefetch_deduped = 0;  // already resident, queued or in flight
  uint64_t prefetch_dropped = 0;  // queue full, or no evictable room for a background load
  uint64_t evictions = 0;
  uint64_t load_errors = 0;
  uint64_t passes = 0;            // walks over the slots (an acquire of a slot <= the last one)
  double blocked_s = 0;           // time spent in acquire on misses (waiting for weights)
  double load_s = 0;              // time spent reading (all loads, background included)
  double compute_s = 0;           // time computing layers and the output head (the backend's)

  // "load-bound" when the layers waited for their weights for more than 10% of the layer time,
  // "compute-bound" when loads were hidden behind compute, "mapped" when the cache is unused.
  std::string bound() const;
  // bytes_read / passes (0 when no pass): a decode token is one pass over the layers.
  double bytes_per_pass() const { return passes ? static_cast<double>(bytes_read) / passes : 0.0; }
  // Several lines for `tandem run --verbose`.
  std::string summary() const;
};
// Counter differences (the configuration fields are taken from a).
layer_cache_metrics operator-(const layer_cache_metrics& a, const layer_cache_metrics& b);

struct layer_extent {
  uint64_t offset = 0;  // absolute offset in the file
  uint64_t nbytes = 0;
};

struct layer_cache_config {
  std::string path;                  // the file to read (opened by the cache)
  uint64_t capacity_bytes = 0;       // bytes of layer buffers the cache may hold
  int prefetch_distance = 0;         // protected slots after the last acquired one
  size_t queue_capacity = 8;         // pending background requests at most
  bool direct_io = false;            // try O_DIRECT, falling back when the filesystem refuses it
  uint64_t chunk_bytes = 4u << 20;   // read granularity (the stop flag is checked between chunks)
  std::vector<int> layer_ids;        // optional: the layer of each slot, for error messages
  bool keep_resident = false;        // the cyclic-walk policy (see the top of this file)
  // Test hook: called before each chunk is read, outside the lock, in the reading thread.
  std::function<void(int slot, uint64_t offset)> before_chunk;
};

class layer_cache {
 public:
  // One slot per entry of `slots`. Opens the file; throws tandem::error when it cannot, or when a
  // slot is larger than the capacity.
  layer_cache(layer_cache_config cfg, std::vector<std::vector<layer_extent>> slots);
  ~layer_cache();
  layer_cache(const layer_cache&) = delete;
  layer_cache& operator=(const layer_cache&) = delete;

  // A pin on a resident slot; releases it when destroyed. Must not outlive the cache.
  class handle {
   public:
    handle() = default;
    handle(handle&& o) noexcept : c_(o.c_), slot_(o.slot_), ptrs_(o.ptrs_) { o.c_ = nullptr; }
    handle& operator=(handle&& o) noexcept;
    ~handle() { reset(); }
    void reset();
    explicit operator bool() const { return c_ != nullptr; }
    int slot() const { return slot_; }
    // The bytes of extent i of the slot (as given to the constructor).
    const uint8_t* data(size_t i) const { return ptrs_[i]; }

   private:
    friend class layer_cache;
    handle(layer_cache* c, int slot, const uint8_t* const* ptrs) : c_(c), slot_(slot), ptrs_(ptrs) {}
    layer_cache* c_ = nullptr;
    int slot_ = -1;
    const uint8_t* const* ptrs_ = nullptr;
  };

  handle acquire(int slot);
  // Queues a background load. Returns true when queued, false when not needed (resident, queued,
  // in flight) or refused (queue full, shut down).
  bool prefetch(int slot);
  // Queues the next `distance` slots after `slot` in the walk that a pass reads: with
  // keep_resident, kept slots already resident are skipped (they need no load). Returns how many
  // were queued.
  int prefetch_ahead(int slot, int distance);
  // Stops the loader and joins it; idempotent. Pending requests are dropped, a load in progress is
  // abandoned at its next chunk, waiting acquires throw.
  void shutdown();

  // Waits until no request is queued or being loaded (tests, measurements).
  void wait_idle();
  bool resident(int slot) const;
  bool kept(int slot) const { return slots_.at(static_cast<size_t>(slot)).keep; }
  size_t queued() const;
  bool stopping() const { return stop_.load(std::memory_order_acquire); }
  int n_slots() const { return static_cast<int>(slots_.size()); }
  uint64_t slot_bytes(int slot) const;      // buffer bytes slot needs (aligned)
  uint64_t max_slot_bytes() const { return max_slot_bytes_; }
  int capacity_layers() const;
  bool direct_io() const { return direct_ok_.load(std::memory_order_relaxed); }
  layer_cache_metrics metrics() const;

  // The buffer bytes a slot made of these extents needs (ranges rounded to 4 KiB).
  static uint64_t buffer_bytes(const std::vector<layer_extent>& extents);

 private:
  enum class state { empty, queued, loading, ready };
  struct range {
    uint64_t file_off = 0;  // aligned down
    uint64_t need_end = 0;  // the last byte the extents need (exclusive)
    uint64_t len = 0;       // aligned up
    uint64_t buf_off = 0;
  };
  struct buffer {
    uint8_t* p = nullptr;
    uint64_t cap = 0;
  };
  struct slot_t {
    std::vector<layer_extent> extents;
    std::vector<range> ranges;
    std::vector<uint64_t> ext_buf_off;   // where each extent lies in the buffer
    std::vector<const uint8_t*> ptrs;    // valid while ready
    uint64_t bytes = 0;
    state st = state::empty;
    bool by_loader = false;              // the load in flight is the loader's
    buffer buf;                          // ready; or queued, reserved by prefetch (keep_resident)
    int pins = 0;
    bool keep = false;                   // keep_resident: never evicted once loaded
    uint64_t last_use = 0;
    std::string error;                   // a failed background load, thrown by the next acquire
  };

  void loader_main();
  void release(int slot);
  bool protected_slot(int slot) const;  // in the window after the last acquired slot
  void choose_kept();                   // keep_resident: marks the kept slots
  void drop_queued(int slot);           // a queued request is dropped (its buffer to the pool)
  int walk_distance(int slot) const;    // acquires from the last acquired slot until slot's turn
  // Finds room for `need` bytes (evicting); false when there is none now. demand: may evict
  // protected slots. Lock held.
  bool reserve(std::unique_lock<std::mutex>& lk, int slot, uint64_t need, bool demand, buffer* out);
  void evict(int victim);
  // Reads slot into buf; returns "" or the error text. Lock not held. stopped set on shutdown.
  std::string read_slot(int slot, uint8_t* buf, bool* stopped, uint64_t* nread);
  // Lock held. store_error: keep a failure for the next acquire (background loads).
  void finish_load(int slot, buffer buf, const std::string& err, bool stopped, uint64_t nread,
                   double secs, bool store_error);
  static void free_buffer(buffer& b);

  layer_cache_config cfg_;
  std::vector<slot_t> slots_;
  uint64_t max_slot_bytes_ = 0;
  int fd_ = -1;
  int direct_fd_ = -1;
  uint64_t file_size_ = 0;

  mutable std::mutex mu_;
  std::condition_variable cv_;         // state changes: loads done, pins released, requests
  std::deque<int> queue_;
  std::vector<buffer> pool_;           // free buffers kept for reuse
  uint64_t allocated_ = 0;             // bytes of all buffers (slots + pool)
  uint64_t tick_ = 0;
  int cursor_ = -1;                    // last acquired slot
  int loader_busy_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<bool> direct_ok_{false};  // O_DIRECT opened and not refused by a read yet
  std::mutex join_mu_;
  layer_cache_metrics m_;
  std::thread loader_;
};

// madvise(MADV_WILLNEED) over [p, p + n), widened to whole pages; ignores failures.
void advise_willneed(const void* p, uint64_t n);
// Maps the pages of [p, p + n) of a read-only file mapping into this process now
// (MADV_POPULATE_READ, or one read per page where the kernel lacks it), so that a later first
// read of a page does not fault; ignores failures.
void populate_read(const void* p, uint64_t n);
// Tells the kernel the whole pages inside [p, p + n) of a read-only file mapping will not be read
// soon (MADV_DONTNEED: dropped from this process, read again from the file if touched).
void advise_dontneed(const void* p, uint64_t n);

}  // namespace tandem
