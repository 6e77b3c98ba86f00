// KV cache append: rows of n floats (token t at x[t * ldx]) become F16 at cache positions
// pos0 + t (row length n halves, two per word). One invocation per destination word; a word
// shared with a neighbouring position keeps that half (read-modify-write, no other writer).
// tandem-variants: none  (read by vulkan/CMakeLists.txt)
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform push_block { kv_store_push p; };
layout(binding = 0) readonly buffer x_buf { float x[]; };
layout(binding = 1) buffer cache_buf { uint cache[]; };

uint half_at(uint h, uint first, uint last, uint old_half) {
  if (h < first || h >= last) return old_half;
  const uint rel = h - first;
  const uint t = rel / p.n, c = rel % p.n;
  return f32_to_f16(x[t * p.ldx + c]);
}

void main() {
  const uint first = p.pos0 * p.n;
  const uint last = first + p.n_tok * p.n;
  const uint word = first / 2 + gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  if (2 * word >= last) return;
  uint old = 0;
  if (2 * word < first || 2 * word + 1 >= last) old = cache[word];
  const uint lo = half_at(2 * word, first, last, old & 0xffffu);
  const uint hi = half_at(2 * word + 1, first, last, old >> 16);
  cache[word] = lo | (hi << 16);
}
