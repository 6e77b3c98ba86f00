// The Vulkan device layer, and every op of the op table (vulkan/op_table.h) against the scalar
// CPU reference (cpu/ops_ref.h) through tools/op_check, the cases and thresholds gpu-cpu-parity
// ops runs too (listed at the top of tools/op_check/op_check.cpp). The matrix kernels are also
// checked against llama.cpp's own dequantization of the quantized test models.
//
// Every test runs on lavapipe in CI; with TANDEM_VK_VALIDATION=1 (ctest: vulkan_validation) the
// Khronos validation layer checks each one and any error fails it.
#include <gtest/gtest.h>

#ifdef TANDEM_HAVE_VULKAN  // the build has a Vulkan backend

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <unistd.h>
#include <vector>

#include "runtime/fp16.h"
#include "cpu/ops_ref.h"
#include "runtime/blocks.h"
#include "runtime/backend_factory.h"
#include "runtime/gguf.h"
#include "shaders/push_constants.h"
#include "tools/op_check/op_check.h"
#include "tests/test_util.h"
#include "tests/vulkan_test_util.h"
#include "vulkan/check.h"
#include "vulkan/host_buffer.h"
#include "vulkan/op_table.h"
#include "vulkan/ops.h"

namespace tandem::vk::test {
namespace {

// ---- device layer ---------------------------------------------------------------------------

class VulkanDevice : public vulkan_test {};

TEST_F(VulkanDevice, ListsTheDeviceWithDetails) {
  std::string why;
  const auto devices = list_gpu_devices(&why);
  ASSERT_FALSE(devices.empty()) << why;
  bool found = false;
  for (const auto& d : devices) {
    EXPECT_FALSE(d.name.empty());
    EXPECT_NE(d.details.find("subgroup"), std::string::npos) << d.details;
    found |= d.name == ctx().info().name;
  }
  EXPECT_TRUE(found) << ctx().info().name;
  std::printf("device: %s (%s): %s\n", ctx().info().name.c_str(), ctx().info().type.c_str(),
              ctx().info().details.c_str());
}

TEST_F(VulkanDevice, UnknownSelectorSaysWhichDevicesExist) {
  context_options o;
  o.device = "no-such-gpu-xyz";
  std::string why;
  EXPECT_EQ(context::create(o, &why), nullptr);
  EXPECT_NE(why.find("names no Vulkan device"), std::string::npos) << why;
  EXPECT_NE(why.find(ctx().info().name), std::string::npos) << why;
}

TEST_F(VulkanDevice, CpuDeviceOnlyWhenAsked) {
  if (std::getenv("TANDEM_VK_DEVICE")) GTEST_SKIP() << "TANDEM_VK_DEVICE picks the device";
  std::string why;
  bool only_cpu = true;
  for (const auto& d : list_gpu_devices(&why)) only_cpu &= d.type == "cpu";
  if (!only_cpu) GTEST_SKIP() << "a GPU is present";
  context_options o;  // allow_cpu_device = false
  EXPECT_EQ(context::create(o, &why), nullptr);
  EXPECT_NE(why.find("CPU device"), std::string::npos) << why;
  o.device = "0";  // naming it is enough
  EXPECT_NE(context::create(o, &why), nullptr) << why;
}

TEST_F(VulkanDevice, CheckNamesCallResultPlaceAndOp) {
  try {
    op_scope scope("test op");
    VK_CHECK(VK_ERROR_DEVICE_LOST);
    FAIL() << "VK_CHECK did not throw";
  } catch (const error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("VK_ERROR_DEVICE_LOST"), std::string::npos) << m;
    EXPECT_NE(m.find("vulkan_test.cpp:"), std::string::npos) << m;
    EXPECT_NE(m.find("(op: test op)"), std::string::npos) << m;
  }
  EXPECT_EQ(op_scope::current(), "");
}

// Under TANDEM_VK_VALIDATION=1 the layer must really be on and reach the callback: an invalid
// call (a buffer of size 0) has to raise the error count. Without validation there is nothing
// to check.
TEST_F(VulkanDevice, ValidationLayerReportsErrors) {
  if (!validation_requested()) GTEST_SKIP() << "TANDEM_VK_VALIDATION is not 1";
  const int before = validation_error_count();
  VkBufferCreateInfo bci{};
  bci.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO;
  bci.size = 0;  // VUID-VkBufferCreateInfo-size-00912
  bci.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT;
  VkBuffer b = VK_NULL_HANDLE;
  if (fn.vkCreateBuffer(ctx().device(), &bci, nullptr, &b) == VK_SUCCESS && b)
    fn.vkDestroyBuffer(ctx().device(), b, nullptr);
  EXPECT_GT(validation_error_count(), before);
  accept_validation_errors();
}

TEST_F(VulkanDevice, ArenaRespectsAlignmentAndLimits) {
  arena a(ctx(), memory_kind::device, 1 << 20);
  const auto r1 = a.alloc(10);
  const auto r2 = a.alloc(3 << 20);  // larger than a block: a block of its own
  const auto r3 = a.alloc(100);
  EXPECT_EQ(r1.offset % ctx().caps().storage_align, 0u);
  EXPECT_EQ(r3.offset % ctx().caps().storage_align, 0u);
  EXPECT_EQ(r2.size, 3u << 20);
  EXPECT_EQ(r1.buf, r3.buf);
  EXPECT_THROW(a.alloc(ctx().caps().max_allocation + 1), error);
}

// Without a Vulkan loader the binary still starts (nothing links libvulkan) and says why there is
// no GPU in one line. A separate process: the loader is opened once per process.
TEST(VulkanLoader, MissingLoaderIsOneClearLine) {
  setenv("TANDEM_VK_LOADER", "/nonexistent/libvulkan.so.1", 1);
  const auto r = tandem::test::run_cli("info");
  unsetenv("TANDEM_VK_LOADER");
  EXPECT_EQ(r.status, 0) << r.out << r.err;
  const std::string all = r.out + r.err;
  const auto at = all.find("no Vulkan loader");
  ASSERT_NE(at, std::string::npos) << all;
  EXPECT_EQ(all.find("no Vulkan loader", at + 1), std::string::npos) << "said twice: " << all;
}

// --offload auto skips creating an instance unless /dev has a GPU driver's node: a render node,
// an NVIDIA device (not nvidiactl alone) or WSL's dxg.
TEST(VulkanLoader, GpuDeviceNodeRule) {
  namespace fs = std::filesystem;
  const fs::path root = fs::temp_directory_path() / ("tandem_dev_" + std::to_string(getpid()));
  fs::remove_all(root);
  fs::create_directories(root / "dri");
  auto touch = [&](const std::string& rel) { std::ofstream(root / rel).put('x'); };
  touch("dri/card0");  // a display-only node: no compute driver opens it
  touch("nvidiactl");
  touch("nvidia-uvm");
  EXPECT_FALSE(tandem::vk::gpu_device_node_present(root.string()));
  touch("dri/renderD128");
  EXPECT_TRUE(tandem::vk::gpu_device_node_present(root.string()));
  fs::remove(root / "dri/renderD128");
  touch("nvidia0");
  EXPECT_TRUE(tandem::vk::gpu_device_node_present(root.string()));
  fs::remove(root / "nvidia0");
  touch("dxg");
  EXPECT_TRUE(tandem::vk::gpu_device_node_present(root.string()));
  fs::remove_all(root);
  EXPECT_FALSE(tandem::vk::gpu_device_node_present(root.string()));  // no such directory
}

// The default (--offload auto) on a machine whose only Vulkan device is a CPU: one short notice.
TEST(VulkanLoader, AutoWithoutGpuIsOneShortLine) {
  const auto r = tandem::test::run_cli("run -m " + tandem::test::model_path("stories260K.gguf") +
                                       " -p Once -n 4 --temp 0");
  ASSERT_EQ(r.status, 0) << r.err;
  if (tandem::vk::gpu_device_node_present()) GTEST_SKIP() << "this machine has a GPU device node";
  const auto at = r.err.find("tandem: no GPU");
  ASSERT_NE(at, std::string::npos) << r.err;
  const auto eol = r.err.find('\n', at);
  EXPECT_LE(eol - at, 80u) << r.err;
}

// ---- every op of the op table against the CPU reference ----------------------------------------
// The cases and thresholds are tools/op_check's (the same that gpu-cpu-parity ops runs), one test
// per op of vulkan/op_table.h: a new op without cases fails here.

class VulkanOps : public vulkan_test {};
class VulkanOpTable : public vulkan_test, public testing::WithParamInterface<const char*> {};

TEST_P(VulkanOpTable, MatchesTheCpuReference) {
  op_check_options o;
  o.op = GetParam();
  const std::vector<op_check> res = check_gpu_ops(ctx(), o);
  ASSERT_FALSE(res.empty()) << "no cases for " << o.op;
  for (const op_check& c : res)
    EXPECT_TRUE(c.pass) << c.op << " " << c.type << " " << c.variant << " " << c.shape
                        << ": nmse " << c.nmse << " (threshold " << c.threshold << "), max abs "
                        << c.max_abs_err;
}

INSTANTIATE_TEST_SUITE_P(Vulkan, VulkanOpTable,
                         testing::ValuesIn(std::begin(op_names), std::end(op_names)),
                         [](const testing::TestParamInfo<const char*>& i) {
                           return std::string(i.param);
                         });

TEST_F(VulkanOps, UnknownOpIsRefused) {
  op_check_options o;
  o.op = "gelu";
  EXPECT_THROW(check_gpu_ops(ctx(), o), error);
}

TEST_F(VulkanOps, UnsupportedWeightTypeIsNamed) {
  EXPECT_NE(weight_unsupported(dtype::q4_1, 32).find("q4_1"), std::string::npos);
  EXPECT_NE(weight_unsupported(dtype::q4_k, 172).find("block size"), std::string::npos);
  EXPECT_EQ(weight_unsupported(dtype::f32, 172), "");
}

// ops::elementwise dispatches an element-wise row of the op table with no function of its own
// in vulkan/ops.h (vulkan/op_table.h lists what a new op touches): add through it gives the CPU's
// bits on a size that is not a multiple of the workgroup, with its cost recorded; a push struct,
// a buffer count or an op that the table's row does not match is refused.
TEST_F(VulkanOps, ElementwiseDispatchFollowsTheOpTable) {
  runner run(ctx(), true);
  const int n = 1000, nb = 10;  // add's workgroup is 256: four groups, the last one partly idle
  const auto y = random_floats(n, 3), b = random_floats(nb, 4);
  host_buffer by(ctx(), n * 4), bb(ctx(), nb * 4);
  by.set(y);
  bb.set(b);
  run.run([&](recorder& r) {
    ops::elementwise(r, kernel::add, add_push{n, nb}, {by, bb}, by, n, {123, 45});
    EXPECT_EQ(r.last_cost().bytes, 123u);
    EXPECT_EQ(r.last_cost().flops, 45u);
    EXPECT_THROW(ops::elementwise(r, kernel::add, swiglu_push{n}, {by, bb}, by, n, {}),
                 std::logic_error);
    EXPECT_THROW(ops::elementwise(r, kernel::add, add_push{n, nb}, {by}, by, n, {}),
                 std::logic_error);
    EXPECT_THROW(ops::elementwise(r, kernel::rope, add_push{n, nb}, {by, bb}, by, n, {}),
                 std::logic_error);
  });
  std::vector<float> want = y;
  for (int i = 0; i < n; ++i) want[static_cast<size_t>(i)] += b[static_cast<size_t>(i % nb)];
  EXPECT_EQ(by.floats(want.size()), want);
}

// The block layouts against llama.cpp itself: blk.0.attn_q.weight of each quantized file in
// ../shared/models/quant, dequantized by llama.cpp's gguf-py into .f32 (an independent
// reference), times random activations.
TEST_F(VulkanOps, MatmulMatchesLlamaCppDequantization) {
  const std::pair<const char*, dtype> files[] = {{"Q8_0", dtype::q8_0},
                                                 {"Q4_0", dtype::q4_0},
                                                 {"Q4_K_M", dtype::q4_k},
                                                 {"Q5_K_M", dtype::q5_k},
                                                 {"Q6_K", dtype::q6_k}};
  runner run(ctx(), true);
  for (const auto& [tag, type] : files) {
    SCOPED_TRACE(tag);
    const std::string base = tandem::test::model_path(std::string("quant/tiny-") + tag);
    std::ifstream ref_in(base + ".blk.0.attn_q.f32", std::ios::binary);
    if (!ref_in) GTEST_SKIP() << "no " << base << ".blk.0.attn_q.f32";
    auto file = gguf_file::open(base + ".gguf");
    const gguf_tensor* t = file->tensor("blk.0.attn_q.weight");
    ASSERT_NE(t, nullptr);
    ASSERT_EQ(t->type, type);
    const int64_t cols = t->ne[0], rows = t->ne[1];
    std::vector<float> wref(static_cast<size_t>(cols * rows));
    ref_in.read(reinterpret_cast<char*>(wref.data()),
                static_cast<std::streamsize>(wref.size() * 4));
    ASSERT_TRUE(ref_in.good());

    arena a(ctx(), memory_kind::device, 1 << 20);
    uploader up(ctx(), 1 << 20);
    const device_weight w = upload_weight(a, up, type, cols, rows, t->data);
    up.finish();
    for (int n_tok : {1, 9}) {
      const auto x = random_floats(static_cast<size_t>(cols) * n_tok, 15);
      host_buffer bx(ctx(), x.size() * 4), by(ctx(), static_cast<size_t>(rows) * n_tok * 4);
      bx.set(x);
      run.run([&](recorder& r) {
        ops::matmul(r, w, bx, by, n_tok, static_cast<int>(cols), static_cast<int>(rows), false);
      });
      std::vector<float> ref(static_cast<size_t>(rows) * n_tok);
      cpu::ref::matmul(dtype::f32, wref.data(), cols, rows, x.data(), n_tok, ref.data(), 0, rows);
      EXPECT_LE(nmse(ref, by.floats(ref.size())), 1e-10) << "n_tok " << n_tok;
    }
  }
}

}  // namespace
}  // namespace tandem::vk::test

#endif  // TANDEM_HAVE_VULKAN
