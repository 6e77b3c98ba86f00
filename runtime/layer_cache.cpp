#include "runtime/layer_cache.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <new>
#include <numeric>

#include "runtime/error.h"

namespace tandem {
namespace {

constexpr uint64_t k_align = 4096;          // buffer, offset and length alignment (O_DIRECT-safe)
constexpr uint64_t k_merge_gap = 64 * 1024;  // extents closer than this are read in one go

uint64_t align_down(uint64_t v) { return v / k_align * k_align; }
uint64_t align_up(uint64_t v) { return (v + k_align - 1) / k_align * k_align; }

using clock = std::chrono::steady_clock;
double secs_since(clock::time_point t) {
  return std::chrono::duration<double>(clock::now() - t).count();
}

std::string bytes_str(uint64_t n) {
  if (n >= (1ull << 30)) return fmt::format("{:.2f} GiB", n / 1073741824.0);
  if (n >= (1ull << 20)) return fmt::format("{:.2f} MiB", n / 1048576.0);
  if (n >= (1ull << 10)) return fmt::format("{:.2f} KiB", n / 1024.0);
  return fmt::format("{} B", n);
}

}  // namespace

// ---- metrics ------------------------------------------------------------------------------

std::string layer_cache_metrics::bound() const {
  if (!active) return "mapped";
  const double layer_time = blocked_s + compute_s;
  if (layer_time <= 0) return "idle";
  return blocked_s > 0.1 * layer_time ? "load-bound" : "compute-bound";
}

std::string layer_cache_metrics::summary() const {
  if (!active)
    return fmt::format("layer cache: off, weights are views into the mapped file ({}); computing "
                       "{:.3f} s\n",
                       budget_bytes ? fmt::format("they fit --mem-budget {}", bytes_str(budget_bytes))
                                    : std::string("no --mem-budget"),
                       compute_s);
  std::string s = fmt::format(
      "layer cache: {} for {} layers of up to {} (--mem-budget {}), prefetch distance {}, direct "
      "I/O {}\n",
      bytes_str(capacity_bytes), capacity_layers, bytes_str(slot_bytes), bytes_str(budget_bytes),
      prefetch_distance, direct_io ? "on" : "off");
  if (streamed_layers > 0 || resident_layers > 0)
    s += fmt::format("  policy: {} layers kept resident, {} streamed through the ring ({} per pass); "
                     "{} passes, {} read per pass\n",
                     resident_layers, streamed_layers, bytes_str(streamed_bytes), passes,
                     bytes_str(static_cast<uint64_t>(bytes_per_pass())));
  s += fmt::format("  acquires: {} hits, {} misses ({} waited for a prefetch in flight)\n", hits,
                   misses, late_prefetches);
  s += fmt::format("  loads: {}, {} read in {:.3f} s ({:.2f} GB/s); {} evictions; {} read errors\n",
                   loads, bytes_str(bytes_read), load_s,
                   load_s > 0 ? static_cast<double>(bytes_read) / load_s / 1e9 : 0.0, evictions,
                   load_errors);
  s += fmt::format("  prefetch: {} requests, {} queued, {} already resident or in flight, {} "
                   "dropped\n",
                   prefetch_requests, prefetch_queued, prefetch_deduped, prefetch_dropped);
  const double layer_time = blocked_s + compute_s;
  s += fmt::format("  time: {:.3f} s blocked waiting for weights, {:.3f} s computing -> {} ({:.0f}% "
                   "of layer time waiting)\n",
                   blocked_s, compute_s, bound(), layer_time > 0 ? 100.0 * blocked_s / layer_time : 0.0);
  return s;
}

layer_cache_metrics operator-(const layer_cache_metrics& a, const layer_cache_metrics& b) {
  layer_cache_metrics d = a;
  d.hits -= b.hits;
  d.misses -= b.misses;
  d.late_prefetches -= b.late_prefetches;
  d.loads -= b.loads;
  d.bytes_read -= b.bytes_read;
  d.prefetch_requests -= b.prefetch_requests;
  d.prefetch_queued -= b.prefetch_queued;
  d.prefetch_deduped -= b.prefetch_deduped;
  d.prefetch_dropped -= b.prefetch_dropped;
  d.evictions -= b.evictions;
  d.load_errors -= b.load_errors;
  d.passes -= b.passes;
  d.blocked_s -= b.blocked_s;
  d.load_s -= b.load_s;
  d.compute_s -= b.compute_s;
  return d;
}

namespace {
// madvise(advice) over [p, p + n) widened to whole pages; its result (0 when p or n is empty).
int madvise_pages(const void* p, uint64_t n, int advice) {
  if (!p || n == 0) return 0;
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  const auto a = reinterpret_cast<uintptr_t>(p);
  const uintptr_t start = a / page * page;
  const uintptr_t end = (a + n + page - 1) / page * page;
  return madvise(reinterpret_cast<void*>(start), end - start, advice);
}
}  // namespace

void advise_willneed(const void* p, uint64_t n) {
  (void)madvise_pages(p, n, MADV_WILLNEED);
}

void populate_read(const void* p, uint64_t n) {
#ifndef MADV_POPULATE_READ
  constexpr int MADV_POPULATE_READ = 22;  // Linux 5.14
#endif
  if (madvise_pages(p, n, MADV_POPULATE_READ) == 0) return;
  if (errno != EINVAL) return;  // e.g. an I/O error: the reads later will report it
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint8_t sum = 0;
  for (uintptr_t q = a; q < a + n; q = (q / page + 1) * page)
    sum ^= *reinterpret_cast<const volatile uint8_t*>(q);
  (void)sum;
}

void advise_dontneed(const void* p, uint64_t n) {
  if (!p || n == 0) return;
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  const auto a = reinterpret_cast<uintptr_t>(p);
  const uintptr_t start = (a + page - 1) / page * page;
  const uintptr_t end = (a + n) / page * page;
  if (end > start) (void)madvise(reinterpret_cast<void*>(start), end - start, MADV_DONTNEED);
}

// ---- layout -------------------------------------------------------------------------------

uint64_t layer_cache::buffer_bytes(const std::vector<layer_extent>& extents) {
  std::vector<size_t> order(extents.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return extents[a].offset < extents[b].offset; });
  uint64_t bytes = 0;
  for (size_t i = 0; i < order.size();) {
    uint64_t start = extents[order[i]].offset, end = start + extents[order[i]].nbytes;
    size_t j = i + 1;
    while (j < order.size() && extents[order[j]].offset <= end + k_merge_gap) {
      end = std::max(end, extents[order[j]].offset + extents[order[j]].nbytes);
      ++j;
    }
    bytes += align_up(end) - align_down(start);
    i = j;
  }
  return bytes;
}

