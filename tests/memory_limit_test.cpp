// The memory limit (runtime/memory_limit.h) read from fake /proc and /sys/fs/cgroup trees: cgroup
// v1 and v2, "max", nested cgroups whose ancestors set the limit, missing files, garbage, and the
// TANDEM_MEM_LIMIT hook; and the batch/context fit of the memory plan.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "runtime/error.h"
#include "runtime/memory_limit.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;
constexpr uint64_t MiB = 1ull << 20;

// A fresh fake root with proc/ and cgroup/ under it.
struct fake_root {
  std::string dir;
  memory_limit_roots roots;
  explicit fake_root(const std::string& name) {
    dir = test::temp_dir() + "/memlimit-" + name;
    fs::remove_all(dir);
    fs::create_directories(dir + "/proc/self");
    fs::create_directories(dir + "/cgroup");
    roots.proc = dir + "/proc";
    roots.cgroup = dir + "/cgroup";
    roots.env_limit = "";  // not the test process's environment
  }
  void write(const std::string& rel, const std::string& text) const {
    const fs::path p = dir + "/" + rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
  }
  void meminfo(uint64_t avail_kb) const {
    write("proc/meminfo", "MemTotal:       24683772 kB\nMemFree:         1000000 kB\n"
                          "MemAvailable:   " + std::to_string(avail_kb) + " kB\nBuffers: 1 kB\n");
  }
};

const memory_source* find_source(const memory_limit& l, const std::string& name) {
  for (const memory_source& s : l.sources)
    if (s.name == name) return &s;
  return nullptr;
}

TEST(MemoryLimit, MemAvailableAloneWithoutCgroups) {
  fake_root f("meminfo");
  f.meminfo(4 * 1024 * 1024);  // 4 GiB
  const memory_limit l = detect_memory_limit(0, f.roots);
  EXPECT_EQ(l.bytes, 4ull << 30);
  EXPECT_EQ(l.source, "MemAvailable");
  EXPECT_EQ(l.sources.size(), 1u);
  EXPECT_NE(l.describe().find("4.00 GiB (MemAvailable"), std::string::npos) << l.describe();
}

TEST(MemoryLimit, CgroupV1LimitMinusUsage) {
  fake_root f("v1");
  f.meminfo(8 * 1024 * 1024);
  f.write("proc/self/cgroup", "12:pids:/x\n4:memory:/process_api/abc\n3:cpuset:/\n0::/\n");
  f.write("cgroup/memory/process_api/abc/memory.limit_in_bytes", std::to_string(320 * MiB) + "\n");
  f.write("cgroup/memory/process_api/abc/memory.usage_in_bytes", std::to_string(20 * MiB) + "\n");
  memory_limit l = detect_memory_limit(0, f.roots);
  EXPECT_EQ(l.bytes, 300 * MiB);
  EXPECT_EQ(l.source, "cgroup v1 /process_api/abc");
  EXPECT_NE(l.describe().find("memory.limit_in_bytes 320.00 MiB - memory.usage_in_bytes 20.00 MiB"),
            std::string::npos)
      << l.describe();
  // The page cache in the usage is not taken: the kernel reclaims it (v1: the hierarchical totals).
  f.write("cgroup/memory/process_api/abc/memory.stat",
          "cache 9999\nrss 1\nactive_file 1\ninactive_file 2\ntotal_active_file " +
              std::to_string(4 * MiB) + "\ntotal_inactive_file " + std::to_string(12 * MiB) + "\n");
  l = detect_memory_limit(0, f.roots);
  EXPECT_EQ(l.bytes, 316 * MiB);
  EXPECT_NE(l.describe().find("memory.usage_in_bytes 4.00 MiB (less 16.00 MiB of page cache)"),
            std::string::npos)
      << l.describe();
}

TEST(MemoryLimit, CgroupV1UnlimitedIsNoLimitButAnAncestorsLimitCounts) {
  fake_root f("v1-nested");
  f.meminfo(8 * 1024 * 1024);
  f.write("proc/self/cgroup", "4:memory:/outer/inner\n");
  // The process's own cgroup: unlimited (v1 writes 2^63 rounded to a page).
  f.write("cgroup/memory/outer/inner/memory.limit_in_bytes", "9223372036854771712\n");
  f.write("cgroup/memory/outer/inner/memory.usage_in_bytes", "6332416\n");
  f.write("cgroup/memory/outer/memory.limit_in_bytes", std::to_string(1024 * MiB) + "\n");
  f.write("cgroup/memory/outer/memory.usage_in_bytes", std::to_string(900 * MiB) + "\n");
  f.write("cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n");
  const memory_limit l = detect_memory_limit(0, f.roots);
  EXPECT_EQ(l.bytes, 124 * MiB);
  EXPECT_EQ(l.source, "cgroup v1 /outer");
  EXPECT_EQ(find_source(l, "cgroup v1 /outer/inner"), nullptr);  // unlimited: no bound
}

