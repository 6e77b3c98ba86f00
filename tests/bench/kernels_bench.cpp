// Micro-benchmarks of cpu::matmul per weight type, kernel level and prefetch distance.
//
//   matvec (decode, n_tok = 1): weights cycle through a pool of copies much larger than the L3
//     cache, so every call streams its weights from DRAM; GB/s = weight bytes / time, to compare
//     with BM_read_bandwidth (the same threads summing a large array).
//   matvec_hot: the same on one matrix that stays in cache: the kernels' compute speed.
//   matmul (prompt, n_tok = 64 / 512): one matrix, compute-bound; GFLOP/s = 2 rows cols n_tok /
//     time (integer multiply-adds for quantized types).
//   attention_decode: one thread's share of a decode token's attention, cold cache.
//   run_steps: the threads' own cost per step of cpu::run_steps (decode's parallel region).
//   stories110M_prompt: every weight product of one stories110M-shaped forward pass (12 layers
//     of Q4_0 + a Q6_K output head) for 512 tokens: an upper bound on prompt tokens/s.
//
// Arguments: level (1 = avx2, 2 = avx512), prefetch distance in bytes (0 = off).
// TANDEM_BENCH_THREADS=n sets the thread count (default: physical cores).
//   tandem_kernel_bench --benchmark_filter='matvec/q4_0' --benchmark_min_time=0.5
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cpu/attention.h"
#include "runtime/fp16.h"
#include "cpu/kernels.h"
#include "cpu/matmul.h"
#include "cpu/parallel.h"
#include "runtime/blocks.h"
#include "cpu/repack.h"

namespace tandem::cpu {
namespace {

constexpr size_t pool_target = 384u << 20;  // >> 32 MiB of L3

struct matrix_pool {
  dtype type;
  int64_t rows, cols;
  size_t bytes;  // of one matrix
  std::vector<std::unique_ptr<uint8_t[]>> copies;
  std::vector<gguf_tensor> tensors;
  std::vector<packed_matrix> packed;  // x16 copies, when asked for