// ---- construction -------------------------------------------------------------------------

layer_cache::layer_cache(layer_cache_config cfg, std::vector<std::vector<layer_extent>> slots)
    : cfg_(std::move(cfg)) {
  cfg_.chunk_bytes = std::max<uint64_t>(k_align, align_down(cfg_.chunk_bytes));
  cfg_.queue_capacity = std::max<size_t>(1, cfg_.queue_capacity);
  fd_ = ::open(cfg_.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0)
    throw error(fmt::format("{}: cannot open for reading: {}", cfg_.path, std::strerror(errno)));
  struct stat st {};
  if (fstat(fd_, &st) != 0) {
    const int e = errno;
    ::close(fd_);
    throw error(fmt::format("{}: cannot stat: {}", cfg_.path, std::strerror(e)));
  }
  file_size_ = static_cast<uint64_t>(st.st_size);
  if (cfg_.direct_io) {
#ifdef O_DIRECT
    direct_fd_ = ::open(cfg_.path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
#endif
    // Filesystems without O_DIRECT (tmpfs) refuse the open: reads go through the page cache.
    direct_ok_.store(direct_fd_ >= 0);
  }

  slots_.resize(slots.size());
  for (size_t si = 0; si < slots.size(); ++si) {
    slot_t& s = slots_[si];
    s.extents = std::move(slots[si]);
    for (const layer_extent& e : s.extents)
      if (e.offset > file_size_ || e.nbytes > file_size_ - e.offset) {
        const std::string msg = fmt::format(
            "{}: bytes {}..{} lie past the end of the file ({} bytes)", cfg_.path, e.offset,
            e.offset + e.nbytes, file_size_);
        if (direct_fd_ >= 0) ::close(direct_fd_);
        ::close(fd_);
        throw error(msg);
      }
    std::vector<size_t> order(s.extents.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return s.extents[a].offset < s.extents[b].offset; });
    s.ext_buf_off.assign(s.extents.size(), 0);
    for (size_t i = 0; i < order.size();) {
      uint64_t start = s.extents[order[i]].offset;
      uint64_t end = start + s.extents[order[i]].nbytes;
      size_t j = i + 1;
      while (j < order.size() && s.extents[order[j]].offset <= end + k_merge_gap) {
        end = std::max(end, s.extents[order[j]].offset + s.extents[order[j]].nbytes);
        ++j;
      }
      range r;
      r.file_off = align_down(start);
      r.need_end = end;
      r.len = align_up(end) - r.file_off;
      r.buf_off = s.bytes;
      for (size_t k = i; k < j; ++k)
        s.ext_buf_off[order[k]] = r.buf_off + (s.extents[order[k]].offset - r.file_off);
      s.bytes += r.len;
      s.ranges.push_back(r);
      i = j;
    }
    s.ptrs.assign(s.extents.size(), nullptr);
    max_slot_bytes_ = std::max(max_slot_bytes_, s.bytes);
  }
  if (max_slot_bytes_ > cfg_.capacity_bytes) {
    if (direct_fd_ >= 0) ::close(direct_fd_);
    ::close(fd_);
    throw error(fmt::format("layer cache: a layer needs {} but the cache holds {}",
                            bytes_str(max_slot_bytes_), bytes_str(cfg_.capacity_bytes)));
  }
  m_.active = true;
  m_.capacity_bytes = cfg_.capacity_bytes;
  m_.slot_bytes = max_slot_bytes_;
  m_.capacity_layers = capacity_layers();
  m_.prefetch_distance = cfg_.prefetch_distance;
  m_.direct_io = direct_io();
  if (cfg_.keep_resident) choose_kept();
  loader_ = std::thread([this] { loader_main(); });
}

