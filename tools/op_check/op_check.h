// The op level of gpu-cpu-parity, as a library: every shader of the Vulkan op table
// (vulkan/op_table.h) against the scalar CPU reference (cpu/ops_ref.h) on random data with odd
// shapes, by NMSE = sum (ref - gpu)^2 / sum ref^2 against a threshold per op. The one copy of the
// op cases: `gpu-cpu-parity ops` prints them as a table, tests/vulkan_test.cpp runs them under
// GoogleTest (and under the validation layer). Like gpu-cpu-parity, it is the one place that
// reaches into both paths.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace tandem {

namespace vk {
class context;
}

struct op_check_options {
  bool allow_cpu_device = true;  // lavapipe is a fine device to check
  std::string filter;            // only cases whose op or op_type contains this (empty: all)
  std::string op;                // only this op of the table (empty: all)
  uint32_t seed = 1;             // of the random data
};

struct op_check {
  std::string op;       // the op table's name: rms_norm, rope, swiglu, add, kv_store, ...
  std::string type;     // weight type (matvec, matmul), else f32 (kv_store: f16)
  std::string variant;  // reductions: "subgroup" or "shared"; else "-"
  std::string shape;    // e.g. "cols=96 rows=67 n_tok=5 acc"
  double nmse = 0;
  double max_abs_err = 0;
  double threshold = 0;  // pass: nmse <= threshold (and, where said in shape, exact bits)
  bool pass = false;
};

// Runs the cases on a device of its own; returns an empty list with *why set when there is no
// device (or no Vulkan in this build). Throws tandem::error on a device failure.
// TANDEM_PARITY_BREAK (vulkan/ops.cpp) breaks one kernel on purpose.
std::vector<op_check> check_gpu_ops(const op_check_options& opt, std::string* why);

// The same on a context the caller owns (the tests' shared one). Throws tandem::error when an op
// of the op table has no cases here, or opt.op names no op of the table.
std::vector<op_check> check_gpu_ops(vk::context& ctx, const op_check_options& opt);

}  // namespace tandem
