// RoPE, in place: rotates the first n_rot dims of each head of each token. Variants: NEOX = 0
// rotates adjacent pairs (x[2i], x[2i+1]) (llama), NEOX = 1 the halves (x[i], x[i + n_rot/2]).
// cos/sin come from a table (cs[2 * (pos * n_rot/2 + i)] = cos, + 1 = sin) built on the host
// with the CPU's formula, so both paths rotate by identical angles.
// tandem-variants: none  (read by vulkan/CMakeLists.txt)
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const bool NEOX = false;
layout(push_constant) uniform push_block { rope_push p; };
layout(binding = 0) buffer x_buf { float x[]; };
layout(binding = 1) readonly buffer cs_buf { float cs[]; };

void main() {
  const uint half_rot = p.n_rot / 2;
  const uint i = gl_GlobalInvocationID.x;  // pair within the head
  const uint h = gl_GlobalInvocationID.y;  // head
  const uint t = gl_GlobalInvocationID.z;  // token
  if (i >= half_rot || h >= p.n_heads || t >= p.n_tok) return;
  const uint base = t * p.ld + h * p.head_dim;
  const uint a = base + (NEOX ? i : 2 * i);
  const uint b = base + (NEOX ? i + half_rot : 2 * i + 1);
  const uint ci = 2 * ((p.pos0 + t) * half_rot + i);
  const float c = cs[ci], s = cs[ci + 1];
  const float x0 = x[a], x1 = x[b];
  x[a] = x0 * c - x1 * s;
  x[b] = x0 * s + x1 * c;
}
