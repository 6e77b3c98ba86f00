// Streamed layers (vulkan/staging_ring.h) end to end through the CLI on lavapipe: a plan in which
// some layers must stream (--offload all with a --vram-budget too small for every layer) prints
// the golden text, and the --trace of a streamed prompt shows the upload of layer i+1 starting
// before the compute of layer i ends. Without a Vulkan device the tests skip, except under CI (env CI set),
// where a missing device is a failure.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "runtime/cost_model.h"
#include "runtime/model.h"
#include "runtime/scheduler.h"
#include "tests/test_util.h"

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

TEST(Streaming, TraceShowsUploadOverlappingCompute) {
  // Every eval (the prompt, then each decoded token) streams the layers again; with two slots the
  // upload of layer i+1 waits for the compute of layer i-1, not for that of layer i, so it starts
  // before layer i's compute ends. With one slot, or uploads issued after the computes, it would
  // start after. (Whether the short upload is still running when layer i's compute starts is
  // timing: on a loaded machine a small upload can land in the gap between two submits, and this
  // test once failed in CI when it asked for that.) The k-th upload of layer i+1 belongs to the
  // same eval as the k-th compute of layer i.
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
  // Every pair, less a few a scheduler delay longer than a layer's compute may push late.
  EXPECT_GE(early, pairs - pairs / 4) << seen;
}

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
