// The CPU backend: one transformer layer as a handful of op calls on host buffers. Matrix
// products go through cpu::matmul (kernel table + threads); the KV cache is F16.
#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iterator>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "cpu/attention.h"
#include "cpu/elementwise.h"
#include "runtime/fp16.h"
#include "cpu/kernels.h"
#include "cpu/matmul.h"
#include "cpu/ops_ref.h"
#include "cpu/parallel.h"
#include "runtime/blocks.h"
#include "cpu/repack.h"
#include "runtime/backend_factory.h"
#include "runtime/layer_cache.h"
#include "runtime/memory_limit.h"

namespace tandem {
namespace {

using f16 = uint16_t;

class cpu_backend final : public backend {
 public:
  cpu_backend(const model& m, const backend_options& opt) : m_(m), hp_(m.hp()), opt_(opt) {
    // Before the KV cache and scratch are allocated: a cgroup's usage would count them, and the
    // plan (plan_memory) counts them too.
    limit_ = detect_memory_limit(opt.mem_budget);
    cpu::set_num_threads(opt.n_threads);
    const size_t nb = static_cast<size_t>(opt.n_batch);
    x_.resize(nb * hp_.n_embd);
    h_.resize(nb * hp_.n_embd);
    q_.resize(nb * hp_.n_embd_q());
    k_.resize(nb * hp_.n_embd_kv());
    v_.resize(nb * hp_.n_embd_kv());
    att_.resize(nb * hp_.n_embd_q());
    gate_.resize(nb * hp_.n_ff);
    up_.resize(nb * hp_.n_ff);
    if (opt.n_seq < 1) throw error(fmt::format("cpu: {} KV sequences (at least 1)", opt.n_seq));
    kv_.resize(static_cast<size_t>(opt.n_seq));
    for (auto& seq : kv_) {
      seq.resize(static_cast<size_t>(hp_.n_layer));
      for (int il : opt.layers) {
        seq[static_cast<size_t>(il)].k.resize(static_cast<size_t>(opt.n_ctx) * hp_.n_embd_kv());
        seq[static_cast<size_t>(il)].v.resize(static_cast<size_t>(opt.n_ctx) * hp_.n_embd_kv());
      }
    }
    decode_.resize(static_cast<size_t>(hp_.n_layer));
    setup_weights();
  }

  std::string name() const override { return fmt::format("CPU ({} threads)", cpu::num_threads()); }

  void embed(const int32_t* tokens, int n_tokens, float* x) override {
    const weight& e = embd_ ? embd_ : m_.tok_embd();
    const uint64_t rb = row_bytes(e.type(), static_cast<uint64_t>(e.cols()));
    for (int t = 0; t < n_tokens; ++t) {
      if (tokens[t] < 0 || tokens[t] >= hp_.n_vocab)
        throw error(fmt::format("token id {} is outside the vocabulary (0 .. {})", tokens[t],
                                hp_.n_vocab - 1));
      const auto* row =
          static_cast<const uint8_t*>(e.data()) + rb * static_cast<uint64_t>(tokens[t]);
      dequantize_row(e.type(), row, x + static_cast<int64_t>(t) * hp_.n_embd, e.cols());
    }
  }

  void upload_hidden(const float* x, int n) override {
    std::memcpy(x_.data(), x, sizeof(float) * static_cast<size_t>(n) * hp_.n_embd);
  }
  void download_hidden(float* x, int n) override {
    std::memcpy(x, x_.data(), sizeof(float) * static_cast<size_t>(n) * hp_.n_embd);
  }

  void prepare_layer(int il) override {
    if (cache_ && prefetch_distance_ > 0 && il >= 0 && il < hp_.n_layer &&
        slot_of_[static_cast<size_t>(il)] >= 0)
      cache_->prefetch(slot_of_[static_cast<size_t>(il)]);
  }

