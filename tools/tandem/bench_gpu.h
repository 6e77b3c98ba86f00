// `tandem bench`'s GPU reports: the fixed costs per generated token (kernel dispatches, pipeline
// barriers, queue submits, from backend::counters) and, with --trace, the per-kernel table of
// achieved GB/s and FLOP/s from GPU timestamps (trace_recorder::kernels).
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "runtime/engine.h"
#include "runtime/trace.h"

namespace tandem::cli {

// Takes the engine's counters when made; add() puts the difference since then, per token, into a
// result row (tg tests of runs with GPU work only).
class gpu_counts_probe {
 public:
  explicit gpu_counts_probe(const engine& e) : start_(e.counters()) {}
  // tokens: the tokens evaluated since the probe was made (every repetition and the warm-up).
  void add(const engine& e, const std::string& test, int tokens, nlohmann::json& row) const;

 private:
  backend_counters start_;
};

// The markdown line of a row's GPU counts, if it has them.
void print_gpu_counts(const nlohmann::json& row);

// With per-kernel timing on: prints the table (md) and puts it into the row ("kernels"); says so
// in one line when the GPU work could not be timed (a device without timestamps).
void report_kernels(const trace_recorder& trace, const engine& e, nlohmann::json& row, bool md);

}  // namespace tandem::cli
