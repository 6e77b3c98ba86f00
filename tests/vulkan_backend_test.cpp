// The Vulkan backend as the engine drives it (upload_hidden, forward_layer, forward_output,
// download_hidden, truncate_kv), against make_cpu_backend on the same tokens:
//   * stories260K.gguf (trained, F32): logits of a prompt and of greedy decode steps, all layers
//     on the GPU and split CPU -> GPU, and the greedy continuation equal to the golden ids;
//   * small random models of every weight type, llama and qwen2 (biases, NeoX RoPE, partial
//     rotation, GQA), prompt and decode.
// Thresholds (NMSE of the logits):
//   * F32 / F16 weights 2e-6. Summation order alone gives ~1e-13, but the KV cache is F16: where
//     a K or V value lies within rounding noise of a half-way point, the two paths round it to
//     neighbouring halves (a 5e-4 relative step), which the trained model amplifies to ~4e-7 at
//     a few decode steps; the CPU's own scalar and AVX2 kernels part the same way (7e-8).
//     Top-1 agreement at every position is required as well.
//   * quantized weights 2e-3: the CPU path rounds activations to 8 bits, the GPU keeps them F32
//     (measured 1.2e-4 .. 2.9e-4). Random weights have near-tied logits, so no top-1 check.
#include <gtest/gtest.h>

#ifdef TANDEM_HAVE_VULKAN  // the build has a Vulkan backend

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <vector>

#include "runtime/blocks.h"
#include "runtime/error.h"
#include "runtime/backend_factory.h"
#include "runtime/gguf.h"
#include "runtime/model.h"
#include "tests/test_util.h"
#include "tests/vulkan_test_util.h"

