// Causal attention with grouped KV heads over the F16 KV cache, by online softmax: one
// workgroup per (query head, token) walks the positions 0 .. pos0 + t in chunks of 128, one
// position per invocation for the scores, then one head dimension per invocation for the
// weighted sum of V, rescaling the running sum whenever the running maximum grows.
// head_dim must be even and at most 256.
// tandem-variants: subgroup  (read by vulkan/CMakeLists.txt)
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = 128) in;
#include "reduce.glsl"
layout(push_constant) uniform push_block { attention_push p; };
layout(binding = 0) readonly buffer q_buf { float q[]; };
layout(binding = 1) readonly buffer k_buf { uint kc[]; };
layout(binding = 2) readonly buffer v_buf { uint vc[]; };
layout(binding = 3) writeonly buffer o_buf { float o[]; };

#define CHUNK 128u
#define MAX_D 256u
#define NEG_BIG -1.0e30

shared float qs[MAX_D];
shared float ps[CHUNK];

float v_at(uint h) { return unpackHalf2x16(vc[h >> 1] >> ((h & 1u) * 16u)).x; }

void main() {
  const uint h = gl_WorkGroupID.x, t = gl_WorkGroupID.y, tid = gl_LocalInvocationIndex;
  const uint hk = h / (p.n_head / p.n_head_kv);
  const uint qb = t * p.ldq + h * p.head_dim;
  for (uint d = tid; d < p.head_dim; d += CHUNK) qs[d] = q[qb + d];
  barrier();

  const uint n_pos = p.pos0 + t + 1u;  // causal
  const uint kv_off = hk * p.head_dim;
  float m = NEG_BIG, l = 0.0, acc0 = 0.0, acc1 = 0.0;
  for (uint c0 = 0; c0 < n_pos; c0 += CHUNK) {
    const uint pos = c0 + tid;
    float s = NEG_BIG;
    if (pos < n_pos) {
      const uint kb = (pos * p.kv_stride + kv_off) / 2u;
      float dot = 0.0;
      for (uint d2 = 0; d2 < p.head_dim / 2u; ++d2) {
        const vec2 k = unpackHalf2x16(kc[kb + d2]);
        dot += qs[2u * d2] * k.x;
        dot += qs[2u * d2 + 1u] * k.y;
      }
      s = dot * p.scale;
    }
    const float m_new = max(m, wg_max(s));
    const float e = pos < n_pos ? exp(s - m_new) : 0.0;
    const float corr = exp(m - m_new);
    l = l * corr + wg_sum(e);
    ps[tid] = e;
    barrier();
    const uint cnt = min(CHUNK, n_pos - c0);
    acc0 *= corr;
    acc1 *= corr;
    const uint vb = c0 * p.kv_stride + kv_off;
    if (tid < p.head_dim)
      for (uint i = 0; i < cnt; ++i) acc0 += ps[i] * v_at(vb + i * p.kv_stride + tid);
    if (tid + CHUNK < p.head_dim)
      for (uint i = 0; i < cnt; ++i) acc1 += ps[i] * v_at(vb + i * p.kv_stride + tid + CHUNK);
    barrier();
    m = m_new;
  }
  const uint ob = t * p.ldq + h * p.head_dim;
  if (tid < p.head_dim) o[ob + tid] = acc0 / l;
  if (tid + CHUNK < p.head_dim) o[ob + tid + CHUNK] = acc1 / l;
}
