// Command recording: the hazard tracker that decides where barriers go (vulkan/hazard.h), the
// counters `tandem bench` reports (exact dispatches, barriers and submits of a recorded token of
// stories260K, resident and streamed, and the dispatches recorded on the host), decode layers
// recorded once and replayed giving the logits of fresh recordings bit for bit (vulkan/replay.h),
// and the two ways of binding buffers (push descriptors and descriptor sets from pools) giving
// the same results.
#include <gtest/gtest.h>

#include <vector>

#include "vulkan/hazard.h"

namespace tandem::vk {
namespace {

std::vector<tracked_access> reads(uint64_t buf, uint64_t b, uint64_t e) {
  return {{buf, b, e, false}};
}
std::vector<tracked_access> writes(uint64_t buf, uint64_t b, uint64_t e) {
  return {{buf, b, e, true}};
}

// Records like the recorder does: a barrier (clear) where the tracker asks for one. Returns the
// indices of the steps that got a barrier before them.
std::vector<int> barriers_for(const std::vector<std::vector<tracked_access>>& steps) {
  hazard_tracker t;
  std::vector<int> out;
  for (size_t i = 0; i < steps.size(); ++i) {
    if (t.conflicts(steps[i])) {
      out.push_back(static_cast<int>(i));
      t.clear();
    }
    t.add(steps[i]);
  }
  return out;
}

TEST(HazardTracker, ReadAfterWriteOfAnOverlappingRangeNeedsABarrier) {
  EXPECT_EQ(barriers_for({writes(1, 0, 100), reads(1, 50, 60)}), std::vector<int>{1});
  EXPECT_EQ(barriers_for({writes(1, 0, 100), reads(1, 99, 200)}), std::vector<int>{1});
}

TEST(HazardTracker, DisjointRangesAndOtherBuffersNeedNone) {
  EXPECT_TRUE(barriers_for({writes(1, 0, 100), reads(1, 100, 200)}).empty());  // adjacent
  EXPECT_TRUE(barriers_for({writes(1, 0, 100), writes(2, 0, 100), reads(3, 0, 100)}).empty());
  EXPECT_TRUE(barriers_for({reads(1, 0, 100), reads(1, 0, 100)}).empty());  // read after read
}

TEST(HazardTracker, WriteAfterReadAndWriteAfterWriteNeedOne) {
  EXPECT_EQ(barriers_for({reads(1, 0, 100), writes(1, 10, 20)}), std::vector<int>{1});
  EXPECT_EQ(barriers_for({writes(1, 0, 100), writes(1, 10, 20)}), std::vector<int>{1});
}

TEST(HazardTracker, EmptyRangesAreIgnored) {
  EXPECT_TRUE(barriers_for({writes(1, 0, 100), reads(1, 50, 50)}).empty());
}

// The attention block of a layer (decode): norm x -> h; Q, K, V products of h; RoPE of q and k
// and the V store; the K store; attention; Wo accumulating into x. Buffers: 1 x, 2 h, 3 q, 4 k,
// 5 v, 6 K cache, 7 V cache, 8 att, 9 weights (one buffer, disjoint ranges).
TEST(HazardTracker, AttentionBlockGetsBarriersOnlyBetweenDependentSteps) {
  auto step = [](std::vector<tracked_access> a) { return a; };
  const std::vector<std::vector<tracked_access>> steps = {
      step({{1, 0, 256, false}, {9, 0, 256, false}, {2, 0, 256, true}}),      // 0 rms_norm
      step({{9, 256, 512, false}, {2, 0, 256, false}, {3, 0, 256, true}}),    // 1 wq
      step({{9, 512, 768, false}, {2, 0, 256, false}, {4, 0, 128, true}}),    // 2 wk
      step({{9, 768, 1024, false}, {2, 0, 256, false}, {5, 0, 128, true}}),   // 3 wv
      step({{3, 0, 256, true}, {10, 0, 64, false}}),                          // 4 rope q
      step({{4, 0, 128, true}, {10, 0, 64, false}}),                          // 5 rope k
      step({{5, 0, 128, false}, {7, 0, 4096, true}}),                         // 6 kv_store v
      step({{4, 0, 128, false}, {6, 0, 4096, true}}),                         // 7 kv_store k
      step({{3, 0, 256, false}, {6, 0, 4096, false}, {7, 0, 4096, false},
            {8, 0, 256, true}}),                                              // 8 attention
      step({{9, 1024, 2048, false}, {8, 0, 256, false}, {1, 0, 256, true}}),  // 9 wo
  };
  // Not before wk, wv (read h like wq, write elsewhere), rope k (k was written before the
  // barrier that rope q needed), the V store (v likewise).
  EXPECT_EQ(barriers_for(steps), (std::vector<int>{1, 4, 7, 8, 9}));
}

}  // namespace
}  // namespace tandem::vk

