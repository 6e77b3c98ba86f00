// `tandem bench`: llama-bench-style prompt (pp) and generation (tg) speed, mean +- stddev over
// repetitions, with the weight bytes read per generated token and the achieved bandwidth.
// `--memory` measures the machine's read bandwidth, the limit tg is compared against.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "cpu/bandwidth.h"
#include "runtime/cost_model.h"
#include "runtime/engine.h"
#include "runtime/layer_cache.h"
#include "runtime/model.h"
#include "runtime/trace.h"
#include "tools/tandem/bench_gpu.h"
#include "tools/tandem/commands.h"

namespace tandem::cli {
namespace {

struct bench_opts {
  std::string model;
  int n_prompt = 512;
  int n_gen = 128;
  int reps = 5;
  std::vector<int> threads;
  std::string offload = "0";
  std::string output = "md";
  bool memory = false;
  std::string mem_budget;      // --mem-budget (empty: no limit)
  int prefetch_distance = -1;  // -1: chosen from the budget
  bool direct_io = false;
  std::string trace;            // --trace FILE.json: spans of the last repetition
  std::string vram_budget;      // --vram-budget: device memory to plan with
  std::string stream = "auto";  // --stream auto|gpu|cpu
};

// The layer cache's counters over the measured repetitions.
nlohmann::json cache_json(const layer_cache_metrics& c) {
  return {{"active", c.active},
          {"budget_bytes", c.budget_bytes},
          {"capacity_bytes", c.capacity_bytes},
          {"capacity_layers", c.capacity_layers},
          {"prefetch_distance", c.prefetch_distance},
          {"direct_io", c.direct_io},
          {"hits", c.hits},
          {"misses", c.misses},
          {"late_prefetches", c.late_prefetches},
          {"loads", c.loads},
          {"bytes_read", c.bytes_read},
          {"evictions", c.evictions},
          {"prefetch_requests", c.prefetch_requests},
          {"prefetch_dropped", c.prefetch_dropped},
          {"load_errors", c.load_errors},
          {"blocked_s", c.blocked_s},
          {"load_s", c.load_s},
          {"compute_s", c.compute_s},
          {"bound", c.bound()}};
}

struct stats {
  double mean = 0, sd = 0;
};
stats summarize(const std::vector<double>& v) {
  stats s;
  for (double x : v) s.mean += x;
  s.mean /= static_cast<double>(v.size());
  for (double x : v) s.sd += (x - s.mean) * (x - s.mean);
  s.sd = v.size() > 1 ? std::sqrt(s.sd / static_cast<double>(v.size() - 1)) : 0.0;
  return s;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

using clock = std::chrono::steady_clock;

void add_options(CLI::App& app, bench_opts& o) {
  app.add_option("-m,--model", o.model, "GGUF model file");
  app.add_option("-p,--n-prompt", o.n_prompt, "prompt tokens for pp (0 = skip)")
      ->capture_default_str();
  app.add_option("-n,--n-gen", o.n_gen, "generated tokens for tg (0 = skip)")
      ->capture_default_str();
  app.add_option("-r,--repetitions", o.reps, "repetitions of each test")->capture_default_str();
  app.add_option("-t,--threads", o.threads,
                 "CPU threads, several allowed (default: physical cores)")
      ->delimiter(',');
  app.add_option("--offload,--ngl", o.offload, "comma-separated offload values (N, all, auto)")
      ->capture_default_str();
  app.add_option("-o,--output", o.output, "md or json")->capture_default_str();
  app.add_flag("--memory", o.memory, "measure the machine's memory read bandwidth");
  app.add_option("--mem-budget", o.mem_budget,
                 "memory for layer weights + KV cache + scratch (e.g. 512M); the rest is read "
                 "through the layer cache");
  app.add_option("--prefetch-distance", o.prefetch_distance,
                 "layers the cache loads ahead (-1: from the budget, 0: off)")
      ->capture_default_str();
  app.add_flag("--direct-io", o.direct_io, "layer cache reads bypass the page cache (O_DIRECT)");
  app.add_option("--vram-budget", o.vram_budget,
                 "device memory to plan with (e.g. 2G); layers that do not fit are streamed");
  app.add_option("--stream", o.stream, "layers that do not fit the VRAM: auto, gpu (stream), cpu")
      ->capture_default_str();
  app.add_option("--trace", o.trace,
                 "write the last repetition's per-layer upload and compute spans to FILE.json "
                 "(Chrome trace-event format)");
}

// What every test of a run shares: the model, the options, the bandwidth it is compared with.
struct bench_run {
  const bench_opts& o;
  const model& m;
  uint64_t per_token = 0;            // weight bytes read per generated token
  double bw = 0;                     // --memory: the machine's read bandwidth (bytes/s), else 0
  cpu::read_probe* probe = nullptr;  // --memory: bandwidth around each tg repetition
  std::mt19937 rng{1234};
  std::uniform_int_distribution<int32_t> tok{};
  nlohmann::json rows = nlohmann::json::array();
};

// Bytes of weights read per generated token: every layer, the output head, one embedding row.
uint64_t weight_bytes_per_token(const model& m) {
  uint64_t per_token = m.output().nbytes() + m.output_norm().nbytes() +
                       m.tok_embd().nbytes() / static_cast<uint64_t>(m.hp().n_vocab);
  for (int il = 0; il < m.hp().n_layer; ++il) per_token += m.layer(il).nbytes();
  return per_token;
}

// One engine: its options, its layer cache's counters and its trace.
struct bench_engine {
  layer_cache_metrics cm;
  trace_recorder trace;  // always on: streamed runs report their overlap
  std::unique_ptr<engine> eng;
  std::string offload;
  int threads = 0;
};

void make_engine(const bench_run& b, const std::string& off, int t, bench_engine* be) {
  engine_options eo;
  eo.n_threads = t;
  eo.n_ctx = std::max(b.o.n_prompt, b.o.n_gen) + 1;
  eo.n_batch = std::max(1, b.o.n_prompt);
  eo.offload = off;
  eo.stream_policy = b.o.stream;
  if (!b.o.vram_budget.empty()) eo.vram_budget = parse_size(b.o.vram_budget);
  if (!b.o.mem_budget.empty()) eo.mem_budget = parse_size(b.o.mem_budget);
  eo.prefetch_distance = b.o.prefetch_distance;
  eo.direct_io = b.o.direct_io;
  eo.metrics = &be->cm;
  eo.trace = &be->trace;
  be->trace.set_kernel_timing(!b.o.trace.empty());  // per-dispatch GPU timestamps
  be->offload = off;
  be->threads = t;
  be->eng = std::make_unique<engine>(b.m, eo);
}

// The measurements of one test over its repetitions.
struct test_samples {
  std::vector<double> tps, overlap, rep_bw, rep_frac;
  double upload_ms = 0, compute_ms = 0;
  layer_cache_metrics cache;  // the layer cache's counters over the measured repetitions
};

// One repetition of a test: n prompt tokens as one batch (pp) or n generated one at a time (tg).
void run_once(bench_run& b, engine& eng, bool pp, int n) {
  if (pp) {
    std::vector<int32_t> ids(static_cast<size_t>(n));
    for (auto& id : ids) id = b.tok(b.rng);
    eng.eval(ids);
  } else {
    for (int i = 0; i < n; ++i) eng.eval({b.tok(b.rng)});
  }
}

test_samples measure(bench_run& b, bench_engine& be, const char* kind, int n) {
  test_samples ts;
  layer_cache_metrics cm0;
  for (int r = -1; r < b.o.reps; ++r) {  // r = -1 is a warm-up
    if (r == 0) cm0 = be.cm;
    be.eng->reset();
    be.trace.clear();
    const bool paired = b.probe && kind[0] == 't' && r >= 0;
    const double bw_before = paired ? b.probe->measure_mean(4) : 0;
    auto t0 = clock::now();
    run_once(b, *be.eng, kind[0] == 'p', n);
    const double s = std::chrono::duration<double>(clock::now() - t0).count();
    if (r >= 0) ts.tps.push_back(n / s);
    const double bw_now = paired ? (bw_before + b.probe->measure_mean(4)) / 2 : 0;
    if (bw_now > 0) {
      ts.rep_bw.push_back(bw_now / 1e9);
      ts.rep_frac.push_back(n / s * static_cast<double>(b.per_token) / bw_now);
    }
    const auto sum = be.trace.summarize();
    if (r >= 0 && sum.uploads > 0) {
      // time of the run / max(upload, compute): 1.0 = uploads fully hidden (or compute)
      ts.overlap.push_back(s * 1e6 / std::max(sum.upload_us, sum.compute_us));
      ts.upload_ms += sum.upload_us / 1000 / b.o.reps;
      ts.compute_ms += sum.compute_us / 1000 / b.o.reps;
    }
  }
  ts.cache = be.cm - cm0;
  return ts;
}

nlohmann::json row_json(const bench_run& b, const bench_engine& be, const std::string& test,
                        const test_samples& ts) {
  const stats st = summarize(ts.tps);
  nlohmann::json row = {{"model", b.m.file().get_string("general.name", b.o.model)},
                        {"size_bytes", b.m.weight_bytes()},
                        {"backend", be.eng->describe()},
                        {"threads", be.threads},
                        {"offload", be.offload},
                        {"test", test},
                        {"tokens_per_s_mean", st.mean},
                        {"tokens_per_s_stddev", st.sd},
                        {"samples_tokens_per_s", ts.tps}};
  row["layer_cache"] = cache_json(ts.cache);
  if (!ts.overlap.empty())
    row["streaming"] = {{"overlap_efficiency", summarize(ts.overlap).mean},
                        {"upload_ms_per_run", ts.upload_ms},
                        {"gpu_compute_ms_per_run", ts.compute_ms}};
  if (test[0] == 't') {
    const double gbps = st.mean * static_cast<double>(b.per_token) / 1e9;
    row["weight_bytes_per_token"] = b.per_token;
    row["GBps"] = gbps;
    if (b.bw > 0) row["fraction_of_memory_bw"] = gbps * 1e9 / b.bw;
    if (!ts.rep_frac.empty()) {
      row["fraction_of_memory_bw"] = median(ts.rep_frac);
      row["memory_read_GBps_per_rep"] = ts.rep_bw;
      row["fraction_of_memory_bw_per_rep"] = ts.rep_frac;
    }
  }
  return row;
}

void print_md_row(const bench_run& b, const bench_engine& be, const std::string& test,
                  const test_samples& ts) {
  const stats st = summarize(ts.tps);
  const bool tg = test[0] == 't';
  const double gbps = tg ? st.mean * static_cast<double>(b.per_token) / 1e9 : 0.0;
  std::string extra = tg && !ts.rep_frac.empty()
                          ? fmt::format(" {:.1f}% |", 100.0 * median(ts.rep_frac))
                      : tg && b.bw > 0 ? fmt::format(" {:.1f}% |", 100.0 * gbps * 1e9 / b.bw)
                      : b.bw > 0       ? " |"
                                       : "";
  fmt::print("| {} | {} | {} | {} | {} | {} | {:.2f} ± {:.2f} | {} |{}\n", b.o.model,
             format_bytes(b.m.weight_bytes()), be.eng->describe(),
             be.threads == 0 ? "auto" : std::to_string(be.threads), be.offload, test, st.mean,
             st.sd, tg ? fmt::format("{:.2f}", gbps) : "", extra);
  if (!ts.overlap.empty())
    fmt::print(
        "|  |  | streamed layers: overlap efficiency {:.2f} (run time / max(upload "
        "{:.2f} ms, GPU compute {:.2f} ms)) |  |  |  |  |  |\n",
        summarize(ts.overlap).mean, ts.upload_ms, ts.compute_ms);
  std::fflush(stdout);
}

// One test (pp or tg of n tokens) on one engine: measured, kept as a JSON row, printed.
void run_test(bench_run& b, bench_engine& be, const char* kind, int n) {
  if (n <= 0) return;
  const gpu_counts_probe gpu_counts(*be.eng);
  const test_samples ts = measure(b, be, kind, n);
  const std::string test = fmt::format("{}{}", kind, n);
  b.rows.push_back(row_json(b, be, test, ts));
  gpu_counts.add(*be.eng, test, n * (b.o.reps + 1), b.rows.back());
  if (b.o.output == "md") {
    print_md_row(b, be, test, ts);
    print_gpu_counts(b.rows.back());
    std::fflush(stdout);
  }
  report_kernels(be.trace, *be.eng, b.rows.back(), b.o.output == "md");
  if (!b.o.trace.empty()) be.trace.write(b.o.trace);
}

int run_bench(const bench_opts& o) {
  if (o.output != "md" && o.output != "json")
    throw error(fmt::format("-o {}: choose md or json", o.output));
  if (o.reps < 1) throw error("-r must be at least 1");
  nlohmann::json out = nlohmann::json::object();
  double bw = 0;
  if (o.memory) {
    bw = cpu::measure_read_bandwidth();
    out["memory_read_GBps"] = bw / 1e9;
    if (o.output == "md") fmt::print("memory read bandwidth: {:.2f} GB/s\n\n", bw / 1e9);
  }
  if (o.model.empty()) {
    if (!o.memory) throw error("give a model with -m (or --memory to measure bandwidth)");
    if (o.output == "json") fmt::print("{}\n", out.dump(2));
    return 0;
  }
  auto m = model::load(o.model);
  bench_run b{.o = o, .m = *m, .per_token = weight_bytes_per_token(*m), .bw = bw};
  b.tok = std::uniform_int_distribution<int32_t>(0, m->hp().n_vocab - 1);
  if (o.output == "md") {
    fmt::print("| model | size | backend | threads | offload | test | t/s | GB/s |{}\n",
               bw > 0 ? " % of bw |" : "");
    fmt::print("|---|---:|---|---:|---|---|---:|---:|{}\n", bw > 0 ? "---:|" : "");
  }
  // With --memory, the bandwidth is measured again right before and right after each tg
  // repetition (a shared machine's bandwidth drifts with its neighbours from one moment to the
  // next), four passes of 256 MiB each, and "% of bw" is the median over repetitions of that
  // repetition's GB/s over the mean bandwidth of those eight passes: like the repetition, an
  // average over a stretch of time (the best of two passes was a quiet instant of ~5 ms against
  // 0.15-0.4 s of decode).
  std::unique_ptr<cpu::read_probe> probe;
  if (o.memory) probe = std::make_unique<cpu::read_probe>(256ull << 20);
  b.probe = probe.get();
  const std::vector<int> threads = o.threads.empty() ? std::vector<int>{0} : o.threads;
  for (const std::string& off : split(o.offload)) {
    for (int t : threads) {
      bench_engine be;
      make_engine(b, off, t, &be);
      run_test(b, be, "pp", o.n_prompt);
      run_test(b, be, "tg", o.n_gen);
    }
  }
  if (o.output == "json") {
    out["results"] = b.rows;
    fmt::print("{}\n", out.dump(2));
  }
  return 0;
}

}  // namespace

command add_bench(CLI::App& app) {
  auto o = std::make_shared<bench_opts>();
  add_options(app, *o);
  return [o] { return run_bench(*o); };
}

}  // namespace tandem::cli
