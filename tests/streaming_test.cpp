// Streamed layers (vulkan/staging_ring.h) end to end through the CLI on lavapipe: a plan in which
// some layers must stream (--offload all with a --vram-budget too small for every layer) prints
// the golden text; the --trace of a streamed prompt has one upload and one compute per streamed
// layer and eval; and the ring's order: the upload of layer i+1 is issued before layer i's compute
// and waits only for layer i-1's (checked on the ring itself, not on timestamps). Without a Vulkan
// device the tests skip, except under CI (env CI set), where a missing device is a failure.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "runtime/cost_model.h"
#include "runtime/model.h"
#include "runtime/scheduler.h"
#include "tests/test_util.h"
#ifdef TANDEM_HAVE_VULKAN
#include "tests/vulkan_test_util.h"
#include "vulkan/host_buffer.h"
#include "vulkan/pipeline.h"
#include "vulkan/staging_ring.h"
#endif

namespace tandem {
namespace {

const std::string k_stories = test::model_path("stories260K.gguf");
// stories260K: 5 layers of ~0.05 MiB; with this budget the plan keeps some resident and streams
// the rest through two slots.
const std::string k_stream_args = " --offload all --vram-budget 4700K --stream gpu";

bool no_gpu(const test::run_result& r) {
  return r.err.find("no GPU") != std::string::npos ||
         r.err.find("GPU backend failed") != std::string::npos;
}

#define SKIP_WITHOUT_GPU(r)                                                 \
  do {                                                                      \
    if (no_gpu(r)) {                                                        \
      if (std::getenv("CI")) FAIL() << "CI has lavapipe, but: " << (r).err; \
      GTEST_SKIP() << (r).err;                                              \
    }                                                                       \
  } while (0)

TEST(Streaming, StreamedPlanPrintsGoldenText) {
  auto r = test::run_cli("run -m " + k_stories + " -p 'Once upon a time' -n 60 --temp 0" +
                         k_stream_args);
  ASSERT_EQ(r.status, 0) << r.err;
  SKIP_WITHOUT_GPU(r);
  EXPECT_NE(r.err.find("GPU streamed"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("GPU resident"), std::string::npos) << r.err;
  EXPECT_EQ(r.out, test::read_file(test::model_path("golden/stories260K_t0_n64_once.txt")))
      << r.err;
}

TEST(Streaming, QueueCopyPrintsGoldenText) {
  // The transfer-queue path (the default where a device has a separate transfer queue).
  ::setenv("TANDEM_STREAM_COPY", "queue", 1);
  auto r = test::run_cli("run -m " + k_stories + " -p 'Once upon a time' -n 60 --temp 0" +
                         k_stream_args);
  ::unsetenv("TANDEM_STREAM_COPY");
  ASSERT_EQ(r.status, 0) << r.err;
  SKIP_WITHOUT_GPU(r);
  EXPECT_NE(r.err.find("GPU streamed"), std::string::npos) << r.err;
  EXPECT_EQ(r.out, test::read_file(test::model_path("golden/stories260K_t0_n64_once.txt")))
      << r.err;
}

struct span {
  double ts, end;
  int layer;
};

TEST(Streaming, TraceHasAnUploadAndAComputePerStreamedLayerAndEval) {
  // Every eval (the prompt, then each decoded token) streams the layers again: the trace pairs
  // the k-th upload of layer i+1 with the k-th compute of layer i. How much they overlap is
  // timing (a loaded machine moves it), so it is printed, not asserted: the order that makes the
  // overlap possible is checked on the ring (StreamingRing below).
  const std::string path = test::temp_dir() + "/stream-trace.json";
  auto r =
      test::run_cli("run -m " + k_stories +
                    " -p 'Once upon a time there was a little girl named Lily. She liked to "
                    "play outside in the park with her friends every day.' -n 4 --temp 0 --trace " +
                    path + k_stream_args);
  ASSERT_EQ(r.status, 0) << r.err;
  SKIP_WITHOUT_GPU(r);
  ASSERT_NE(r.err.find("GPU streamed"), std::string::npos) << r.err;
  const nlohmann::json j = nlohmann::json::parse(test::read_file(path));
  ASSERT_TRUE(j.contains("traceEvents"));
  std::map<int, std::vector<span>> uploads, computes;  // by layer, in time order
  for (const auto& e : j["traceEvents"]) {
    if (e.value("ph", "") != "X") continue;
    const span s{e["ts"].get<double>(), e["ts"].get<double>() + e["dur"].get<double>(),
                 e["args"]["layer"].get<int>()};
    if (e["tid"] == 1) uploads[s.layer].push_back(s);
    if (e["tid"] == 2) computes[s.layer].push_back(s);
  }
  ASSERT_FALSE(uploads.empty()) << r.err;
  ASSERT_FALSE(computes.empty()) << r.err;
  auto by_start = [](const span& a, const span& b) { return a.ts < b.ts; };
  int pairs = 0, early = 0;
  std::string seen;
  for (auto& [layer, ups] : uploads) {
    auto it = computes.find(layer - 1);
    if (it == computes.end()) continue;  // the first streamed layer follows resident ones
    std::vector<span>& comps = it->second;
    std::sort(ups.begin(), ups.end(), by_start);
    std::sort(comps.begin(), comps.end(), by_start);
    ASSERT_EQ(ups.size(), comps.size()) << "uploads of layer " << layer << " vs computes of "
                                        << layer - 1 << " (one each per eval)";
    for (size_t k = 0; k < ups.size(); ++k) {
      const span &u = ups[k], &c = comps[k];
      seen += "upload " + std::to_string(u.layer) + " [" + std::to_string(u.ts) + ", " +
              std::to_string(u.end) + "] compute " + std::to_string(c.layer) + " [" +
              std::to_string(c.ts) + ", " + std::to_string(c.end) + "]\n";
      ++pairs;
      early += u.ts < c.end;
    }
  }
  ASSERT_GT(pairs, 0) << r.err;
  std::printf("uploads of layer i+1 started before layer i's compute ended: %d of %d\n", early,
              pairs);
}

#ifdef TANDEM_HAVE_VULKAN  // the ring itself

class StreamingRing : public vk::test::vulkan_test {};

// The engine asks for layer i+1 (prepare) before it runs layer i, as the backend does. With two
// slots the copy of layer i+1 goes to the slot layer i-1 used and waits for that compute only;
// layer i's slot is left alone. (With one slot, or a copy issued after layer i's compute, it
// would have to wait for layer i: no overlap.)
void check_ring_order(vk::context& c) {
  vk::arena device(c, vk::memory_kind::device, 1 << 20);
  vk::staging_ring ring(c, device, 4096, 2, nullptr, nullptr);
  SCOPED_TRACE(ring.mode());
  vk::host_buffer src(c, 4096);
  vk::pipeline_cache pipes(c);
  vk::command_stream stream(pipes);
  std::vector<int> slot;
  std::vector<uint64_t> done;  // compute timeline value of layer i
  slot.push_back(ring.prepare(0, src));
  EXPECT_EQ(ring.copy_waits_for(slot[0]), 0u);
  for (int il = 0; il < 6; ++il) {
    slot.push_back(ring.prepare(il + 1, src));  // before layer il runs
    EXPECT_NE(slot[il + 1], slot[il]) << "layer " << il + 1 << " took running layer " << il
                                      << "'s slot";
    EXPECT_EQ(ring.copy_waits_for(slot[il + 1]), il == 0 ? 0u : done[il - 1])
        << "the copy of layer " << il + 1 << " waits for the wrong compute";
    const vk::timeline_wait w = ring.acquire(slot[il]);
    stream.begin();
    done.push_back(w.q ? stream.submit({w}) : stream.submit());
    ring.release(slot[il], done.back());
    EXPECT_EQ(ring.find(il), slot[il]);
  }
  stream.finish();
  ring.finish();
}

TEST_F(StreamingRing, TheNextUploadWaitsOnlyForTheLayerBeforeLast) {
  check_ring_order(ctx());  // the device's own choice (lavapipe: host copy)
  const char* before = std::getenv("TANDEM_STREAM_COPY");
  const std::string saved = before ? before : "";
  ::setenv("TANDEM_STREAM_COPY", "queue", 1);  // and the transfer-queue copy
  check_ring_order(ctx());
  if (before)
    ::setenv("TANDEM_STREAM_COPY", saved.c_str(), 1);
  else
    ::unsetenv("TANDEM_STREAM_COPY");
}

#endif  // TANDEM_HAVE_VULKAN

// ---- the cost model (runtime/cost_model.h), from cached speeds: no device, no measurement ----

class StreamCostModel : public ::testing::Test {
 protected:
  void SetUp() override {
    m_ = model::load(k_stories);
    cache_ = test::temp_dir() + "/xdg-cache";
    ::setenv("XDG_CACHE_HOME", cache_.c_str(), 1);
    dev_.name = "fake streaming GPU";
    dev_.type = "discrete";
    dev_.device_local_bytes = dev_.budget_bytes = 1ull << 30;
  }
  void TearDown() override { ::unsetenv("XDG_CACHE_HOME"); }
  void speeds(double h2d, double cpu_read, double cpu_flops) {
    std::filesystem::create_directories(cache_ + "/tandem");
    std::ofstream(cache_ + "/tandem/speeds-fake_streaming_GPU.txt")
        << "h2d_bytes_per_s " << h2d << "\ncpu_read_bytes_per_s " << cpu_read << "\ncpu_flops "
        << cpu_flops << "\n";
  }
  plan streamed_plan() {
    plan_request r;
    r.offload = "all";
    r.n_ctx = 512;  // as the CLI (the model's context)
    r.n_batch = 512;
    r.vram_budget = 1ull << 20;  // nothing fits: every layer streams
    plan p = make_plan(*m_, r, &dev_);
    int n = 0;
    for (placement pl : p.layers) n += pl == placement::gpu_streamed;
    EXPECT_GT(n, 0) << format_plan(p, *m_);
    return p;
  }
  static int count(const plan& p, placement want) {
    int n = 0;
    for (placement pl : p.layers) n += pl == want;
    return n;
  }
  std::unique_ptr<model> m_;
  std::string cache_;
  gpu_device_info dev_;
};

TEST_F(StreamCostModel, FastLinkStreamsPromptAndKeepsDecodeWithItsKvCache) {
  // 25 GB/s link, 50 GB/s CPU memory, 100 GFLOP/s CPU: a 512-token prompt is compute bound on
  // the CPU (streaming wins), one-token decode is faster on the CPU but its KV cache is on the GPU.
  speeds(25e9, 50e9, 100e9);
  plan p = streamed_plan();
  const int before = count(p, placement::gpu_streamed);
  const std::string text = apply_stream_policy(*m_, "auto", 512, &dev_, p);
  EXPECT_EQ(count(p, placement::gpu_streamed), before) << text;
  EXPECT_NE(text.find("cached in"), std::string::npos) << text;
  EXPECT_NE(text.find("KV cache lives on the GPU"), std::string::npos) << text;
}

TEST_F(StreamCostModel, SlowLinkMovesStreamedLayersToTheCpu) {
  speeds(1e6, 50e9, 100e9);  // 1 MB/s: the CPU wins both phases
  plan p = streamed_plan();
  const int before = count(p, placement::gpu_streamed);
  const std::string text = apply_stream_policy(*m_, "auto", 512, &dev_, p);
  EXPECT_EQ(count(p, placement::gpu_streamed), 0) << text;
  EXPECT_EQ(count(p, placement::cpu), before) << text;
  EXPECT_NE(text.find("moved to the CPU"), std::string::npos) << text;
}

TEST_F(StreamCostModel, ExplicitPoliciesOverrideTheModel) {
  speeds(1e6, 50e9, 100e9);
  plan g = streamed_plan();
  const int n = count(g, placement::gpu_streamed);
  apply_stream_policy(*m_, "gpu", 512, &dev_, g);
  EXPECT_EQ(count(g, placement::gpu_streamed), n);
  plan c = streamed_plan();
  apply_stream_policy(*m_, "cpu", 512, &dev_, c);
  EXPECT_EQ(count(c, placement::gpu_streamed), 0);
  EXPECT_THROW(apply_stream_policy(*m_, "sometimes", 512, &dev_, c), error);
}

TEST(Streaming, AutoPolicyMeasuresCachesAndPrintsItsChoice) {
  // lavapipe: streaming through a CPU-type device never beats the CPU, so the cost model moves the
  // streamed layers to the CPU; the text is still the golden one. The second run reads the cache.
  const std::string dir = test::temp_dir() + "/xdg-cache-cli";
  std::filesystem::remove_all(dir);  // the first run measures
  const std::string args =
      "run -m " + k_stories +
      " -p 'Once upon a time' -n 60 --temp 0 --offload all --vram-budget 4700K";
  ::setenv("XDG_CACHE_HOME", dir.c_str(), 1);
  auto a = test::run_cli(args);
  auto b = test::run_cli(args);
  ::unsetenv("XDG_CACHE_HOME");
  ASSERT_EQ(a.status, 0) << a.err;
  SKIP_WITHOUT_GPU(a);
  EXPECT_NE(a.err.find("streaming cost model (measured now"), std::string::npos) << a.err;
  EXPECT_NE(b.err.find("streaming cost model (cached in"), std::string::npos) << b.err;
  EXPECT_NE(a.err.find("prompt (512 tok)"), std::string::npos) << a.err;
  EXPECT_EQ(a.out, test::read_file(test::model_path("golden/stories260K_t0_n64_once.txt")))
      << a.err;
  EXPECT_EQ(b.out, a.out);
}

}  // namespace
}  // namespace tandem