layer_cache::~layer_cache() {
  shutdown();
  for (slot_t& s : slots_) free_buffer(s.buf);
  for (buffer& b : pool_) free_buffer(b);
  if (direct_fd_ >= 0) ::close(direct_fd_);
  if (fd_ >= 0) ::close(fd_);
}

void layer_cache::choose_kept() {
  const int n = n_slots();
  const int ring = std::max(1, cfg_.prefetch_distance + 1);
  uint64_t total = 0;
  for (const slot_t& s : slots_) total += s.bytes;
  // No ring when all fit (by their own sizes: capacity_layers counts the largest).
  const int keep = total <= cfg_.capacity_bytes ? n : std::clamp(capacity_layers() - ring, 0, n);
  // Spread over the walk, so that the loader reads streamed slots while kept ones compute.
  m_.resident_layers = keep;
  m_.streamed_layers = n - keep;
  for (int i = 0; i < n; ++i) {
    slot_t& s = slots_[static_cast<size_t>(i)];
    s.keep = static_cast<int64_t>(i + 1) * keep / n != static_cast<int64_t>(i) * keep / n;
    if (!s.keep) m_.streamed_bytes += s.bytes;
  }
}

void layer_cache::free_buffer(buffer& b) {
  std::free(b.p);
  b = {};
}

