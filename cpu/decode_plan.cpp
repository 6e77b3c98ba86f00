// The CPU backend's decode plan: a decode token through a layer (or a run of layers) as the
// steps of one parallel region (cpu::run_steps), built once per layer and kept from token to
// token. The same ops and kernels as forward_layer's general path (cpu/cpu_backend.cpp), so the
// same bits.
#include <fmt/format.h>

#include <algorithm>
#include <iterator>
#include <memory>
#include <stdexcept>

#include "cpu/attention.h"
#include "cpu/cpu_backend.h"
#include "cpu/elementwise.h"
#include "cpu/kernels.h"

namespace tandem {
namespace {

// A thread that waits for the serial step before a product prefetches the first bytes of its
// share meanwhile.
constexpr size_t warm_bytes = 64 * 1024;
// The gate/up units in groups of ff_rows rows of each (gate rows, then the same up rows), so
// that a thread's share holds both halves of its SwiGLU inputs.
constexpr int64_t ff_rows = cpu::matvec_plan::range_block;

}  // namespace

cpu_backend::layer_decode& cpu_backend::decode_steps(int il, const layer_weights& L,
                                                     const packed_layer& P) {
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
  if (!build_decode_plans(D, L, P)) return D;
  // llama's RoPE rotates adjacent pairs, each on its own: with every QKV job in units of an
  // even number of rows, the QKV step's rows are finished as they land, on the thread that
  // computed them (biases, RoPE, K and V into the cache), with its cache lines at hand. In the
  // attention items, the same work read the rows from the other threads' caches: ~2.9 us of an
  // item's ~8.8 us (stories110M Q4_0, tg128, 2 threads).
  D.by_rows = hp_.rope == rope_style::adjacent && hp_.head_dim % 2 == 0 &&
              D.qkv.unit_rows(0) % 2 == 0 && D.qkv.unit_rows(1) % 2 == 0 &&
              D.qkv.unit_rows(2) % 2 == 0;
  // The serial work between products runs as the `last` of the step before it (cpu::step),
  // on the thread that completes that step, at once: as steps of their own, each cost a hand-
  // over between threads (stories110M Q4_0 tg128, 2 threads: four of nine steps per layer).
  // The layer's first, its norm, is an item step here, and the previous layer's down step's
  // last where forward_layers runs layers back to back.
  D.head = decode_head(D, L);
  // The steps of a decode token through the layer, in order (layer_decode::steps).
  cpu::step steps[] = {
      {.n = 1, .item = [&D](int64_t) { D.head(); }},  // attention norm, quantized
      qkv_step(D, il, L),
      attention_step(D, il, L),
      wo_step(D, L),
      gate_up_step(D),
      down_step(D, il),
  };
  D.steps.assign(std::make_move_iterator(std::begin(steps)),
                 std::make_move_iterator(std::end(steps)));
  return D;
}

bool cpu_backend::build_decode_plans(layer_decode& D, const layer_weights& L,
                                     const packed_layer& P) {
  const cpu::matmul_job qkv[] = {
      {&L.wq, q_.data(), pk(P.wq)}, {&L.wk, k_.data(), pk(P.wk)}, {&L.wv, v_.data(), pk(P.wv)}};
  const cpu::matmul_job wo{&L.wo, h_.data(), pk(P.wo)};
  const cpu::matmul_job gate_up[] = {{&L.ffn_gate, gate_.data(), pk(P.ffn_gate)},
                                     {&L.ffn_up, up_.data(), pk(P.ffn_up)}};
  const cpu::matmul_job down{&L.ffn_down, h_.data(), pk(P.ffn_down)};
  const int ff_groups = hp_.n_ff % ff_rows == 0 ? static_cast<int>(hp_.n_ff / ff_rows) : 1;
  if (!D.qkv.build(qkv, 3, 1) || !D.wo.build(&wo, 1, 1) ||
      !D.gate_up.build(gate_up, 2, 1, ff_groups) || !D.down.build(&down, 1, 1))
    return false;
  // The thread that completes a group's gate and up rows applies SwiGLU to them and quantizes
  // them for the down product, at once and with the rows in its cache; the down step then
  // starts with no serial step before it. Otherwise one thread did all of it between the
  // steps while the others waited (stories110M Q6_K tg128: ~2.2 us of each ~100 us layer).
  D.ff_done.reset();
  if (ff_groups > 1 && D.gate_up.groups() == ff_groups) {
    D.ff_done = std::make_unique<units_done[]>(static_cast<size_t>(ff_groups));
    D.down.prepare(gate_.data());
  }
  return true;
}

std::function<void()> cpu_backend::decode_head(layer_decode& D, const layer_weights& L) {
  return [this, W = &L, &D] {
    norm(W->attn_norm, 1);
    D.qkv.quantize(h_.data());
    if (rope_pos_ != decode_pos_) {  // the first layer of a token
      rope_cs_.resize(static_cast<size_t>(hp_.n_rot));
      cpu::rope_angles(decode_pos_, hp_.n_rot, hp_.rope_freq_base, hp_.rope_freq_scale,
                       rope_cs_.data());
      rope_pos_ = decode_pos_;
    }
  };
}

// x += h row by row as each run of the output products' units lands (the same adds as
// forward_layer's residual, without a step of its own). The norm after the product (the step's
// last) would read its weights from memory: the runs in the product's last 16th, on the thread
// likely to complete the step, prefetch them.
cpu::step cpu_backend::residual_step(const cpu::matvec_plan& p, const weight* next_norm) {
  const int64_t tail = p.units() - p.units() / 16;
  return p.as_step(warm_bytes, [this, &p, next_norm, tail](int64_t u0, int64_t u1) {
    int64_t r0, r1;
    p.rows(0, u0, u1, &r0, &r1);
    for (int64_t r = r0; r < r1; ++r) x_[static_cast<size_t>(r)] += h_[static_cast<size_t>(r)];
    if (next_norm && u1 > tail) cpu::prefetch_l2(next_norm->data(), next_norm->nbytes());
  });
}

// Q, K and V; with by_rows, each run of rows finished as it lands (biases, RoPE, the KV store).
cpu::step cpu_backend::qkv_step(layer_decode& D, int il, const layer_weights& L) {
  if (!D.by_rows) return D.qkv.as_step(warm_bytes);
  return D.qkv.as_step(warm_bytes, [this, W = &L, il, &D](int64_t u0, int64_t u1) {
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
  });
}

// Attention by runs of KV heads, one run per thread (each item is a new stream and two atomics;
// each KV head is read and staged once). Per run [g0, g1): for each KV head g (unless the QKV
// step did it), biases, RoPE and the cache store of its K and V and of its query heads (the
// same ops, slice by slice, as forward_layer), then the run's attention.
cpu::step cpu_backend::attention_step(layer_decode& D, int il, const layer_weights& L) {
  const int n_att = std::min(hp_.n_head_kv, D.threads);
  const auto att_first = [this, n_att](int64_t i) {  // the first KV head of attention item i
    return static_cast<int>(i * hp_.n_head_kv / n_att);
  };
  return {.n = n_att,
          .item =
              [this, W = &L, il, att_first, by_rows = D.by_rows](int64_t i) {
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
                cpu::attention(att_.data(), q_.data(), kv->k.data(), kv->v.data(), 1, pos,
                               hp_.n_head, hp_.n_head_kv, hd, g0 * group, g1 * group, hd,
                               kv_head_stride());
              },
          // Warm: the first KV head's first rows (earlier positions).
          .warm =
              [this, il, att_first](int64_t i) {
                const int g = att_first(i), hd = hp_.head_dim;
                kv_cache* kv = &kv_of(il);
                const size_t bytes = sizeof(f16) * static_cast<size_t>(hd) *
                                     static_cast<size_t>(std::min(decode_pos_, 64));
                cpu::prefetch_l2(&kv->k[kv_index(0, g * hd)], bytes);
                cpu::prefetch_l2(&kv->v[kv_index(0, g * hd)], bytes);
              },
          .last = [this, &D] { D.wo.quantize(att_.data()); }};
}

// The output product and its residual add; then the FFN norm, quantized for gate and up.
cpu::step cpu_backend::wo_step(layer_decode& D, const layer_weights& L) {
  cpu::step s = residual_step(D.wo, &L.ffn_norm);
  s.last = [this, W = &L, &D] {
    norm(W->ffn_norm, 1);
    D.gate_up.quantize(h_.data());
    if (D.ff_done)
      for (int g = 0; g < D.gate_up.groups(); ++g)
        D.ff_done[static_cast<size_t>(g)].v.store(0, std::memory_order_relaxed);
  };
  return s;
}

// Gate and up; SwiGLU and its quantization inside the groups (ff_done), else once after.
cpu::step cpu_backend::gate_up_step(layer_decode& D) {
  if (!D.ff_done) {
    cpu::step s = D.gate_up.as_step(warm_bytes);
    s.last = [this, &D] {
      cpu::swiglu(gate_.data(), gate_.data(), up_.data(), hp_.n_ff);
      D.down.quantize(gate_.data());
    };
    return s;
  }
  return D.gate_up.as_step(warm_bytes, [this, &D](int64_t u0, int64_t u1) {
    const int64_t gu = D.gate_up.group_units();
    for (int64_t g = u0 / gu; g * gu < u1; ++g) {
      const int64_t n = std::min(u1, (g + 1) * gu) - std::max(u0, g * gu);
      if (D.ff_done[static_cast<size_t>(g)].v.fetch_add(n, std::memory_order_acq_rel) + n != gu)
        continue;
      const int64_t c0 = g * ff_rows;
      cpu::swiglu(gate_.data() + c0, gate_.data() + c0, up_.data() + c0, ff_rows);
      D.down.quantize_range(c0, c0 + ff_rows);
    }
  });
}

// The down product and its residual add, prefetching the norm after it: the next layer's
// (where its weights stay put) or the output's.
cpu::step cpu_backend::down_step(layer_decode& D, int il) {
  const weight* after_down = il + 1 == hp_.n_layer ? &m_.output_norm()
                             : cache_              ? nullptr
                                                   : &resident_layer(il + 1).attn_norm;
  return residual_step(D.down, after_down);
}

bool cpu_backend::decode_layer(int il, const layer_weights& L, const packed_layer& P, int pos) {
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
bool cpu_backend::runs_layers(int n_tokens) const {
  return n_tokens == 1 && !capture_ && !cache_ && !cpu::reference_products();
}

void cpu_backend::forward_layers(int il0, int il1, int n, int pos0, float* logits) {
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
      run_out_ != out)
    build_run_steps(il0, il1, out);
  decode_pos_ = pos0;
  cpu::run_steps(run_steps_.data(), static_cast<int>(run_steps_.size()));
  add_compute(t0);
  if (logits && !out) forward_output(n, false, logits);
}

void cpu_backend::build_run_steps(int il0, int il1, float* out) {
  run_steps_.clear();
  for (int il = il0; il < il1; ++il) {
    const layer_decode& D = *decode_[static_cast<size_t>(il)];
    if (il == il0) {
      run_steps_ = D.steps;
      continue;
    }
    // The layer's norm as the last of the previous layer's down step.
    run_steps_.back().last = D.head;
    run_steps_.insert(run_steps_.end(), D.steps.begin() + layer_decode::after_head, D.steps.end());
  }
  if (out) {  // forward_output's ops, on the plan cpu::matmul would use
    run_steps_.back().last = [this] {
      cpu::rms_norm_rows(h_.data(), x_.data(), static_cast<const float*>(m_.output_norm().data()),
                         1, hp_.n_embd, hp_.rms_eps);
      out_plan_.quantize(h_.data());
    };
    run_steps_.push_back(out_plan_.as_step(warm_bytes));
  }
  run_il0_ = il0;
  run_il1_ = il1;
  run_generation_ = decode_generation_;
  run_out_ = out;
}

}  // namespace tandem