#ifdef TANDEM_HAVE_VULKAN

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <random>

#include "runtime/backend_factory.h"
#include "runtime/error.h"
#include "runtime/model.h"
#include "runtime/trace.h"
#include "tests/test_util.h"
#include "tests/vulkan_test_util.h"
#include "vulkan/host_buffer.h"
#include "vulkan/ops.h"

namespace tandem::vk::test {
namespace {

class VulkanRecording : public vulkan_test {
 protected:
  void SetUp() override {
    vulkan_test::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    if (!std::ifstream(path())) GTEST_SKIP() << "no " << path();
  }
  static std::string path() { return tandem::test::model_path("stories260K.gguf"); }
};

std::unique_ptr<backend> gpu_backend(const model& m, std::vector<int> streamed = {},
                                     trace_recorder* trace = nullptr, int n_seq = 1) {
  backend_options o;
  o.n_seq = n_seq;
  o.trace = trace;
  o.n_ctx = 64;
  o.n_batch = 8;
  o.output = true;
  for (int il = 0; il < m.hp().n_layer; ++il) o.layers.push_back(il);
  o.streamed_layers = std::move(streamed);
  std::string why;
  auto b = make_vulkan_backend(m, o, /*allow_cpu_device=*/true, &why);
  EXPECT_NE(b, nullptr) << why;
  return b;
}

// One decode token as the engine runs it: upload, every layer (asking for the next ahead), head.
backend_counters decode_token(backend& b, const model& m, int pos) {
  const auto& hp = m.hp();
  std::vector<float> x(static_cast<size_t>(hp.n_embd), 0.01f * static_cast<float>(pos + 1));
  std::vector<float> logits(static_cast<size_t>(hp.n_vocab));
  const backend_counters c0 = b.counters();
  b.upload_hidden(x.data(), 1);
  for (int il = 0; il < hp.n_layer; ++il) {
    if (il + 1 < hp.n_layer) b.prepare_layer(il + 1);
    b.forward_layer(il, 1, pos);
  }
  b.forward_output(1, false, logits.data());
  const backend_counters c1 = b.counters();
  return {c1.dispatches - c0.dispatches, c1.barriers - c0.barriers, c1.submits - c0.submits,
          c1.recorded - c0.recorded};
}

// TANDEM_VK_VARIANT set for a scope (the variants are read at every recording).
class scoped_variant {
 public:
  explicit scoped_variant(const std::string& value) {
    const char* v = std::getenv("TANDEM_VK_VARIANT");
    had_ = v != nullptr;
    if (v) old_ = v;
    ::setenv("TANDEM_VK_VARIANT", value.c_str(), 1);
  }
  ~scoped_variant() {
    if (had_)
      ::setenv("TANDEM_VK_VARIANT", old_.c_str(), 1);
    else
      ::unsetenv("TANDEM_VK_VARIANT");
  }

