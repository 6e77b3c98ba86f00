// The variants of the prompt (tiled) matmul kernel and which one a device runs:
//   f32      shaders/matmul.comp: F32 tiles through shared memory, the reference variant (kept:
//            the last fallback, and the comparison point of the others);
//   vec4     shaders/matmul_vec4.comp: register-tiled, vec4 shared-memory loads; the default;
//   coopmat  shaders/matmul_coopmat.comp: cooperative matrix (VK_NV_cooperative_matrix, F16 in,
//            F32 accumulate), the default where the device offers it (device_caps::coopmat_n).
// TANDEM_VK_VARIANT=matmul=<variant> forces one (an unknown name, or coopmat on a device without
// it, is an error). coopmat cannot run on lavapipe, so it runs only after its first-use
// self-check (vulkan/self_check.h) passes on the device, else falls back to vec4 (then f32);
// TANDEM_VK_SELF_CHECK=all checks vec4 and f32 the same way.
#pragma once
#include <string>

#include "runtime/dtype.h"
#include "vulkan/pipeline.h"
#include "vulkan/self_check.h"

namespace tandem::vk {

enum class matmul_variant { f32, vec4, coopmat };

const char* matmul_variant_name(matmul_variant v);

// The shader variant for pipeline_cache::get: "" (f32), "vec4", "coopmat" or "coopmat_n8".
std::string matmul_shader_variant(const context& ctx, matmul_variant v);

// The variant that runs prompts with weights of type t on this device (forced, else the best the
// device has, after the self-checks that apply).
matmul_variant pick_matmul_variant(pipeline_cache& pipes, dtype t);

// Runs variant v on weights of type t against the reference (runtime/blocks.h dequantization and
// a double-precision dot) on a few random shapes, with and without accumulation; the worst NMSE
// and the variant's threshold (1e-9 for the F32 variants, 1e-5 for coopmat's F16 inputs).
self_check_result matmul_self_check(pipeline_cache& pipes, matmul_variant v, dtype t);

}  // namespace tandem::vk