  void forward_layer(int il, int n, int pos0) override {
    layer_cache::handle pin;  // keeps a cached layer's buffer resident until the layer is done
    const layer_weights& L = layer(il, pin);
    const auto t0 = std::chrono::steady_clock::now();
    kv_cache& kv = kv_of(il);
    if (kv.k.empty()) throw std::logic_error(fmt::format("layer {} is not placed on the CPU", il));
    const int d = hp_.n_embd, dq = hp_.n_embd_q(), dkv = hp_.n_embd_kv();

    const packed_layer& P = packed(il);
    if (n == 1 && !capture_ && !cpu::reference_products() && decode_layer(il, L, P, pos0))
      return add_compute(t0);

    const size_t nt = static_cast<size_t>(n);
    // Attention block.
    norm(L.attn_norm, n);
    cap(il, "rms_norm:attn_norm", h_.data(), nt * d);
    const cpu::matmul_job qkv[] = {
        {&L.wq, q_.data(), pk(P.wq)}, {&L.wk, k_.data(), pk(P.wk)}, {&L.wv, v_.data(), pk(P.wv)}};
    cpu::matmul_n(qkv, 3, h_.data(), n);
    cap(il, "matmul:wq", q_.data(), nt * dq);
    cap(il, "matmul:wk", k_.data(), nt * dkv);
    cap(il, "matmul:wv", v_.data(), nt * dkv);
    add_bias(L.bq, q_.data(), n, dq);
    add_bias(L.bk, k_.data(), n, dkv);
    add_bias(L.bv, v_.data(), n, dkv);
    if (L.bq) cap(il, "add:bq", q_.data(), nt * dq);
    if (L.bk) cap(il, "add:bk", k_.data(), nt * dkv);
    if (L.bv) cap(il, "add:bv", v_.data(), nt * dkv);
    for (int t = 0; t < n; ++t) {
      cpu::rope_qk(&q_[static_cast<size_t>(t) * dq], hp_.n_head, &k_[static_cast<size_t>(t) * dkv],
                   hp_.n_head_kv, hp_.head_dim, hp_.n_rot, pos0 + t, hp_.rope_freq_base,
                   hp_.rope_freq_scale, hp_.rope);
      kv_store(kv, &k_[static_cast<size_t>(t) * dkv], &v_[static_cast<size_t>(t) * dkv], pos0 + t);
    }
    if (capture_) {
      cap(il, "rope:q", q_.data(), nt * dq);
      cap(il, "rope:k", k_.data(), nt * dkv);
      std::vector<float> rows(nt * dkv);
      for (const auto& [name, cache] :
           {std::pair{"kv_store:v", &kv.v}, std::pair{"kv_store:k", &kv.k}}) {
        for (size_t i = 0; i < rows.size(); ++i)  // back to one row per position
          rows[i] = fp16_to_fp32(
              (*cache)[kv_index(pos0 + static_cast<int>(i / dkv), static_cast<int>(i % dkv))]);
        cap(il, name, rows.data(), rows.size());
      }
    }
    // A decode token splits the heads by KV head, so that each KV head's rows are read (and
    // staged, cpu/attention.h) by one thread; a prompt's many tokens split by query head.
    const int per = n == 1 ? hp_.n_head / hp_.n_head_kv : 1;
    cpu::parallel_for(hp_.n_head / per, 1, [&](int64_t g0, int64_t g1) {
      cpu::attention(att_.data(), q_.data(), kv.k.data(), kv.v.data(), n, pos0, hp_.n_head,
                     hp_.n_head_kv, hp_.head_dim, static_cast<int>(g0 * per),
                     static_cast<int>(g1 * per), hp_.head_dim, kv_head_stride());
    });
    cap(il, "attention", att_.data(), nt * dq);
    cpu::matmul(L.wo, att_.data(), n, h_.data(), pk(P.wo));
    for (size_t i = 0; i < static_cast<size_t>(n) * d; ++i) x_[i] += h_[i];
    cap(il, "matmul:wo", x_.data(), nt * d);

    // Feed-forward block (SwiGLU).
    norm(L.ffn_norm, n);
    cap(il, "rms_norm:ffn_norm", h_.data(), nt * d);
    const cpu::matmul_job gate_up[] = {{&L.ffn_gate, gate_.data(), pk(P.ffn_gate)},
                                       {&L.ffn_up, up_.data(), pk(P.ffn_up)}};
    cpu::matmul_n(gate_up, 2, h_.data(), n);
    cap(il, "matmul:ffn_gate", gate_.data(), nt * hp_.n_ff);
    cap(il, "matmul:ffn_up", up_.data(), nt * hp_.n_ff);
    cpu::swiglu(gate_.data(), gate_.data(), up_.data(), static_cast<int64_t>(n) * hp_.n_ff);
    cap(il, "swiglu", gate_.data(), nt * hp_.n_ff);
    cpu::matmul(L.ffn_down, gate_.data(), n, h_.data(), pk(P.ffn_down));
    for (size_t i = 0; i < static_cast<size_t>(n) * d; ++i) x_[i] += h_[i];
    cap(il, "matmul:ffn_down", x_.data(), nt * d);
    add_compute(t0);
  }

  void forward_output(int n, bool all_tokens, float* logits) override {
    const auto t0 = std::chrono::steady_clock::now();
    const int first = all_tokens ? 0 : n - 1;
    const int count = n - first;
    const int d = hp_.n_embd;
    cpu::rms_norm_rows(h_.data(), &x_[static_cast<size_t>(first) * d],
                      static_cast<const float*>(m_.output_norm().data()), count, d, hp_.rms_eps);
    cpu::matmul(output_ ? output_ : m_.output(), h_.data(), count, logits, pk(packed_output_));
    add_compute(t0);
  }

  void truncate_kv(int) override {}  // positions past n_past are overwritten before use
  void select_seq(int seq) override {
    if (seq < 0 || seq >= opt_.n_seq)
      throw error(fmt::format("cpu: no KV sequence {} (the backend holds {})", seq, opt_.n_seq));
    seq_ = seq;
  }

  void set_capture(capture_fn fn) override { capture_ = std::move(fn); }