namespace tandem::vk::test {
namespace {

// ---- running a plan: layers [0, split) on the CPU, [split, n_layer) and the head on the GPU --

struct pair_of_backends {
  const model& m;
  std::unique_ptr<backend> cpu;  // embeds; runs layers below split (all of them if gpu is null)
  std::unique_ptr<backend> gpu;
  int split = 0;
};

pair_of_backends make_backends(const model& m, int split, bool with_gpu, int n_ctx, int n_batch,
                               std::string* why, std::vector<int> streamed = {}) {
  pair_of_backends p{m, nullptr, nullptr, with_gpu ? split : m.hp().n_layer};
  backend_options co;
  co.n_ctx = n_ctx;
  co.n_batch = n_batch;
  co.n_threads = 0;  // the default: the physical cores, or TANDEM_THREADS (1 under TSan)
  co.output = !with_gpu;
  for (int il = 0; il < p.split; ++il) co.layers.push_back(il);
  p.cpu = make_cpu_backend(m, co);
  if (with_gpu) {
    backend_options go = co;
    go.layers.clear();
    go.output = true;
    go.streamed_layers = streamed;
    for (int il = p.split; il < m.hp().n_layer; ++il) go.layers.push_back(il);
    p.gpu = make_vulkan_backend(m, go, /*allow_cpu_device=*/true, why);
  }
  return p;
}

// Logits of tokens at positions pos0.. (all tokens, or the last only).
// As the engine does it: prepare_layer(il + 1) before forward_layer(il) (unless prepare is off).
std::vector<float> forward(pair_of_backends& p, const std::vector<int32_t>& tokens, int pos0,
                           bool all_tokens, bool prepare = true) {
  const auto& hp = p.m.hp();
  const int n = static_cast<int>(tokens.size());
  std::vector<float> x(static_cast<size_t>(n) * hp.n_embd);
  p.cpu->embed(tokens.data(), n, x.data());
  p.cpu->upload_hidden(x.data(), n);
  for (int il = 0; il < p.split; ++il) p.cpu->forward_layer(il, n, pos0);
  backend* last = p.cpu.get();
  if (p.gpu) {
    p.cpu->download_hidden(x.data(), n);
    p.gpu->upload_hidden(x.data(), n);
    for (int il = p.split; il < hp.n_layer; ++il) {
      if (prepare && il + 1 < hp.n_layer) p.gpu->prepare_layer(il + 1);
      p.gpu->forward_layer(il, n, pos0);
    }
    last = p.gpu.get();
  }
  std::vector<float> logits(static_cast<size_t>(all_tokens ? n : 1) * hp.n_vocab);
  last->forward_output(n, all_tokens, logits.data());
  return logits;
}

int argmax(const float* v, int n) {
  return static_cast<int>(std::max_element(v, v + n) - v);
}

// Prompt (all-token logits) then greedy decode steps, GPU plan against the all-CPU plan; the
// continuation is fed from the CPU's choices so that both see the same tokens.
void compare_plans(const model& m, int split, const std::vector<int32_t>& prompt, int n_decode,
                   double threshold, bool check_top1 = true, std::vector<int> streamed = {}) {
  std::string why;
  auto ref = make_backends(m, 0, false, 128, 32, &why);
  auto gpu = make_backends(m, split, true, 128, 32, &why, streamed);
  ASSERT_NE(gpu.gpu, nullptr) << why;
  const int n_vocab = m.hp().n_vocab;

  const auto lr = forward(ref, prompt, 0, true);
  const auto lg = forward(gpu, prompt, 0, true);
  EXPECT_LE(nmse(lr, lg), threshold) << "prompt logits";
  for (size_t t = 0; t < prompt.size() && check_top1; ++t)
    EXPECT_EQ(argmax(&lr[t * n_vocab], n_vocab), argmax(&lg[t * n_vocab], n_vocab))
        << "token " << t;

  int tok = argmax(&lr[(prompt.size() - 1) * n_vocab], n_vocab);
  double worst = 0;
  for (int i = 0; i < n_decode; ++i) {
    const int pos = static_cast<int>(prompt.size()) + i;
    const auto dr = forward(ref, {tok}, pos, false);
    const auto dg = forward(gpu, {tok}, pos, false);
    worst = std::max(worst, nmse(dr, dg));
    if (check_top1) {
      EXPECT_EQ(argmax(dr.data(), n_vocab), argmax(dg.data(), n_vocab)) << "decode step " << i;
    }
    tok = argmax(dr.data(), n_vocab);
  }
  EXPECT_LE(worst, threshold) << "decode logits";
  std::printf("split %d: prompt NMSE %.3g, worst decode NMSE %.3g\n", split, nmse(lr, lg), worst);
}

std::string stories_path() {
  return tandem::test::model_path("stories260K.gguf");
}

class VulkanBackend : public vulkan_test {
 protected:
  void SetUp() override {
    vulkan_test::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    if (!std::ifstream(stories_path())) GTEST_SKIP() << "no " << stories_path();
  }
};

const std::vector<int32_t> k_once = {1, 403, 407, 261, 378};  // BOS "Once upon a time"

TEST_F(VulkanBackend, Stories260KAllLayersMatchCpu) {
  auto m = model::load(stories_path());
  compare_plans(*m, 0, k_once, 24, 2e-6);
}

TEST_F(VulkanBackend, Stories260KSplitCpuThenGpuMatchesCpu) {
  auto m = model::load(stories_path());
  compare_plans(*m, 2, k_once, 8, 2e-6);
  compare_plans(*m, m->hp().n_layer, k_once, 4, 2e-6);  // only the output head on the GPU
}

// Greedy continuation of "Once upon a time" with every layer on the GPU equals the output of
// llama2.c's run.c (../shared/models/golden).
TEST_F(VulkanBackend, Stories260KGreedyMatchesGolden) {
  std::ifstream in(tandem::test::model_path("golden/stories260K_t0_n64_once.ids"));
  if (!in) GTEST_SKIP() << "no golden ids";
  std::string line;
  std::vector<int32_t> golden;
  while (std::getline(in, line)) {
    if (line.rfind("generated_ids:", 0) != 0) continue;
    std::istringstream ss(line.substr(14));
    for (int32_t id; ss >> id;) golden.push_back(id);
  }
  ASSERT_FALSE(golden.empty());
  auto m = model::load(stories_path());
  std::string why;
  auto p = make_backends(*m, 0, true, 128, 16, &why);
  ASSERT_NE(p.gpu, nullptr) << why;
  const int n_vocab = m->hp().n_vocab;
  auto logits = forward(p, k_once, 0, false);
  std::vector<int32_t> got;
  for (size_t i = 0; i < golden.size(); ++i) {
    const int tok = argmax(logits.data(), n_vocab);
    got.push_back(tok);
    logits = forward(p, {tok}, static_cast<int>(k_once.size() + i), false);
  }
  EXPECT_EQ(got, golden);
}

// truncate_kv then re-running the same positions gives the same logits; a batch split into
// single tokens gives the same logits as one batch (vector vs tiled kernels; the F16 KV cache
// makes this 1e-6 rather than 1e-12, see the top of the file).
TEST_F(VulkanBackend, TruncateAndReplayAndBatchSplit) {
  auto m = model::load(stories_path());
  std::string why;
  auto p = make_backends(*m, 0, true, 64, 16, &why);
  ASSERT_NE(p.gpu, nullptr) << why;
  const std::vector<int32_t> toks = {1, 403, 407, 261, 378, 432, 383, 286};
  const int n_vocab = m->hp().n_vocab;
  const auto all = forward(p, toks, 0, true);
  p.gpu->truncate_kv(3);
  const auto tail = forward(p, {toks.begin() + 3, toks.end()}, 3, true);
  EXPECT_LE(nmse(&all[3 * static_cast<size_t>(n_vocab)], tail.data(), tail.size()), 1e-6);
  p.gpu->truncate_kv(0);
  for (size_t t = 0; t < toks.size(); ++t) {
    const auto one = forward(p, {toks[t]}, static_cast<int>(t), false);
    EXPECT_LE(nmse(&all[t * n_vocab], one.data(), one.size()), 1e-6) << "token " << t;
    EXPECT_EQ(argmax(&all[t * n_vocab], n_vocab), argmax(one.data(), n_vocab)) << "token " << t;
  }
}

// Streamed layers (matrices in host memory, copied into two device slots on the transfer queue
// ahead of use) give exactly the logits of resident ones: same kernels, same bytes. Three
// streamed layers between resident ones make the two slots take turns; without prepare_layer
// the copy happens inside forward_layer.
TEST_F(VulkanBackend, StreamedLayersEqualResidentOnes) {
  auto m = model::load(stories_path());
  std::string why;
  auto resident = make_backends(*m, 0, true, 64, 16, &why);
  ASSERT_NE(resident.gpu, nullptr) << why;
  for (bool prepare : {true, false}) {
    SCOPED_TRACE(prepare ? "with prepare_layer" : "without prepare_layer");
    auto streamed = make_backends(*m, 0, true, 64, 16, &why, {1, 2, 4});
    ASSERT_NE(streamed.gpu, nullptr) << why;
    resident.gpu->truncate_kv(0);
    const std::vector<int32_t> prompt = {1, 403, 407, 261, 378, 432};
    EXPECT_EQ(forward(resident, prompt, 0, true), forward(streamed, prompt, 0, true, prepare));
    for (int i = 0; i < 4; ++i) {
      const int32_t tok = 383 + i;
      const int pos = static_cast<int>(prompt.size()) + i;
      EXPECT_EQ(forward(resident, {tok}, pos, false), forward(streamed, {tok}, pos, false, prepare))
          << "decode step " << i;
    }
  }
  // And every GPU layer streamed, after two on the CPU.
  compare_plans(*m, 2, k_once, 4, 2e-6, true, {2, 3, 4});
}

TEST_F(VulkanBackend, RejectsOversizedBatchWithAMessage) {
  auto m = model::load(stories_path());
  std::string why;
  auto p = make_backends(*m, 0, true, 64, 4, &why);
  ASSERT_NE(p.gpu, nullptr) << why;
  std::vector<float> x(static_cast<size_t>(8) * m->hp().n_embd);
  try {
    p.gpu->upload_hidden(x.data(), 8);
    FAIL() << "no error";
  } catch (const error& e) {
    EXPECT_NE(std::string(e.what()).find("batch of 8"), std::string::npos) << e.what();
  }
  EXPECT_THROW(p.gpu->forward_layer(0, 4, 62), error);  // past the context
}

// ---- random models of every weight type ---------------------------------------------------------

struct model_spec {
  std::string arch = "llama";  // qwen2: q/k/v biases and NeoX RoPE
  dtype type = dtype::f32;
  int n_embd = 256, n_layer = 2, n_head = 8, n_head_kv = 2, head_dim = 32, n_rot = 32;
  int n_ff = 512, n_vocab = 96;
  bool tied = false;
};

void write_model(const std::string& path, const model_spec& s, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  gguf_writer w;
  const std::string a = s.arch + ".";
  w.set_string("general.architecture", s.arch);
  w.set_u32(a + "embedding_length", static_cast<uint32_t>(s.n_embd));
  w.set_u32(a + "block_count", static_cast<uint32_t>(s.n_layer));
  w.set_u32(a + "feed_forward_length", static_cast<uint32_t>(s.n_ff));
  w.set_u32(a + "attention.head_count", static_cast<uint32_t>(s.n_head));
  w.set_u32(a + "attention.head_count_kv", static_cast<uint32_t>(s.n_head_kv));
  w.set_u32(a + "attention.key_length", static_cast<uint32_t>(s.head_dim));
  w.set_u32(a + "rope.dimension_count", static_cast<uint32_t>(s.n_rot));
  w.set_u32(a + "context_length", 256);
  w.set_f32(a + "attention.layer_norm_rms_epsilon", 1e-6f);
  auto mat = [&](const std::string& name, int cols, int rows, dtype t, float scale) {
    std::vector<float> f(static_cast<size_t>(cols) * rows);
    for (auto& v : f) v = nd(rng) * scale;
    const uint64_t rb = row_bytes(t, static_cast<uint64_t>(cols));
    std::vector<uint8_t> b(rb * static_cast<uint64_t>(rows));
    for (int r = 0; r < rows; ++r)
      quantize_row(t, f.data() + static_cast<size_t>(r) * cols, b.data() + rb * r, cols);
    w.add_tensor(name, t, {cols, rows}, std::move(b));
  };
  auto vec = [&](const std::string& name, int n, float mean, float sd) {
    std::vector<float> f(static_cast<size_t>(n));
    for (auto& v : f) v = mean + sd * nd(rng);
    std::vector<uint8_t> b(f.size() * 4);
    std::memcpy(b.data(), f.data(), b.size());
    w.add_tensor(name, dtype::f32, {n}, std::move(b));
  };
  const int nq = s.n_head * s.head_dim, nkv = s.n_head_kv * s.head_dim;
  const float sc = 1.0f / std::sqrt(static_cast<float>(s.n_embd));
  mat("token_embd.weight", s.n_embd, s.n_vocab, s.type, 1.0f);
  for (int il = 0; il < s.n_layer; ++il) {
    const std::string p = "blk." + std::to_string(il) + ".";
    vec(p + "attn_norm.weight", s.n_embd, 1.0f, 0.1f);
    mat(p + "attn_q.weight", s.n_embd, nq, s.type, sc);
    mat(p + "attn_k.weight", s.n_embd, nkv, s.type, sc);
    mat(p + "attn_v.weight", s.n_embd, nkv, s.type, sc);
    if (s.arch == "qwen2") {
      vec(p + "attn_q.bias", nq, 0.0f, 0.5f);
      vec(p + "attn_k.bias", nkv, 0.0f, 0.5f);
      vec(p + "attn_v.bias", nkv, 0.0f, 0.5f);
    }
    mat(p + "attn_output.weight", nq, s.n_embd, s.type, 1.0f / std::sqrt(static_cast<float>(nq)));
    vec(p + "ffn_norm.weight", s.n_embd, 1.0f, 0.1f);
    mat(p + "ffn_gate.weight", s.n_embd, s.n_ff, s.type, sc);
    mat(p + "ffn_up.weight", s.n_embd, s.n_ff, s.type, sc);
    mat(p + "ffn_down.weight", s.n_ff, s.n_embd, s.type,
        1.0f / std::sqrt(static_cast<float>(s.n_ff)));
  }
  vec("output_norm.weight", s.n_embd, 1.0f, 0.1f);
  if (!s.tied) mat("output.weight", s.n_embd, s.n_vocab, s.type, sc);
  w.write(path);
}

class VulkanModels : public vulkan_test {};

void check_random_model(const model_spec& s, double threshold, bool check_top1) {
  SCOPED_TRACE(testing::Message() << s.arch << " " << dtype_name(s.type));
  const std::string path =
      tandem::test::temp_dir() + "/vk_" + s.arch + "_" + std::string(dtype_name(s.type)) + ".gguf";
  write_model(path, s, 42);
  auto m = model::load(path);
  const std::vector<int32_t> prompt = {1, 17, 5, 60, 33, 2, 90, 44, 11};  // 9: the tiled kernel
  compare_plans(*m, 0, prompt, 3, threshold, check_top1);
}

TEST_F(VulkanModels, FloatWeightsMatchCpu) {
  for (dtype t : {dtype::f32, dtype::f16}) {
    model_spec s;
    s.type = t;
    check_random_model(s, 2e-6, true);
  }
}

TEST_F(VulkanModels, Qwen2BiasesNeoxPartialRopeMatchCpu) {
  model_spec s;
  s.arch = "qwen2";
  s.n_rot = 16;     // rotate half of each head
  s.n_head_kv = 1;  // GQA 8
  s.tied = true;
  check_random_model(s, 2e-6, true);
}

TEST_F(VulkanModels, QuantizedWeightsMatchCpu) {
  for (dtype t : {dtype::q8_0, dtype::q4_0, dtype::q4_k, dtype::q5_k, dtype::q6_k}) {
    model_spec s;
    s.type = t;
    check_random_model(s, 2e-3, false);
  }
}

// ---- the weight-load variants: 16/8-bit loads give the 32-bit loads' logits, bit for bit -------
// (pipeline_cache::loads16, TANDEM_VK_VARIANT=loads=u32|u16): llama.cpp's Q4_0 and Q8_0 files,
// the prompt (tiled kernel) and greedy decode steps (the fused matvec) on the GPU.

// All-token prompt logits, then decode logits of 3 greedy steps, with TANDEM_VK_VARIANT=forced.
std::vector<float> gpu_logits(const model& m, const char* forced) {
  const char* old = std::getenv("TANDEM_VK_VARIANT");
  const std::string saved = old ? old : "";
  setenv("TANDEM_VK_VARIANT", forced, 1);
  struct restore {
    bool had;
    std::string v;
    ~restore() {
      if (had)
        setenv("TANDEM_VK_VARIANT", v.c_str(), 1);
      else
        unsetenv("TANDEM_VK_VARIANT");
    }
  } r{old != nullptr, saved};
  std::string why;
  auto p = make_backends(m, 0, true, 128, 32, &why);
  EXPECT_NE(p.gpu, nullptr) << why;
  if (!p.gpu) return {};
  std::vector<float> all = forward(p, k_once, 0, true);
  const int n_vocab = m.hp().n_vocab;
  int tok = argmax(&all[(k_once.size() - 1) * static_cast<size_t>(n_vocab)], n_vocab);
  for (int i = 0; i < 3; ++i) {
    const auto d = forward(p, {tok}, static_cast<int>(k_once.size()) + i, false);
    all.insert(all.end(), d.begin(), d.end());
    tok = argmax(d.data(), n_vocab);
  }
  return all;
}

TEST_F(VulkanModels, SixteenBitWeightLoadsGiveTheSameLogitsBitForBit) {
  if (!ctx().caps().storage16) GTEST_SKIP() << "no 16/8-bit storage access on this device";
  for (const char* file : {"quant/tiny-Q4_0.gguf", "quant/tiny-Q8_0.gguf"}) {
    SCOPED_TRACE(file);
    const std::string path = tandem::test::model_path(file);
    if (!std::ifstream(path)) GTEST_SKIP() << "no " << path;
    auto m = model::load(path);
    const auto a = gpu_logits(*m, "loads=u32"), b = gpu_logits(*m, "loads=u16");
    ASSERT_EQ(a.size(), b.size());
    ASSERT_FALSE(a.empty());
    size_t differ = 0;
    for (size_t i = 0; i < a.size(); ++i) differ += std::memcmp(&a[i], &b[i], 4) != 0;
    EXPECT_EQ(differ, 0u) << "of " << a.size() << " logits; NMSE " << nmse(a, b);
  }
}

TEST_F(VulkanModels, UnknownWeightLoadVariantIsAnError) {
  setenv("TANDEM_VK_VARIANT", "loads=u8", 1);
  pipeline_cache pipes(ctx());
  EXPECT_THROW(pipes.loads16(dtype::q4_0), error);
  EXPECT_FALSE(pipes.loads16(dtype::f16));  // only the 2-byte-aligned block types have them
  unsetenv("TANDEM_VK_VARIANT");
}

}  // namespace
}  // namespace tandem::vk::test

#endif  // TANDEM_HAVE_VULKAN
