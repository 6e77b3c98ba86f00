// Flash attention over the F16 KV cache (causal, grouped KV heads), for decode and prompts alike.
// A workgroup takes one KV head, a block of that head's query heads (all of them where they fit)
// for a block of query tokens, and one split of the KV positions: K/V are read once per group,
// not once per query head. Per tile of KT positions it stages K and V in shared memory with
// coalesced loads (the lanes walk a cache row), scores every (query row, position) pair from
// shared memory, updates the rows' online softmax (running max m, sum l) and accumulates P V into
// registers, the lanes over (row, head dimension). One split (n_split = 1) writes the output;
// several (flash-decoding, long contexts with few query rows) write unnormalised partials
// (acc, m, l) that shaders/flash_reduce.comp combines. No n x n scratch anywhere.
// Sizes (host: vulkan/ops.cpp, plan_attention): rows R = heads_per_wg * toks_per_wg <= min(32,
// 2048 / head_dim), KT a power of two <= 128 that fits the pool; head_dim even, <= 256. Shared
// memory: 28.4 KiB.
// tandem-variants: none  (read by vulkan/CMakeLists.txt)
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform push_block { flash_attn_push p; };
layout(binding = 0) readonly buffer q_buf { float q[]; };
layout(binding = 1) readonly buffer k_buf { uint kc[]; };
layout(binding = 2) readonly buffer v_buf { uint vc[]; };
layout(binding = 3) writeonly buffer o_buf { float o[]; };  // output, or partials when split
layout(binding = 4) writeonly buffer part_buf { float part[]; };
#define STEP_BINDING 5
#define STEP_ID 1
#include "step.glsl"  // a replayed decode layer: pos0 and the split from the step buffer

#define MAX_ROWS 32u
#define POOL_WORDS 7168u  // q rows, the K and V tiles, the scores: 28 KiB, laid out per call
#define ACC 16u           // 2048 / 128: accumulators per lane (R * head_dim <= 2048, 128 lanes)
#define ROWS_PER_LANE 8u  // score rows per lane (R <= 8 * 128 / KT)
#define NEG_BIG -1.0e30
#define MASKED -2.0e30

// The pool: q (R x D floats), K tile (KT rows of D/2 + 1 words: padded against bank conflicts),
// V tile (KT x D/2 words), scores (R rows of KT + 1 floats). KT is larger where R is small
// (decode without GQA) so that the score pass keeps the lanes busy (vulkan/ops.cpp).
shared uint pool[POOL_WORDS];
shared float row_m[MAX_ROWS], row_l[MAX_ROWS], row_c[MAX_ROWS];