uint64_t layer_cache::slot_bytes(int slot) const {
  return slots_.at(static_cast<size_t>(slot)).bytes;
}

int layer_cache::capacity_layers() const {
  return max_slot_bytes_ ? static_cast<int>(cfg_.capacity_bytes / max_slot_bytes_) : n_slots();
}

bool layer_cache::resident(int slot) const {
  std::lock_guard<std::mutex> lk(mu_);
  return slots_.at(static_cast<size_t>(slot)).st == state::ready;
}

size_t layer_cache::queued() const {
  std::lock_guard<std::mutex> lk(mu_);
  return queue_.size();
}

layer_cache_metrics layer_cache::metrics() const {
  std::lock_guard<std::mutex> lk(mu_);
  layer_cache_metrics m = m_;
  m.direct_io = direct_io();
  return m;
}

// ---- handles ------------------------------------------------------------------------------

layer_cache::handle& layer_cache::handle::operator=(handle&& o) noexcept {
  if (this != &o) {
    reset();
    c_ = o.c_;
    slot_ = o.slot_;
    ptrs_ = o.ptrs_;
    o.c_ = nullptr;
  }
  return *this;
}

void layer_cache::handle::reset() {
  if (c_) c_->release(slot_);
  c_ = nullptr;
}

void layer_cache::release(int slot) {
  std::lock_guard<std::mutex> lk(mu_);
  slot_t& s = slots_[static_cast<size_t>(slot)];
  if (--s.pins == 0) cv_.notify_all();
}

// ---- eviction -----------------------------------------------------------------------------

int layer_cache::walk_distance(int slot) const {
  const int n = n_slots();
  if (cursor_ < 0) return slot;
  const int d = ((slot - cursor_) % n + n) % n;
  return d == 0 ? n : d;  // the slot just acquired is needed again last
}

bool layer_cache::protected_slot(int slot) const {
  const int d = cfg_.prefetch_distance, n = n_slots();
  if (d <= 0 || cursor_ < 0) return false;
  if (cfg_.keep_resident) {  // the next d streamed slots (kept ones are never victims anyway)
    if (slots_[static_cast<size_t>(slot)].keep) return false;
    int seen = 0;
    for (int k = 1; k < n && seen < d; ++k) {
      const int s = (cursor_ + k) % n;
      if (slots_[static_cast<size_t>(s)].keep) continue;
      if (s == slot) return true;
      ++seen;
    }
    return false;
  }
  const int dist = ((slot - cursor_) % n + n) % n;
  return dist >= 1 && dist <= d;
}

void layer_cache::evict(int victim) {
  slot_t& s = slots_[static_cast<size_t>(victim)];
  pool_.push_back(s.buf);
  s.buf = {};
  std::fill(s.ptrs.begin(), s.ptrs.end(), nullptr);
  s.st = state::empty;
  ++m_.evictions;
}