TEST(MemoryLimit, CgroupV2MaxAndNestedPaths) {
  fake_root f("v2");
  f.meminfo(8 * 1024 * 1024);
  f.write("proc/self/cgroup", "0::/user.slice/app.scope\n");
  f.write("cgroup/cgroup.controllers", "cpu memory pids\n");
  f.write("cgroup/user.slice/app.scope/memory.max", "max\n");
  f.write("cgroup/user.slice/app.scope/memory.current", "1000\n");
  f.write("cgroup/user.slice/memory.max", std::to_string(512 * MiB) + "\n");
  f.write("cgroup/user.slice/memory.current", std::to_string(192 * MiB) + "\n");
  const memory_limit l = detect_memory_limit(0, f.roots);
  EXPECT_EQ(l.bytes, 320 * MiB);
  EXPECT_EQ(l.source, "cgroup v2 /user.slice");
  EXPECT_NE(l.describe().find("memory.max 512.00 MiB - memory.current 192.00 MiB"), std::string::npos)
      << l.describe();
  // The own cgroup's limit, when it is the smaller one.
  f.write("cgroup/user.slice/app.scope/memory.max", std::to_string(100 * MiB) + "\n");
  const memory_limit own = detect_memory_limit(0, f.roots);
  EXPECT_EQ(own.bytes, 100 * MiB - 1000);
  EXPECT_EQ(own.source, "cgroup v2 /user.slice/app.scope");
  // v2's memory.stat: file pages on the LRU lists are reclaimable (never more than the usage).
  f.write("cgroup/user.slice/memory.stat",
          "anon 100\nfile 999999999\nactive_file " + std::to_string(100 * MiB) +
              "\ninactive_file " + std::to_string(90 * MiB) + "\n");
  f.write("cgroup/user.slice/app.scope/memory.stat", "active_file 5000\ninactive_file 0\n");
  const memory_limit cached = detect_memory_limit(0, f.roots);
  EXPECT_EQ(cached.bytes, 100 * MiB);  // the own cgroup: 1000 bytes used, all page cache
  const memory_source* outer = find_source(cached, "cgroup v2 /user.slice");
  ASSERT_NE(outer, nullptr);
  EXPECT_EQ(outer->bytes, 510 * MiB);
}

TEST(MemoryLimit, CgroupV2InAHybridLayoutAndAContainerRoot) {
  fake_root f("hybrid");
  f.meminfo(8 * 1024 * 1024);
  // The host's path, but the container mounts its own cgroup at the root: the root is used.
  f.write("proc/self/cgroup", "0::/docker/0123456789\n");
  f.write("cgroup/unified/cgroup.controllers", "memory\n");
  f.write("cgroup/unified/memory.max", std::to_string(256 * MiB) + "\n");
  f.write("cgroup/unified/memory.current", std::to_string(6 * MiB) + "\n");
  const memory_limit l = detect_memory_limit(0, f.roots);
  EXPECT_EQ(l.bytes, 250 * MiB);
  EXPECT_EQ(l.source, "cgroup v2 /");
}

TEST(MemoryLimit, MissingFilesAndGarbageContributeNothing) {
  fake_root f("garbage");
  // No meminfo, a cgroup file with junk, limits that do not parse.
  f.write("proc/self/cgroup", "garbage line\n::\n4:memory:relative/path\n4:memory:/g\n0::/g\n");
  f.write("cgroup/cgroup.controllers", "memory\n");
  f.write("cgroup/g/memory.max", "lots\n");
  f.write("cgroup/memory/g/memory.limit_in_bytes", "12abc\n");
  f.write("cgroup/memory/g/memory.usage_in_bytes", "\n");
  memory_limit l = detect_memory_limit(0, f.roots);
  EXPECT_EQ(l.bytes, 0u);
  EXPECT_TRUE(l.sources.empty());
  EXPECT_EQ(l.describe(), "unknown");
  // A meminfo without MemAvailable, or with a bad number, is no source either.
  f.write("proc/meminfo", "MemTotal: 100 kB\n");
  EXPECT_TRUE(detect_memory_limit(0, f.roots).sources.empty());
  f.write("proc/meminfo", "MemAvailable: many kB\n");
  EXPECT_TRUE(detect_memory_limit(0, f.roots).sources.empty());
  // A limit with no usage file: the usage counts as 0.
  f.write("cgroup/memory/g/memory.limit_in_bytes", std::to_string(64 * MiB));
  fs::remove(f.dir + "/cgroup/memory/g/memory.usage_in_bytes");
  l = detect_memory_limit(0, f.roots);
  EXPECT_EQ(l.bytes, 64 * MiB);
  // A usage above the limit leaves nothing.
  f.write("cgroup/memory/g/memory.usage_in_bytes", std::to_string(65 * MiB));
  EXPECT_EQ(detect_memory_limit(0, f.roots).bytes, 0u);
  EXPECT_EQ(detect_memory_limit(0, f.roots).source, "cgroup v1 /g");
}

