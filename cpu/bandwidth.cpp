#include "cpu/bandwidth.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "cpu/large_buffer.h"
#include "cpu/parallel.h"
#include "runtime/backend_factory.h"

namespace tandem::cpu {

read_probe::read_probe(uint64_t bytes) : n_(bytes / sizeof(uint64_t)) {
  // In large pages like the weights the kernels stream (cpu/large_buffer.h), so that the figure is
  // the limit those reads face, not a TLB-bound one.
  mem_ = large_buffer(n_ * sizeof(uint64_t));
  auto* buf = reinterpret_cast<uint64_t*>(mem_.data());
  // Touch every page from the threads that will read it (first-touch placement).
  parallel_for(static_cast<int64_t>(n_), 1 << 16, [&](int64_t a, int64_t b) {
    for (int64_t i = a; i < b; ++i) buf[static_cast<size_t>(i)] = static_cast<uint64_t>(i);
  });
}

double read_probe::measure(int reps) const {
  return pass(reps, false);
}

double read_probe::measure_mean(int reps) const {
  return pass(reps, true);
}

double read_probe::pass(int reps, bool mean) const {
  const auto* buf = reinterpret_cast<const uint64_t*>(mem_.data());
  std::atomic<uint64_t> sink{0};
  double best = 0, total_s = 0;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    parallel_for(static_cast<int64_t>(n_), 1 << 16, [&](int64_t a, int64_t b) {
      uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      int64_t i = a;
      for (; i + 4 <= b; i += 4) {
        s0 += buf[static_cast<size_t>(i)];
        s1 += buf[static_cast<size_t>(i + 1)];
        s2 += buf[static_cast<size_t>(i + 2)];
        s3 += buf[static_cast<size_t>(i + 3)];
      }
      for (; i < b; ++i) s0 += buf[static_cast<size_t>(i)];
      sink += s0 + s1 + s2 + s3;
    });
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, static_cast<double>(n_ * sizeof(uint64_t)) / s);
    total_s += s;
  }
  if (mean && total_s > 0) best = static_cast<double>(n_ * sizeof(uint64_t)) * reps / total_s;
  return sink.load() == 42 ? best + 1e-9 : best;  // keeps the reads alive
}

double measure_read_bandwidth(uint64_t bytes, int reps) {
  return read_probe(bytes).measure(reps);
}

namespace {

// f32 multiply-adds over all threads: each task runs a cache-resident block of dot products.
double measure_cpu_flops() {
  constexpr int k = 1024, rows = 64, tasks = 256;
  std::vector<float> w(static_cast<size_t>(k) * rows), x(k);
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(i % 7) * 0.01f;
  for (int i = 0; i < k; ++i) x[static_cast<size_t>(i)] = static_cast<float>(i % 5) * 0.1f;
  std::atomic<int64_t> sink{0};
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    parallel_for(tasks, 1, [&](int64_t a, int64_t b) {
      float total = 0;
      for (int64_t t = a; t < b; ++t)
        for (int r = 0; r < rows; ++r) {
          const float* wr = w.data() + static_cast<size_t>(r) * k;
          float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
          for (int i = 0; i < k; i += 8)
            for (int j = 0; j < 8; ++j) s[j] += wr[i + j] * x[static_cast<size_t>(i + j)];
          for (float v : s) total += v;
        }
      sink += static_cast<int64_t>(total);
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * k * rows * tasks / s);
  }
  return best;
}

}  // namespace

}  // namespace tandem::cpu

namespace tandem {

cpu_speeds measure_cpu_speeds() {
  return {cpu::measure_read_bandwidth(256ull << 20, 3), cpu::measure_cpu_flops()};
}

}  // namespace tandem
