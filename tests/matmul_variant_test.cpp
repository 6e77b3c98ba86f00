// The prompt matmul's variants (vulkan/matmul_variant.h) and the first-use self-check of kernels
// CI cannot run (vulkan/self_check.h): forcing (an unknown name or coopmat without the extension
// is a clear error), the self-check against the reference for every variant lavapipe runs, and the
// whole machinery on lavapipe through gpu-cpu-parity: the vec4 kernel checked as coopmat would be
// (TANDEM_VK_SELF_CHECK=all), once correct and once broken on purpose (TANDEM_PARITY_BREAK), with
// the notice, the fallback to a correct kernel, the cache file and its reuse.
#include "vulkan/matmul_variant.h"

#include <gtest/gtest.h>

#ifdef TANDEM_HAVE_VULKAN  // the build has a Vulkan backend

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>

#include "runtime/error.h"
#include "tests/test_util.h"
#include "tests/vulkan_test_util.h"
#include "vulkan/self_check.h"

namespace tandem::vk::test {
namespace {

using tandem::test::model_path;
using tandem::test::read_file;
using tandem::test::temp_dir;

// Sets an environment variable for one scope.
class scoped_env {
 public:
  scoped_env(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    ::setenv(name, value.c_str(), 1);
  }
  ~scoped_env() {
    if (had_)
      ::setenv(name_, old_.c_str(), 1);
    else
      ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const error& e) {
    return e.what();
  }
  return "(no error)";
}

int count(const std::string& s, const std::string& what) {
  int n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

class VulkanMatmulVariant : public vulkan_test {};

TEST_F(VulkanMatmulVariant, ForcingPicksTheVariantAndUnknownNamesAreErrors) {
  pipeline_cache pipes(ctx());
  {
    scoped_env e("TANDEM_VK_VARIANT", "");
    EXPECT_EQ(pick_matmul_variant(pipes, dtype::q4_0),
              ctx().caps().coopmat_n ? matmul_variant::coopmat : matmul_variant::vec4);
  }
  for (auto v : {matmul_variant::f32, matmul_variant::vec4}) {
    scoped_env e("TANDEM_VK_VARIANT", std::string("rope=x,matmul=") + matmul_variant_name(v));
    EXPECT_EQ(pick_matmul_variant(pipes, dtype::f16), v);
  }
  scoped_env e("TANDEM_VK_VARIANT", "matmul=vec8");
  const std::string why = error_of([&] { pick_matmul_variant(pipes, dtype::f32); });
  EXPECT_NE(why.find("unknown matmul variant 'vec8' (known: f32, vec4, coopmat)"),
            std::string::npos)
      << why;
}

TEST_F(VulkanMatmulVariant, ForcingCoopmatWithoutTheExtensionIsAClearError) {
  if (ctx().caps().coopmat_n) GTEST_SKIP() << "this device has a cooperative matrix";
  pipeline_cache pipes(ctx());
  scoped_env e("TANDEM_VK_VARIANT", "matmul=coopmat");
  const std::string why = error_of([&] { pick_matmul_variant(pipes, dtype::q4_0); });
  EXPECT_NE(why.find("needs VK_NV_cooperative_matrix"), std::string::npos) << why;
  EXPECT_NE(why.find(ctx().info().name + " lacks"), std::string::npos) << why;
}

// The self-check's own reference (runtime/blocks.h + a double dot) agrees with every variant CI
// runs, on every weight type, and catches a wrong result.
TEST_F(VulkanMatmulVariant, SelfCheckAgreesWithTheVariantsCiRuns) {
  pipeline_cache pipes(ctx());
  for (auto v : {matmul_variant::f32, matmul_variant::vec4})
    for (dtype t : {dtype::f32, dtype::f16, dtype::q8_0, dtype::q4_0, dtype::q4_k, dtype::q5_k,
                    dtype::q6_k}) {
      const self_check_result r = matmul_self_check(pipes, v, t);
      EXPECT_EQ(r.threshold, 1e-9);
      EXPECT_LE(r.nmse, r.threshold) << matmul_variant_name(v) << " " << dtype_name(t);
    }
}

TEST_F(VulkanMatmulVariant, VerdictsAreCachedPerDeviceDriverAndKernel) {
  const std::string dir = temp_dir() + "/self_check_cache";
  std::filesystem::remove_all(dir);
  scoped_env e("XDG_CACHE_HOME", dir);
  EXPECT_EQ(self_check_cache_path(), dir + "/tandem/kernel-checks");
  int runs = 0;
  const std::string bad = "test_kernel_bad_" + std::to_string(::getpid());
  const std::string good = "test_kernel_good_" + std::to_string(::getpid());
  auto failing = [&] {
    ++runs;
    return self_check_result{1.0, 1e-9};
  };
  auto passing = [&] {
    ++runs;
    return self_check_result{1e-12, 1e-9};
  };
  EXPECT_FALSE(kernel_trusted(ctx(), bad, "fallback", failing));
  EXPECT_FALSE(kernel_trusted(ctx(), bad, "fallback", failing));  // from memory: not run again
  EXPECT_TRUE(kernel_trusted(ctx(), good, "fallback", passing));
  EXPECT_EQ(runs, 2);
  // A check that cannot run (a driver refusing the pipeline) is a failed one, never an error.
  const std::string throws = "test_kernel_throws_" + std::to_string(::getpid());
  EXPECT_FALSE(kernel_trusted(ctx(), throws, "fallback",
                              []() -> self_check_result { throw error("vulkan: no pipeline"); }));
  const std::string file = read_file(dir + "/tandem/kernel-checks");
  EXPECT_EQ(count(file, " " + bad + " fail "), 1) << file;
  EXPECT_EQ(count(file, " " + good + " pass "), 1) << file;
  EXPECT_EQ(count(file, " " + throws + " fail inf"), 1) << file;
  EXPECT_NE(file.find(std::to_string(ctx().caps().props.driverVersion) + " " + bad),
            std::string::npos);

  // An unwritable cache: checked again, never an error.
  scoped_env e2("XDG_CACHE_HOME", "/dev/null/no");
  EXPECT_TRUE(kernel_trusted(ctx(), good + "_2", "fallback", passing));
  EXPECT_EQ(runs, 3);
  scoped_env e3("TANDEM_VK_SELF_CHECK", "some");
  EXPECT_THROW(self_check_everything(), error);
}

#ifdef TANDEM_PARITY  // gpu-cpu-parity is part of the build

struct tool_run {
  int status = -1;
  std::string err;
};

tool_run parity_model(const std::string& model, const std::string& env) {
  static int counter = 0;
  const std::string base = temp_dir() + "/self_check_run" + std::to_string(counter++);
  const std::string cmd =
      "env -u TANDEM_PARITY_BREAK -u TANDEM_VK_VARIANT -u TANDEM_VK_SELF_CHECK " + env + " " +
      std::string(TANDEM_PARITY) + " model -m " + model_path(model) + " --tokens 2 >" + base +
      ".out 2>" + base + ".err";
  const int rc = std::system(cmd.c_str());
  tool_run r;
  r.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  r.err = read_file(base + ".err") + read_file(base + ".out");
  return r;
}

// The vec4 kernel put through the self-check as coopmat is on a real GPU, broken on purpose: the
// model would diverge (first run), but checked it is disabled with a notice, falls back to the
// F32 kernel (which passes its own check) and the model passes; both verdicts are cached and the
// next run reuses them instead of checking again; an unwritable cache changes nothing but the
// reuse. (A correct kernel passing its check: VerdictsAreCached... and SelfCheckAgrees...)
TEST_F(VulkanMatmulVariant, SelfCheckDisablesABrokenKernelAndCachesTheVerdict) {
  const std::string model = "stories260K.gguf";
  const std::string broken = "TANDEM_VK_VARIANT=matmul=vec4 TANDEM_PARITY_BREAK=matmul_vec4_f32";
  const tool_run unchecked = parity_model(model, broken);
  if (unchecked.status == 77) GTEST_SKIP() << unchecked.err;
  EXPECT_EQ(unchecked.status, 1) << unchecked.err;  // the break is real

  const std::string dir = temp_dir() + "/self_check_model";
  std::filesystem::remove_all(dir);
  const std::string file = dir + "/tandem/kernel-checks";
  const std::string checked = "XDG_CACHE_HOME=" + dir + " TANDEM_VK_SELF_CHECK=all ";
  const tool_run first = parity_model(model, checked + broken);
  EXPECT_EQ(first.status, 0) << first.err;
  EXPECT_EQ(count(first.err,
                  "tandem: Vulkan kernel matmul_vec4_f32 disagrees with the "
                  "reference on "),
            1)
      << first.err;
  EXPECT_NE(first.err.find("; using matmul_f32 instead"), std::string::npos) << first.err;
  const std::string cached = read_file(file);
  EXPECT_EQ(count(cached, " matmul_vec4_f32 fail "), 1) << cached;
  EXPECT_EQ(count(cached, " matmul_f32 pass "), 1) << cached;

  const tool_run second = parity_model(model, checked + broken);
  EXPECT_EQ(second.status, 0) << second.err;
  EXPECT_NE(second.err.find("verdict cached in " + file), std::string::npos) << second.err;
  EXPECT_EQ(read_file(file), cached);  // reused, not checked and written again

  const tool_run unwritable =
      parity_model(model, "XDG_CACHE_HOME=/dev/null/no TANDEM_VK_SELF_CHECK=all " + broken);
  EXPECT_EQ(unwritable.status, 0) << unwritable.err;
  EXPECT_EQ(count(unwritable.err, "matmul_vec4_f32 disagrees"), 1) << unwritable.err;
}

#endif  // TANDEM_PARITY

}  // namespace
}  // namespace tandem::vk::test

#endif  // TANDEM_HAVE_VULKAN
