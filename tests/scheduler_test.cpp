// The scheduler's plans for --offload N|all|auto against fake devices of given sizes.
#include <gtest/gtest.h>

#include "runtime/scheduler.h"
#include "tests/test_util.h"
#include "tests/tiny_model.h"

namespace tandem {
namespace {

class Scheduler : public ::testing::Test {
 protected:
  void SetUp() override {
    test::tiny_shape s;
    s.n_layer = 8;
    path_ = test::temp_dir() + "/sched.gguf";
    test::write_tiny_model(path_, s);
    m_ = model::load(path_);
  }
  gpu_device_info gpu(uint64_t bytes, const char* type = "discrete") {
    gpu_device_info d;
    d.name = "fake GPU";
    d.type = type;
    d.device_local_bytes = d.budget_bytes = bytes;
    return d;
  }
  plan make(const std::string& offload, const gpu_device_info* dev, uint64_t vram = 0) {
    plan_request r;
    r.offload = offload;
    r.n_ctx = 64;
    r.n_batch = 16;
    r.vram_budget = vram;
    return make_plan(*m_, r, dev);
  }
  std::string path_;
  std::unique_ptr<model> m_;
};

TEST_F(Scheduler, ZeroAndNoDeviceAreAllCpu) {
  auto d = gpu(1ull << 30);
  EXPECT_EQ(make("0", &d).n_gpu_layers(), 0);
  EXPECT_EQ(make("0", &d).output, placement::cpu);
  plan p = make("all", nullptr);
  EXPECT_EQ(p.n_gpu_layers(), 0);
  EXPECT_NE(p.reason.find("no usable GPU"), std::string::npos);
}

TEST_F(Scheduler, CountTakesTheLastLayersAndTheHead) {
  auto d = gpu(1ull << 30);
  plan p = make("3", &d);
  EXPECT_EQ(p.n_gpu_layers(), 3);
  for (int il = 0; il < 8; ++il)
    EXPECT_EQ(p.layers[static_cast<size_t>(il)], il >= 5 ? placement::gpu_resident : placement::cpu);
  EXPECT_EQ(p.output, placement::gpu_resident);
  EXPECT_EQ(make("99", &d).n_gpu_layers(), 8);
  EXPECT_EQ(make("all", &d).n_gpu_layers(), 8);
}

TEST_F(Scheduler, AutoFitsTheBudgetAndSkipsCpuDevices) {
  auto big = gpu(1ull << 30);
  EXPECT_EQ(make("auto", &big).n_gpu_layers(), 8);
  auto lavapipe = gpu(1ull << 30, "cpu");
  plan p = make("auto", &lavapipe);
  EXPECT_EQ(p.n_gpu_layers(), 0);
  EXPECT_EQ(p.output, placement::cpu);
  EXPECT_NE(p.reason.find("CPU-type"), std::string::npos) << p.reason;
  // A budget that holds scratch, head and exactly three layers with their KV cache.
  plan full = make("all", &big);
  const uint64_t per_layer = full.layer_bytes[0] + full.kv_bytes_per_layer;
  const uint64_t need = full.scratch_bytes + full.output_bytes + 3 * per_layer + per_layer / 2;
  const uint64_t budget = need * 20 / 19 + 1;  // the 5% margin comes off first
  plan fit = make("auto", &big, budget);
  EXPECT_EQ(fit.n_gpu_layers(), 3) << fit.reason;
  EXPECT_EQ(fit.layers[7], placement::gpu_resident);
  EXPECT_EQ(fit.layers[4], placement::cpu);
}

TEST_F(Scheduler, ExplicitCountOverBudgetStreams) {
  auto d = gpu(1ull << 30);
  plan full = make("all", &d);
  const uint64_t fixed = full.scratch_bytes + full.output_bytes + 8 * full.kv_bytes_per_layer;
  // Room for the two streaming slots and two resident layers.
  const uint64_t budget = (fixed + 4 * full.layer_bytes[0] + full.layer_bytes[0] / 2) * 20 / 19 + 1;
  plan p = make("all", &d, budget);
  EXPECT_EQ(p.n_gpu_layers(), 8);
  int streamed = 0, resident = 0;
  for (auto pl : p.layers) {
    streamed += pl == placement::gpu_streamed;
    resident += pl == placement::gpu_resident;
  }
  EXPECT_EQ(resident, 2) << p.reason;
  EXPECT_EQ(streamed, 6) << p.reason;
  EXPECT_EQ(p.layers[7], placement::gpu_resident);
  EXPECT_NE(format_plan(p, *m_).find("GPU streamed"), std::string::npos);
}

TEST_F(Scheduler, BadOffloadValue) {
  EXPECT_THROW(parse_offload("lots"), error);
  EXPECT_THROW(parse_offload("-1"), error);
  EXPECT_EQ(parse_offload("12").n, 12);
}

}  // namespace
}  // namespace tandem