bool layer_cache::reserve(std::unique_lock<std::mutex>&, int slot, uint64_t need, bool demand,
                          buffer* out) {
  *out = {};
  if (need == 0) return true;
  for (;;) {
    // A free buffer that is large enough (the smallest such).
    size_t best = pool_.size();
    for (size_t i = 0; i < pool_.size(); ++i)
      if (pool_[i].cap >= need && (best == pool_.size() || pool_[i].cap < pool_[best].cap)) best = i;
    if (best < pool_.size()) {
      *out = pool_[best];
      pool_.erase(pool_.begin() + static_cast<std::ptrdiff_t>(best));
      return true;
    }
    if (allocated_ + need <= cfg_.capacity_bytes) {
      void* p = nullptr;
      if (posix_memalign(&p, k_align, need) != 0 || !p) throw std::bad_alloc();
      allocated_ += need;
      *out = {static_cast<uint8_t*>(p), need};
      return true;
    }
    if (!pool_.empty()) {  // free buffers too small to use: give their memory back
      allocated_ -= pool_.back().cap;
      free_buffer(pool_.back());
      pool_.pop_back();
      continue;
    }
    // Evict: least recently used among unpinned, unprotected resident slots that are not kept; for
    // a demand load, failing that, the protected slot needed last, and failing that (slot sizes
    // that do not add up to the plan), a kept one.
    int victim = -1, victim_prot = -1, prot_dist = -1, victim_kept = -1;
    const int n = n_slots();
    for (int i = 0; i < n; ++i) {
      const slot_t& s = slots_[static_cast<size_t>(i)];
      if (i == slot || s.st != state::ready || s.pins > 0) continue;
      if (s.keep) {
        if (demand && victim_kept < 0) victim_kept = i;
      } else if (!protected_slot(i)) {
        // keep_resident: the streamed slot the walk needs last (the one used last, in a cyclic
        // walk: the ring then holds exactly the slots ahead, whatever the loads' timing).
        if (victim < 0 ||
            (cfg_.keep_resident ? walk_distance(i) > walk_distance(victim)
                                : s.last_use < slots_[static_cast<size_t>(victim)].last_use))
          victim = i;
      } else if (demand) {
        const int dist = ((i - cursor_) % n + n) % n;
        if (dist > prot_dist) prot_dist = dist, victim_prot = i;
      }
    }
    if (victim < 0) victim = victim_prot;
    if (victim < 0) victim = victim_kept;
    if (victim < 0) return false;
    evict(victim);
  }
}

// ---- loading ------------------------------------------------------------------------------

