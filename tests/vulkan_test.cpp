// The Vulkan device layer and every shader against the scalar CPU reference (cpu/ops_ref.h) on
// random data with odd shapes, by NMSE = sum (ref - gpu)^2 / sum ref^2 with a threshold per op:
//
//   op                       threshold   why
//   rms_norm                 1e-10       float vs double sum of squares
//   rope                     1e-12       same cos/sin table; only fma contraction differs
//   swiglu                   1e-10       the device's exp
//   add, kv_store            exact       one IEEE add; the same round-to-nearest-even to F16
//   attention                1e-10       online vs two-pass softmax, summation order
//   matmul F32/F16/quantized 1e-9        weights decode exactly; only summation order differs
//                                        (activations stay F32 on the GPU)
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
#include <unistd.h>
#include <vector>

#include "cpu/fp16.h"
#include "cpu/ops_ref.h"
#include "cpu/quant.h"
#include "runtime/backend_factory.h"
#include "runtime/gguf.h"
#include "tests/test_util.h"
#include "tests/vulkan_test_util.h"
#include "vulkan/check.h"
#include "vulkan/host_buffer.h"
#include "vulkan/ops.h"

namespace tandem::vk::test {
namespace {

std::vector<bool> reduction_variants(context& ctx) {
  if (ctx.caps().subgroup_arithmetic) return {true, false};
  return {false};
}

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

// ---- element-wise and normalisation ops -------------------------------------------------------

class VulkanOps : public vulkan_test {};

TEST_F(VulkanOps, RmsNorm) {
  struct shape {
    int n, rows, row0, pad;
  };
  for (bool sg : reduction_variants(ctx())) {
    runner run(ctx(), sg);
    for (const shape s : {shape{1, 1, 0, 0}, shape{7, 3, 0, 0}, shape{100, 2, 1, 3},
                          shape{257, 5, 0, 0}, shape{1000, 4, 2, 1}, shape{4096, 1, 0, 0}}) {
      SCOPED_TRACE(testing::Message() << "n " << s.n << " rows " << s.rows << " sg " << sg);
      const int ldx = s.n + s.pad;
      const auto x = random_floats(static_cast<size_t>(ldx) * (s.rows + s.row0), 1, 3.0f);
      const auto w = random_floats(static_cast<size_t>(s.n), 2);
      host_buffer bx(ctx(), x.size() * 4), bw(ctx(), w.size() * 4),
          by(ctx(), static_cast<size_t>(s.n) * s.rows * 4);
      bx.set(x);
      bw.set(w);
      run.run(
          [&](recorder& r) { ops::rms_norm(r, bx, bw, by, s.n, s.rows, s.row0, ldx, s.n, 1e-5f); });
      std::vector<float> ref(static_cast<size_t>(s.n) * s.rows);
      for (int t = 0; t < s.rows; ++t)
        cpu::ref::rmsnorm(&ref[static_cast<size_t>(t) * s.n],
                          &x[static_cast<size_t>(t + s.row0) * ldx], w.data(), s.n, 1e-5f);
      EXPECT_LE(nmse(ref, by.floats(ref.size())), 1e-10);
    }
  }
}

TEST_F(VulkanOps, Rope) {
  struct shape {
    int n_tok, heads, head_dim, n_rot, pos0;
    float base, scale;
  };
  runner run(ctx(), true);
  for (rope_style style : {rope_style::adjacent, rope_style::neox}) {
    for (const shape s :
         {shape{1, 1, 2, 2, 0, 10000.f, 1.f}, shape{5, 3, 10, 10, 17, 10000.f, 1.f},
          shape{7, 4, 64, 32, 100, 500000.f, 0.25f}, shape{3, 5, 128, 128, 1000, 10000.f, 1.f}}) {
      SCOPED_TRACE(testing::Message() << "style " << static_cast<int>(style) << " head_dim "
                                      << s.head_dim << " n_rot " << s.n_rot);
      const int ld = s.heads * s.head_dim;
      auto x = random_floats(static_cast<size_t>(ld) * s.n_tok, 3);
      const auto table = rope_table(s.pos0 + s.n_tok, s.n_rot, s.base, s.scale);
      host_buffer bx(ctx(), x.size() * 4), bt(ctx(), table.size() * 4);
      bx.set(x);
      bt.set(table);
      run.run([&](recorder& r) {
        ops::rope(r, bx, bt, s.n_tok, s.heads, s.head_dim, s.n_rot, s.pos0, ld, style);
      });
      for (int t = 0; t < s.n_tok; ++t)
        cpu::ref::rope(&x[static_cast<size_t>(t) * ld], s.heads, s.head_dim, s.n_rot, s.pos0 + t,
                       s.base, s.scale, style);
      EXPECT_LE(nmse(x, bx.floats(x.size())), 1e-12);
    }
  }
}

TEST_F(VulkanOps, Swiglu) {
  runner run(ctx(), true);
  for (int n : {1, 1000, 12345}) {
    const auto g = random_floats(static_cast<size_t>(n), 4, 4.0f);
    const auto u = random_floats(static_cast<size_t>(n), 5);
    host_buffer bg(ctx(), g.size() * 4), bu(ctx(), u.size() * 4);
    bg.set(g);
    bu.set(u);
    run.run([&](recorder& r) { ops::swiglu(r, bg, bu, bg, n); });  // in place, as the backend
    std::vector<float> ref(g.size());
    cpu::ref::swiglu(ref.data(), g.data(), u.data(), n);
    EXPECT_LE(nmse(ref, bg.floats(ref.size())), 1e-10) << "n " << n;
  }
}

TEST_F(VulkanOps, AddResidualAndBias) {
  runner run(ctx(), true);
  for (const auto& [n, nb] : {std::pair{999, 999}, std::pair{7 * 13, 13}, std::pair{1, 1}}) {
    const auto y = random_floats(static_cast<size_t>(n), 6);
    const auto b = random_floats(static_cast<size_t>(nb), 7);
    host_buffer by(ctx(), y.size() * 4), bb(ctx(), b.size() * 4);
    by.set(y);
    bb.set(b);
    run.run([&](recorder& r) { ops::add(r, by, bb, n, nb); });
    const auto got = by.floats(y.size());
    for (int i = 0; i < n; ++i)
      ASSERT_EQ(got[static_cast<size_t>(i)],
                y[static_cast<size_t>(i)] + b[static_cast<size_t>(i % nb)])
          << i;
  }
}

TEST_F(VulkanOps, KvStoreIsBitExactAndKeepsNeighbours) {
  runner run(ctx(), true);
  struct shape {
    int n, n_tok, pos0;
  };
  for (const shape s :
       {shape{7, 1, 0}, shape{7, 4, 3}, shape{16, 5, 2}, shape{9, 3, 5}, shape{1, 1, 1}}) {
    SCOPED_TRACE(testing::Message() << "n " << s.n << " n_tok " << s.n_tok << " pos0 " << s.pos0);
    const int ldx = s.n + 2;
    auto x = random_floats(static_cast<size_t>(ldx) * s.n_tok, 8, 2.0f);
    // Values that exercise the F16 rounding: subnormal, halfway, overflow, negative zero.
    const float special[] = {3e-6f, -1e-7f, 1.00048828125f, 70000.f, -0.0f, 65519.f, 6.1e-5f};
    for (size_t i = 0; i < std::size(special) && i < x.size(); ++i) x[i] = special[i];
    const int n_pos = s.pos0 + s.n_tok + 2;
    std::vector<uint16_t> cache(static_cast<size_t>(n_pos) * s.n, 0xabcd);
    host_buffer bx(ctx(), x.size() * 4), bc(ctx(), cache.size() * 2);
    bx.set(x);
    bc.set(cache);
    run.run([&](recorder& r) { ops::kv_store(r, bx, bc, s.n, s.n_tok, s.pos0, ldx); });
    for (int t = 0; t < s.n_tok; ++t)
      for (int i = 0; i < s.n; ++i)
        cache[static_cast<size_t>(s.pos0 + t) * s.n + i] =
            cpu::fp32_to_fp16(x[static_cast<size_t>(t) * ldx + i]);
    for (size_t i = 0; i < cache.size(); ++i) ASSERT_EQ(bc.halves()[i], cache[i]) << "half " << i;
  }
}

// ---- attention --------------------------------------------------------------------------------

TEST_F(VulkanOps, AttentionGqaDecodeAndPrompt) {
  struct shape {
    int n_head, n_head_kv, head_dim, n_tok, pos0;
  };
  const shape shapes[] = {
      {4, 4, 8, 1, 0},    {4, 2, 8, 1, 200},   {8, 2, 64, 9, 0}, {8, 1, 64, 9, 130},
      {6, 3, 130, 3, 40}, {4, 4, 256, 2, 127}, {2, 1, 2, 37, 0}, {16, 2, 32, 1, 300},
  };
  for (bool sg : reduction_variants(ctx())) {
    runner run(ctx(), sg);
    for (const shape s : shapes) {
      SCOPED_TRACE(testing::Message()
                   << "heads " << s.n_head << "/" << s.n_head_kv << " hd " << s.head_dim
                   << " n_tok " << s.n_tok << " pos0 " << s.pos0 << " sg " << sg);
      const int ldq = s.n_head * s.head_dim, kvs = s.n_head_kv * s.head_dim;
      const int n_pos = s.pos0 + s.n_tok;
      const auto q = random_floats(static_cast<size_t>(ldq) * s.n_tok, 9);
      const auto kf = random_floats(static_cast<size_t>(kvs) * n_pos, 10);
      const auto vf = random_floats(static_cast<size_t>(kvs) * n_pos, 11);
      std::vector<uint16_t> k(kf.size()), v(vf.size());
      for (size_t i = 0; i < kf.size(); ++i) {
        k[i] = cpu::fp32_to_fp16(kf[i]);
        v[i] = cpu::fp32_to_fp16(vf[i]);
      }
      host_buffer bq(ctx(), q.size() * 4), bk(ctx(), k.size() * 2), bv(ctx(), v.size() * 2),
          bo(ctx(), q.size() * 4);
      bq.set(q);
      bk.set(k);
      bv.set(v);
      run.run([&](recorder& r) {
        ops::attention(r, bq, bk, bv, bo, s.n_tok, s.pos0, s.n_head, s.n_head_kv, s.head_dim);
      });
      std::vector<float> ref(q.size());
      cpu::ref::attention(ref.data(), q.data(), k.data(), v.data(), s.n_tok, s.pos0, s.n_head,
                          s.n_head_kv, s.head_dim, 0, s.n_head);
      EXPECT_LE(nmse(ref, bo.floats(ref.size())), 1e-10);
    }
  }
}

// ---- matrix products ----------------------------------------------------------------------------

std::vector<uint8_t> quantize(dtype t, const std::vector<float>& f, int64_t cols, int64_t rows) {
  const uint64_t rb = row_bytes(t, static_cast<uint64_t>(cols));
  std::vector<uint8_t> out(rb * static_cast<uint64_t>(rows));
  for (int64_t r = 0; r < rows; ++r)
    cpu::quantize_row(t, f.data() + r * cols, out.data() + rb * static_cast<uint64_t>(r), cols);
  return out;
}

struct matmul_case {
  int64_t cols, rows;
  int n_tok;
  matmul_kernel kind;
  bool accumulate;
  uint64_t max_piece;  // 0: device limits; else forces the weight into several pieces
};

void check_matmul(context& ctx, runner& run, dtype t, const matmul_case& c, double threshold) {
  SCOPED_TRACE(testing::Message() << dtype_name(t) << " cols " << c.cols << " rows " << c.rows
                                  << " n_tok " << c.n_tok << " kernel " << static_cast<int>(c.kind)
                                  << " acc " << c.accumulate << " max_piece " << c.max_piece);
  const auto wf = random_floats(static_cast<size_t>(c.cols * c.rows), 12);
  const auto wq = quantize(t, wf, c.cols, c.rows);
  const auto x = random_floats(static_cast<size_t>(c.cols) * c.n_tok, 13);
  const auto y0 = random_floats(static_cast<size_t>(c.rows) * c.n_tok, 14);

  arena a(ctx, memory_kind::device, 1 << 20);
  uploader up(ctx, 1 << 16);  // small staging: exercises the chunked, double-buffered path
  const device_weight w = upload_weight(a, up, t, c.cols, c.rows, wq.data(), c.max_piece);
  up.finish();
  if (c.max_piece) {
    EXPECT_GT(w.pieces.size(), 1u);
  }
  host_buffer bx(ctx, x.size() * 4), by(ctx, y0.size() * 4);
  bx.set(x);
  by.set(y0);
  run.run([&](recorder& r) {
    ops::matmul(r, w, bx, by, c.n_tok, static_cast<int>(c.cols), static_cast<int>(c.rows),
                c.accumulate, c.kind);
  });
  std::vector<float> ref(y0.size());
  cpu::ref::matmul(t, wq.data(), c.cols, c.rows, x.data(), c.n_tok, ref.data(), 0, c.rows);
  if (c.accumulate)
    for (size_t i = 0; i < ref.size(); ++i) ref[i] += y0[i];
  EXPECT_LE(nmse(ref, by.floats(ref.size())), threshold);
}

void matmul_suite(context& ctx, dtype t, std::vector<int64_t> cols_list) {
  for (bool sg : reduction_variants(ctx)) {
    runner run(ctx, sg);
    const auto vec = matmul_kernel::vector, tiled = matmul_kernel::tiled,
               aut = matmul_kernel::automatic;
    for (int64_t cols : cols_list) {
      const uint64_t rb = row_bytes(t, static_cast<uint64_t>(cols));
      const matmul_case cases[] = {
          {cols, 1, 1, vec, false, 0},       {cols, 67, 1, vec, false, 0},
          {cols, 130, 3, vec, true, 0},      {cols, 67, 5, vec, false, 0},
          {cols, 67, 1, tiled, false, 0},    {cols, 130, 7, tiled, false, 0},
          {cols, 67, 33, tiled, true, 0},    {cols, 200, 70, aut, false, 0},
          {cols, 67, 2, aut, true, rb * 20}, {cols, 130, 40, aut, false, rb * 33},
      };
      for (const auto& c : cases) {
        if (!sg && c.kind == tiled) continue;  // the tiled kernel has no reduction variant
        check_matmul(ctx, run, t, c, 1e-9);
      }
    }
  }
}

TEST_F(VulkanOps, MatmulF32) {
  matmul_suite(ctx(), dtype::f32, {1, 33, 100, 256});
}
TEST_F(VulkanOps, MatmulF16) {
  matmul_suite(ctx(), dtype::f16, {1, 33, 100, 256});
}
TEST_F(VulkanOps, MatmulQ8_0) {
  matmul_suite(ctx(), dtype::q8_0, {32, 96, 256});
}
TEST_F(VulkanOps, MatmulQ4_0) {
  matmul_suite(ctx(), dtype::q4_0, {32, 96, 256});
}
TEST_F(VulkanOps, MatmulQ4_K) {
  matmul_suite(ctx(), dtype::q4_k, {256, 768});
}
TEST_F(VulkanOps, MatmulQ5_K) {
  matmul_suite(ctx(), dtype::q5_k, {256, 768});
}
TEST_F(VulkanOps, MatmulQ6_K) {
  matmul_suite(ctx(), dtype::q6_k, {256, 768});
}

TEST_F(VulkanOps, UnsupportedWeightTypeIsNamed) {
  EXPECT_NE(weight_unsupported(dtype::q4_1, 32).find("q4_1"), std::string::npos);
  EXPECT_NE(weight_unsupported(dtype::q4_k, 172).find("block size"), std::string::npos);
  EXPECT_EQ(weight_unsupported(dtype::f32, 172), "");
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
