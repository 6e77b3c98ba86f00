// Hybrid placement end to end on lavapipe (asked for explicitly by --offload): the golden text
// of stories260K for every --offload N from 0 to all, and the F16 32000-vocab model on the GPU.
#include <gtest/gtest.h>

#include <cstdlib>

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
    if (n != "0") EXPECT_NE(r.err.find("vulkan"), std::string::npos) << r.err;
  }
}

TEST_F(Offload, TinyRandomF16RunsOnTheGpu) {
  auto r = test::run_cli("run -m " + test::model_path("llama-2-tiny-random.gguf") +
                         " -p 'Hello world' -n 8 --temp 0 --offload all");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out.rfind("Hello world", 0), 0u);
  EXPECT_NE(r.err.find("generation: 8 tokens"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("vulkan"), std::string::npos) << r.err;
}

TEST_F(Offload, AutoNeverPicksACpuDevice) {
  auto r = test::run_cli("run -m " + test::model_path("stories260K.gguf") + " -p 'Once' -n 4 --temp 0");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err.find("vulkan"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace tandem