 private:
  // 64-byte aligned, so that a head's row of the cache (head_dim F16 values, 128 bytes for
  // head_dim 64) spans whole cache lines: from malloc's 16-byte alignment every row touched one
  // line more than it held.
  template <typename T>
  struct aligned64 {
    using value_type = T;
    aligned64() = default;
    template <typename U>
    explicit aligned64(const aligned64<U>&) {}
    T* allocate(size_t n) {
      return static_cast<T*>(::operator new (n * sizeof(T), std::align_val_t{64}));
    }
    void deallocate(T* p, size_t) { ::operator delete (p, std::align_val_t{64}); }
    bool operator==(const aligned64&) const { return true; }
  };
  // Head-major: KV head h's vectors of every position back to back (n_head_kv x n_ctx x
  // head_dim), so that attention streams each head's rows instead of reading head_dim values out
  // of every position's n_embd_kv.
  struct kv_cache {
    std::vector<f16, aligned64<f16>> k, v;
  };
  // Layer il's cache in the selected sequence.
  kv_cache& kv_of(int il) { return kv_[static_cast<size_t>(seq_)][static_cast<size_t>(il)]; }
  int64_t kv_head_stride() const { return static_cast<int64_t>(opt_.n_ctx) * hp_.head_dim; }
  // Where element i (0 .. n_embd_kv) of position pos's K or V vector lives.
  size_t kv_index(int pos, int i) const {
    const int h = i / hp_.head_dim, d = i % hp_.head_dim;
    return static_cast<size_t>(h * kv_head_stride() + static_cast<int64_t>(pos) * hp_.head_dim + d);
  }
  // Position pos's K and V vectors (n_embd_kv floats each), rounded to F16, into the cache.
  void kv_store(kv_cache& kv, const float* k, const float* v, int pos) {
    for (int h = 0; h < hp_.n_head_kv; ++h) {
      const size_t at = kv_index(pos, h * hp_.head_dim);
      cpu::fp32_to_fp16_row(k + static_cast<int64_t>(h) * hp_.head_dim, &kv.k[at], hp_.head_dim);
      cpu::fp32_to_fp16_row(v + static_cast<int64_t>(h) * hp_.head_dim, &kv.v[at], hp_.head_dim);
    }
  }

  // Packed (x16, cpu/repack.h) copies of a layer's matrices; empty where not packed.
  // A layer's matrices repacked for the kernels (empty where a format runs from the file).
  struct packed_layer {
#define TANDEM_PACKED_FIELD(field, ...) cpu::packed_matrix field;
    TANDEM_LAYER_MATRICES(TANDEM_PACKED_FIELD)
#undef TANDEM_PACKED_FIELD
  };
  static constexpr cpu::packed_matrix packed_layer::*k_packed[] = {
#define TANDEM_PACKED_MEMBER(field, ...) &packed_layer::field,
      TANDEM_LAYER_MATRICES(TANDEM_PACKED_MEMBER)
#undef TANDEM_PACKED_MEMBER
  };
  static const cpu::packed_matrix* pk(const cpu::packed_matrix& m) { return m ? &m : nullptr; }
  const packed_layer& packed(int il) const {
    static const packed_layer none;
    return il >= 0 && static_cast<size_t>(il) < packed_.size() ? packed_[static_cast<size_t>(il)]
                                                               : none;
  }

