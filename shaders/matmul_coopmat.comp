// Cooperative-matrix (tensor-core) matrix-matrix product for prompt batches, the `coopmat`
// variant of the matmul op: y[t, y_off + r] (+)= W[r, :] . x[t, :] with F16 inputs and F32
// accumulation, built on VK_NV_cooperative_matrix (the extension glslang 12 compiles; the KHR
// one has the same model). Chosen only where the device reports an F16 x F16 -> F32 shape of
// 16 x CM_N x 16 (CM_N = 16, or 8 for the <name>_n8 build) at subgroup scope with 32-lane
// subgroups, and only after it agrees with the reference on that device (vulkan/self_check.h):
// lavapipe has no cooperative matrix, so CI compiles and validates this shader but cannot run it.
//
// A workgroup of 256 (8 subgroups of 32) computes BM = 64 rows x BN = 64 tokens, stepping over
// the columns BK = 32 at a time: the W tile is decoded once into shared memory as F16 (the
// rounding is the variant's only loss: ~1e-7 NMSE), x is staged as F16 beside it. Subgroup s
// owns rows 32 (s % 2) .. +32 and tokens 16 (s / 2) .. +16: 2 x (16 / CM_N) accumulators of
// 16 x CM_N, 2 K-steps of 16 per tile. The accumulators go through shared memory on the way
// out, where rows and tokens past the end are dropped and ACC adds the old y.
//
// On an H100 (dense F16 tensor cores ~990 TFLOP/s through wgmma, roughly 60% of that through
// mma.sync, which this extension compiles to; 128 B of shared memory per SM per clock): per
// K-step of 16 a subgroup loads 2 A fragments (16x16 F16, 512 B) and 16/CM_N B fragments
// (16 x CM_N) for 2 x 16/CM_N MMAs: 1536 B per 8192 FMAs, 0.19 B/FMA, so shared memory caps it
// at ~680 FMAs per SM per clock, ~330 TFLOP/s (about half of mma.sync peak). With the decode to
// F16, the x staging and two barriers per 32 columns, ~150-250 TFLOP/s is the expectation:
// 5-10x the vec4 kernel's ~40 TFLOP/s, and a pp512 that is bound by the weight decode and the
// rest of the layer rather than the products (issue 26 asks >= 3x the F32 kernel). Larger tiles
// (128 x 128, BK 64) and ldmatrix-friendly layouts would be the next step once it is measured.
// tandem-variants: types coopmat_n8  (read by vulkan/CMakeLists.txt)
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_NV_cooperative_matrix : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#include "common.glsl"

#ifndef CM_N
#define CM_N 16
#endif

layout(local_size_x = 256) in;
layout(constant_id = 1) const bool ACC = false;  // y += instead of y =
layout(push_constant) uniform push_block { matmul_push p; };
layout(binding = 0) readonly buffer w_buf { uint w[]; };
layout(binding = 1) readonly buffer x_buf { float x[]; };
layout(binding = 2) buffer y_buf { float y[]; };

#include "dequant.glsl"

#define BM 64u
#define BN 64u
#define BK 32u
#define LDS (BK + 8u)       // F16 row stride of the tiles (+8: spreads rows over the banks)
#define NB (16 / CM_N)      // accumulators per subgroup along the tokens

shared float16_t ws[BM * LDS];  // row r, column k at r * LDS + k
shared float16_t xs[BN * LDS];  // token t, column k at t * LDS + k
shared float outs[8u * 32u * 16u];  // per subgroup its 32 rows x 16 tokens, column-major

void main() {
  const uint tid = gl_LocalInvocationIndex;
  const uint row0 = gl_WorkGroupID.x * BM;
  const uint tok0 = gl_WorkGroupID.y * BN;
  const uint sg = gl_SubgroupID;
  const uint sr = 32u * (sg % 2u), st = 16u * (sg / 2u);  // this subgroup's rows and tokens

  fcoopmatNV<32, gl_ScopeSubgroup, 16, CM_N> acc[2][NB];
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < NB; ++j) acc[i][j] = fcoopmatNV<32, gl_ScopeSubgroup, 16, CM_N>(0.0);

  const uint dr = tid / 4u, dg = tid % 4u;  // the 8 weights this invocation decodes per tile
  for (uint k0 = 0; k0 < p.cols; k0 += BK) {
    float v[8];
    if (row0 + dr < p.rows) {
      dequant8(row0 + dr, k0 / 8u + dg, p.cols, v);
    } else {
      for (uint k = 0; k < 8u; ++k) v[k] = 0.0;
    }
    for (uint k = 0; k < 8u; ++k) ws[dr * LDS + dg * 8u + k] = float16_t(v[k]);
    for (uint s = 0; s < 8u; ++s) {  // BN x BK = 2048 values, 8 per invocation
      const uint idx = tid + 256u * s;
      const uint t = idx / BK, c = idx % BK;
      const float xv =
          tok0 + t < p.n_tok && k0 + c < p.cols ? x[(tok0 + t) * p.ldx + k0 + c] : 0.0;
      xs[t * LDS + c] = float16_t(xv);
    }
    barrier();
    for (uint kk = 0; kk < BK; kk += 16u) {
      fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> a[2];
      for (int i = 0; i < 2; ++i)  // A: 16 rows x 16 columns, row-major
        coopMatLoadNV(a[i], ws, (sr + 16u * uint(i)) * LDS + kk, LDS, false);
      for (int j = 0; j < NB; ++j) {
        // B: 16 columns x CM_N tokens; xs holds it column-major (a token's columns together).
        fcoopmatNV<16, gl_ScopeSubgroup, 16, CM_N> b;
        coopMatLoadNV(b, xs, (st + uint(CM_N * j)) * LDS + kk, LDS, true);
        for (int i = 0; i < 2; ++i) acc[i][j] = coopMatMulAddNV(a[i], b, acc[i][j]);
      }
    }
    barrier();
  }
  // Out through shared memory: D (rows x tokens) stored column-major, 32 rows per token.
  const uint ob = sg * 32u * 16u;
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < NB; ++j)
      coopMatStoreNV(acc[i][j], outs, ob + uint(CM_N * j) * 32u + 16u * uint(i), 32u, true);
  barrier();
  for (uint e = gl_SubgroupInvocationID; e < 32u * 16u; e += gl_SubgroupSize) {
    const uint r = row0 + sr + e % 32u, t = tok0 + st + e / 32u;
    if (r >= p.rows || t >= p.n_tok) continue;
    const uint yi = t * p.ldy + p.y_off + r;
    y[yi] = ACC ? y[yi] + outs[ob + e] : outs[ob + e];
  }
}
