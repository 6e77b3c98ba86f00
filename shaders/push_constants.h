// Push-constant structs, included by the GLSL shaders and by vulkan/ (C++), so that the two
// layouts cannot drift. Only 4-byte scalars: std430 push-constant packing then equals the C++
// layout, which vulkan/ops.cpp static_asserts. Sizes and offsets are in elements, not bytes.
#ifndef TANDEM_SHADERS_PUSH_CONSTANTS_H
#define TANDEM_SHADERS_PUSH_CONSTANTS_H

#ifdef __cplusplus
#include <cstdint>
namespace tandem::vk {
using uint = uint32_t;
#endif

// y[r] = x[x_row0 + r] / sqrt(mean(x^2) + eps) * w, one workgroup per row.
struct rms_norm_push {
  uint n;       // row length
  uint x_row0;  // first input row
  uint ldx;     // input row stride
  uint ldy;     // output row stride
  float eps;
};

// In-place rotation of the first n_rot dims of each head; cos/sin from a table per position.
struct rope_push {
  uint n_tok;
  uint n_heads;
  uint head_dim;
  uint n_rot;
  uint pos0;  // position of token 0
  uint ld;    // row stride (floats)
};

// y[t, y_off + r] (+)= sum_c W[r, c] x[t, c] for the rows of one weight piece.
struct matmul_push {
  uint cols;   // row length of W and x
  uint rows;   // rows of this piece of W
  uint n_tok;
  uint ldx;    // x row stride
  uint ldy;    // y row stride
  uint y_off;  // first output column (the piece's first row)
  uint row_threads;  // matvec: invocations per row (a power of two dividing the workgroup)
};

// Decode matvec (shaders/matvec.comp): y_i[t, y_off_i + r] (+)= sum_c W_i[r, c] x[t, c] for up to
// three matrices W_0..W_2 (one piece each) reading the same x: Q/K/V or gate/up in one dispatch.
// The workgroups cover part 0's rows, then part 1's, then part 2's (n_parts of them used). With
// the GLU specialization x[t, c] is silu(x[t, c]) * u[t, c] (u at binding 4, stride ldx).
struct matvec_push {
  uint cols;         // row length of every W_i and of x
  uint n_tok;
  uint ldx;          // x (and u) row stride
  uint row_threads;  // invocations per row (a power of two dividing the workgroup)
  uint n_parts;      // 1 .. 3
  uint rows0;        // rows of W_0 (of this piece)
  uint rows1;
  uint rows2;
  uint ldy0;         // y_i row stride
  uint ldy1;
  uint ldy2;
  uint y_off0;       // first output column of part 0 (the piece's first row)
  uint y_off1;
  uint y_off2;
  float eps;         // NORM: the rms norm's epsilon (matvec.comp)
};

// Activations to int8 blocks for the integer-dot matvec (shaders/quantize_q8.comp): n_tok rows of
// cols (a multiple of 32) at stride ldx.
struct quantize_push {
  uint cols;
  uint n_tok;
  uint ldx;
  float eps;  // NORM: the rms norm's epsilon
};

// Causal attention with grouped KV heads over an F16 cache (one row of kv_stride halves per
// position); one workgroup per (head, token).
struct attention_push {
  uint n_tok;
  uint pos0;
  uint n_head;
  uint n_head_kv;
  uint head_dim;
  uint ldq;        // q / out row stride
  uint kv_stride;  // halves per cache position
  float scale;
};

// Appends n_tok rows of n floats (stride ldx) as F16 at cache positions pos0.. (row length n).
struct kv_store_push {
  uint n;
  uint n_tok;
  uint pos0;
  uint ldx;
};

// y[i] = silu(g[i]) * u[i].
struct swiglu_push {
  uint n;
};

// y[i] += b[i % nb], i < n: residual adds (nb = n) and biases (nb = row length).
struct add_push {
  uint n;
  uint nb;
};

// Flash attention (shaders/flash_attn.comp): one workgroup per (KV head and block of its query
// heads, block of query tokens, split of the KV positions).
struct flash_attn_push {
  uint n_tok;
  uint pos0;
  uint n_head;
  uint n_head_kv;
  uint head_dim;
  uint ldq;           // q / out row stride
  uint kv_stride;     // halves per cache position
  float scale;
  uint heads_per_wg;  // query heads of one KV group per workgroup
  uint toks_per_wg;   // query tokens per workgroup
  uint kt;            // KV positions per shared-memory tile
  uint n_split;       // 1: writes the output; else partials for flash_reduce
  uint split_len;     // KV positions per split (a multiple of kt)
  uint ml_off;        // partials: offset of the (m, l) pairs (floats)
};

// Combines flash_attn's partials (shaders/flash_reduce.comp).
struct flash_reduce_push {
  uint n_tok;
  uint n_head;
  uint head_dim;
  uint ldq;
  uint n_split;
  uint ml_off;
};

// RoPE of q and k fused with the F16 append of k and v to the caches (shaders/rotary_kv.comp).
struct rotary_kv_push {
  uint n_tok;
  uint n_head;
  uint n_head_kv;
  uint head_dim;
  uint n_rot;
  uint pos0;
  uint ldq;   // q row stride (floats)
  uint ldkv;  // k / v row stride (floats)
};

// The rope epilogue of the fused Q/K/V matvec (matvec.comp built with ROPE_KV; the op
// matvec_rope): its push constants are matvec_push followed by this.
struct rope_epilogue_push {
  uint head_dim;
  uint n_rot;
  uint pos0;   // position of token 0
  uint flags;  // 1: add the biases (bindings 11..13); 2: also write k and v as F32 (y1, y2)
};

// The per-token values of a decode step that a layer recorded once and replayed reads from a
// small device buffer (shaders/step.glsl, vulkan/replay.h) instead of its push constants: the
// host writes them into the command stream (vkCmdUpdateBuffer) before the token's first replayed
// layer. Not a push-constant block: a storage buffer of one struct.
struct step_params {
  uint pos0;       // position of the step's first token
  uint n_split;    // flash decoding: KV splits (1: flash_attn writes the output itself)
  uint split_len;  // flash decoding: KV positions per split
  uint ml_off;     // flash decoding: offset of the (m, l) partials (floats)
  uint groups_x;   // flash_attn's indirect dispatch (VkDispatchIndirectCommand): x,
  uint groups_y;   //   y,
  uint groups_z;   //   z = n_split
  uint pad;
};

#ifdef __cplusplus
// The push constants of matvec_rope (vulkan/op_table.h): the block matvec.comp declares with
// ROPE_KV.
struct matvec_rope_push {
  matvec_push mv;
  rope_epilogue_push rk;
};
}  // namespace tandem::vk
#endif

#endif
