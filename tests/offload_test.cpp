// Hybrid placement end to end on lavapipe (asked for explicitly by --offload): the golden text
// of stories260K for every --offload N from 0 to all, and the F16 32000-vocab model on the GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/engine.h"
#include "runtime/model.h"
#include "runtime/tokenizer.h"
#include "tests/greedy_text.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

bool have_vulkan_device(const std::string& info_out) {
  return info_out.find("Vulkan devices:\n") != std::string::npos;
}

class Offload : public ::testing::Test {
 protected:
  void SetUp() override {
    auto info = test::run_cli("info");
    if (!have_vulkan_device(info.out)) {
      if (std::getenv("CI")) FAIL() << "CI has lavapipe, but no Vulkan device: " << info.out;
      GTEST_SKIP() << "no Vulkan device: " << info.out;
    }
  }
};

TEST_F(Offload, GoldenTextForEveryLayerCount) {
  const std::string golden = test::read_file(test::model_path("golden/stories260K_t0_n64_once.txt"));
  for (const std::string n : {"0", "1", "2", "3", "4", "5", "all"}) {
    auto r = test::run_cli("run -m " + test::model_path("stories260K.gguf") +
                           " -p 'Once upon a time' -n 60 --temp 0 --offload " + n);
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, golden) << "--offload " << n << "\n" << r.err;
    if (n != "0") {
      EXPECT_NE(r.err.find("vulkan"), std::string::npos) << r.err;
    }
  }
}

TEST_F(Offload, TinyRandomF16RunsOnTheGpu) {
  auto r = test::run_cli("run -m " + test::model_path("llama-2-tiny-random.gguf") +
                         " -p 'Hello world' -n 8 --temp 0 --offload all");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("vulkan"), std::string::npos) << r.err;
  // The engine's own greedy text on the same plan (every layer on the lavapipe GPU).
  const std::string want = test::engine_greedy_text(
      test::model_path("llama-2-tiny-random.gguf"), "Hello world", 8, "all");
  EXPECT_GT(want.size(), std::string("Hello world").size());
  EXPECT_EQ(r.out, want + "\n") << r.err;
  EXPECT_NE(r.err.find("generation: 8 tokens"), std::string::npos) << r.err;
}

// --offload auto (the default) places layers on a real GPU where one is present, never on a
// CPU-type device such as lavapipe: with only lavapipe, everything stays on the CPU path.
TEST_F(Offload, AutoNeverPicksACpuDevice) {
  const std::string info = test::run_cli("info").out;
  std::vector<std::string> cpu_devices;  // "  [0] llvmpipe (...) (cpu): device-local ..."
  bool any_gpu = false;
  std::istringstream lines(info);
  for (std::string line; std::getline(lines, line);) {
    const size_t close = line.find("): device-local");
    if (line.rfind("  [", 0) != 0 || close == std::string::npos) continue;
    const size_t type_open = line.rfind(" (", close);
    const std::string type = line.substr(type_open + 2, close - type_open - 2);
    if (type == "cpu")
      cpu_devices.push_back(line.substr(line.find("] ") + 2, type_open - line.find("] ") - 2));
    else
      any_gpu = true;
  }
  auto r = test::run_cli("run -m " + test::model_path("stories260K.gguf") + " -p 'Once' -n 4 --temp 0");
  ASSERT_EQ(r.status, 0) << r.err;
  if (!any_gpu) {
    EXPECT_EQ(r.err.find("vulkan"), std::string::npos) << r.err;
  }
  for (const std::string& name : cpu_devices) {
    EXPECT_EQ(r.err.find("vulkan (" + name + ")"), std::string::npos) << name << "\n" << r.err;
  }
}

}  // namespace
}  // namespace tandem