std::string layer_cache::read_slot(int slot, uint8_t* buf, bool* stopped, uint64_t* nread) {
  const slot_t& s = slots_[static_cast<size_t>(slot)];
  const std::string what =
      slot < static_cast<int>(cfg_.layer_ids.size())
          ? fmt::format("layer {}", cfg_.layer_ids[static_cast<size_t>(slot)])
          : fmt::format("slot {}", slot);
  bool direct = direct_ok_.load(std::memory_order_relaxed);
  for (const range& r : s.ranges) {
    uint64_t pos = 0;
    while (pos < r.len) {
      if (stop_.load(std::memory_order_acquire)) {
        *stopped = true;
        return {};
      }
      const uint64_t off = r.file_off + pos;
      const uint64_t n = std::min(cfg_.chunk_bytes - pos % cfg_.chunk_bytes, r.len - pos);
      if (cfg_.before_chunk) {
        cfg_.before_chunk(slot, off);
        if (stop_.load(std::memory_order_acquire)) {
          *stopped = true;
          return {};
        }
      }
      const ssize_t got = ::pread(direct ? direct_fd_ : fd_, buf + r.buf_off + pos, n,
                                  static_cast<off_t>(off));
      if (got < 0) {
        const int e = errno;
        if (e == EINTR) continue;
        if (direct && e == EINVAL) {  // the filesystem refuses O_DIRECT reads after all
          direct = false;
          direct_ok_.store(false);
          continue;
        }
        return fmt::format("{}: reading {} failed at offset {} ({} bytes): {}", cfg_.path, what,
                           off, n, std::strerror(e));
      }
      if (got == 0) {
        if (off >= r.need_end) break;  // only alignment padding lies past the end
        struct stat st {};
        const uint64_t now = fstat(fd_, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
        return fmt::format("{}: reading {} failed at offset {}: unexpected end of file (the "
                           "layer needs bytes up to {}; the file is now {} bytes: was it "
                           "truncated or replaced?)",
                           cfg_.path, what, off, r.need_end, now);
      }
      *nread += static_cast<uint64_t>(got);
      pos += static_cast<uint64_t>(got);
      if (direct && static_cast<uint64_t>(got) % k_align != 0) direct = false;  // unaligned now
    }
  }
  return {};
}

void layer_cache::finish_load(int slot, buffer b, const std::string& err, bool stopped,
                              uint64_t nread, double secs, bool store_error) {
  slot_t& s = slots_[static_cast<size_t>(slot)];
  m_.bytes_read += nread;
  m_.load_s += secs;
  if (stopped || !err.empty()) {
    if (b.p) pool_.push_back(b);
    s.st = state::empty;
    if (!err.empty()) {
      ++m_.load_errors;
      if (store_error) s.error = err;
    }
  } else {
    s.buf = b;
    for (size_t i = 0; i < s.ptrs.size(); ++i) s.ptrs[i] = b.p + s.ext_buf_off[i];
    s.st = state::ready;
    s.last_use = ++tick_;
    ++m_.loads;
  }
  cv_.notify_all();
}

void layer_cache::loader_main() {
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] { return stop_.load() || !queue_.empty(); });
    if (stop_.load()) break;
    const int slot = queue_.front();
    queue_.pop_front();
    slot_t& s = slots_[static_cast<size_t>(slot)];
    if (s.st != state::queued) continue;
    buffer b;
    bool ok = false;
    try {
      if (s.buf.p) {  // reserved by prefetch (keep_resident)
        b = s.buf;
        s.buf = {};
        ok = true;
      } else {
        ok = reserve(lk, slot, s.bytes, false, &b);
      }
    } catch (const std::bad_alloc&) {
      s.st = state::empty;
      s.error = fmt::format("out of memory allocating {} for a layer buffer", bytes_str(s.bytes));
      ++m_.load_errors;
      cv_.notify_all();
      continue;
    }
    if (!ok) {  // no room that may be evicted: the acquire will read it itself
      s.st = state::empty;
      ++m_.prefetch_dropped;
      cv_.notify_all();
      continue;
    }
    s.st = state::loading;
    s.by_loader = true;
    ++loader_busy_;
    lk.unlock();
    bool stopped = false;
    uint64_t nread = 0;
    const auto t0 = clock::now();
    const std::string err = read_slot(slot, b.p, &stopped, &nread);
    const double secs = secs_since(t0);
    lk.lock();
    --loader_busy_;
    finish_load(slot, b, err, stopped, nread, secs, true);
  }
  for (int slot : queue_) drop_queued(slot);
  queue_.clear();
  cv_.notify_all();
}

void layer_cache::drop_queued(int slot) {
  slot_t& s = slots_[static_cast<size_t>(slot)];
  s.st = state::empty;
  if (s.buf.p) pool_.push_back(s.buf);
  s.buf = {};
}

bool layer_cache::prefetch(int slot) {
  if (slot < 0 || slot >= n_slots())
    throw error(fmt::format("layer cache: prefetch of slot {} (the cache has {})", slot, n_slots()));
  std::unique_lock<std::mutex> lk(mu_);
  ++m_.prefetch_requests;
  if (stop_.load()) return false;
  slot_t& s = slots_[static_cast<size_t>(slot)];
  if (s.st != state::empty || !s.error.empty()) {  // a pending error waits for its acquire
    ++m_.prefetch_deduped;
    return false;
  }
  if (queue_.size() >= cfg_.queue_capacity) {
    ++m_.prefetch_dropped;
    return false;
  }
  // keep_resident: the buffer is taken (and its slot evicted) now, in the caller's walk order,
  // not when the loader gets to it: what stays resident then does not depend on the loader's
  // timing, and a pass reads exactly the streamed slots.
  if (cfg_.keep_resident) {
    buffer b;
    bool ok = false;
    try {
      ok = reserve(lk, slot, s.bytes, false, &b);
    } catch (const std::bad_alloc&) {
      ok = false;
    }
    if (!ok) {
      ++m_.prefetch_dropped;
      return false;
    }
    s.buf = b;
  }
  s.st = state::queued;
  queue_.push_back(slot);
  ++m_.prefetch_queued;
  cv_.notify_all();
  return true;
}

