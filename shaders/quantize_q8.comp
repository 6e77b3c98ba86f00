// Activations quantized for the integer-dot matvec (matvec_dot.comp): x[t, 32b .. 32b+31] ->
// one block of 10 words at (t * cols/32 + b) * 10: 8 words of int8 quants (4 per word, element
// 4k+j in byte j of word k), the scale d (float bits) and the sum of the quants (int): Q8_1 with
// an F32 scale. d = amax / 127, q = round(x / d) half away from zero, as the CPU's Q8_0
// (runtime/blocks.cpp) quantizes. With GLU, x is silu(x) * u (the down product's input). One
// invocation per block: a token's activations are a few KiB, read once.
// With NORM, x is rms_norm(x) * u (u: the norm weight, cols floats; p.eps), rms_norm.comp's math:
// the grid is (blocks of a row / workgroup, 1, tokens), and each workgroup sums its token's x^2
// over the whole row itself (one more pass over a few KiB) before quantizing its blocks, so the
// integer-dot path's attention and FFN norms are no dispatches (and no barriers) of their own.
// tandem-variants: none  (read by vulkan/CMakeLists.txt)
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
#include "reduce.glsl"
layout(constant_id = 1) const bool GLU = false;
layout(constant_id = 2) const bool NORM = false;  // x := rms_norm(x) * u (never with GLU)
layout(push_constant) uniform push_block { quantize_push p; };
layout(binding = 0) readonly buffer x_buf { float x[]; };
layout(binding = 1) readonly buffer u_buf { float u[]; };
layout(binding = 2) writeonly buffer q_buf { uint q[]; };

void main() {
  const uint nb = p.cols / 32u;
  uint i, t, b;
  float scale = 1.0;
  if (NORM) {  // uniform (a constant): the reduction stays in uniform control flow
    t = gl_WorkGroupID.z;
    b = gl_GlobalInvocationID.x;
    i = t * nb + b;
    const uint xb = t * p.ldx;
    float ss = 0.0;
    for (uint c = gl_LocalInvocationIndex; c < p.cols; c += gl_WorkGroupSize.x)
      ss += x[xb + c] * x[xb + c];
    ss = wg_sum(ss);
    scale = 1.0 / sqrt(ss / float(p.cols) + p.eps);
    if (b >= nb) return;
  } else {
    i = gl_GlobalInvocationID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    if (i >= nb * p.n_tok) return;
    t = i / nb;
    b = i % nb;
  }
  const uint base = t * p.ldx + 32u * b;
  float v[32];
  float amax = 0.0;
  for (uint j = 0; j < 32u; ++j) {
    const float xv = x[base + j];
    v[j] = GLU ? xv / (1.0 + exp(-xv)) * u[base + j] : NORM ? xv * scale * u[32u * b + j] : xv;
    amax = max(amax, abs(v[j]));
  }
  const float d = amax / 127.0;
  const float id = d != 0.0 ? 1.0 / d : 0.0;
  int sum = 0;
  for (uint k = 0; k < 8u; ++k) {
    uint word = 0u;
    for (uint j = 0; j < 4u; ++j) {
      const float s = v[4u * k + j] * id;
      const int qv = clamp(int(sign(s) * floor(abs(s) + 0.5)), -127, 127);
      sum += qv;
      word |= uint(qv & 0xff) << (8u * j);
    }
    q[i * 10u + k] = word;
  }
  q[i * 10u + 8u] = floatBitsToUint(d);
  q[i * 10u + 9u] = uint(sum);
}