 private:
  bool had_ = false;
  std::string old_;
};

// stories260K (5 layers, no biases), one decode token, all layers resident, the kernels a device
// picks by default (fused decode products, RoPE + KV store in the Q/K/V product's epilogue, flash
// attention in one split at these lengths):
//   dispatches: per layer Q/K/V with the attention norm fused and RoPE + KV store in its epilogue
//     (one dispatch), attention, Wo, gate/up with the FFN norm fused (one dispatch), down reading
//     SwiGLU = 5; the head product with its norm fused = 1: 26.
//   barriers: per layer 5, one before each dispatch (each reads what the one before wrote:
//     x, q and the cache, att, x, gate/up); the head: before its product, the logits copy, and
//     one for the host to read: 28.
//   submits: one (5 layers < one frame's 8, uploaded hidden state and head included).
// (Before the kernel work of issue 26 the same token took 77 dispatches and 54 barriers; with
// the fused products but separate norms, 42 and 44; with the norms fused but a RoPE + KV store
// dispatch of its own and the head's norm unfused, 32 and 34.)
TEST_F(VulkanRecording, CountsOfADecodeTokenAreExact) {
  auto m = model::load(path());
  for (const char* mode : {"record=replay", "record=fresh"}) {
    scoped_variant v(mode);
    auto b = gpu_backend(*m);
    ASSERT_NE(b, nullptr);
    for (int pos = 0; pos < 3; ++pos) {
      const backend_counters c = decode_token(*b, *m, pos);
      EXPECT_EQ(c.dispatches, 26u) << mode << ", position " << pos;
      EXPECT_EQ(c.barriers, 28u) << mode << ", position " << pos;
      EXPECT_EQ(c.submits, 1u) << mode << ", position " << pos;
      const bool replayed = std::string(mode) == "record=replay" && pos > 0;
      EXPECT_EQ(c.recorded, replayed ? 1u : 26u) << mode << ", position " << pos;
    }
  }
}

// Decode tokens through layers recorded once and replayed give the logits of layers recorded
// afresh for every token, bit for bit: over positions that move the flash-decoding split from one
// to several (split3: 1, 2, then 3 splits), after switching the KV sequence and back, after
// rewinding the position (a regenerate: other tokens at positions already used), and with the
// variants changed in between (the recordings are dropped and made again). Unknown record
// variants are a clear error.
TEST_F(VulkanRecording, ReplayedLayersGiveTheLogitsOfFreshOnesBitForBit) {
  auto m = model::load(path());
  const auto& hp = m->hp();
  struct step {
    int seq, pos;
    float x;
    const char* extra;  // more variants forced for this step
  };
  const std::vector<step> steps = {
      {0, 0, 0.3f, "attention=split3"}, {0, 1, -0.2f, "attention=split3"},
      {0, 2, 0.5f, "attention=split3"}, {0, 3, 0.1f, "attention=split3"},
      {1, 0, -0.4f, "attention=split3"}, {1, 1, 0.2f, "attention=split3"},
      {0, 4, 0.7f, "attention=split3"}, {0, 2, -0.6f, "attention=split3"},  // rewound
      {0, 3, 0.25f, "attention=split3"}, {0, 4, 0.05f, ""}, {0, 5, -0.15f, ""},
      {1, 2, 0.35f, ""},                {1, 3, -0.05f, "matvec=separate"}};
  std::vector<std::vector<float>> logits[2];
  backend_counters counts[2];
  for (int mode = 0; mode < 2; ++mode) {
    const std::string record = mode == 0 ? "record=replay" : "record=fresh";
    auto b = [&] {
      scoped_variant v(record);
      return gpu_backend(*m, {}, nullptr, /*n_seq=*/2);
    }();
    ASSERT_NE(b, nullptr);
    for (const step& s : steps) {
      scoped_variant v(record + (*s.extra ? std::string(",") + s.extra : std::string()));
      b->select_seq(s.seq);
      b->truncate_kv(s.pos);
      std::vector<float> x(static_cast<size_t>(hp.n_embd));
      for (size_t i = 0; i < x.size(); ++i) x[i] = s.x * std::sin(0.37f * static_cast<float>(i));
      std::vector<float> out(static_cast<size_t>(hp.n_vocab));
      b->upload_hidden(x.data(), 1);
      for (int il = 0; il < hp.n_layer; ++il) b->forward_layer(il, 1, s.pos);
      b->forward_output(1, false, out.data());
      logits[mode].push_back(std::move(out));
    }
    counts[mode] = b->counters();
  }
  ASSERT_EQ(logits[0].size(), logits[1].size());
  for (size_t i = 0; i < steps.size(); ++i)
    EXPECT_EQ(0, std::memcmp(logits[0][i].data(), logits[1][i].data(),
                             logits[0][i].size() * sizeof(float)))
        << "step " << i << " (seq " << steps[i].seq << ", position " << steps[i].pos << ")";
  // The same work ran; the replaying backend recorded only its layers' recordings and the heads:
  // per (sequence, one split or several) 5 layers of 5 dispatches (6 with the reduce pass):
  // seq 0 and 1, each 1 then 2 splits: 25 + 30 + 25 + 30; the variants changed at step 9 (the
  // recordings dropped): seq 0 and 1 in one split, 25 + 25; again at step 12 (matvec=separate:
  // 12 dispatches a layer, the head's norm unfused), 60 + 2; and 12 heads of 1: 234 of the 409
  // dispatches (13 x 26, 5 reduce passes in each of the 7 steps with several splits, 36 more for
  // the separate products and norms).
  EXPECT_EQ(counts[0].dispatches, counts[1].dispatches);
  EXPECT_EQ(counts[0].barriers, counts[1].barriers);
  EXPECT_EQ(counts[1].recorded, counts[1].dispatches);
  EXPECT_EQ(counts[0].recorded, 234u);
  EXPECT_EQ(counts[0].dispatches, 409u);

  scoped_variant bad("record=sometimes");
  auto b = gpu_backend(*m);
  ASSERT_NE(b, nullptr);
  std::vector<float> x(static_cast<size_t>(hp.n_embd), 0.1f);
  b->upload_hidden(x.data(), 1);
  try {
    b->forward_layer(0, 1, 0);
    ADD_FAILURE() << "an unknown record variant was accepted";
  } catch (const tandem::error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown record variant 'sometimes'"), std::string::npos)
        << e.what();
  }
}

// The integer-dot decode (TANDEM_VK_VARIANT=matvec=dot; a real GPU picks it for long rows) on
// tiny-Q4_0 (4 layers, no biases): per layer the attention norm fused into the activations'
// quantization (quantize_q8 NORM), Q/K/V with RoPE + KV store in its epilogue (matvec_dot_rope),
// attention, quantize, Wo, quantize with the FFN norm, gate/up, quantize with SwiGLU, down = 9
// dispatches, one barrier before each; the head (a type without the integer-dot kernel: its norm
// fused into the float product) 1 dispatch, 3 barriers: 37 and 39. (Before these fusions, a
// separate rms_norm before each quantization and a rotary_kv dispatch: 12 per layer, 49 and 51.)
TEST_F(VulkanRecording, IntegerDotDecodeFusesNormsAndRope) {
  const std::string q4 = tandem::test::model_path("quant/tiny-Q4_0.gguf");
  if (!std::ifstream(q4)) GTEST_SKIP() << "no " << q4;
  if (!ctx().caps().integer_dot) GTEST_SKIP() << "the device has no integer dot products";
  const char* old = std::getenv("TANDEM_VK_VARIANT");
  const std::string saved = old ? old : "";
  ::setenv("TANDEM_VK_VARIANT", "matvec=dot", 1);
  auto m = model::load(q4);
  auto b = gpu_backend(*m);
  ASSERT_NE(b, nullptr);
  const backend_counters c = decode_token(*b, *m, 2);
  if (old)
    ::setenv("TANDEM_VK_VARIANT", saved.c_str(), 1);
  else
    ::unsetenv("TANDEM_VK_VARIANT");
  EXPECT_EQ(m->hp().n_layer, 4);
  EXPECT_EQ(c.dispatches, 37u);
  EXPECT_EQ(c.barriers, 39u);
  EXPECT_EQ(c.submits, 1u);
}

// Streamed layers 1, 2 and 4 each run in a submit of their own (their slot's copy is waited
// for): layer 0 (with the upload) goes before layer 1; layer 3 before layer 4; the head last.
TEST_F(VulkanRecording, StreamedLayersSubmitAroundTheirSlotWaits) {
  auto m = model::load(path());
  auto b = gpu_backend(*m, {1, 2, 4});
  ASSERT_NE(b, nullptr);
  const backend_counters c = decode_token(*b, *m, 0);
  EXPECT_EQ(c.dispatches, 26u);
  EXPECT_EQ(c.submits, 6u);
}

// With per-dispatch timing, every dispatch of a token is timed once under its pipeline's name,
// and every kernel has a cost (the ops call recorder::cost before each dispatch).
TEST_F(VulkanRecording, EveryDispatchIsTimedWithItsCost) {
  auto m = model::load(path());
  trace_recorder trace;
  trace.set_kernel_timing(true);
  auto b = gpu_backend(*m, {}, &trace);
  ASSERT_NE(b, nullptr);
  const backend_counters c = decode_token(*b, *m, 0);
  const auto ks = trace.kernels();
  if (ks.empty()) GTEST_SKIP() << "the device writes no timestamps";
  uint64_t calls = 0;
  bool attention = false;
  for (const kernel_stat& k : ks) {
    calls += k.calls;
    attention |= k.name.rfind("attention", 0) == 0 || k.name.rfind("flash_attn", 0) == 0;
    EXPECT_GT(k.bytes, 0u) << k.name << " has no cost (recorder::cost before its dispatch)";
    EXPECT_GE(k.us, 0.0) << k.name;
  }
  EXPECT_EQ(calls, c.dispatches);
  EXPECT_TRUE(attention);
  EXPECT_EQ(c.barriers, 28u) << "timing changed the barrier count";
}

// The layer spans of --trace (and of `tandem bench`, which traces every run) come from a query
// pool of 512 spans. A long generation used to fill it and then read queries of a command buffer
// not submitted yet (VK_NOT_READY, the bench stopped after ~80 tokens of a 5-layer model): the
// pool is freed at every read, so every token of a long run is timed.
TEST_F(VulkanRecording, LongTracedRunsKeepTimingEveryToken) {
  auto m = model::load(path());
  trace_recorder trace;
  auto b = gpu_backend(*m, {}, &trace);
  ASSERT_NE(b, nullptr);
  size_t last = 0;
  for (int t = 0; t < 200; ++t) {  // 200 tokens x (5 layers + head) spans, positions wrap at 64
    ASSERT_NO_THROW(decode_token(*b, *m, t % 64)) << "token " << t;
    const size_t n = trace.spans().size();
    if (t == 0 && n == 0) GTEST_SKIP() << "the device writes no timestamps";
    ASSERT_GE(n, last + 6) << "token " << t << " was not timed";
    last = n;
  }
}

// The same ops bound with push descriptors and with descriptor sets from pools give the same
// bytes (the pool path is the fallback of devices without VK_KHR_push_descriptor).
TEST_F(VulkanRecording, PushDescriptorsAndPoolsGiveTheSameResults) {
  const int n = 256, rows = 64, n_tok = 3;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> x(static_cast<size_t>(n) * n_tok), w(static_cast<size_t>(n) * rows), g(n);
  for (auto& v : x) v = u(rng);
  for (auto& v : w) v = u(rng);
  for (auto& v : g) v = u(rng);
  std::vector<std::vector<float>> out;
  for (bool push : {true, false}) {
    runner run(ctx(), true, push);
    const char* off = std::getenv("TANDEM_VK_NO_PUSH_DESCRIPTORS");
    const bool forced_off = off && std::string(off) == "1";
    EXPECT_EQ(run.pipes().push_descriptors(), push && ctx().caps().push_descriptor && !forced_off);
    host_buffer bx(ctx(), x.size() * 4), bg(ctx(), g.size() * 4), bh(ctx(), x.size() * 4);
    host_buffer by(ctx(), static_cast<size_t>(rows) * n_tok * 4);
    bx.set(x);
    bg.set(g);
    arena a(ctx(), memory_kind::device, 1 << 20);
    uploader up(ctx(), 1 << 20);
    const device_weight dw = upload_weight(a, up, dtype::f32, n, rows, w.data());
    up.finish();
    run.run([&](recorder& r) {
      ops::rms_norm(r, bx, bg, bh, n, n_tok, 0, n, n, 1e-5f);
      ops::matmul(r, dw, bh, by, n_tok, n, rows, false);
    });
    out.push_back(by.floats(static_cast<size_t>(rows) * n_tok));
  }
  EXPECT_EQ(out[0], out[1]);
}

}  // namespace
}  // namespace tandem::vk::test

#endif  // TANDEM_HAVE_VULKAN
