// The decode step's per-token values (struct step_params, shaders/push_constants.h) for a kernel
// that a replayed layer runs (vulkan/replay.h): with the specialization constant STEP = true it
// reads the position (and flash decoding's split) from this buffer, ordered with the work by the
// command stream; with STEP = false (the default: prompts, re-recorded layers, the op checks) from
// its push constants, and the binding is bound to one of its other read-only buffers, unread.
// Include after common.glsl with STEP_BINDING (the binding index) and STEP_ID (the constant id)
// defined, e.g. `#define STEP_BINDING 6` / `#define STEP_ID 2` / `#include "step.glsl"`, then
// read `STEP ? step.pos0 : p.pos0`.
#ifndef TANDEM_STEP_GLSL
#define TANDEM_STEP_GLSL
#if !defined(STEP_BINDING) || !defined(STEP_ID)
#error "define STEP_BINDING and STEP_ID before including step.glsl"
#endif
layout(constant_id = STEP_ID) const bool STEP = false;
layout(binding = STEP_BINDING) readonly buffer step_buf { step_params step; };
#endif
