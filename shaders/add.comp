// y[i] += b[i % nb]: the residual add (nb = n) and bias rows broadcast over tokens (nb = row).
// tandem-variants: none  (read by vulkan/CMakeLists.txt)
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform push_block { add_push p; };
layout(binding = 0) buffer y_buf { float y[]; };
layout(binding = 1) readonly buffer b_buf { float b[]; };

void main() {
  const uint i = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  if (i >= p.n) return;
  y[i] += b[i % p.nb];
}
