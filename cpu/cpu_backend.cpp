// The CPU backend: one transformer layer as a handful of op calls on host buffers. Matrix
// products go through cpu::matmul (kernel table + threads); the KV cache is F16. This file holds
// the backend contract and the general path; cpu/cpu_weights.cpp the weights and their
// residency, cpu/decode_plan.cpp a decode token as one parallel region (cpu/cpu_backend.h).
#include "cpu/cpu_backend.h"

#include <fmt/format.h>

#include <chrono>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "cpu/attention.h"
#include "cpu/elementwise.h"
#include "cpu/kernels.h"
#include "cpu/ops_ref.h"
#include "runtime/blocks.h"
#include "runtime/fp16.h"

namespace tandem {

cpu_backend::cpu_backend(const model& m, const backend_options& opt)
    : m_(m), hp_(m.hp()), opt_(opt) {
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

std::string cpu_backend::name() const {
  return fmt::format("CPU ({} threads)", cpu::num_threads());
}

void cpu_backend::embed(const int32_t* tokens, int n_tokens, float* x) {
  const weight& e = embd_ ? embd_ : m_.tok_embd();
  const uint64_t rb = row_bytes(e.type(), static_cast<uint64_t>(e.cols()));
  for (int t = 0; t < n_tokens; ++t) {
    if (tokens[t] < 0 || tokens[t] >= hp_.n_vocab)
      throw error(fmt::format("token id {} is outside the vocabulary (0 .. {})", tokens[t],
                              hp_.n_vocab - 1));
    const auto* row = static_cast<const uint8_t*>(e.data()) + rb * static_cast<uint64_t>(tokens[t]);
    dequantize_row(e.type(), row, x + static_cast<int64_t>(t) * hp_.n_embd, e.cols());
  }
}

void cpu_backend::upload_hidden(const float* x, int n) {
  std::memcpy(x_.data(), x, sizeof(float) * static_cast<size_t>(n) * hp_.n_embd);
}

void cpu_backend::download_hidden(float* x, int n) {
  std::memcpy(x, x_.data(), sizeof(float) * static_cast<size_t>(n) * hp_.n_embd);
}

void cpu_backend::prepare_layer(int il) {
  if (cache_ && prefetch_distance_ > 0 && il >= 0 && il < hp_.n_layer &&
      slot_of_[static_cast<size_t>(il)] >= 0)
    cache_->prefetch(slot_of_[static_cast<size_t>(il)]);
}

void cpu_backend::forward_layer(int il, int n, int pos0) {
  layer_cache::handle pin;  // keeps a cached layer's buffer resident until the layer is done
  const layer_weights& L = layer(il, pin);
  const auto t0 = std::chrono::steady_clock::now();
  kv_cache& kv = kv_of(il);
  if (kv.k.empty()) throw std::logic_error(fmt::format("layer {} is not placed on the CPU", il));
  const int n_embd = hp_.n_embd, n_q = hp_.n_embd_q(), n_kv = hp_.n_embd_kv();

  const packed_layer& P = packed(il);
  if (n == 1 && !capture_ && !cpu::reference_products() && decode_layer(il, L, P, pos0))
    return add_compute(t0);

  const size_t nt = static_cast<size_t>(n);
  // Attention block.
  norm(L.attn_norm, n);
  cap(il, "rms_norm:attn_norm", h_.data(), nt * n_embd);
  const cpu::matmul_job qkv[] = {
      {&L.wq, q_.data(), pk(P.wq)}, {&L.wk, k_.data(), pk(P.wk)}, {&L.wv, v_.data(), pk(P.wv)}};
  cpu::matmul_n(qkv, 3, h_.data(), n);
  cap(il, "matmul:wq", q_.data(), nt * n_q);
  cap(il, "matmul:wk", k_.data(), nt * n_kv);
  cap(il, "matmul:wv", v_.data(), nt * n_kv);
  add_bias(L.bq, q_.data(), n, n_q);
  add_bias(L.bk, k_.data(), n, n_kv);
  add_bias(L.bv, v_.data(), n, n_kv);
  if (L.bq) cap(il, "add:bq", q_.data(), nt * n_q);
  if (L.bk) cap(il, "add:bk", k_.data(), nt * n_kv);
  if (L.bv) cap(il, "add:bv", v_.data(), nt * n_kv);
  for (int t = 0; t < n; ++t) {
    cpu::rope_qk(&q_[static_cast<size_t>(t) * n_q], hp_.n_head, &k_[static_cast<size_t>(t) * n_kv],
                 hp_.n_head_kv, hp_.head_dim, hp_.n_rot, pos0 + t, hp_.rope_freq_base,
                 hp_.rope_freq_scale, hp_.rope);
    kv_store(kv, &k_[static_cast<size_t>(t) * n_kv], &v_[static_cast<size_t>(t) * n_kv], pos0 + t);
  }
  if (capture_) {
    cap(il, "rope:q", q_.data(), nt * n_q);
    cap(il, "rope:k", k_.data(), nt * n_kv);
    std::vector<float> rows(nt * n_kv);
    for (const auto& [name, cache] :
         {std::pair{"kv_store:v", &kv.v}, std::pair{"kv_store:k", &kv.k}}) {
      for (size_t i = 0; i < rows.size(); ++i)  // back to one row per position
        rows[i] = fp16_to_fp32(
            (*cache)[kv_index(pos0 + static_cast<int>(i / n_kv), static_cast<int>(i % n_kv))]);
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
  cap(il, "attention", att_.data(), nt * n_q);
  cpu::matmul(L.wo, att_.data(), n, h_.data(), pk(P.wo));
  for (size_t i = 0; i < static_cast<size_t>(n) * n_embd; ++i) x_[i] += h_[i];
  cap(il, "matmul:wo", x_.data(), nt * n_embd);

  // Feed-forward block (SwiGLU).
  norm(L.ffn_norm, n);
  cap(il, "rms_norm:ffn_norm", h_.data(), nt * n_embd);
  const cpu::matmul_job gate_up[] = {{&L.ffn_gate, gate_.data(), pk(P.ffn_gate)},
                                     {&L.ffn_up, up_.data(), pk(P.ffn_up)}};
  cpu::matmul_n(gate_up, 2, h_.data(), n);
  cap(il, "matmul:ffn_gate", gate_.data(), nt * hp_.n_ff);
  cap(il, "matmul:ffn_up", up_.data(), nt * hp_.n_ff);
  cpu::swiglu(gate_.data(), gate_.data(), up_.data(), static_cast<int64_t>(n) * hp_.n_ff);
  cap(il, "swiglu", gate_.data(), nt * hp_.n_ff);
  cpu::matmul(L.ffn_down, gate_.data(), n, h_.data(), pk(P.ffn_down));
  for (size_t i = 0; i < static_cast<size_t>(n) * n_embd; ++i) x_[i] += h_[i];
  cap(il, "matmul:ffn_down", x_.data(), nt * n_embd);
  add_compute(t0);
}

void cpu_backend::forward_output(int n, bool all_tokens, float* logits) {
  const auto t0 = std::chrono::steady_clock::now();
  const int first = all_tokens ? 0 : n - 1;
  const int count = n - first;
  const int n_embd = hp_.n_embd;
  cpu::rms_norm_rows(h_.data(), &x_[static_cast<size_t>(first) * n_embd],
                     static_cast<const float*>(m_.output_norm().data()), count, n_embd,
                     hp_.rms_eps);
  cpu::matmul(output_ ? output_ : m_.output(), h_.data(), count, logits, pk(packed_output_));
  add_compute(t0);
}

void cpu_backend::select_seq(int seq) {
  if (seq < 0 || seq >= opt_.n_seq)
    throw error(fmt::format("cpu: no KV sequence {} (the backend holds {})", seq, opt_.n_seq));
  seq_ = seq;
}

size_t cpu_backend::kv_index(int pos, int i) const {
  const int h = i / hp_.head_dim, d = i % hp_.head_dim;
  return static_cast<size_t>(h * kv_head_stride() + static_cast<int64_t>(pos) * hp_.head_dim + d);
}

void cpu_backend::kv_store(kv_cache& kv, const float* k, const float* v, int pos) {
  for (int h = 0; h < hp_.n_head_kv; ++h) {
    const size_t at = kv_index(pos, h * hp_.head_dim);
    cpu::fp32_to_fp16_row(k + static_cast<int64_t>(h) * hp_.head_dim, &kv.k[at], hp_.head_dim);
    cpu::fp32_to_fp16_row(v + static_cast<int64_t>(h) * hp_.head_dim, &kv.v[at], hp_.head_dim);
  }
}

void cpu_backend::norm(const weight& w, int n) {
  cpu::rms_norm_rows(h_.data(), x_.data(), static_cast<const float*>(w.data()), n, hp_.n_embd,
                     hp_.rms_eps);
}

void cpu_backend::add_bias_slice(const weight& b, float* y, int off, int n) {
  if (!b) return;
  const auto* bias = static_cast<const float*>(b.data()) + off;
  for (int i = 0; i < n; ++i) y[i] += bias[i];
}

void cpu_backend::add_bias(const weight& b, float* y, int n, int dim) {
  for (int t = 0; t < n; ++t) add_bias_slice(b, y + static_cast<size_t>(t) * dim, 0, dim);
}

void cpu_backend::add_compute(std::chrono::steady_clock::time_point t0) {
  compute_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!opt_.metrics) return;
  layer_cache_metrics m = cache_ ? cache_->metrics() : mapped_;
  m.budget_bytes = budget_;
  m.compute_s = compute_s_;
  *opt_.metrics = m;
}

std::unique_ptr<backend> make_cpu_backend(const model& m, const backend_options& opt) {
  return std::make_unique<cpu_backend>(m, opt);
}

}  // namespace tandem