  // A layer's decode token as steps of cpu::run_steps: the same ops and kernels as
  // forward_layer's general path, so the same bits, but the threads go from one product to the
  // next without a fork-join (at 2 threads on stories110M, five per layer were ~15% of the time
  // per token). Its plans and steps are kept from token to token (where the weights stay where
  // they are); they read the position from decode_pos_.
  struct alignas(64) units_done {
    std::atomic<int64_t> v{0};
  };
  struct layer_decode {
    cpu::matvec_plan qkv, wo, gate_up, down;
    // SwiGLU by groups of FFN rows: the gate/up units done per group this token (or null).
    std::unique_ptr<units_done[]> ff_done;
    std::function<void()> head;        // the norm and quantization of the QKV input
    std::vector<cpu::step> steps;      // empty: a product wants the tiled kernels
    const layer_weights* L = nullptr;  // what they were built for
    const cpu::kernel_table* kt = nullptr;
    int threads = 0;
  };
  layer_decode& decode_steps(int il, const layer_weights& L, const packed_layer& P) {
    auto& slot = decode_[static_cast<size_t>(il)];
    if (!slot) slot = std::make_unique<layer_decode>();
    layer_decode& D = *slot;
    const int threads = cpu::num_threads();
    if (!cache_ && D.L == &L && D.kt == &cpu::kernels() && D.threads == threads) return D;
    ++decode_generation_;
    D.steps.clear();
    D.L = &L;
    D.kt = &cpu::kernels();
    D.threads = threads;
    const cpu::matmul_job qkv[] = {
        {&L.wq, q_.data(), pk(P.wq)}, {&L.wk, k_.data(), pk(P.wk)}, {&L.wv, v_.data(), pk(P.wv)}};
    const cpu::matmul_job wo{&L.wo, h_.data(), pk(P.wo)};
    const cpu::matmul_job gate_up[] = {{&L.ffn_gate, gate_.data(), pk(P.ffn_gate)},
                                       {&L.ffn_up, up_.data(), pk(P.ffn_up)}};
    const cpu::matmul_job down{&L.ffn_down, h_.data(), pk(P.ffn_down)};
    // The gate/up units in groups of ff_rows rows of each (gate rows, then the same up rows), so
    // that a thread's share holds both halves of its SwiGLU inputs.
    constexpr int64_t ff_rows = cpu::matvec_plan::range_block;
    const int ff_groups = hp_.n_ff % ff_rows == 0 ? static_cast<int>(hp_.n_ff / ff_rows) : 1;
    if (!D.qkv.build(qkv, 3, 1) || !D.wo.build(&wo, 1, 1) ||
        !D.gate_up.build(gate_up, 2, 1, ff_groups) || !D.down.build(&down, 1, 1))
      return D;
    // The thread that completes a group's gate and up rows applies SwiGLU to them and quantizes
    // them for the down product, at once and with the rows in its cache; the down step then
    // starts with no serial step before it. Otherwise one thread did all of it between the
    // steps while the others waited (stories110M Q6_K tg128: ~2.2 us of each ~100 us layer).
    D.ff_done.reset();
    if (ff_groups > 1 && D.gate_up.groups() == ff_groups) {
      D.ff_done = std::make_unique<units_done[]>(static_cast<size_t>(ff_groups));
      D.down.prepare(gate_.data());
    }
    // A thread that waits for the serial step before a product prefetches the first bytes of
    // its share meanwhile.
    constexpr size_t warm_bytes = 64 * 1024;
    // x += h row by row as each run of the output products' units lands (the same adds as
    // forward_layer's residual, without a step of its own). The norm after the product (the
    // step's last) would read its weights from memory: the runs in the product's last 16th, on
    // the thread likely to complete the step, prefetch them.
    const auto residual = [this](const cpu::matvec_plan& p, const weight* next_norm) {
      const int64_t tail = p.units() - p.units() / 16;
      return p.as_step(warm_bytes, [this, &p, next_norm, tail](int64_t u0, int64_t u1) {
        int64_t r0, r1;
        p.rows(0, u0, u1, &r0, &r1);
        for (int64_t r = r0; r < r1; ++r) x_[static_cast<size_t>(r)] += h_[static_cast<size_t>(r)];
        if (next_norm && u1 > tail) cpu::prefetch_l2(next_norm->data(), next_norm->nbytes());
      });
    };
    // The norm after the down product: the next layer's (where its weights stay put) or the
    // output's.
    const weight* after_down =
        il + 1 == hp_.n_layer ? &m_.output_norm()
        : cache_             ? nullptr
                             : &resident_layer(il + 1).attn_norm;
    // Attention by runs of KV heads, one run per thread: each KV head is read (and staged) once.
    const int n_att = std::min(hp_.n_head_kv, threads);
    const auto att_first = [this, n_att](int64_t i) {  // the first KV head of attention item i
      return static_cast<int>(i * hp_.n_head_kv / n_att);
    };
    const layer_weights* W = &L;
    // llama's RoPE rotates adjacent pairs, each on its own: with every QKV job in units of an
    // even number of rows, the QKV step's rows are finished as they land, on the thread that
    // computed them (biases, RoPE, K and V into the cache), with its cache lines at hand. In the
    // attention items, the same work read the rows from the other threads' caches: ~2.9 us of an
    // item's ~8.8 us (stories110M Q4_0, tg128, 2 threads).
    const bool by_rows = hp_.rope == rope_style::adjacent && hp_.head_dim % 2 == 0 &&
                         D.qkv.unit_rows(0) % 2 == 0 && D.qkv.unit_rows(1) % 2 == 0 &&
                         D.qkv.unit_rows(2) % 2 == 0;
    const auto qkv_rows = [this, W, il, &D](int64_t u0, int64_t u1) {
      const int hd = hp_.head_dim, pos = decode_pos_;
      kv_cache* kv = &kv_of(il);
      int64_t r0, r1;
      D.qkv.rows(0, u0, u1, &r0, &r1);
      if (r0 < r1) {
        add_bias_slice(W->bq, q_.data() + r0, static_cast<int>(r0), static_cast<int>(r1 - r0));
        cpu::rope_rows(q_.data(), r0, r1, hd, hp_.n_rot, rope_cs_.data());
      }
      for (int j : {1, 2}) {
        D.qkv.rows(j, u0, u1, &r0, &r1);
        if (r0 >= r1) continue;
        float* y = (j == 1 ? k_ : v_).data();
        add_bias_slice(j == 1 ? W->bk : W->bv, y + r0, static_cast<int>(r0),
                       static_cast<int>(r1 - r0));
        if (j == 1) cpu::rope_rows(y, r0, r1, hd, hp_.n_rot, rope_cs_.data());
        auto& cache = j == 1 ? kv->k : kv->v;
        for (int64_t r = r0; r < r1;) {  // head by head: a head's rows are one run in the cache
          const int64_t n = std::min<int64_t>(r1, (r / hd + 1) * hd) - r;
          cpu::fp32_to_fp16_row(y + r, &cache[kv_index(pos, static_cast<int>(r))], n);
          r += n;
        }
      }
    };
    // The serial work between products runs as the `last` of the step before it (cpu::step),
    // on the thread that completes that step, at once: as steps of their own, each cost a hand-
    // over between threads (stories110M Q4_0 tg128, 2 threads: four of nine steps per layer).
    // The layer's first, its norm, is an item step here, and the previous layer's down step's
    // last where forward_layers runs layers back to back.
    D.head = [this, W, &D] {
      norm(W->attn_norm, 1);
      D.qkv.quantize(h_.data());
      if (rope_pos_ != decode_pos_) {  // the first layer of a token
        rope_cs_.resize(static_cast<size_t>(hp_.n_rot));
        cpu::rope_angles(decode_pos_, hp_.n_rot, hp_.rope_freq_base, hp_.rope_freq_scale,
                         rope_cs_.data());
        rope_pos_ = decode_pos_;
      }
    };
    const auto ffn_rows = [this, &D](int64_t u0, int64_t u1) {
      const int64_t gu = D.gate_up.group_units();
      for (int64_t g = u0 / gu; g * gu < u1; ++g) {
        const int64_t n = std::min(u1, (g + 1) * gu) - std::max(u0, g * gu);
        if (D.ff_done[static_cast<size_t>(g)].v.fetch_add(n, std::memory_order_acq_rel) + n != gu)
          continue;
        const int64_t c0 = g * ff_rows;
        cpu::swiglu(gate_.data() + c0, gate_.data() + c0, up_.data() + c0, ff_rows);
        D.down.quantize_range(c0, c0 + ff_rows);
      }
    };
    // The steps of a decode token through the layer, in order (cpu::run_steps).
    cpu::step head_step{.n = 1, .item = [&D](int64_t) { D.head(); }};  // attention norm, quantized
    cpu::step qkv_step = by_rows ? D.qkv.as_step(warm_bytes, qkv_rows) : D.qkv.as_step(warm_bytes);
    // Per run of KV heads [g0, g1) (one run per thread: each item is a new stream and two
    // atomics): for each KV head g (unless the QKV step did it), biases, RoPE and the cache
    // store of its K and V and of its query heads (the same ops, slice by slice, as
    // forward_layer), then the run's attention.
    cpu::step attention_step{
        .n = n_att,
        .item = [this, W, il, att_first, by_rows](int64_t i) {
          const int group = hp_.n_head / hp_.n_head_kv, hd = hp_.head_dim;
          kv_cache* kv = &kv_of(il);
          const int pos = decode_pos_;
          const int g0 = att_first(i), g1 = att_first(i + 1);
          for (int g = g0; g < g1 && !by_rows; ++g) {
            float* qg = q_.data() + static_cast<int64_t>(g) * group * hd;
            float* kg = k_.data() + static_cast<int64_t>(g) * hd;
            float* vg = v_.data() + static_cast<int64_t>(g) * hd;
            add_bias_slice(W->bq, qg, g * group * hd, group * hd);
            add_bias_slice(W->bk, kg, g * hd, hd);
            add_bias_slice(W->bv, vg, g * hd, hd);
            cpu::rope_qk(qg, group, kg, 1, hd, hp_.n_rot, rope_cs_.data(), hp_.rope);
            const size_t at = kv_index(pos, g * hd);
            cpu::fp32_to_fp16_row(kg, &kv->k[at], hd);
            cpu::fp32_to_fp16_row(vg, &kv->v[at], hd);
          }
          cpu::attention(att_.data(), q_.data(), kv->k.data(), kv->v.data(), 1, pos, hp_.n_head,
                         hp_.n_head_kv, hd, g0 * group, g1 * group, hd, kv_head_stride());
        },
        // Warm: the first KV head's first rows (earlier positions).
        .warm = [this, il, att_first](int64_t i) {
          const int g = att_first(i), hd = hp_.head_dim;
          kv_cache* kv = &kv_of(il);
          const size_t bytes = sizeof(f16) * static_cast<size_t>(hd) *
                               static_cast<size_t>(std::min(decode_pos_, 64));
          cpu::prefetch_l2(&kv->k[kv_index(0, g * hd)], bytes);
          cpu::prefetch_l2(&kv->v[kv_index(0, g * hd)], bytes);
        },
        .last = [this, &D] { D.wo.quantize(att_.data()); }};
    // The output product and its residual add; then the FFN norm, quantized for gate and up.
    cpu::step wo_step = residual(D.wo, &L.ffn_norm);
    wo_step.last = [this, W, &D] {
      norm(W->ffn_norm, 1);
      D.gate_up.quantize(h_.data());
      if (D.ff_done)
        for (int g = 0; g < D.gate_up.groups(); ++g)
          D.ff_done[static_cast<size_t>(g)].v.store(0, std::memory_order_relaxed);
    };
    // Gate and up; SwiGLU and its quantization inside the groups (ff_done), else once after.
    cpu::step gate_up_step =
        D.ff_done ? D.gate_up.as_step(warm_bytes, ffn_rows) : D.gate_up.as_step(warm_bytes);
    if (!D.ff_done)
      gate_up_step.last = [this, &D] {
        cpu::swiglu(gate_.data(), gate_.data(), up_.data(), hp_.n_ff);
        D.down.quantize(gate_.data());
      };
    cpu::step down_step = residual(D.down, after_down);
    D.steps = {std::move(head_step), std::move(qkv_step),     std::move(attention_step),
               std::move(wo_step),   std::move(gate_up_step), std::move(down_step)};
    return D;
  }

