#include "cpu/parallel.h"

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>

namespace tandem::cpu {
namespace {
std::mutex g_mu;
std::unique_ptr<tbb::task_arena> g_arena;
int g_threads = 0;

tbb::task_arena& arena() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_arena) {
    if (g_threads <= 0) g_threads = physical_cores();
    g_arena = std::make_unique<tbb::task_arena>(g_threads);
  }
  return *g_arena;
}
}  // namespace

int physical_cores() {
  // Count distinct (physical id, core id) pairs; fall back to the logical count.
  std::ifstream in("/proc/cpuinfo");
  std::set<std::pair<int, int>> cores;
  std::string line;
  int phys = 0;
  while (std::getline(in, line)) {
    auto value = [&] { return std::stoi(line.substr(line.find(':') + 1)); };
    if (line.rfind("physical id", 0) == 0) phys = value();
    if (line.rfind("core id", 0) == 0) cores.insert({phys, value()});
  }
  int logical = static_cast<int>(std::thread::hardware_concurrency());
  if (cores.empty()) return logical > 0 ? logical : 1;
  return static_cast<int>(cores.size());
}

void set_num_threads(int n) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_threads = n > 0 ? n : physical_cores();
  g_arena.reset();
}

int num_threads() {
  arena();
  return g_threads;
}

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& f) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  auto& a = arena();
  if (g_threads == 1 || n <= grain) {
    f(0, n);
    return;
  }
  a.execute([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, n, grain),
                      [&](const tbb::blocked_range<int64_t>& r) { f(r.begin(), r.end()); });
  });
}

}  // namespace tandem::cpu
