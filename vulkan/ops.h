// The ops of a Llama layer on the Vulkan device, each a one-line dispatch of its shader. They
// record into a recorder and never synchronise: the caller puts recorder::barrier() between
// dependent ops. Activations are row-major float buffers (row r of a buffer with stride ld
// starts at element r * ld); the KV cache is F16, one row of n_kv halves per position.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "runtime/dtype.h"
#include "runtime/model.h"
#include "vulkan/memory.h"
#include "vulkan/pipeline.h"

namespace tandem::vk {

// A weight matrix in device memory, rows x cols of type in GGUF block layout, stored as pieces
// of whole rows so that each piece fits maxStorageBufferRange and maxMemoryAllocationSize.
struct device_weight {
  struct piece {
    buffer_range range;
    int64_t row0 = 0;
    int64_t rows = 0;
  };
  dtype type = dtype::f32;
  int64_t cols = 0;
  int64_t rows = 0;
  uint64_t row_bytes = 0;
  std::vector<piece> pieces;
  uint64_t nbytes() const { return row_bytes * static_cast<uint64_t>(rows); }
};

// Empty when the matrix kernels handle type t with rows of cols elements, else the reason.
std::string weight_unsupported(dtype t, int64_t cols);

// Allocates a device weight from a and uploads rows x cols of type t from host memory at data.
// piece_cap (0: the device limits) caps the size of a piece; tests use it to force splits.
device_weight upload_weight(arena& a, uploader& up, dtype t, int64_t cols, int64_t rows,
                            const void* data, uint64_t piece_cap = 0);

// The most bytes one piece of a weight may have on this device (binding and allocation limits,
// less room for the arena's padding).
uint64_t max_piece_bytes(const context& ctx);

// Lays out a weight of rows x cols of type t as pieces of at most limit bytes at offsets from
// *cursor (each aligned to align), advancing *cursor; the pieces have no buffer yet (see
// rebase). Used to pack a streamed layer into one region that a single copy moves.
device_weight layout_weight(dtype t, int64_t cols, int64_t rows, uint64_t limit, uint64_t align,
                            uint64_t* cursor);
// w with every piece moved into region: buffer region.buf, offset region.offset + its offset.
device_weight rebase(const device_weight& w, const buffer_range& region);

// The RoPE cos/sin table read by the rope shader: for pos < n_pos and i < n_rot / 2,
// [2 (pos n_rot/2 + i)] = cos(theta), [+1] = sin(theta), theta = pos freq_scale base^(-2i/n_rot),
// computed exactly as cpu::ref::rope does.
std::vector<float> rope_table(int n_pos, int n_rot, float freq_base, float freq_scale);

// automatic: vector for n_tok <= 4, else tiled. tiled: the prompt kernel the device picks
// (vulkan/matmul_variant.h: forced by TANDEM_VK_VARIANT=matmul=<variant>, first-use self-check).
// tiled_f32, tiled_vec4, tiled_coopmat: that variant of it, unchecked (the op checks, the
// self-check itself).
enum class matmul_kernel { automatic, vector, tiled, tiled_f32, tiled_vec4, tiled_coopmat };

// Which attention kernel runs: automatic is flash (shaders/flash_attn.comp) with the split count
// chosen from the context length and the device's compute units, unless TANDEM_VK_VARIANT=
// attention=<basic|flash|split<N>> forces one (basic: shaders/attention.comp, one workgroup per
// query head and token; flash: one split; split<N>: N splits, 2..64, and the reduce pass).
// The op checks pass an explicit kind, which the environment does not override.
struct attention_variant {
  enum class kind { automatic, basic, flash } k = kind::automatic;
  int n_split = 0;  // flash: 0 chooses, else this many splits (capped by the context, scratch)
};

// The flash kernel's launch shape for one call (vulkan/ops.cpp explains the choice).
struct attention_plan {
  bool flash = true;
  uint32_t heads_per_wg = 1, toks_per_wg = 1, kt = 32;
  uint32_t n_split = 1, split_len = 0;
  uint32_t groups_x = 1, groups_y = 1;
};
attention_plan plan_attention(const context& ctx, int n_tok, int pos0, int n_head, int n_head_kv,
                              int head_dim, uint64_t scratch_bytes, attention_variant v = {});

// Whether the integer-dot matvec (shaders/matvec_dot.comp) has a kernel for type t.
bool has_dot_kernel(dtype t);
// Whether this device may run the integer-dot matvec at all (its pipelines worth building): it has
// integer dot products and runs them in hardware, or matvec=dot is forced.
bool dot_may_run(const context& ctx);
// Bytes of n_tok rows of cols activations quantized for it (the scratch xq of the products).
uint64_t quantized_bytes(int n_tok, int64_t cols);

namespace ops {

// y[r] = rms_norm(x[x_row0 + r]) * w for n_rows rows of n elements.
void rms_norm(recorder& rec, const buffer_range& x, const buffer_range& w, const buffer_range& y,
              int n, int n_rows, int x_row0, int ldx, int ldy, float eps);

// In place on n_tok rows (stride ld) of n_heads heads; token t is at position pos0 + t.
void rope(recorder& rec, const buffer_range& x, const buffer_range& table, int n_tok, int n_heads,
          int head_dim, int n_rot, int pos0, int ld, rope_style style);

// y[t, r] (+)= W[r, :] . x[t, :] for t < n_tok; vector kernel for small batches, tiled above.
// With a scratch xq of quantized_bytes(n_tok, cols) or more, the vector kernel may take its
// integer-dot variant (vulkan/ops.cpp says when): x quantized into xq, a barrier, the product.
void matmul(recorder& rec, const device_weight& w, const buffer_range& x, const buffer_range& y,
            int n_tok, int ldx, int ldy, bool accumulate,
            matmul_kernel kind = matmul_kernel::automatic, const buffer_range& xq = {});

// Whether matmul_multi and matmul_swiglu fuse for n_tok tokens (the vector kernel; fusion not
// turned off by TANDEM_VK_VARIANT=matvec=separate); matmul_multi also needs its matrices to share
// a type and row length and to have one piece each.
bool matmul_fuses(recorder& rec, int n_tok, matmul_kernel kind = matmul_kernel::automatic);

// One output of matmul_multi: y[t, r] = W[r, :] . x[t, :] (row stride ldy).
struct matmul_out {
  const device_weight* w;
  buffer_range y;
  int ldy;
};
// Up to three products of the same x (Q, K, V; gate, up), y = (no accumulate): one dispatch of the
// vector kernel where matmul_fuses (with xq: x quantized once for all of them where the
// integer-dot kernel is taken), else one ops::matmul each.
void matmul_multi(recorder& rec, std::initializer_list<matmul_out> outs, const buffer_range& x,
                  int n_tok, int ldx, matmul_kernel kind = matmul_kernel::automatic,
                  const buffer_range& xq = {});

// The rms norm before matmul_multi_norm's products: h = rms_norm(x) * w (ops::rms_norm, eps).
struct rms_norm_in {
  buffer_range w;      // the norm weight, W's cols floats
  float eps;
  buffer_range h;      // where the unfused path (or write_h) puts the normed rows (stride ldx)
  bool write_h;        // write h even when fused (a capture reads it)
};
// matmul_multi of h = rms_norm(x) * norm.w (n_tok rows of x, stride ldx). Where matmul_multi
// fuses, its one dispatch reads x and computes each token's norm itself (shaders/matvec.comp,
// NORM); where the integer-dot kernel is taken (one dispatch or one per output), the activations'
// quantization does (quantize_q8.comp, NORM). Either way h is not written unless norm.write_h
// (then ops::rms_norm writes it first, for the capture; the product still takes the fused path).
// Otherwise ops::rms_norm writes h, then matmul_multi(h).
void matmul_multi_norm(recorder& rec, std::initializer_list<matmul_out> outs,
                       const buffer_range& x, const rms_norm_in& norm, int n_tok, int ldx,
                       matmul_kernel kind = matmul_kernel::automatic, const buffer_range& xq = {});

// y[t, :] (+)= W . (silu(g[t, :]) * u[t, :]) (g, u: n_tok rows of stride ldx = W's cols). Where
// matmul_fuses, the vector kernel reads g and u (SwiGLU fused into the product's input; g is left
// as it was); otherwise ops::swiglu writes silu(g) * u into g, a barrier, then ops::matmul.
void matmul_swiglu(recorder& rec, const device_weight& w, const buffer_range& g,
                   const buffer_range& u, const buffer_range& y, int n_tok, int ldx, int ldy,
                   bool accumulate, matmul_kernel kind = matmul_kernel::automatic,
                   const buffer_range& xq = {});

// xq = n_tok rows of x (stride ldx; silu(x) * u with glu; with norm, rms_norm(x) * u, u the norm
// weight of cols floats, eps its epsilon) quantized for the integer-dot matvec: per block of 32,
// 8 words of int8, the F32 scale, the sum of the quants (quantize_q8.comp).
void quantize_q8(recorder& rec, const buffer_range& x, const buffer_range& u,
                 const buffer_range& xq, int64_t cols, int n_tok, int ldx, bool glu,
                 bool norm = false, float eps = 0.0f);

// Writes n_tok rows of n floats (stride ldx) as F16 into cache positions pos0 .. pos0+n_tok-1.
void kv_store(recorder& rec, const buffer_range& x, const buffer_range& cache, int n, int n_tok,
              int pos0, int ldx);

// With a step buffer (struct step_params, a layer recorded once and replayed: vulkan/replay.h),
// attention and rotary_kv read the position (and flash decoding its split count, split length
// and partials offset; the flash kernel's group counts, by an indirect dispatch) from it when
// they run, not pos0: the host writes the step's values there before. pos0 then only picks the
// launch shape, which must be the one the step's values give (one split or several); the basic
// kernel has no step variant (an error).
// out = causal attention of q (n_tok x n_head*head_dim, token t at position pos0 + t) over the
// cache positions 0 .. pos0 + t; query head h reads KV head h / (n_head / n_head_kv). scratch
// holds flash-decoding's partials (n_split x n_tok x n_head x (head_dim + 2) floats); without
// one (or one too small) the flash kernel runs fewer splits (one at the least).
void attention(recorder& rec, const buffer_range& q, const buffer_range& k_cache,
               const buffer_range& v_cache, const buffer_range& out, int n_tok, int pos0,
               int n_head, int n_head_kv, int head_dim, const buffer_range& scratch = {},
               attention_variant v = {}, const buffer_range& step = {});

// Whether forward passes run RoPE fused with the KV store (rotary_kv) where the matvec epilogue
// (rope_kv_in_matvec) does not take it: yes unless TANDEM_VK_VARIANT=rope_kv=separate (rope twice,
// kv_store twice); rope_kv=fused forces it for every batch.
bool fused_rope_kv();

// One dispatch for rope + kv_store: rotates q (n_tok rows, stride ldq, n_head heads) and k (stride
// ldkv, n_head_kv heads) in place and writes k and v (stride ldkv) as F16 into cache positions
// pos0 .. pos0 + n_tok - 1 (rows of n_head_kv * head_dim halves).
void rotary_kv(recorder& rec, const buffer_range& q, const buffer_range& k, const buffer_range& v,
               const buffer_range& table, const buffer_range& k_cache, const buffer_range& v_cache,
               int n_tok, int n_head, int n_head_kv, int head_dim, int n_rot, int pos0, int ldq,
               int ldkv, rope_style style, const buffer_range& step = {});

// The RoPE and KV-cache append after the Q/K/V product (ops::matmul_qkv_rope).
struct rope_kv_in {
  buffer_range table;             // rope_table's cos/sin
  buffer_range k_cache, v_cache;  // F16, rows of n_head_kv * head_dim halves per position
  buffer_range bq, bk, bv;        // the Q/K/V biases: all three, or none (size 0)
  int n_head = 0, n_head_kv = 0, head_dim = 0, n_rot = 0;
  int pos0 = 0;  // the token's position
  rope_style style = rope_style::adjacent;
  bool write_kv = false;  // also write roped k and v as F32 into k.y and v.y (a capture reads them)
  buffer_range step;      // a replayed layer's step buffer: the position read from it, not pos0
};

// Whether decode runs RoPE and the KV store in the Q/K/V matvec's epilogue where it can: yes
// unless TANDEM_VK_VARIANT=rope_kv=fused or separate forces another form; rope_kv=matvec forces
// it (still only where qkv_rope_fuses).
bool rope_kv_in_matvec();

// Whether ops::matmul_qkv_rope runs for these outputs: rope_kv_in_matvec, one token, Q/K/V fused
// by matmul_multi_norm (one type, one piece each, the vector kernel, with or without the
// integer-dot kernel), even head_dim and n_rot (NEOX: multiples of 4), the biases all three or
// none.
bool qkv_rope_fuses(recorder& rec, const matmul_out& q, const matmul_out& k, const matmul_out& v,
                    int n_tok, const rope_kv_in& rk, const buffer_range& xq = {});

// One dispatch (shaders/matvec.comp with ROPE_KV, the op matvec_rope; where the integer-dot
// kernel is taken, ops::quantize_q8 with the norm, then matvec_dot.comp with ROPE_KV, the op
// matvec_dot_rope, which reads xq): with h = rms_norm(x) *
// norm.w (the norm's h is not written), q.y = rope(Wq h + bq); rope(Wk h + bk) and Wv h + bv as F16
// into the caches at position rk.pos0 (and as F32 into k.y, v.y with rk.write_kv). The results
// equal matmul_multi_norm, the bias adds and rotary_kv (the same sums where the lanes per row
// match, <= 32; the same F16 rounding). Only where qkv_rope_fuses (else std::logic_error).
void matmul_qkv_rope(recorder& rec, const matmul_out& q, const matmul_out& k, const matmul_out& v,
                     const buffer_range& x, const rms_norm_in& norm, const rope_kv_in& rk,
                     int n_tok, int ldx, const buffer_range& xq = {});

// y[i] = silu(g[i]) * u[i] for i < n (y may be g).
void swiglu(recorder& rec, const buffer_range& g, const buffer_range& u, const buffer_range& y,
            int n);

// y[i] += b[i % nb] for i < n.
void add(recorder& rec, const buffer_range& y, const buffer_range& b, int n, int nb);

// ---- element-wise ops, driven by the op table ----
// An element-wise op of the op table (vulkan/op_table.h): one invocation per element i < n, the
// grid from n and the table's workgroup size, `push` (the table's push struct: checked by size),
// the storage buffers in the shader's binding order, its cost (recorder::cost), and `out` (n
// floats) doubled under TANDEM_PARITY_BREAK=<the table's name>. A new element-wise op needs no
// function of its own here; its caller writes, e.g.
//   ops::elementwise(rec, kernel::gelu, gelu_push{n}, {x, y}, y, n, {8ull * n, 8ull * n});
template <class Push>
void elementwise(recorder& rec, kernel k, const Push& push,
                 std::initializer_list<buffer_range> bufs, const buffer_range& out, int64_t n,
                 dispatch_cost cost);
// Its two halves (ops.cpp): the pipeline and grid, after checking the op's row; the parity hook.
const pipeline& elementwise_grid(recorder& rec, kernel k, size_t push_size, size_t n_bufs,
                                 int64_t n, uint32_t* gx, uint32_t* gy);
void elementwise_done(recorder& rec, kernel k, const buffer_range& out, int64_t n);

template <class Push>
void elementwise(recorder& rec, kernel k, const Push& push,
                 std::initializer_list<buffer_range> bufs, const buffer_range& out, int64_t n,
                 dispatch_cost cost) {
  uint32_t gx, gy;
  const pipeline& p = elementwise_grid(rec, k, sizeof(Push), bufs.size(), n, &gx, &gy);
  rec.cost(cost.bytes, cost.flops);
  rec.dispatch(p, gx, gy, 1, push, bufs);
  elementwise_done(rec, k, out, n);
}

}  // namespace ops
}  // namespace tandem::vk
