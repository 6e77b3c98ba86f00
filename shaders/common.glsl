// Shared by the compute shaders: workgroup reductions (subgroup operations where the device has
// them, a shared-memory tree otherwise; the build compiles both variants, USE_SUBGROUP = 1 / 0)
// and F16 helpers. The including shader declares `layout(local_size_x_id = 0) in;`.
#ifndef TANDEM_COMMON_GLSL
#define TANDEM_COMMON_GLSL

#extension GL_GOOGLE_include_directive : require
#if USE_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif

#include "push_constants.h"

// Workgroups are at most this large (and a power of two, for the tree).
#define MAX_WG 256

shared float red_buf[MAX_WG];

// Sum of v over the workgroup, returned to every invocation. Uniform control flow only.
float wg_sum(float v) {
#if USE_SUBGROUP
  v = subgroupAdd(v);
  if (gl_NumSubgroups == 1) return v;
  barrier();
  if (subgroupElect()) red_buf[gl_SubgroupID] = v;
  barrier();
  float s = 0.0;
  for (uint i = 0; i < gl_NumSubgroups; ++i) s += red_buf[i];
  return s;
#else
  const uint tid = gl_LocalInvocationIndex;
  barrier();
  red_buf[tid] = v;
  barrier();
  for (uint s = gl_WorkGroupSize.x / 2; s > 0; s >>= 1) {
    if (tid < s) red_buf[tid] += red_buf[tid + s];
    barrier();
  }
  return red_buf[0];
#endif
}

// Maximum of v over the workgroup, returned to every invocation. Uniform control flow only.
float wg_max(float v) {
#if USE_SUBGROUP
  v = subgroupMax(v);
  if (gl_NumSubgroups == 1) return v;
  barrier();
  if (subgroupElect()) red_buf[gl_SubgroupID] = v;
  barrier();
  float s = red_buf[0];
  for (uint i = 1; i < gl_NumSubgroups; ++i) s = max(s, red_buf[i]);
  return s;
#else
  const uint tid = gl_LocalInvocationIndex;
  barrier();
  red_buf[tid] = v;
  barrier();
  for (uint s = gl_WorkGroupSize.x / 2; s > 0; s >>= 1) {
    if (tid < s) red_buf[tid] = max(red_buf[tid], red_buf[tid + s]);
    barrier();
  }
  return red_buf[0];
#endif
}

// float -> IEEE half bits, round to nearest even: bit-exact with cpu::fp32_to_fp16, so the KV
// cache holds the same halves on both paths.
uint f32_to_f16(float f) {
  const uint x = floatBitsToUint(f);
  const uint sign = (x >> 16) & 0x8000u;
  const uint absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) return sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0u);
  if (absx >= 0x477ff000u) return sign | 0x7c00u;
  if (absx < 0x38800000u) {
    if (absx < 0x33000000u) return sign;
    const uint e = absx >> 23;
    const uint man = (absx & 0x7fffffu) | 0x800000u;
    const uint shift = 126u - e;
    uint h = man >> shift;
    const uint rem = man & ((1u << shift) - 1u);
    const uint halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (h & 1u) != 0u)) ++h;
    return sign | h;
  }
  uint h = (absx - 0x38000000u) >> 13;
  const uint rem = absx & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u) != 0u)) ++h;
  return sign | h;
}

#endif
