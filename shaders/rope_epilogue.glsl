// The RoPE / bias / KV-cache epilogue of the decode Q/K/V product (the ops matvec_rope and
// matvec_dot_rope: matvec.comp and matvec_dot.comp built with ROPE_KV = 1; see matvec.comp's top
// for the row layout). The includer declares p (matvec_push) and rk (rope_epilogue_push) in its
// push block, NEOX, y0..y2 (bindings 5..7), and includes common.glsl; this file declares
// bindings 8..13: the cos/sin table, the K and V caches (F16 pairs in words), the three biases.
// rope_pos() is the one place the position is read.
#ifndef TANDEM_ROPE_EPILOGUE_GLSL
#define TANDEM_ROPE_EPILOGUE_GLSL

layout(binding = 8) readonly buffer cs_buf { float cs[]; };
layout(binding = 9) writeonly buffer kc_buf { uint kc[]; };
layout(binding = 10) writeonly buffer vc_buf { uint vc[]; };
layout(binding = 11) readonly buffer bq_buf { float bq[]; };
layout(binding = 12) readonly buffer bk_buf { float bk[]; };
layout(binding = 13) readonly buffer bv_buf { float bv[]; };
// A replayed decode layer (vulkan/replay.h): the position from the step buffer (STEP).
#define STEP_BINDING 14
#define STEP_ID 2
#include "step.glsl"

// The position of token t: the one place the epilogue reads it.
uint rope_pos(uint t) { return (STEP ? step.pos0 : rk.pos0) + t; }

// The row of slot L (= workgroup x rows per workgroup + slot, find_row's row) of part 0 or 1:
// L's unit of four slots holds whole rotation pairs and whole F16 words (matvec.comp's top).
uint rope_row(uint L) {
  if (!NEOX) return L;
  const uint D = rk.head_dim, h = rk.n_rot / 2u;
  const uint unit = L / 4u, m = L % 4u, head = unit / (D / 4u), u = unit % (D / 4u);
  if (u < rk.n_rot / 4u) return head * D + 2u * u + (m < 2u ? m : h + m - 2u);
  return head * D + rk.n_rot + 4u * (u - rk.n_rot / 4u) + m;
}

shared float ex[128];  // one value per row slot (at most 128 rows per workgroup)

// The epilogue of one token's sum s of row `row` (slot `slot`): bias, rope, stores. Every lane
// calls it (barriers); lane 0 of a valid row stores.
void rope_kv_epilogue(uint part, uint t, uint row, uint slot, float s, bool valid,
                      bool first_lane) {
  if (valid && (rk.flags & 1u) != 0u)
    s += part == 0u ? bq[row] : (part == 1u ? bk[row] : bv[row]);
  barrier();  // ex is reused per token
  if (first_lane) ex[slot] = s;
  barrier();
  const uint D = rk.head_dim, d = row % D, h = rk.n_rot / 2u;
  float o = s;
  if (part < 2u && d < rk.n_rot) {  // x0 c - x1 s, x0 s + x1 c (as rotary_kv.comp)
    const float other = ex[NEOX ? slot ^ 2u : slot ^ 1u];
    const bool first = NEOX ? d < h : (d & 1u) == 0u;
    const uint i = NEOX ? (first ? d : d - h) : d / 2u;
    const uint ci = 2u * (rope_pos(t) * h + i);
    const float c = cs[ci], sn = cs[ci + 1u];
    o = first ? s * c - other * sn : other * sn + s * c;
  }
  barrier();
  if (first_lane) ex[slot] = o;
  barrier();
  if (!(first_lane && valid)) return;
  if (part == 0u) {
    y0[t * p.ldy0 + row] = o;
    return;
  }
  if ((rk.flags & 2u) != 0u) {
    if (part == 1u) y1[t * p.ldy1 + row] = o;
    else y2[t * p.ldy2 + row] = o;
  }
  if ((row & 1u) != 0u) return;  // the even row writes the word of (row, row + 1): slot ^ 1
  const uint word = (rope_pos(t) * p.rows1 + row) / 2u;
  const uint bits = f32_to_f16(o) | (f32_to_f16(ex[slot ^ 1u]) << 16);
  if (part == 1u) kc[word] = bits;
  else vc[word] = bits;
}

#endif  // TANDEM_ROPE_EPILOGUE_GLSL
