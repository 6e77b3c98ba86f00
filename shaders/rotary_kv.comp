// RoPE fused with the KV-cache append, one dispatch where there were four: a workgroup takes one
// head row of one token (x: the n_head query heads, then the n_head_kv key heads, then the
// n_head_kv value heads), stages it in shared memory, rotates q and k (the first n_rot dims;
// NEOX = 0 adjacent pairs, 1 the halves, angles from the host table as in rope.comp) and writes
// them back in place (q for attention; k so that the parity capture still sees the roped rows),
// and writes k and v as F16 (f32_to_f16: bit-exact with the CPU's rounding) into the caches at
// position pos0 + t. The cache rows hold n_head_kv * head_dim halves (even): one word per pair,
// no read-modify-write.
// tandem-variants: none  (read by vulkan/CMakeLists.txt)
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const bool NEOX = false;
layout(push_constant) uniform push_block { rotary_kv_push p; };
layout(binding = 0) buffer q_buf { float q[]; };
layout(binding = 1) buffer k_buf { float k[]; };
layout(binding = 2) readonly buffer v_buf { float v[]; };
layout(binding = 3) readonly buffer cs_buf { float cs[]; };
layout(binding = 4) writeonly buffer kc_buf { uint kc[]; };
layout(binding = 5) writeonly buffer vc_buf { uint vc[]; };
#define STEP_BINDING 6
#define STEP_ID 2
#include "step.glsl"  // a replayed decode layer: pos0 from the step buffer

shared float row[256];

// Element d of the staged row after the rotation (x0 c - x1 s, x0 s + x1 c, as rope.comp).
float rotated(uint d, uint pos) {
  const uint half_rot = p.n_rot / 2u;
  if (d >= p.n_rot) return row[d];
  const uint i = NEOX ? (d < half_rot ? d : d - half_rot) : d / 2u;
  const bool first = NEOX ? d < half_rot : (d & 1u) == 0u;
  const uint a = NEOX ? i : 2u * i, b = NEOX ? i + half_rot : 2u * i + 1u;
  const uint ci = 2u * (pos * half_rot + i);
  const float c = cs[ci], s = cs[ci + 1u];
  const float x0 = row[a], x1 = row[b];
  return first ? x0 * c - x1 * s : x0 * s + x1 * c;
}

void main() {
  const uint hx = gl_WorkGroupID.x, t = gl_WorkGroupID.y, tid = gl_LocalInvocationIndex;
  const uint D = p.head_dim, n_kv = p.n_head_kv * D;
  const uint pos = (STEP ? step.pos0 : p.pos0) + t;
  const uint kind = hx < p.n_head ? 0u : (hx < p.n_head + p.n_head_kv ? 1u : 2u);  // q, k, v
  const uint h = kind == 0u ? hx : (kind == 1u ? hx - p.n_head : hx - p.n_head - p.n_head_kv);
  const uint src = t * (kind == 0u ? p.ldq : p.ldkv) + h * D;
  for (uint d = tid; d < D; d += gl_WorkGroupSize.x)
    row[d] = kind == 0u ? q[src + d] : (kind == 1u ? k[src + d] : v[src + d]);
  barrier();
  const uint cache_word = (pos * n_kv + h * D) / 2u;
  for (uint j = tid; j < D / 2u; j += gl_WorkGroupSize.x) {
    const uint d = 2u * j;
    if (kind == 2u) {
      vc[cache_word + j] = f32_to_f16(row[d]) | (f32_to_f16(row[d + 1u]) << 16);
      continue;
    }
    const float r0 = rotated(d, pos), r1 = rotated(d + 1u, pos);
    if (kind == 0u) {
      q[src + d] = r0;
      q[src + d + 1u] = r1;
    } else {
      k[src + d] = r0;
      k[src + d + 1u] = r1;
      kc[cache_word + j] = f32_to_f16(r0) | (f32_to_f16(r1) << 16);
    }
  }
}