  matrix_pool(dtype t, int64_t r, int64_t c, size_t min_total) : type(t), rows(r), cols(c) {
    const size_t rb = row_bytes(t, static_cast<uint64_t>(c));
    bytes = rb * static_cast<size_t>(r);
    std::mt19937 rng(1);
    std::normal_distribution<float> dist(0.0f, 0.05f);
    std::vector<float> f(static_cast<size_t>(c));
    auto first = std::make_unique<uint8_t[]>(bytes);
    for (int64_t i = 0; i < r; ++i) {
      for (auto& v : f) v = dist(rng);
      quantize_row(t, f.data(), first.get() + static_cast<size_t>(i) * rb, c);
    }
    const size_t n = std::max<size_t>(1, (min_total + bytes - 1) / bytes);
    copies.push_back(std::move(first));
    for (size_t i = 1; i < n; ++i) {
      copies.push_back(std::make_unique<uint8_t[]>(bytes));
      std::memcpy(copies.back().get(), copies[0].get(), bytes);
    }
    tensors.resize(n);
    for (size_t i = 0; i < n; ++i) {
      tensors[i].type = t;
      tensors[i].n_dims = 2;
      tensors[i].ne[0] = c;
      tensors[i].ne[1] = r;
      tensors[i].nbytes = bytes;
      tensors[i].data = copies[i].get();
    }
  }
  weight at(size_t i) const { return weight{&tensors[i % tensors.size()]}; }
  const packed_matrix* packed_at(size_t i) const {
    return packed.empty() ? nullptr : &packed[i % packed.size()];
  }
  void pack() {
    for (const auto& t : tensors) packed.emplace_back(type, t.data, rows, cols);
  }
};

std::vector<float> activations(int64_t n) {
  std::mt19937 rng(2);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = dist(rng);
  return x;
}

bool setup(benchmark::State& state, kernel_level l, int pf) {
  if (!cpu_supports(l)) {
    state.SkipWithError("kernel level not supported by this CPU");
    return false;
  }
  set_kernel_level(l);
  set_prefetch_distance(pf);
  static const int threads = [] {
    const char* e = std::getenv("TANDEM_BENCH_THREADS");
    return e ? std::atoi(e) : 0;
  }();
  if (threads > 0 && num_threads() != threads) set_num_threads(threads);
  return true;
}

void label(benchmark::State& state, dtype t, int64_t rows, int64_t cols, kernel_level l, int pf) {
  state.SetLabel(std::string(dtype_name(t)) + " " + std::to_string(cols) + "->" +
                 std::to_string(rows) + " " + kernel_level_name(l) + " pf=" + std::to_string(pf));
}

void bm_matvec(benchmark::State& state, dtype t, int64_t cols, int64_t rows, bool hot,
               bool x16 = false) {
  const auto l = static_cast<kernel_level>(state.range(0));
  const int pf = static_cast<int>(state.range(1));
  if (!setup(state, l, pf)) return;
  // One pool alive at a time (each is hundreds of MB); the arguments of one shape run in a row.
  static std::unique_ptr<matrix_pool> pool;
  static std::string pool_key;
  const std::string key = std::string(dtype_name(t)) + std::to_string(rows) + "x" +
                          std::to_string(cols) + (hot ? "hot" : "") + (x16 ? "x16" : "");
  if (!pool || key != pool_key) {
    pool.reset();
    pool = std::make_unique<matrix_pool>(t, rows, cols, hot ? 0 : pool_target);
    if (x16) pool->pack();
    pool_key = key;
  }
  const auto x = activations(cols);
  std::vector<float> y(static_cast<size_t>(rows));
  size_t i = 0;
  for (auto _ : state) {
    matmul(pool->at(i), x.data(), 1, y.data(), pool->packed_at(i));
    ++i;
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(pool->bytes) / 1e9,
                                              benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * rows * cols / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  label(state, t, rows, cols, l, pf);
}

void bm_matmul(benchmark::State& state, dtype t, int64_t cols, int64_t rows, bool x16 = false) {
  const auto l = static_cast<kernel_level>(state.range(0));
  const int n_tok = static_cast<int>(state.range(1));
  if (!setup(state, l, prefetch_distance())) return;
  matrix_pool pool(t, rows, cols, 0);
  if (x16) pool.pack();
  const auto x = activations(cols * n_tok);
  std::vector<float> y(static_cast<size_t>(rows * n_tok));
  for (auto _ : state) {
    matmul(pool.at(0), x.data(), n_tok, y.data(), pool.packed_at(0));
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * rows * cols * n_tok / 1e9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
  state.counters["tok/s"] =
      benchmark::Counter(n_tok, benchmark::Counter::kIsIterationInvariantRate);
  label(state, t, rows, cols, l, prefetch_distance(t));
  state.SetLabel(std::string(dtype_name(t)) + " " + std::to_string(cols) + "->" +
                 std::to_string(rows) + " " + kernel_level_name(l) +
                 " n_tok=" + std::to_string(n_tok));
}

// Every weight product of a stories110M forward pass (dim 768, ffn 2048, 12 layers, vocab 32000)
// over n_tok tokens.
void bm_stories110m(benchmark::State& state) {
  const auto l = static_cast<kernel_level>(state.range(0));
  const int n_tok = static_cast<int>(state.range(1));
  if (!setup(state, l, prefetch_distance())) return;
  constexpr int64_t dim = 768, ffn = 2048, vocab = 32000, layers = 12;
  matrix_pool wqkvo(dtype::q4_0, dim, dim, 0), w13(dtype::q4_0, ffn, dim, 0),
      w2(dtype::q4_0, dim, ffn, 0), out(dtype::q6_k, vocab, dim, 0);
  const auto x = activations(ffn * n_tok);
  std::vector<float> y(static_cast<size_t>(vocab * n_tok));
  for (auto _ : state) {
    for (int il = 0; il < layers; ++il) {
      for (int i = 0; i < 4; ++i) matmul(wqkvo.at(0), x.data(), n_tok, y.data());
      for (int i = 0; i < 2; ++i) matmul(w13.at(0), x.data(), n_tok, y.data());
      matmul(w2.at(0), x.data(), n_tok, y.data());
    }
    matmul(out.at(0), x.data(), n_tok, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  const double flops = 2.0 * n_tok * (layers * (4 * dim * dim + 3 * dim * ffn) + dim * vocab);
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["tok/s"] =
      benchmark::Counter(n_tok, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(kernel_level_name(l)) + " n_tok=" + std::to_string(n_tok));
}

// The DRAM read bandwidth the same threads reach summing a large array.
void bm_read_bandwidth(benchmark::State& state) {
  const size_t n = pool_target / sizeof(uint64_t);
  static std::vector<uint64_t> a(n, 1);
  for (auto _ : state) {
    std::atomic<uint64_t> total{0};
    parallel_for(static_cast<int64_t>(n), 1 << 16, [&](int64_t r0, int64_t r1) {
      uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (int64_t i = r0; i + 4 <= r1; i += 4) {
        s0 += a[static_cast<size_t>(i)];
        s1 += a[static_cast<size_t>(i + 1)];
        s2 += a[static_cast<size_t>(i + 2)];
        s3 += a[static_cast<size_t>(i + 3)];
      }
      total += s0 + s1 + s2 + s3;
    });
    benchmark::DoNotOptimize(total.load());
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(n * sizeof(uint64_t)) / 1e9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

// run_steps' own cost per step: 100 steps in one region, each of one item, of one item per
// thread, or a unit step (a share of 16 units per thread); every item or unit busy-waits a fixed
// time (2 us an item, 0.125 us a unit), so that every thread takes part (with empty work one
// thread may run them all). "overhead" = time per step less that work per thread: what a decode
// token pays per step on top of its products (a layer is nine steps: four unit steps, four single
// items and attention's item per thread).
void spin_for(std::chrono::nanoseconds d) {
  const auto end = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < end) {
  }
}

void bm_run_steps(benchmark::State& state) {
  using std::chrono::nanoseconds;
  constexpr int n_steps = 100;
  const int kind = static_cast<int>(state.range(0));
  const int threads = num_threads();
  constexpr int64_t units_per_thread = 16;
  const nanoseconds item_ns{2000}, unit_ns{125};
  std::vector<step> steps(n_steps);
  for (step& s : steps) {
    if (kind == 2) {
      s.n = units_per_thread * threads;
      s.grain = 4;
      s.range = [unit_ns](int64_t u0, int64_t u1) { spin_for(unit_ns * (u1 - u0)); };
    } else {
      s.n = kind == 0 ? 1 : threads;
      s.item = [item_ns](int64_t) { spin_for(item_ns); };
    }
  }
  const double work_ns =
      static_cast<double>((kind == 2 ? unit_ns * units_per_thread : item_ns).count());
  double total_s = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    run_steps(steps.data(), n_steps);
    total_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  const double per_step_ns = total_s * 1e9 / static_cast<double>(state.iterations()) / n_steps;
  state.counters["ns/step"] = per_step_ns;
  state.counters["overhead_ns"] = per_step_ns - work_ns;
  state.SetLabel(kind == 0 ? "one item" : kind == 1 ? "one item per thread" : "unit step");
}

// One thread's share of a stories110M decode token's attention (6 of 12 heads of 64, the
// head-major F16 cache of cpu_backend) at position pos, with the cache cold: a 64 MiB read
// between calls evicts it, as a token's 60+ MB of weights do between one layer's attention and
// the next token's.
void bm_attention_decode(benchmark::State& state) {
  constexpr int n_head = 12, head_dim = 64, heads = 6;
  const int pos = static_cast<int>(state.range(0));
  const int n_ctx = 2048;
  const int64_t head_stride = static_cast<int64_t>(n_ctx) * head_dim;
  std::mt19937 rng(9);
  std::normal_distribution<float> nd;
  std::vector<uint16_t> k(static_cast<size_t>(n_head * head_stride)), v(k.size());
  for (auto& x : k) x = fp32_to_fp16(nd(rng));
  for (auto& x : v) x = fp32_to_fp16(nd(rng));
  std::vector<float> q(static_cast<size_t>(n_head) * head_dim), out(q.size());
  for (auto& x : q) x = nd(rng);
  static std::vector<uint64_t> flush((64u << 20) / sizeof(uint64_t), 1);
  uint64_t sink = 0;
  for (auto _ : state) {
    for (size_t i = 0; i < flush.size(); i += 8) sink += flush[i];
    const auto t0 = std::chrono::steady_clock::now();
    attention(out.data(), q.data(), k.data(), v.data(), 1, pos, n_head, n_head, head_dim, 0, heads,
              head_dim, head_stride);
    state.SetIterationTime(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  benchmark::DoNotOptimize(sink);
  state.SetLabel(std::string(kernel_level_name(active_kernel_level())) + ", cold cache");
}

void matvec_args(benchmark::internal::Benchmark* b) {
  for (int l : {1, 2})
    for (int pf : {0, 256, 512, 1024, 2048, 4096}) b->Args({l, pf});
  b->ArgNames({"level", "pf"})->UseRealTime()->Unit(benchmark::kMicrosecond);
}

// Packed (x16) weights: every type at both SIMD levels, with the prefetch sweep at AVX-512.
void x16_args(benchmark::internal::Benchmark* b) {
  for (int pf : {0, 512, 1024, 2048, 4096, 6144, 8192, 12288, 16384}) b->Args({2, pf});
  for (int pf : {0, 4096, 6144, 8192}) b->Args({1, pf});
  b->ArgNames({"level", "pf"})->UseRealTime()->Unit(benchmark::kMicrosecond);
}

void x16_hot_args(benchmark::internal::Benchmark* b) {
  b->Args({1, 0})->Args({2, 0});
  b->ArgNames({"level", "pf"})->UseRealTime()->Unit(benchmark::kMicrosecond);
}

void matmul_args(benchmark::internal::Benchmark* b) {
  for (int l : {1, 2})
    for (int n : {64, 512}) b->Args({l, n});
  b->ArgNames({"level", "n_tok"})->UseRealTime()->Unit(benchmark::kMillisecond);
}

struct shape {
  const char* name;
  int64_t cols, rows;
};
constexpr shape k_shapes[] = {
    {"tinyllama_up", 2048, 5632},    // 2048 -> 5632
    {"tinyllama_down", 5632, 2048},  // 5632 -> 2048
    {"stories110m_up", 768, 2048},
    {"stories110m_down", 2048, 768},
};
constexpr dtype k_types[] = {dtype::f32,  dtype::f16,  dtype::q8_0, dtype::q4_0,
                             dtype::q4_k, dtype::q5_k, dtype::q6_k};

int register_all() {
  benchmark::RegisterBenchmark("attention_decode", bm_attention_decode)
      ->Arg(64)
      ->Arg(128)
      ->Arg(256)
      ->Arg(512)
      ->ArgNames({"pos"})
      ->Iterations(400)
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("run_steps", bm_run_steps)
      ->DenseRange(0, 2)
      ->ArgNames({"kind"})
      ->UseRealTime()
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("read_bandwidth", bm_read_bandwidth)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
  for (dtype t : k_types) {
    for (const shape& s : k_shapes) {
      const std::string suffix = std::string(dtype_name(t)) + "/" + s.name;
      benchmark::RegisterBenchmark(("matvec/" + suffix).c_str(), [t, s](benchmark::State& st) {
        bm_matvec(st, t, s.cols, s.rows, false);
      })->Apply(matvec_args);
      benchmark::RegisterBenchmark(
          ("matvec_hot/" + suffix).c_str(),
          [t, s](benchmark::State& st) { bm_matvec(st, t, s.cols, s.rows, true); })
          ->Args({1, 0})
          ->Args({2, 0})
          ->ArgNames({"level", "pf"})
          ->UseRealTime()
          ->Unit(benchmark::kMicrosecond);
      benchmark::RegisterBenchmark(("matmul/" + suffix).c_str(), [t, s](benchmark::State& st) {
        bm_matmul(st, t, s.cols, s.rows);
      })->Apply(matmul_args);
      if (x16_supported(t, s.cols)) {  // packed copies (cpu/repack.h)
        for (bool hot : {false, true})
          benchmark::RegisterBenchmark(
              ((hot ? "matvec_x16_hot/" : "matvec_x16/") + suffix).c_str(),
              [t, s, hot](benchmark::State& st) { bm_matvec(st, t, s.cols, s.rows, hot, true); })
              ->Apply(hot ? x16_hot_args : x16_args)
              ->UseRealTime()
              ->Unit(benchmark::kMicrosecond);
        benchmark::RegisterBenchmark(
            ("matmul_x16/" + suffix).c_str(),
            [t, s](benchmark::State& st) { bm_matmul(st, t, s.cols, s.rows, true); })
            ->Args({1, 512})
            ->Args({2, 512})
            ->ArgNames({"level", "n_tok"})
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
      }
    }
  }
  // Float weights at a tinyllama prompt of 128 tokens (attention projection and FFN up).
  for (dtype t : {dtype::f16, dtype::f32}) {
    for (const shape& s :
         {shape{"tinyllama_attn", 2048, 2048}, shape{"tinyllama_up", 2048, 5632}}) {
      benchmark::RegisterBenchmark(
          ("matmul/" + std::string(dtype_name(t)) + "/" + s.name).c_str(),
          [t, s](benchmark::State& st) { bm_matmul(st, t, s.cols, s.rows); })
          ->Args({1, 128})
          ->Args({2, 128})
          ->ArgNames({"level", "n_tok"})
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
  benchmark::RegisterBenchmark("stories110m_prompt", bm_stories110m)
      ->Args({1, 512})
      ->Args({2, 512})
      ->ArgNames({"level", "n_tok"})
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
  return 0;
}
const int registered = register_all();

}  // namespace
}  // namespace tandem::cpu

BENCHMARK_MAIN();