  // A decode token through layer il as one parallel region; false when a product wants the
  // tiled kernels.
  bool decode_layer(int il, const layer_weights& L, const packed_layer& P, int pos) {
    layer_decode& D = decode_steps(il, L, P);
    if (D.steps.empty()) return false;
    decode_pos_ = pos;
    cpu::run_steps(D.steps.data(), static_cast<int>(D.steps.size()));
    return true;
  }

  // A decode token through a run of resident layers as one parallel region: the layers' steps
  // back to back, so that the threads go from layer to layer without a fork-join either (one
  // region per layer cost each token, on stories110M at 2 threads, ~2.6 us of the second
  // thread's start per layer and ~2.7 us between layers of building plans and steps).
  bool runs_layers(int n_tokens) const override {
    return n_tokens == 1 && !capture_ && !cache_ && !cpu::reference_products();
  }
  void forward_layers(int il0, int il1, int n, int pos0, float* logits) override {
    if (!runs_layers(n)) return backend::forward_layers(il0, il1, n, pos0, logits);
    const auto t0 = std::chrono::steady_clock::now();
    for (int il = il0; il < il1; ++il) {
      if (kv_of(il).k.empty())
        throw std::logic_error(fmt::format("layer {} is not placed on the CPU", il));
      layer_cache::handle pin;
      if (decode_steps(il, layer(il, pin), packed(il)).steps.empty())
        return backend::forward_layers(il0, il1, n, pos0, logits);
    }
    // The output head (final norm, then its product) as the region's last step, where its
    // product suits a plan: a region (and the second thread's start) fewer per token.
    if (logits && (out_y_ != logits || out_generation_ != decode_generation_)) {
      const cpu::matmul_job job{output_ ? &output_ : &m_.output(), logits, pk(packed_output_)};
      out_ok_ = out_plan_.build(&job, 1, 1);
      out_y_ = logits;
      out_generation_ = decode_generation_;
    }
    float* const out = logits && out_ok_ ? logits : nullptr;
    if (run_il0_ != il0 || run_il1_ != il1 || run_generation_ != decode_generation_ ||
        run_out_ != out) {
      run_steps_.clear();
      for (int il = il0; il < il1; ++il) {
        const layer_decode& D = *decode_[static_cast<size_t>(il)];
        if (il == il0) {
          run_steps_ = D.steps;
          continue;
        }
        // The layer's norm as the last of the previous layer's down step.
        run_steps_.back().last = D.head;
        run_steps_.insert(run_steps_.end(), D.steps.begin() + 1, D.steps.end());
      }
      if (out) {  // forward_output's ops, on the plan cpu::matmul would use
        run_steps_.back().last = [this] {
          cpu::rms_norm_rows(h_.data(), x_.data(),
                            static_cast<const float*>(m_.output_norm().data()), 1, hp_.n_embd,
                            hp_.rms_eps);
          out_plan_.quantize(h_.data());
        };
        run_steps_.push_back(out_plan_.as_step(64 * 1024));
      }
      run_il0_ = il0;
      run_il1_ = il1;
      run_generation_ = decode_generation_;
      run_out_ = out;
    }
    decode_pos_ = pos0;
    cpu::run_steps(run_steps_.data(), static_cast<int>(run_steps_.size()));
    add_compute(t0);
    if (logits && !out) forward_output(n, false, logits);
  }