TEST(MemoryLimit, BudgetAndEnvironmentHookTakeTheLeast) {
  fake_root f("env");
  f.meminfo(1024 * 1024);  // 1 GiB
  f.roots.env_limit = "320M";
  memory_limit l = detect_memory_limit(0, f.roots);
  EXPECT_EQ(l.bytes, 320 * MiB);
  EXPECT_EQ(l.source, "TANDEM_MEM_LIMIT");
  l = detect_memory_limit(100 * MiB, f.roots);
  EXPECT_EQ(l.bytes, 100 * MiB);
  EXPECT_TRUE(l.from_budget());
  l = detect_memory_limit(2ull << 30, f.roots);  // a budget above the real limit
  EXPECT_EQ(l.source, "TANDEM_MEM_LIMIT");
  EXPECT_FALSE(l.from_budget());
  f.roots.env_limit = "a lot";
  try {
    detect_memory_limit(0, f.roots);
    FAIL() << "no error";
  } catch (const error& e) {
    EXPECT_NE(std::string(e.what()).find("TANDEM_MEM_LIMIT='a lot' is not a size"),
              std::string::npos)
        << e.what();
  }
  f.roots.env_limit = "0";
  EXPECT_THROW(detect_memory_limit(0, f.roots), error);
}

TEST(MemoryLimit, ParsesSizes) {
  EXPECT_EQ(parse_memory_size("512M"), 512 * MiB);
  EXPECT_EQ(parse_memory_size("1.5GiB"), 1536 * MiB);
  EXPECT_EQ(parse_memory_size("300k"), 300 * 1024u);
  EXPECT_EQ(parse_memory_size("1000000"), 1000000u);
  EXPECT_FALSE(parse_memory_size("12X"));
  EXPECT_FALSE(parse_memory_size("-1M"));
  EXPECT_FALSE(parse_memory_size(""));
  EXPECT_FALSE(parse_memory_size("M"));
}

TEST(MemoryPlan, ShrinksTheBatchFirstThenADefaultContext) {
  memory_shape s;
  s.max_layer_bytes = 24 * MiB;
  s.kv_bytes_per_pos = 22 * 1024;       // ~44 MiB at 2048
  s.scratch_bytes_per_token = 80 * 1024;  // 40 MiB at 512
  memory_limit lim;
  lim.sources.push_back({"cgroup v1 /x", 152 * MiB, ""});
  lim.bytes = 152 * MiB;
  lim.source = "cgroup v1 /x";
  int batch = 512, ctx = 2048;
  const std::string note = fit_batch_and_context(s, lim, 16 * MiB, 3, &batch, &ctx, true);
  EXPECT_LT(batch, 512);
  EXPECT_GE(batch, 32);
  EXPECT_EQ(ctx, 2048);  // the batch was enough
  EXPECT_NE(note.find("batch size 512 -> " + std::to_string(batch)), std::string::npos) << note;
  // A limit so small that the context must shrink too, unless the user set it.
  lim.bytes = lim.sources[0].bytes = 110 * MiB;
  batch = 512, ctx = 2048;
  EXPECT_NE(fit_batch_and_context(s, lim, 16 * MiB, 3, &batch, &ctx, true).find("context 2048 -> "),
            std::string::npos);
  EXPECT_EQ(batch, 32);
  EXPECT_LT(ctx, 2048);
  batch = 512, ctx = 2048;
  fit_batch_and_context(s, lim, 16 * MiB, 3, &batch, &ctx, false);
  EXPECT_EQ(ctx, 2048);
  // Room enough, or the user's own budget: nothing changes.
  lim.bytes = lim.sources[0].bytes = 1024 * MiB;
  batch = 512, ctx = 2048;
  EXPECT_EQ(fit_batch_and_context(s, lim, 16 * MiB, 3, &batch, &ctx, true), "");
  EXPECT_EQ(batch, 512);
  lim.bytes = 10 * MiB;
  lim.source = "--mem-budget";
  EXPECT_EQ(fit_batch_and_context(s, lim, 16 * MiB, 3, &batch, &ctx, true), "");
}

}  // namespace
}  // namespace tandem
