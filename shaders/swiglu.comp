// SwiGLU: y = silu(g) * u, silu(v) = v / (1 + exp(-v)). y may alias g.
// tandem-variants: none  (read by vulkan/CMakeLists.txt)
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform push_block { swiglu_push p; };
layout(binding = 0) readonly buffer g_buf { float g[]; };
layout(binding = 1) readonly buffer u_buf { float u[]; };
layout(binding = 2) writeonly buffer y_buf { float y[]; };

void main() {
  const uint i = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  if (i >= p.n) return;
  const float v = g[i];
  y[i] = v / (1.0 + exp(-v)) * u[i];
}