int layer_cache::prefetch_ahead(int slot, int distance) {
  if (slot < 0 || slot >= n_slots())
    throw error(fmt::format("layer cache: prefetch after slot {} (the cache has {})", slot, n_slots()));
  std::vector<int> want;
  {
    std::lock_guard<std::mutex> lk(mu_);
    const int n = n_slots();
    for (int k = 1; k < n && static_cast<int>(want.size()) < distance; ++k) {
      const int s = (slot + k) % n;
      const slot_t& t = slots_[static_cast<size_t>(s)];
      if (t.keep && t.st == state::ready) continue;
      want.push_back(s);
    }
  }
  int queued = 0;
  for (int s : want) queued += prefetch(s) ? 1 : 0;
  return queued;
}

layer_cache::handle layer_cache::acquire(int slot) {
  if (slot < 0 || slot >= n_slots())
    throw error(fmt::format("layer cache: acquire of slot {} (the cache has {})", slot, n_slots()));
  const auto t0 = clock::now();
  std::unique_lock<std::mutex> lk(mu_);
  if (stop_.load()) throw error("the layer cache is shut down");
  if (cursor_ < 0 || slot <= cursor_) ++m_.passes;
  cursor_ = slot;  // the protected window now follows this slot
  slot_t& s = slots_[static_cast<size_t>(slot)];
  if (s.st == state::ready) {
    ++s.pins;
    s.last_use = ++tick_;
    ++m_.hits;
    return handle(this, slot, s.ptrs.data());
  }
  ++m_.misses;
  struct blocked_timer {  // time blocked, on every way out (lock held then)
    layer_cache_metrics& m;
    clock::time_point t0;
    ~blocked_timer() { m.blocked_s += secs_since(t0); }
  } timer{m_, t0};
  bool waited = false;
  for (;;) {
    if (stop_.load()) throw error("the layer cache is shut down");
    if (!s.error.empty()) {
      const std::string e = std::move(s.error);
      s.error.clear();
      throw error(e);
    }
    if (s.st == state::ready) {
      ++s.pins;
      s.last_use = ++tick_;
      return handle(this, slot, s.ptrs.data());
    }
    if (s.st == state::loading) {
      if (!waited && s.by_loader) ++m_.late_prefetches;
      waited = true;
      cv_.wait(lk);
      continue;
    }
    buffer b;
    if (s.st == state::queued) {  // take it from the queue and read it here
      queue_.erase(std::find(queue_.begin(), queue_.end(), slot));
      s.st = state::empty;
      b = s.buf;  // the buffer prefetch reserved (keep_resident), if any
      s.buf = {};
    }
    if (!b.p && !reserve(lk, slot, s.bytes, true, &b)) {  // every slot pinned or loading: wait
      cv_.wait(lk);
      continue;
    }
    s.st = state::loading;
    s.by_loader = false;
    lk.unlock();
    bool stopped = false;
    uint64_t nread = 0;
    const auto tl = clock::now();
    const std::string err = read_slot(slot, b.p, &stopped, &nread);
    const double secs = secs_since(tl);
    lk.lock();
    finish_load(slot, b, err, stopped, nread, secs, false);
    if (stopped) throw error("the layer cache is shut down");
    if (!err.empty()) throw error(err);
  }
}

void layer_cache::shutdown() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_.store(true, std::memory_order_release);
    for (int slot : queue_) drop_queued(slot);
    queue_.clear();
  }
  cv_.notify_all();
  std::lock_guard<std::mutex> jl(join_mu_);
  if (loader_.joinable() && loader_.get_id() != std::this_thread::get_id()) loader_.join();
}

void layer_cache::wait_idle() {
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait(lk, [&] { return stop_.load() || (queue_.empty() && loader_busy_ == 0); });
}

}  // namespace tandem
