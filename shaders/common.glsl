// Shared by the compute shaders: extensions, the push-constant structs and F16 helpers. Include
// it first; reductions are in reduce.glsl.
#ifndef TANDEM_COMMON_GLSL
#define TANDEM_COMMON_GLSL

#extension GL_GOOGLE_include_directive : require
#if USE_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif

#include "push_constants.h"

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
