#include "tools/tandem/bench_gpu.h"

#include <fmt/format.h>

namespace tandem::cli {

void gpu_counts_probe::add(const engine& e, const std::string& test, int tokens,
                           nlohmann::json& row) const {
  const backend_counters now = e.counters();
  const uint64_t dispatches = now.dispatches - start_.dispatches;
  if (test.empty() || test[0] != 't' || tokens <= 0 || dispatches == 0) return;
  const double n = tokens;
  row["gpu_per_token"] = {
      {"dispatches", static_cast<double>(dispatches) / n},
      {"barriers", static_cast<double>(now.barriers - start_.barriers) / n},
      {"submits", static_cast<double>(now.submits - start_.submits) / n},
      {"recorded_dispatches", static_cast<double>(now.recorded - start_.recorded) / n}};
}

void print_gpu_counts(const nlohmann::json& row) {
  if (!row.contains("gpu_per_token")) return;
  const auto& g = row["gpu_per_token"];
  fmt::print(
      "|  |  | GPU per token: {:.1f} dispatches / {:.1f} barriers / {:.1f} submits / {:.1f} "
      "recorded on the host |  |  |  |  |  |\n",
      g["dispatches"].get<double>(), g["barriers"].get<double>(), g["submits"].get<double>(),
      g.value("recorded_dispatches", 0.0));
}

void report_kernels(const trace_recorder& trace, const engine& e, nlohmann::json& row, bool md) {
  if (!trace.kernel_timing() || e.counters().dispatches == 0) return;
  const auto ks = trace.kernels();
  if (ks.empty()) {
    if (md) fmt::print("per-kernel GPU times: none (the device writes no timestamps)\n");
    return;
  }
  nlohmann::json table = nlohmann::json::array();
  if (md) {
    fmt::print("\n| kernel | calls | ms | GB/s | GFLOP/s |\n|---|---:|---:|---:|---:|\n");
  }
  for (const kernel_stat& k : ks) {
    const double s = k.us / 1e6;
    const double gbps = s > 0 ? static_cast<double>(k.bytes) / s / 1e9 : 0.0;
    const double gflops = s > 0 ? static_cast<double>(k.flops) / s / 1e9 : 0.0;
    table.push_back({{"kernel", k.name},
                     {"calls", k.calls},
                     {"ms", k.us / 1000},
                     {"bytes", k.bytes},
                     {"flops", k.flops},
                     {"GBps", gbps},
                     {"GFLOPps", gflops}});
    if (md)
      fmt::print("| {} | {} | {:.3f} | {:.2f} | {:.2f} |\n", k.name, k.calls, k.us / 1000, gbps,
                 gflops);
  }
  if (md) fmt::print("\n");
  row["kernels"] = table;
}

}  // namespace tandem::cli
