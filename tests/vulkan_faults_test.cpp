// Vulkan failures injected through TANDEM_VK_FAULT (vulkan/check.h) into `tandem run --offload
// all` on lavapipe: out of device memory and device loss at load fall back to the CPU with a
// one-line note and the same text; device loss in the middle of a request stops it with one
// "error: ..." line naming the call, the VkResult and the op. Never a hang or a crash.
#include <gtest/gtest.h>

#include <algorithm>

#include <cstdlib>
#include <string>

#include "tests/test_util.h"

namespace tandem {
namespace {

const std::string k_run = "run -m " + test::model_path("stories260K.gguf") +
                          " -p 'Once upon a time' -n 12 --temp 0 ";

class VulkanFaults : public ::testing::Test {
 protected:
  void SetUp() override {
    auto info = test::run_cli("info");
    if (info.out.find("Vulkan devices:\n") == std::string::npos) {
      if (std::getenv("CI")) FAIL() << "CI has lavapipe, but no Vulkan device: " << info.out;
      GTEST_SKIP() << "no Vulkan device: " << info.out;
    }
    cpu_ = test::run_cli(k_run + "--offload 0");
    ASSERT_EQ(cpu_.status, 0) << cpu_.err;
  }
  test::run_result cpu_;
};

TEST_F(VulkanFaults, OutOfDeviceMemoryAtLoadFallsBackToTheCpu) {
  auto r = test::run_cli_env("TANDEM_VK_FAULT=alloc", k_run + "--offload all");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, cpu_.out);
  EXPECT_NE(r.err.find("tandem: GPU backend failed (vulkan: out of "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("VK_ERROR_OUT_OF_DEVICE_MEMORY)); running every layer on the CPU\n"),
            std::string::npos)
      << r.err;
}

TEST_F(VulkanFaults, DeviceLossAtLoadFallsBackToTheCpu) {
  auto r = test::run_cli_env("TANDEM_VK_FAULT=device_lost", k_run + "--offload all");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, cpu_.out);
  EXPECT_NE(r.err.find("tandem: GPU backend failed (vulkan: vkQueueSubmit(...) failed with "
                       "VK_ERROR_DEVICE_LOST"),
            std::string::npos)
      << r.err;
}

// The submission that fails is the Nth: as N grows, the loss moves from the load (fallback) into
// the request (an error) and then past its end (no effect). Some N must stop the request. A
// decode token is one submit (layers are submitted together), so the request is a short run of
// submits after the load's: the steps stay below it.
TEST_F(VulkanFaults, DeviceLossDuringARequestStopsItWithOneLine) {
  bool stopped = false;
  for (int n = 8; n < 4096 && !stopped; n += std::max(1, n / 6)) {
    auto r = test::run_cli_env("TANDEM_VK_FAULT=device_lost:" + std::to_string(n),
                               k_run + "--offload all");
    if (r.status == 0) {
      ASSERT_NE(r.err.find("GPU backend failed"), std::string::npos)
          << "device_lost:" << n << " ran the whole request on the GPU before any loss\n" << r.err;
      continue;
    }
    stopped = true;
    EXPECT_EQ(r.status, 1) << r.err;
    // The plan comes first on stderr; the error is the last line, and the only one.
    const size_t at = r.err.find("error: ");
    ASSERT_NE(at, std::string::npos) << r.err;
    const std::string line = r.err.substr(at);
    EXPECT_EQ(line.rfind("error: vulkan: vkQueueSubmit(...) failed with VK_ERROR_DEVICE_LOST", 0),
              0u)
        << r.err;
    EXPECT_NE(line.find("(op: forward_"), std::string::npos) << r.err;
    EXPECT_EQ(line.find('\n'), line.size() - 1) << r.err;
    EXPECT_EQ(r.out.rfind("Once upon a time", 0), 0u) << r.out;  // what was printed stays
  }
  EXPECT_TRUE(stopped);
}

}  // namespace
}  // namespace tandem