  std::vector<std::string> notes() const override { return notes_; }

  // Bytes of w's packed copy, or 0 when it would not be packed.
  static uint64_t packed_bytes(const weight& w) {
    if (!w || !cpu::x16_supported(w.type(), w.cols())) return 0;
    const cpu::type_kernels* k = cpu::kernels().find(w.type());
    return k && k->mv_x16 ? cpu::x16_bytes(w.type(), w.rows(), w.cols()) : 0;
  }
  // Bytes w takes in memory once resident: packed, or copied as it is.
  static uint64_t resident_bytes(const weight& w) {
    if (!w) return 0;
    const uint64_t p = packed_bytes(w);
    return ((p ? p : w.nbytes()) + 63) / 64 * 64;
  }
  // Space for one resident copy in the arena (64-byte aligned).
  uint8_t* take(uint64_t bytes) {
    uint8_t* p = arena_.data() + arena_used_;
    arena_used_ += (bytes + 63) / 64 * 64;
    return p;
  }
  // A copy of w's bytes in the arena; t (a copy of w's tensor) is pointed at it.
  void copy(const weight& w, gguf_tensor* t) {
    uint8_t* p = take(w.nbytes());
    std::memcpy(p, w.data(), w.nbytes());
    advise_dontneed(w.data(), w.nbytes());
    t->data = p;
  }

  // Packs w when the active kernels have an x16 layout for it (TANDEM_REPACK=0 turns this off),
  // then drops its pages of the mapping: from here on only the packed copy is read.
  void pack(const weight& w, cpu::packed_matrix* out) {
    const uint64_t n = packed_bytes(w);
    if (n == 0) return;
    *out = cpu::packed_matrix(w.type(), w.data(), w.rows(), w.cols(), take(n));
    advise_dontneed(w.data(), w.nbytes());
  }

  void cap(int il, const char* op, const float* data, size_t n) const {
    if (capture_) capture_(il, op, data, n);
  }

  void norm(const weight& w, int n) {
    cpu::rms_norm_rows(h_.data(), x_.data(), static_cast<const float*>(w.data()), n, hp_.n_embd,
                      hp_.rms_eps);
  }

  // y[i] += bias[off + i] for i < n (one head's slice of a bias vector).
  static void add_bias_slice(const weight& b, float* y, int off, int n) {
    if (!b) return;
    const auto* bias = static_cast<const float*>(b.data()) + off;
    for (int i = 0; i < n; ++i) y[i] += bias[i];
  }
  static void add_bias(const weight& b, float* y, int n, int dim) {
    for (int t = 0; t < n; ++t) add_bias_slice(b, y + static_cast<size_t>(t) * dim, 0, dim);
  }

  // ---- weights: views into the mapping, or through the layer cache under --mem-budget ----

  // Every weight of a layer (runtime/model.h's lists).
  inline static const std::vector<weight layer_weights::*> k_fields = [] {
    std::vector<weight layer_weights::*> f(std::begin(layer_vectors), std::end(layer_vectors));
    for (const layer_matrix& lm : layer_matrices) f.push_back(lm.field);
    return f;
  }();