void main() {
  const uint tid = gl_LocalInvocationIndex, nth = gl_WorkGroupSize.x;
  const uint D = p.head_dim, D2 = p.head_dim / 2u, KT = p.kt;
  const uint group = p.n_head / p.n_head_kv, hb = p.heads_per_wg, tb = p.toks_per_wg;
  const uint n_hblk = (group + hb - 1u) / hb;
  const uint g = gl_WorkGroupID.x / n_hblk, hblk = gl_WorkGroupID.x % n_hblk;
  const uint t0 = gl_WorkGroupID.y * tb, split = gl_WorkGroupID.z;
  const uint R = hb * tb;
  const uint pos0 = STEP ? step.pos0 : p.pos0, n_split = STEP ? step.n_split : p.n_split;
  const uint split_len = STEP ? step.split_len : p.split_len;
  const uint ml_off = STEP ? step.ml_off : p.ml_off;
  const uint k_off = R * D, v_off = k_off + KT * (D2 + 1u), s_off = v_off + KT * D2, SP = KT + 1u;

  // Query rows: row r is token t0 + r / hb, query head g * group + hblk * hb + r % hb.
  for (uint e = tid; e < R * D; e += nth) {
    const uint r = e / D, t = t0 + r / hb, hh = hblk * hb + r % hb;
    pool[e] = floatBitsToUint(
        (t < p.n_tok && hh < group) ? q[t * p.ldq + (g * group + hh) * D + e % D] : 0.0);
  }
  if (tid < R) {
    row_m[tid] = NEG_BIG;
    row_l[tid] = 0.0;
  }
  // This workgroup's positions: causal up to its last token, within its split.
  const uint n_pos = pos0 + min(t0 + tb, p.n_tok);
  const uint begin = split * split_len;
  const uint end = min(n_pos, begin + split_len);
  const uint kv0 = g * D;

  float acc[ACC];
  for (uint i = 0; i < ACC; ++i) acc[i] = 0.0;

  for (uint c0 = begin; c0 < end; c0 += KT) {
    const uint cnt = min(KT, end - c0);
    barrier();  // the last tile's readers are done
    for (uint w = tid; w < cnt * D2; w += nth) {
      const uint c = w / D2, j = w % D2;
      const uint src = ((c0 + c) * p.kv_stride + kv0) / 2u + j;
      pool[k_off + c * (D2 + 1u) + j] = kc[src];
      pool[v_off + w] = vc[src];
    }
    barrier();
    // Scores: a lane takes position c of the tile and rows rg, rg + rstep, ...: each K pair is
    // read from shared memory once for up to 8 rows (the q reads are broadcasts in a warp).
    {
      const uint c = tid % KT, rg = tid / KT, rstep = nth / KT;
      const uint nr = rg < R ? (R - rg + rstep - 1u) / rstep : 0u;  // rows of this lane
      float dot[ROWS_PER_LANE];
      for (uint k = 0; k < ROWS_PER_LANE; ++k) dot[k] = 0.0;
      if (rg < rstep && c < cnt) {
        const uint kb = k_off + c * (D2 + 1u);
        for (uint j = 0; j < D2; ++j) {
          const vec2 kv = unpackHalf2x16(pool[kb + j]);
          for (uint k = 0; k < ROWS_PER_LANE; ++k) {
            if (k >= nr) break;
            const uint qb = (rg + k * rstep) * D + 2u * j;
            dot[k] += uintBitsToFloat(pool[qb]) * kv.x;
            dot[k] += uintBitsToFloat(pool[qb + 1u]) * kv.y;
          }
        }
      }
      for (uint k = 0; k < ROWS_PER_LANE; ++k) {
        const uint r = rg + k * rstep;
        if (rg < rstep && k < nr && c < cnt)  // causal: a query sees positions up to its own
          pool[s_off + r * SP + c] = floatBitsToUint(
              c0 + c <= pos0 + t0 + r / hb ? dot[k] * p.scale : MASKED);
      }
    }
    barrier();
    if (tid < R) {  // the online softmax of row tid over this tile
      const uint sb = s_off + tid * SP;
      float mx = row_m[tid];
      for (uint c = 0; c < cnt; ++c) mx = max(mx, uintBitsToFloat(pool[sb + c]));
      const float corr = exp(row_m[tid] - mx);
      float sum = 0.0;
      for (uint c = 0; c < cnt; ++c) {
        const float s = uintBitsToFloat(pool[sb + c]);
        const float e = s > NEG_BIG ? exp(s - mx) : 0.0;
        pool[sb + c] = floatBitsToUint(e);
        sum += e;
      }
      row_l[tid] = row_l[tid] * corr + sum;
      row_m[tid] = mx;
      row_c[tid] = corr;
    }
    barrier();
    for (uint i = 0; i < ACC; ++i) {
      const uint e = tid + i * nth;
      if (e < R * D) {
        const uint r = e / D, d = e % D;
        float a = acc[i] * row_c[r];
        const uint sb = s_off + r * SP, vb = v_off + (d >> 1u), sh = (d & 1u) * 16u;
        for (uint c = 0; c < cnt; ++c)
          a += uintBitsToFloat(pool[sb + c]) * unpackHalf2x16(pool[vb + c * D2] >> sh).x;
        acc[i] = a;
      }
    }
  }
  barrier();
  for (uint i = 0; i < ACC; ++i) {
    const uint e = tid + i * nth;
    if (e >= R * D) continue;
    const uint r = e / D, d = e % D, t = t0 + r / hb, hh = hblk * hb + r % hb;
    if (t >= p.n_tok || hh >= group) continue;
    const uint h = g * group + hh;
    if (n_split == 1u) {
      o[t * p.ldq + h * D + d] = row_l[r] > 0.0 ? acc[i] / row_l[r] : 0.0;
    } else {  // partials: acc[split][t][h][d], then (m, l)[split][t][h]
      const uint slot = (split * p.n_tok + t) * p.n_head + h;
      part[slot * D + d] = acc[i];
      if (d == 0u) {
        part[ml_off + 2u * slot] = row_m[r];
        part[ml_off + 2u * slot + 1u] = row_l[r];
      }
    }
  }
}
