// `tandem run`: generate text from a prompt, streamed to stdout; timings to stderr.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "runtime/cost_model.h"
#include "runtime/engine.h"
#include "runtime/layer_cache.h"
#include "runtime/model.h"
#include "runtime/sampler.h"
#include "runtime/scheduler.h"
#include "runtime/tokenizer.h"
#include "runtime/trace.h"
#include "tools/tandem/commands.h"
#include "tools/tandem/interrupt.h"

namespace tandem::cli {
namespace {

struct run_opts {
  std::string model;
  std::string prompt;
  int n_predict = 128;
  sampler_params sp;
  int n_ctx = 0;
  int n_threads = 0;
  int n_batch = 512;
  std::string offload = "auto";
  std::string vram_budget;
  std::string mem_budget;      // --mem-budget (empty: no limit)
  int prefetch_distance = -1;  // -1: chosen from the budget
  bool direct_io = false;
  bool verbose = false;
  std::string trace;            // --trace FILE.json
  std::string stream = "auto";  // --stream auto|gpu|cpu
};

using clock = std::chrono::steady_clock;
double ms_since(clock::time_point t) {
  return std::chrono::duration<double, std::milli>(clock::now() - t).count();
}

void add_options(CLI::App& app, run_opts& o) {
  app.add_option("-m,--model", o.model, "GGUF model file")->required();
  app.add_option("-p,--prompt", o.prompt, "prompt text (printed, then continued)");
  app.add_option("-n,--n-predict", o.n_predict,
                 "number of tokens to generate (-1: until end of text or context)")
      ->capture_default_str();
  app.add_option("--temp", o.sp.temp, "temperature; 0 = greedy")->capture_default_str();
  app.add_option("--top-k", o.sp.top_k, "keep the K most likely tokens (0 = off)")
      ->capture_default_str();
  app.add_option("--top-p", o.sp.top_p, "keep the smallest set with probability >= P (1 = off)")
      ->capture_default_str();
  app.add_option("--min-p", o.sp.min_p,
                 "drop tokens less likely than P x the most likely (0 = off)")
      ->capture_default_str();
  app.add_option("--repeat-penalty", o.sp.repeat_penalty,
                 "penalise tokens seen in the last 64 (1 = off)")
      ->capture_default_str();
  app.add_option("--repeat-last-n", o.sp.repeat_last_n, "window of the repetition penalty")
      ->capture_default_str();
  app.add_option("-s,--seed", o.sp.seed, "random seed for sampling (same seed, same text)");
  app.add_option("-c,--ctx-size", o.n_ctx, "context size in tokens (0 = the model's, at most 4096)")
      ->capture_default_str();
  app.add_option("-b,--batch-size", o.n_batch, "prompt tokens per forward pass")
      ->capture_default_str();
  app.add_option("-t,--threads", o.n_threads, "CPU threads (0 = number of physical cores)")
      ->capture_default_str();
  app.add_option("--offload,--ngl,--n-gpu-layers", o.offload,
                 "layers on the GPU: N (the last N, with the output head), all, or auto (fit "
                 "the VRAM; never a CPU-type Vulkan device)")
      ->capture_default_str();
  app.add_option("--vram-budget", o.vram_budget,
                 "device memory to plan with (e.g. 2G), instead of the device's budget");
  app.add_option("--mem-budget", o.mem_budget,
                 "memory for layer weights + KV cache + scratch (e.g. 512M, 4G); layers that do "
                 "not fit are read from the file into a bounded cache (without it: planned from "
                 "the memory limit that `tandem info` shows)");
  app.add_option("--prefetch-distance", o.prefetch_distance,
                 "layers the cache loads ahead (-1: from the budget, 0: off)")
      ->capture_default_str();
  app.add_flag("--direct-io", o.direct_io, "layer cache reads bypass the page cache (O_DIRECT)");
  app.add_flag("-v,--verbose", o.verbose, "print the layer cache's metrics on stderr");
  app.add_option(
         "--stream", o.stream,
         "layers that do not fit the VRAM: auto (the cost model picks GPU streamed or CPU), "
         "gpu (always stream), cpu")
      ->capture_default_str();
  app.add_option("--trace", o.trace,
                 "write per-layer upload and compute spans to FILE.json (Chrome trace-event "
                 "format: open in ui.perfetto.dev)");
}

engine_options engine_opts(const run_opts& o, layer_cache_metrics* metrics, trace_recorder* trace) {
  engine_options eo;
  eo.n_ctx = o.n_ctx;
  eo.n_batch = o.n_batch;
  eo.n_threads = o.n_threads;
  eo.offload = o.offload;
  eo.stream_policy = o.stream;
  if (!o.vram_budget.empty()) eo.vram_budget = parse_size(o.vram_budget);
  if (!o.mem_budget.empty()) eo.mem_budget = parse_size(o.mem_budget);
  if (!o.mem_budget.empty() && eo.mem_budget == 0) throw error("--mem-budget must be above 0");
  eo.prefetch_distance = o.prefetch_distance;
  eo.direct_io = o.direct_io;
  eo.metrics = metrics;
  if (!o.trace.empty()) eo.trace = trace;
  if (stderr_is_terminal()) eo.progress = draw_load_progress;
  return eo;
}

// The prompt's tokens, which must leave room in the context.
std::vector<int32_t> prompt_ids(const run_opts& o, const tokenizer& tok, const engine& eng) {
  std::vector<int32_t> ids = tok.encode(o.prompt, tok.add_bos_default());
  if (ids.empty())
    throw error("the prompt is empty and the vocabulary has no BOS token to start from; give -p");
  if (static_cast<int>(ids.size()) >= eng.n_ctx())
    throw error(
        fmt::format("the prompt has {} tokens but the context holds {}; raise -c or "
                    "shorten the prompt",
                    ids.size(), eng.n_ctx()));
  return ids;
}

// Samples up to limit tokens after the prompt's logits, each printed as it comes; returns how
// many.
int generate(engine& eng, const tokenizer& tok, int n_vocab, sampler& smp,
             std::vector<float> logits, int32_t prev, int limit) {
  int n_gen = 0;
  while (n_gen < limit && !interrupted()) {
    int32_t next = smp.sample(logits.data(), n_vocab);
    if (tok.is_eog(next)) break;
    std::string piece = tok.piece(next, prev);
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
    ++n_gen;
    prev = next;
    if (n_gen == limit) break;
    if (eng.n_past() >= eng.n_ctx()) {
      fmt::print(stderr, "\ntandem: context full ({} tokens); stopping\n", eng.n_ctx());
      break;
    }
    logits = eng.eval({next});
  }
  return n_gen;
}

// --verbose: the layer cache's metrics, and what decode read.
void print_cache(const layer_cache_metrics& cache_metrics,
                 const layer_cache_metrics& after_prompt) {
  fmt::print(stderr, "{}", cache_metrics.summary());
  if (cache_metrics.active) {  // what decode read: the weights a token costs
    const layer_cache_metrics d = cache_metrics - after_prompt;
    fmt::print(stderr, "  decode: {} passes, {} read, {} per token\n", d.passes,
               format_bytes(d.bytes_read), format_bytes(static_cast<uint64_t>(d.bytes_per_pass())));
  }
}

void write_trace(const std::string& path, trace_recorder& trace) {
  trace.write(path);
  const auto s = trace.summarize();
  fmt::print(stderr, "trace: {} ({} upload spans, {:.2f} ms; {} GPU compute spans, {:.2f} ms)\n",
             path, s.uploads, s.upload_us / 1000, s.computes, s.compute_us / 1000);
}

int run(const run_opts& o) {
  catch_interrupt();         // Ctrl-C stops after the current token: what was printed stays printed
  parse_offload(o.offload);  // a bad value is refused before the model is loaded
  check_stream_policy(o.stream);
  if (o.n_batch < 1) throw error("--batch-size must be at least 1");
  auto t0 = clock::now();
  auto m = model::load(o.model);
  auto tok = tokenizer::from_gguf(m->file());
  layer_cache_metrics cache_metrics;
  trace_recorder trace;
  engine eng(*m, engine_opts(o, &cache_metrics, &trace));
  for (const std::string& note : eng.notes()) fmt::print(stderr, "tandem: {}\n", note);
  if (eng.plan_text().find("GPU resident") != std::string::npos ||
      eng.plan_text().find("GPU streamed") != std::string::npos || o.verbose)
    fmt::print(stderr, "{}", eng.plan_text());
  const double load_ms = ms_since(t0);

  const std::vector<int32_t> ids = prompt_ids(o, *tok, eng);
  sampler smp(o.sp);
  for (int32_t id : ids) smp.accept(id);
  std::fwrite(o.prompt.data(), 1, o.prompt.size(), stdout);
  std::fflush(stdout);

  auto t1 = clock::now();
  std::vector<float> logits = eng.eval(ids);
  const double prompt_ms = ms_since(t1);
  const layer_cache_metrics after_prompt = cache_metrics;
  const int limit = o.n_predict < 0 ? eng.n_ctx() - static_cast<int>(ids.size()) : o.n_predict;
  auto t2 = clock::now();
  const int n_gen = generate(eng, *tok, m->hp().n_vocab, smp, std::move(logits), ids.back(), limit);
  const double gen_ms = ms_since(t2);
  std::fputc('\n', stdout);
  std::fflush(stdout);
  if (interrupted()) fmt::print(stderr, "tandem: interrupted after {} tokens\n", n_gen);
  fmt::print(stderr,
             "\nload: {:.1f} ms | prompt: {} tokens in {:.1f} ms ({:.1f} tokens/s) | "
             "generation: {} tokens in {:.1f} ms ({:.1f} tokens/s) | {} | seed {}\n",
             load_ms, ids.size(), prompt_ms, ids.size() * 1000.0 / std::max(prompt_ms, 1e-9), n_gen,
             gen_ms, n_gen * 1000.0 / std::max(gen_ms, 1e-9), eng.describe(), smp.seed());
  if (o.verbose) print_cache(cache_metrics, after_prompt);
  if (!o.trace.empty()) write_trace(o.trace, trace);
  return interrupted() ? k_exit_interrupted : 0;
}

}  // namespace

command add_run(CLI::App& app) {
  auto o = std::make_shared<run_opts>();
  add_options(app, *o);
  return [o] { return run(*o); };
}

}  // namespace tandem::cli
