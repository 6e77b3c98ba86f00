// The op table: one row per shader (shaders/<name>.comp), the one list of the Vulkan ops. It
// generates enum class kernel, the pipeline rows (vulkan/pipeline.cpp), the pipelines warm_up
// builds at load (vulkan/vulkan_backend.cpp) and op_names(), which the op checks
// (tools/op_check: every op in this table must have a check, and a check of an op not in it is
// refused) and the parity test's op list (tests/parity_test.cpp) are held to.
//
// Columns: name (shader file stem), storage buffers (bindings 0 .. n-1), push-constant struct
// (shaders/push_constants.h), workgroup size (specialization constant 0), typed (one variant per
// weight type: <name>_<type>), specialization constants 1.. (op_spec), when warm_up builds it
// (op_use), written bindings (a mask: bit i set when the shader writes binding i, e.g. 0b100 for
// y in (w, x, y); a binding read and written in place, such as rope's x, counts as written).
//
// The written-bindings mask is what the recorder's hazard tracking (vulkan/hazard.h) relies on:
// a barrier goes in only where a dispatch touches a range written since the last barrier, or
// writes one read since it. A bit missing from the mask is a missing barrier (a race the
// validation layer does not report); a bit too many only costs a barrier. When in doubt, set it.
//
// A new element-wise op (a GELU wired as swiglu is) touches these five files, its check included:
//   1. shaders/gelu.comp                  the shader (its `// tandem-variants:` line)
//   2. vulkan/op_table.h                  its row here
//   3. cpu/ops_ref.h, 4. cpu/ops_ref.cpp  the scalar reference the check compares against
//   5. tools/op_check/op_check.cpp        its cases (shapes, threshold), which dispatch it with
//                                         ops::elementwise (vulkan/ops.h: the grid, the cost and
//                                         the TANDEM_PARITY_BREAK hook come from this row, so no
//                                         function of its own in vulkan/ops.{h,cpp}); tandem_tests
//                                         and gpu-cpu-parity both run them (tests/vulkan_test.cpp
//                                         and tests/parity_test.cpp take the op from this table)
// Six when it needs a push struct of its own (shaders/push_constants.h; one that holds only n can
// take swiglu_push). Using it in a layer adds the two backends' forward passes
// (cpu/cpu_backend.cpp, vulkan/vulkan_backend.cpp; there it is one ops::elementwise line) and, for
// speed on the CPU, a SIMD kernel next to the reference (cpu/elementwise*.cpp).
#pragma once
#include <cstdint>

namespace tandem::vk {

// Which specialization constants (after the workgroup size) a pipeline of the op takes.
enum class op_spec : uint8_t {
  none,
  accumulate,  // 1: y += instead of y = (both are built at load)
  rope_style,  // 1: neox (rotate halves) or adjacent pairs (the model's)
  // matvec: 1 accumulate, 2 x := silu(x) * u, 3 parts (built: plain, +=, += with GLU for one
  // part; plain for 2 and 3 parts), 4 x := rms_norm(x) * n (built: plain for 2 and 3 parts)
  accumulate_glu,
  glu,               // 1: x := silu(x) * u (both are built)
  accumulate_parts,  // matvec_dot: 1 accumulate, 2 parts (built: plain, += for one part; 2, 3)
};

// When warm_up builds the op's pipelines.
enum class op_use : uint8_t {
  always,  // also for a backend that runs only the output head
  layers,  // when the backend runs layers
  bias,    // when a layer on the backend has q/k/v biases
  integer_dot,  // where the device has integer dot products (the types with such a kernel)
};

#define TANDEM_VK_OPS(X)                                                                       \
  X(rms_norm, 3, rms_norm_push, 256, false, op_spec::none, op_use::always, 0b100)              \
  X(rope, 2, rope_push, 64, false, op_spec::rope_style, op_use::layers, 0b01)                  \
  X(swiglu, 3, swiglu_push, 256, false, op_spec::none, op_use::layers, 0b100)                  \
  X(add, 2, add_push, 256, false, op_spec::none, op_use::bias, 0b01)                           \
  X(kv_store, 2, kv_store_push, 256, false, op_spec::none, op_use::layers, 0b10)               \
  X(attention, 4, attention_push, 128, false, op_spec::none, op_use::layers, 0b1000)           \
  X(matvec, 8, matvec_push, 128, true, op_spec::accumulate_glu, op_use::always, 0b11100000)   \
  X(matmul, 3, matmul_push, 256, true, op_spec::accumulate, op_use::always, 0b100)             \
  X(flash_attn, 6, flash_attn_push, 128, false, op_spec::none, op_use::layers, 0b11000)      \
  X(flash_reduce, 3, flash_reduce_push, 128, false, op_spec::none, op_use::layers, 0b10)     \
  X(rotary_kv, 7, rotary_kv_push, 64, false, op_spec::rope_style, op_use::layers, 0b110011)      \
  X(quantize_q8, 3, quantize_push, 64, false, op_spec::glu, op_use::integer_dot, 0b100)       \
  X(matvec_dot, 8, matvec_push, 128, true, op_spec::accumulate_parts, op_use::integer_dot,    \
    0b11100000)                                                                                \
  X(matvec_rope, 15, matvec_rope_push, 128, true, op_spec::rope_style, op_use::layers,         \
    0b11011100000)                                                                             \
  X(matvec_dot_rope, 15, matvec_rope_push, 128, true, op_spec::rope_style, op_use::integer_dot, \
    0b11011100000)

enum class kernel : uint32_t {
#define TANDEM_VK_OP_ENUM(name, ...) name,
  TANDEM_VK_OPS(TANDEM_VK_OP_ENUM)
#undef TANDEM_VK_OP_ENUM
};

// The ops' names in table order.
inline constexpr const char* op_names[] = {
#define TANDEM_VK_OP_NAME(name, ...) #name,
    TANDEM_VK_OPS(TANDEM_VK_OP_NAME)
#undef TANDEM_VK_OP_NAME
};

// The op table's row of one kernel.
struct op_row {
  kernel k;
  const char* name;
  uint32_t bindings;
  uint32_t push_size;
  uint32_t wg;
  bool typed;
  op_spec spec;
  op_use use;
  uint32_t writes;  // bit i: the shader writes binding i
};

// Every row, in table order (defined in vulkan/pipeline.cpp, where the push structs are known).
extern const op_row op_rows[];
inline constexpr int n_ops = static_cast<int>(sizeof(op_names) / sizeof(op_names[0]));

}  // namespace tandem::vk