  // A size as a user would write it: "1M", "1536M", "300K", or bytes.
  static std::string size_arg(uint64_t n) {
    if (n && n % (1ull << 30) == 0) return fmt::format("{}G", n >> 30);
    if (n && n % (1ull << 20) == 0) return fmt::format("{}M", n >> 20);
    if (n && n % (1ull << 10) == 0) return fmt::format("{}K", n >> 10);
    return std::to_string(n);
  }
  static std::string size_str(uint64_t n) {
    if (n >= (1ull << 30)) return fmt::format("{:.2f} GiB", n / 1073741824.0);
    if (n >= (1ull << 20)) return fmt::format("{:.2f} MiB", n / 1048576.0);
    if (n >= (1ull << 10)) return fmt::format("{:.2f} KiB", n / 1024.0);
    return fmt::format("{} B", n);
  }
  // Rounded up to a tenth of its unit, in a form --mem-budget accepts ("1.3M").
  static std::string size_at_least(uint64_t n) {
    const char* units = "KMGT";
    double v = static_cast<double>(n) / 1024.0;
    int u = 0;
    while (v >= 1024.0 && u < 3) v /= 1024.0, ++u;
    return fmt::format("{:.1f}{}", std::ceil(v * 10.0) / 10.0, units[u]);
  }

