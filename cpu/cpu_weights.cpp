// The CPU backend's weights and their residency: views into the mapping, copies in one arena
// (repacked for the kernels where they have a layout), or layers streamed through the layer
// cache (runtime/layer_cache.h) under a memory limit or --mem-budget.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <string>
#include <vector>

#include "cpu/cpu_backend.h"
#include "cpu/kernels.h"

namespace tandem {
namespace {

// Every weight of a layer (runtime/model.h's lists).
const std::vector<weight layer_weights::*>& layer_fields() {
  static const std::vector<weight layer_weights::*> fields = [] {
    std::vector<weight layer_weights::*> f(std::begin(layer_vectors), std::end(layer_vectors));
    for (const layer_matrix& lm : layer_matrices) f.push_back(lm.field);
    return f;
  }();
  return fields;
}

bool repack_enabled() {
  const char* env = std::getenv("TANDEM_REPACK");
  return !(env && std::string(env) == "0");
}

// A size as a user would write it: "1M", "1536M", "300K", or bytes.
std::string size_arg(uint64_t n) {
  if (n && n % (1ull << 30) == 0) return fmt::format("{}G", n >> 30);
  if (n && n % (1ull << 20) == 0) return fmt::format("{}M", n >> 20);
  if (n && n % (1ull << 10) == 0) return fmt::format("{}K", n >> 10);
  return std::to_string(n);
}

std::string size_str(uint64_t n) {
  if (n >= (1ull << 30)) return fmt::format("{:.2f} GiB", n / 1073741824.0);
  if (n >= (1ull << 20)) return fmt::format("{:.2f} MiB", n / 1048576.0);
  if (n >= (1ull << 10)) return fmt::format("{:.2f} KiB", n / 1024.0);
  return fmt::format("{} B", n);
}

// Rounded up to a tenth of its unit, in a form --mem-budget accepts ("1.3M").
std::string size_at_least(uint64_t n) {
  const char* units = "KMGT";
  double v = static_cast<double>(n) / 1024.0;
  int u = 0;
  while (v >= 1024.0 && u < 3) v /= 1024.0, ++u;
  return fmt::format("{:.1f}{}", std::ceil(v * 10.0) / 10.0, units[u]);
}

}  // namespace

const cpu_backend::packed_layer& cpu_backend::packed(int il) const {
  static const packed_layer none;
  return il >= 0 && static_cast<size_t>(il) < packed_.size() ? packed_[static_cast<size_t>(il)]
                                                             : none;
}

uint64_t cpu_backend::packed_bytes(const weight& w) {
  if (!w || !cpu::x16_supported(w.type(), w.cols())) return 0;
  const cpu::type_kernels* k = cpu::kernels().find(w.type());
  return k && k->mv_x16 ? cpu::x16_bytes(w.type(), w.rows(), w.cols()) : 0;
}

uint64_t cpu_backend::resident_bytes(const weight& w) {
  if (!w) return 0;
  const uint64_t p = packed_bytes(w);
  return ((p ? p : w.nbytes()) + 63) / 64 * 64;
}

uint8_t* cpu_backend::take(uint64_t bytes) {
  uint8_t* p = arena_.data() + arena_used_;
  arena_used_ += (bytes + 63) / 64 * 64;
  return p;
}

void cpu_backend::copy(const weight& w, gguf_tensor* t) {
  uint8_t* p = take(w.nbytes());
  std::memcpy(p, w.data(), w.nbytes());
  advise_dontneed(w.data(), w.nbytes());
  t->data = p;
}

void cpu_backend::pack(const weight& w, cpu::packed_matrix* out) {
  const uint64_t n = packed_bytes(w);
  if (n == 0) return;
  *out = cpu::packed_matrix(w.type(), w.data(), w.rows(), w.cols(), take(n));
  advise_dontneed(w.data(), w.nbytes());
}

weights_plan cpu_backend::plan_memory(uint64_t layer_bytes, uint64_t kv_bytes, uint64_t scratch) {
  weights_need need;
  const bool tied = m_.output().t == m_.tok_embd().t;
  need.layers = layer_bytes;
  need.mapped = layer_bytes + m_.tok_embd().nbytes() +
                (opt_.output ? m_.output_norm().nbytes() + (tied ? 0 : m_.output().nbytes()) : 0);
  if (repack_enabled()) {
    need.copies =
        (m_.tok_embd().nbytes() + 63) / 64 * 64 + (opt_.output ? resident_bytes(m_.output()) : 0);
    for (int il : opt_.layers)
      for (auto f : layer_fields()) need.copies += resident_bytes(m_.layer(il).*f);
  }
  need.kv = kv_bytes;
  need.scratch = scratch;
  const weights_plan wp = plan_weights(need, limit_);
  if (need.copies && wp.how == weights_plan::kind::mapped)
    notes_.push_back(fmt::format(
        "weights left in the file mapping, not repacked for the faster kernels: the copies "
        "({}) and the KV cache ({}) would not fit the memory limit, {}",
        size_str(need.copies), size_str(kv_bytes), limit_.describe()));
  return wp;
}

const layer_weights& cpu_backend::resident_layer(int il) const {
  return il >= 0 && static_cast<size_t>(il) < resident_.size() &&
                 !resident_[static_cast<size_t>(il)].fields.empty()
             ? resident_[static_cast<size_t>(il)].lw
             : m_.layer(il);
}

const layer_weights& cpu_backend::layer(int il, layer_cache::handle& pin) {
  if (!cache_) return resident_layer(il);
  const int slot = il >= 0 && il < hp_.n_layer ? slot_of_[static_cast<size_t>(il)] : -1;
  if (slot < 0) throw std::logic_error(fmt::format("layer {} is not placed on the CPU", il));
  pin = cache_->acquire(slot);
  cached_layer& c = cached_[static_cast<size_t>(il)];
  for (size_t k = 0; k < c.tensors.size(); ++k) c.tensors[k].data = pin.data(k);
  cache_->prefetch_ahead(slot, prefetch_distance_);
  return c.lw;
}

void cpu_backend::setup_weights() {
  slot_of_.assign(static_cast<size_t>(hp_.n_layer), -1);
  uint64_t kv_bytes = 0, layer_bytes = 0;
  for (int il : opt_.layers) {
    for (const auto& seq : kv_)
      kv_bytes += sizeof(f16) *
                  (seq[static_cast<size_t>(il)].k.size() + seq[static_cast<size_t>(il)].v.size());
    layer_bytes += m_.layer(il).nbytes();
  }
  uint64_t scratch = 0;
  for (const auto* v : {&x_, &h_, &q_, &k_, &v_, &att_, &gate_, &up_})
    scratch += sizeof(float) * v->size();
  const weights_plan wp = plan_memory(layer_bytes, kv_bytes, scratch);
  budget_ = wp.how == weights_plan::kind::stream ? wp.budget : opt_.mem_budget;
  mapped_.budget_bytes = budget_;
  // embed() reads one row of the token embedding per token, from a page that no token has
  // touched yet for most: from the mapping, a page fault each (about 30 us on the 2-core VM,
  // 2.5% of a stories110M token). Map its pages now; where the weights are copied, it is copied
  // too (below), onto 2 MiB pages, where a new row costs 0.5 us instead of 11 (TLB misses on
  // the mapping's 4 KiB pages are that dear on the VM).
  // (Not while layers stream: the pages would count against the memory limit for nothing.)
  if (wp.how != weights_plan::kind::stream)
    populate_read(m_.tok_embd().data(), m_.tok_embd().nbytes());
  if (opt_.output) {  // the output head stays mapped either way: ask the kernel to read ahead
    advise_willneed(m_.output_norm().data(), m_.output_norm().nbytes());
    advise_willneed(m_.output().data(), m_.output().nbytes());
  }
  if (wp.how != weights_plan::kind::stream)
    setup_resident(wp);
  else
    setup_layer_cache(wp, kv_bytes, scratch);
}

void cpu_backend::setup_resident(const weights_plan& wp) {
  // Everything fits: the weights stay views into the mapping, read ahead too.
  for (int il : opt_.layers)
    for (auto f : layer_fields())
      if (const weight& w = m_.layer(il).*f) advise_willneed(w.data(), w.nbytes());
  // Copies are anonymous memory (the file's pages are dropped as each is made): skipped
  // (TANDEM_REPACK=0, or plan_memory found they would not fit beside the KV cache, rather
  // than push the system into swapping or the OOM killer); the kernels then read the mapping.
  if (wp.how == weights_plan::kind::mapped) return;
  uint64_t copy_total =
      (m_.tok_embd().nbytes() + 63) / 64 * 64 + (opt_.output ? resident_bytes(m_.output()) : 0);
  for (int il : opt_.layers)
    for (auto f : layer_fields()) copy_total += resident_bytes(m_.layer(il).*f);
  // One arena for every copy: 2 MiB pages without a partly used page per matrix.
  arena_ = cpu::large_buffer(copy_total);
  packed_.resize(static_cast<size_t>(hp_.n_layer));
  resident_.resize(static_cast<size_t>(hp_.n_layer));
  for (int il : opt_.layers) {
    const layer_weights& L = m_.layer(il);
    packed_layer& P = packed_[static_cast<size_t>(il)];
    for (size_t i = 0; i < std::size(layer_matrices); ++i)
      pack(L.*layer_matrices[i].field, &(P.*k_packed[i]));
    cached_layer& R = resident_[static_cast<size_t>(il)];
    for (auto fld : layer_fields()) {
      const weight& w = L.*fld;
      if (!w) continue;
      R.tensors.push_back(*w.t);
      R.fields.push_back(fld);
      if (packed_bytes(w) == 0) copy(w, &R.tensors.back());
    }
    for (size_t k = 0; k < R.fields.size(); ++k) R.lw.*(R.fields[k]) = weight{&R.tensors[k]};
  }
  embd_tensor_ = *m_.tok_embd().t;
  copy(m_.tok_embd(), &embd_tensor_);
  embd_ = weight{&embd_tensor_};
  if (opt_.output) {
    pack(m_.output(), &packed_output_);
    output_tensor_ = *m_.output().t;
    if (!packed_output_) copy(m_.output(), &output_tensor_);
    output_ = weight{&output_tensor_};
  }
}

uint64_t cpu_backend::cache_slots(std::vector<std::vector<layer_extent>>* slots) {
  // Per layer, copies of its tensors whose data pointers are redirected into the cache buffer
  // while the layer is pinned.
  const gguf_file& f = m_.file();
  cached_.resize(static_cast<size_t>(hp_.n_layer));
  uint64_t one_layer = 0;
  for (int il : opt_.layers) {
    cached_layer& c = cached_[static_cast<size_t>(il)];
    c.tensors.reserve(layer_fields().size());
    std::vector<layer_extent> ext;
    for (auto fld : layer_fields()) {
      const weight& w = m_.layer(il).*fld;
      if (!w) continue;
      c.tensors.push_back(*w.t);
      c.fields.push_back(fld);
      ext.push_back({f.data_offset() + w.t->offset, w.t->nbytes});
    }
    for (size_t k = 0; k < c.fields.size(); ++k) c.lw.*(c.fields[k]) = weight{&c.tensors[k]};
    one_layer = std::max(one_layer, layer_cache::buffer_bytes(ext));
    slot_of_[static_cast<size_t>(il)] = static_cast<int>(slots->size());
    slots->push_back(std::move(ext));
  }
  return one_layer;
}

uint64_t cpu_backend::output_copy_bytes(const weights_plan& wp, uint64_t others, bool repack) {
  // The automatic plan holds the output head in memory (repacked where it can be): it is read on
  // every token, and from the mapping, under a cgroup limit with no room left for its pages in
  // the page cache, it was read again by page faults on every token (tinyllama Q4_0 under a
  // 152 MiB cgroup: 0.9 tokens/s, 49% of the disk bound).
  const uint64_t out_copy =
      wp.automatic && opt_.output
          ? (repack ? resident_bytes(m_.output()) : (m_.output().nbytes() + 63) / 64 * 64)
          : 0;
  if (out_copy && others + out_copy > budget_) {  // slower, but it runs
    notes_.push_back(
        fmt::format("the output head ({}) is read from the file mapping: a copy "
                    "would leave no room for a layer",
                    size_str(out_copy)));
    return 0;
  }
  return out_copy;
}

void cpu_backend::setup_layer_cache(const weights_plan& wp, uint64_t kv_bytes, uint64_t scratch) {
  // The layers go through the cache. Embeddings and the output head stay mapped.
  std::vector<std::vector<layer_extent>> slots;
  const uint64_t one_layer = cache_slots(&slots);
  const bool repack = repack_enabled();
  const uint64_t out_copy = output_copy_bytes(wp, one_layer + kv_bytes + scratch, repack);
  const uint64_t need = one_layer + kv_bytes + scratch + out_copy;
  if (need > budget_ && wp.automatic)
    throw error(fmt::format(
        "the memory limit, {}, is too small for this model: one layer needs {} + KV cache {} + "
        "scratch {} (+ {} kept free); raise the limit or use a smaller context (-c)",
        limit_.describe(), size_str(one_layer), size_str(kv_bytes), size_str(scratch),
        size_str(memory_margin(limit_.bytes))));
  if (need > budget_)
    throw error(
        fmt::format("--mem-budget {} is too small: one layer needs {} + KV cache {} + "
                    "scratch {}; use at least {}",
                    size_arg(opt_.mem_budget), size_str(one_layer), size_str(kv_bytes),
                    size_str(scratch), size_at_least(need)));
  layer_cache_config cfg;
  cfg.path = m_.file().path();
  cfg.capacity_bytes = budget_ - kv_bytes - scratch - out_copy;
  const int cap_layers = static_cast<int>(cfg.capacity_bytes / std::max<uint64_t>(one_layer, 1));
  const int max_d = std::max(0, std::min(cap_layers, static_cast<int>(slots.size())) - 1);
  // The cache keeps a fixed set of layers and streams the rest through a ring of
  // prefetch distance + 1 buffers (layer_cache_config::keep_resident). One ahead keeps the
  // loader busy whenever loads are slower than compute (the kept layers, spread between the
  // streamed ones, compute while it reads the next streamed one), and each buffer more in the
  // ring is a layer less kept.
  prefetch_distance_ =
      opt_.prefetch_distance < 0 ? std::min(max_d, 1) : std::min(max_d, opt_.prefetch_distance);
  cfg.prefetch_distance = prefetch_distance_;
  cfg.keep_resident = true;
  cfg.queue_capacity = static_cast<size_t>(std::max(4, 2 * prefetch_distance_));
  // An automatic plan reads with O_DIRECT: streamed layers would otherwise fill the page cache
  // that the memory limit counts, pushing out the mapped output head (TANDEM_DIRECT_IO=0 keeps
  // the page cache).
  const char* env = std::getenv("TANDEM_DIRECT_IO");
  cfg.direct_io = opt_.direct_io || (env && *env && std::string(env) != "0") ||
                  (wp.automatic && !(env && std::string(env) == "0"));
  cfg.layer_ids = opt_.layers;
  cache_ = std::make_unique<layer_cache>(std::move(cfg), std::move(slots));
  if (out_copy) {
    arena_ = cpu::large_buffer(out_copy);
    if (repack) pack(m_.output(), &packed_output_);
    output_tensor_ = *m_.output().t;
    if (!packed_output_) copy(m_.output(), &output_tensor_);
    output_ = weight{&output_tensor_};
  }
  if (wp.automatic) note_streaming(kv_bytes, scratch);
}

void cpu_backend::note_streaming(uint64_t kv_bytes, uint64_t scratch) {
  const layer_cache_metrics cm = cache_->metrics();
  const std::string what =
      cm.streamed_layers > 0
          ? fmt::format("streaming {} of {} layers from disk", cm.streamed_layers,
                        cache_->n_slots())
          : fmt::format(
                "all {} layers kept in the layer cache (not repacked), the embedding "
                "read from the file mapping",
                cache_->n_slots());
  notes_.push_back(
      fmt::format("model {} (+ KV cache {}, scratch {}, {} kept free) > memory "
                  "limit {}: {}",
                  size_str(m_.weight_bytes()), size_str(kv_bytes), size_str(scratch),
                  size_str(memory_margin(limit_.bytes)), limit_.describe(), what));
}

}  // namespace tandem
