// The CPU backend: one transformer layer as a handful of op calls on host buffers. Matrix
// products go through cpu::matmul (kernel table + threads); the KV cache is F16.
#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/fp16.h"
#include "cpu/matmul.h"
#include "cpu/ops_ref.h"
#include "cpu/parallel.h"
#include "cpu/quant.h"
#include "runtime/backend_factory.h"

namespace tandem {
namespace {

using f16 = uint16_t;

class cpu_backend final : public backend {
 public:
  cpu_backend(const model& m, const backend_options& opt) : m_(m), hp_(m.hp()), opt_(opt) {
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
    kv_.resize(static_cast<size_t>(hp_.n_layer));
    for (int il : opt.layers) {
      kv_[static_cast<size_t>(il)].k.resize(static_cast<size_t>(opt.n_ctx) * hp_.n_embd_kv());
      kv_[static_cast<size_t>(il)].v.resize(static_cast<size_t>(opt.n_ctx) * hp_.n_embd_kv());
    }
  }

  std::string name() const override { return fmt::format("CPU ({} threads)", cpu::num_threads()); }

  void embed(const int32_t* tokens, int n_tokens, float* x) override {
    const weight& e = m_.tok_embd();
    const uint64_t rb = row_bytes(e.type(), static_cast<uint64_t>(e.cols()));
    for (int t = 0; t < n_tokens; ++t) {
      if (tokens[t] < 0 || tokens[t] >= hp_.n_vocab)
        throw error(fmt::format("token id {} is outside the vocabulary (0 .. {})", tokens[t],
                                hp_.n_vocab - 1));
      const auto* row = static_cast<const uint8_t*>(e.data()) + rb * static_cast<uint64_t>(tokens[t]);
      cpu::dequantize_row(e.type(), row, x + static_cast<int64_t>(t) * hp_.n_embd, e.cols());
    }
  }

  void upload_hidden(const float* x, int n) override {
    std::memcpy(x_.data(), x, sizeof(float) * static_cast<size_t>(n) * hp_.n_embd);
  }
  void download_hidden(float* x, int n) override {
    std::memcpy(x, x_.data(), sizeof(float) * static_cast<size_t>(n) * hp_.n_embd);
  }

  void forward_layer(int il, int n, int pos0) override {
    const layer_weights& L = m_.layer(il);
    kv_cache& kv = kv_[static_cast<size_t>(il)];
    if (kv.k.empty()) throw std::logic_error(fmt::format("layer {} is not placed on the CPU", il));
    const int d = hp_.n_embd, dq = hp_.n_embd_q(), dkv = hp_.n_embd_kv();

    // Attention block.
    norm(L.attn_norm, n);
    cpu::matmul(L.wq, h_.data(), n, q_.data());
    cpu::matmul(L.wk, h_.data(), n, k_.data());
    cpu::matmul(L.wv, h_.data(), n, v_.data());
    add_bias(L.bq, q_.data(), n, dq);
    add_bias(L.bk, k_.data(), n, dkv);
    add_bias(L.bv, v_.data(), n, dkv);
    for (int t = 0; t < n; ++t) {
      cpu::ref::rope(&q_[static_cast<size_t>(t) * dq], hp_.n_head, hp_.head_dim, hp_.n_rot,
                     pos0 + t, hp_.rope_freq_base, hp_.rope_freq_scale, hp_.rope);
      cpu::ref::rope(&k_[static_cast<size_t>(t) * dkv], hp_.n_head_kv, hp_.head_dim, hp_.n_rot,
                     pos0 + t, hp_.rope_freq_base, hp_.rope_freq_scale, hp_.rope);
      f16* kd = &kv.k[static_cast<size_t>(pos0 + t) * dkv];
      f16* vd = &kv.v[static_cast<size_t>(pos0 + t) * dkv];
      for (int i = 0; i < dkv; ++i) {
        kd[i] = cpu::fp32_to_fp16(k_[static_cast<size_t>(t) * dkv + i]);
        vd[i] = cpu::fp32_to_fp16(v_[static_cast<size_t>(t) * dkv + i]);
      }
    }
    cpu::parallel_for(hp_.n_head, 1, [&](int64_t h0, int64_t h1) {
      cpu::ref::attention(att_.data(), q_.data(), kv.k.data(), kv.v.data(), n, pos0, hp_.n_head,
                          hp_.n_head_kv, hp_.head_dim, static_cast<int>(h0), static_cast<int>(h1));
    });
    cpu::matmul(L.wo, att_.data(), n, h_.data());
    for (size_t i = 0; i < static_cast<size_t>(n) * d; ++i) x_[i] += h_[i];

    // Feed-forward block (SwiGLU).
    norm(L.ffn_norm, n);
    cpu::matmul(L.ffn_gate, h_.data(), n, gate_.data());
    cpu::matmul(L.ffn_up, h_.data(), n, up_.data());
    cpu::ref::swiglu(gate_.data(), gate_.data(), up_.data(), n * hp_.n_ff);
    cpu::matmul(L.ffn_down, gate_.data(), n, h_.data());
    for (size_t i = 0; i < static_cast<size_t>(n) * d; ++i) x_[i] += h_[i];
  }

  void forward_output(int n, bool all_tokens, float* logits) override {
    const int first = all_tokens ? 0 : n - 1;
    const int count = n - first;
    const int d = hp_.n_embd;
    for (int t = 0; t < count; ++t)
      cpu::ref::rmsnorm(&h_[static_cast<size_t>(t) * d], &x_[static_cast<size_t>(first + t) * d],
                        static_cast<const float*>(m_.output_norm().data()), d, hp_.rms_eps);
    cpu::matmul(m_.output(), h_.data(), count, logits);
  }

  void truncate_kv(int) override {}  // positions past n_past are overwritten before use

 private:
  struct kv_cache {
    std::vector<f16> k, v;  // n_ctx x n_embd_kv
  };

  void norm(const weight& w, int n) {
    const int d = hp_.n_embd;
    for (int t = 0; t < n; ++t)
      cpu::ref::rmsnorm(&h_[static_cast<size_t>(t) * d], &x_[static_cast<size_t>(t) * d],
                        static_cast<const float*>(w.data()), d, hp_.rms_eps);
  }

  static void add_bias(const weight& b, float* y, int n, int dim) {
    if (!b) return;
    const auto* bias = static_cast<const float*>(b.data());
    for (int t = 0; t < n; ++t)
      for (int i = 0; i < dim; ++i) y[static_cast<size_t>(t) * dim + i] += bias[i];
  }

  const model& m_;
  const hparams& hp_;
  backend_options opt_;
  std::vector<float> x_, h_, q_, k_, v_, att_, gate_, up_;
  std::vector<kv_cache> kv_;
};

}  // namespace

std::unique_ptr<backend> make_cpu_backend(const model& m, const backend_options& opt) {
  return std::make_unique<cpu_backend>(m, opt);
}

}  // namespace tandem