  // How the weights are held under the memory limit (runtime/memory_limit.h): what the copies,
  // the mapping and the layer cache would take.
  weights_plan plan_memory(uint64_t layer_bytes, uint64_t kv_bytes, uint64_t scratch) {
    weights_need need;
    const bool tied = m_.output().t == m_.tok_embd().t;
    need.layers = layer_bytes;
    need.mapped = layer_bytes + m_.tok_embd().nbytes() +
                  (opt_.output ? m_.output_norm().nbytes() + (tied ? 0 : m_.output().nbytes()) : 0);
    const char* env = std::getenv("TANDEM_REPACK");
    if (!(env && std::string(env) == "0")) {
      need.copies =
          (m_.tok_embd().nbytes() + 63) / 64 * 64 + (opt_.output ? resident_bytes(m_.output()) : 0);
      for (int il : opt_.layers)
        for (auto f : k_fields) need.copies += resident_bytes(m_.layer(il).*f);
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

  void setup_weights() {
    const size_t n_layers = static_cast<size_t>(hp_.n_layer);
    slot_of_.assign(n_layers, -1);
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
    if (wp.how != weights_plan::kind::stream) {
      // Everything fits: the weights stay views into the mapping, read ahead too.
      for (int il : opt_.layers)
        for (auto f : k_fields)
          if (const weight& w = m_.layer(il).*f) advise_willneed(w.data(), w.nbytes());
      // Copies are anonymous memory (the file's pages are dropped as each is made): skipped
      // (TANDEM_REPACK=0, or plan_memory found they would not fit beside the KV cache, rather
      // than push the system into swapping or the OOM killer); the kernels then read the mapping.
      if (wp.how == weights_plan::kind::mapped) return;
      uint64_t copy_total =
          (m_.tok_embd().nbytes() + 63) / 64 * 64 + (opt_.output ? resident_bytes(m_.output()) : 0);
      for (int il : opt_.layers)
        for (auto f : k_fields) copy_total += resident_bytes(m_.layer(il).*f);
      // One arena for every copy: 2 MiB pages without a partly used page per matrix.
      arena_ = cpu::large_buffer(copy_total);
      packed_.resize(n_layers);
      resident_.resize(n_layers);
      for (int il : opt_.layers) {
        const layer_weights& L = m_.layer(il);
        packed_layer& P = packed_[static_cast<size_t>(il)];
        for (size_t i = 0; i < std::size(layer_matrices); ++i)
          pack(L.*layer_matrices[i].field, &(P.*k_packed[i]));
        cached_layer& R = resident_[static_cast<size_t>(il)];
        for (auto fld : k_fields) {
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
      return;
    }
    // The layers go through the cache: per layer, copies of its tensors whose data pointers are
    // redirected into the cache buffer while the layer is pinned. Embeddings and the output head
    // stay mapped.
    const gguf_file& f = m_.file();
    cached_.resize(n_layers);
    std::vector<std::vector<layer_extent>> slots;
    uint64_t one_layer = 0;
    for (int il : opt_.layers) {
      cached_layer& c = cached_[static_cast<size_t>(il)];
      c.tensors.reserve(k_fields.size());
      std::vector<layer_extent> ext;
      for (auto fld : k_fields) {
        const weight& w = m_.layer(il).*fld;
        if (!w) continue;
        c.tensors.push_back(*w.t);
        c.fields.push_back(fld);
        ext.push_back({f.data_offset() + w.t->offset, w.t->nbytes});
      }
      for (size_t k = 0; k < c.fields.size(); ++k) c.lw.*(c.fields[k]) = weight{&c.tensors[k]};
      one_layer = std::max(one_layer, layer_cache::buffer_bytes(ext));
      slot_of_[static_cast<size_t>(il)] = static_cast<int>(slots.size());
      slots.push_back(std::move(ext));
    }
    // The automatic plan holds the output head in memory (repacked where it can be): it is read on
    // every token, and from the mapping, under a cgroup limit with no room left for its pages in
    // the page cache, it was read again by page faults on every token (tinyllama Q4_0 under a
    // 152 MiB cgroup: 0.9 tokens/s, 49% of the disk bound).
    const char* rp = std::getenv("TANDEM_REPACK");
    const bool repack = !(rp && std::string(rp) == "0");
    uint64_t out_copy =
        wp.automatic && opt_.output
            ? (repack ? resident_bytes(m_.output()) : (m_.output().nbytes() + 63) / 64 * 64)
            : 0;
    if (out_copy && one_layer + kv_bytes + scratch + out_copy > budget_) {  // slower, but it runs
      notes_.push_back(fmt::format("the output head ({}) is read from the file mapping: a copy "
                                   "would leave no room for a layer",
                                   size_str(out_copy)));
      out_copy = 0;
    }
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
    cfg.path = f.path();
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
    if (wp.automatic) {
      const layer_cache_metrics cm = cache_->metrics();
      const std::string what =
          cm.streamed_layers > 0
              ? fmt::format("streaming {} of {} layers from disk", cm.streamed_layers,
                            cache_->n_slots())
              : fmt::format("all {} layers kept in the layer cache (not repacked), the embedding "
                            "read from the file mapping",
                            cache_->n_slots());
      notes_.push_back(fmt::format("model {} (+ KV cache {}, scratch {}, {} kept free) > memory "
                                   "limit {}: {}",
                                   size_str(m_.weight_bytes()), size_str(kv_bytes),
                                   size_str(scratch), size_str(memory_margin(limit_.bytes)),
                                   limit_.describe(), what));
    }
  }

  // Layer il's weights without a layer cache: its resident copy, or the model's views.
  const layer_weights& resident_layer(int il) const {
    return il >= 0 && static_cast<size_t>(il) < resident_.size() &&
                   !resident_[static_cast<size_t>(il)].fields.empty()
               ? resident_[static_cast<size_t>(il)].lw
               : m_.layer(il);
  }
  // Layer il's weights: the model's views, or the cached copy pinned by `pin` (acquired here,
  // with the next layers queued for prefetch).
  const layer_weights& layer(int il, layer_cache::handle& pin) {
    if (!cache_) return resident_layer(il);
    const int slot = il >= 0 && il < hp_.n_layer ? slot_of_[static_cast<size_t>(il)] : -1;
    if (slot < 0) throw std::logic_error(fmt::format("layer {} is not placed on the CPU", il));
    pin = cache_->acquire(slot);
    cached_layer& c = cached_[static_cast<size_t>(il)];
    for (size_t k = 0; k < c.tensors.size(); ++k) c.tensors[k].data = pin.data(k);
    cache_->prefetch_ahead(slot, prefetch_distance_);
    return c.lw;
  }

  void add_compute(std::chrono::steady_clock::time_point t0) {
    compute_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!opt_.metrics) return;
    layer_cache_metrics m = cache_ ? cache_->metrics() : mapped_;
    m.budget_bytes = budget_;
    m.compute_s = compute_s_;
    *opt_.metrics = m;
  }

  struct cached_layer {
    std::vector<gguf_tensor> tensors;             // copies; data points into the cache buffer
    std::vector<weight layer_weights::*> fields;  // which field each tensor is
    layer_weights lw;
  };

  const model& m_;
  const hparams& hp_;
  backend_options opt_;
  std::vector<float> x_, h_, q_, k_, v_, att_, gate_, up_;
  // RoPE's angles for position rope_pos_ (cpu::rope_angles): every layer of a decode token uses
  // the same ones.
  std::vector<float> rope_cs_;
  int rope_pos_ = -1;
  std::vector<std::unique_ptr<layer_decode>> decode_;  // per layer (decode_steps)
  uint64_t decode_generation_ = 0;  // bumped whenever a layer's steps are rebuilt
  int decode_pos_ = 0;              // the position the decode steps compute
  // forward_layers' steps: those of layers [run_il0_, run_il1_) as of run_generation_.
  std::vector<cpu::step> run_steps_;
  int run_il0_ = -1, run_il1_ = -1;
  uint64_t run_generation_ = 0;
  float* run_out_ = nullptr;  // the logits they end with (the output head's step), or none
  // The output head's plan at the end of forward_layers' region: for logits out_y_, as of
  // out_generation_; out_ok_ false where the plan does not suit it (forward_output then).
  cpu::matvec_plan out_plan_;
  float* out_y_ = nullptr;
  uint64_t out_generation_ = 0;
  bool out_ok_ = false;
  std::vector<std::vector<kv_cache>> kv_;  // per KV sequence, per layer (empty: not placed here)
  int seq_ = 0;                             // the selected sequence (select_seq)
  std::vector<cached_layer> cached_;
  // Without --mem-budget: per layer, x16 copies of the matrices that have a layout (packed_) and
  // views whose tensors point at plain copies of everything else (resident_); empty with
  // TANDEM_REPACK=0 or when the copies would not fit.
  std::vector<packed_layer> packed_;
  std::vector<cached_layer> resident_;
  cpu::packed_matrix packed_output_;
  gguf_tensor output_tensor_;
  gguf_tensor embd_tensor_;
  weight embd_;              // the token embedding's copy, where the weights are copied
  cpu::large_buffer arena_;  // every packed or plain copy
  uint64_t arena_used_ = 0;
  weight output_;  // the output head as forward_output reads it (a copy, or the mapping's view)
  std::vector<std::string> notes_;
  std::vector<int> slot_of_;  // layer -> cache slot (-1: not on this backend)
  int prefetch_distance_ = 0;
  memory_limit limit_;    // found before anything was allocated
  uint64_t budget_ = 0;   // the layer cache's budget: --mem-budget or the automatic plan's
  double compute_s_ = 0;
  layer_cache_metrics mapped_;
  std::unique_ptr<layer_cache> cache_;  // null: weights are views into the mapping
  capture_fn capture_;                  // gpu-cpu-parity's per-op hook (empty: off)
};

}  // namespace

std::unique_ptr<backend> make_cpu_backend(const model& m, const backend_options& opt) {
  return std::make_unique<cpu_backend>(m, opt);
}

}  // namespace tandem
