// gpu-cpu-parity: checks that the Vulkan path computes what the CPU path computes, op by op
// (`ops`) and layer by layer on a real model (`model`). See the help text for the thresholds.
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include "runtime/error.h"
#include "tools/gpu-cpu-parity/parity.h"

namespace tandem::parity {

int no_device_status() {
  const char* ci = std::getenv("CI");
  const bool in_ci = ci && *ci && std::string(ci) != "0" && std::string(ci) != "false";
  return in_ci ? 1 : 77;
}

std::string sci(double v) {
  if (v == 0) return "0";
  return fmt::format("{:.2e}", v);
}

}  // namespace tandem::parity

namespace {

constexpr const char* k_footer = R"(Thresholds (NMSE = sum (cpu - gpu)^2 / sum cpu^2; KL = KL(p_cpu || p_gpu)):
  ops    per op, on random data: rms_norm, swiglu, attention 1e-10; rope 1e-12; add, kv_store 0
         (exact); matvec, matmul 1e-9 for every weight type (the weights decode exactly and the
         activations stay F32, so only the order of summation differs).
  model  per position, for the output of every op of every layer and for each layer's hidden
         state: 1e-5 with F32/F16 weights, 5e-3 with quantized weights (the CPU rounds the
         activations of quantized products to 8 bits, the GPU keeps them F32). Logits: KL <= 1e-4
         (F32/F16) or 5e-3 (quantized) at every position; top-1 agreement 100% for trained
         weights, >= 90% for random weights (near-tied logits); the free-running greedy text must
         be identical for trained weights only. Trained or random is --expect, or auto-detected:
         trained when the CPU's top-1 logit leads the runner-up by more than 0.05 at every
         position.

Exit status: 0 pass, 1 failure (or error), 77 no Vulkan device (1 when CI is set).
Test hook: TANDEM_PARITY_BREAK=<kernel>[_<type>] (rms_norm, rope, swiglu, add, kv_store,
attention, matvec, matmul; e.g. matvec_q4_k) doubles that shader's output, to show that the
checks catch it and name it.)";

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"gpu-cpu-parity: the Vulkan GPU path against the CPU path, op by op and layer by "
               "layer (a CPU-type Vulkan device such as lavapipe is used too)"};
  app.footer(k_footer);
  app.require_subcommand(1);
  std::map<CLI::App*, tandem::parity::command> commands;
  CLI::App* ops = app.add_subcommand(
      "ops", "every shader against the CPU reference on random data, every weight type, odd shapes");
  commands[ops] = tandem::parity::add_ops(*ops);
  CLI::App* mdl = app.add_subcommand(
      "model", "a model's tokens on the CPU, on the GPU and split: every op, layer and logit");
  commands[mdl] = tandem::parity::add_model(*mdl);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (auto& [sub, fn] : commands)
      if (sub->parsed()) return fn();
  } catch (const std::exception& e) {
    std::fflush(stdout);
    fmt::print(stderr, "gpu-cpu-parity: error: {}\n", e.what());
    return 1;
  }
  return 0;
}
