#include "vulkan/ops.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "runtime/error.h"
#include "shaders/push_constants.h"
#include "vulkan/variant.h"
#include "vulkan/matmul_variant.h"

namespace tandem::vk {

namespace {

uint32_t u32(int64_t v) {
  return static_cast<uint32_t>(v);
}
uint32_t div_up(uint64_t a, uint64_t b) {
  return static_cast<uint32_t>((a + b - 1) / b);
}
uint64_t u64(int64_t v) {
  return static_cast<uint64_t>(v);
}

// A test hook of gpu-cpu-parity, never set in normal use: TANDEM_PARITY_BREAK=<kernel> (or
// <kernel>_<type> for matvec/matmul, e.g. matvec_q4_k) doubles that kernel's output after it
// runs (kv_store: its input rows, before), so that the checks can be shown to catch a wrong
// shader and to name it.
bool parity_break(const char* name, const dtype* t = nullptr) {
  static const std::string s = [] {
    const char* b = std::getenv("TANDEM_PARITY_BREAK");
    return std::string(b ? b : "");
  }();
  if (s.empty()) return false;
  return s == name || (t && s == std::string(name) + "_" + std::string(dtype_name(*t)));
}
static_assert(sizeof(flash_attn_push) == 56 && sizeof(flash_reduce_push) == 24 &&
              sizeof(rotary_kv_push) == 32);
static_assert(sizeof(matvec_push) == 60 && sizeof(matvec_rope_push) == 76);

void parity_double(recorder& rec, const buffer_range& y, uint64_t n) {
  n = std::min<uint64_t>(n, y.size / sizeof(float));
  const auto& p = rec.pipes().get(kernel::add);
  uint32_t gx, gy;
  rec.split_groups(div_up(n, p.wg), &gx, &gy);
  rec.barrier();
  rec.dispatch(p, gx, gy, 1, add_push{u32(static_cast<int64_t>(n)), u32(static_cast<int64_t>(n))},
               {y, y});
  rec.barrier();
}

// ---- the decode matvec (shaders/matvec.comp) --------------------------------------------------

// Workgroups a matvec should launch at least, so that a matrix with few rows (wk, wv) still puts
// work on every compute unit of a large GPU (an H100 has 132 SMs, 16 workgroups of 128 each).
constexpr uint64_t k_matvec_min_groups = 256;

// Lanes per row for rows x cols: enough for one group of 8 columns each (short rows share a
// workgroup), at most 32 (4 rows per 128-lane workgroup: a row per NVIDIA subgroup, reduced by
// subgroupAdd alone) unless so few rows would launch under k_matvec_min_groups workgroups; then
// up to the whole workgroup per row.
uint32_t matvec_row_threads(uint32_t wg, int64_t cols, int64_t rows) {
  uint32_t cap = std::min<uint32_t>(32, wg);
  while (cap < wg && static_cast<uint64_t>(rows) * cap / wg < k_matvec_min_groups) cap *= 2;
  uint32_t t = 1;
  while (t < cap && t * 8 < cols) t *= 2;
  return t;
}

// The matvec variants (TANDEM_VK_VARIANT=matvec=<name>): "fused" (Q/K/V and gate/up in one
// dispatch each, SwiGLU read by the down product; float kernel), "separate" (one dispatch per
// matrix and a swiglu dispatch: what a device runs anyway where the matrices of a group differ in
// type or are split in pieces), "dot" (fused, and the integer-dot kernel on every Q4_0 / Q8_0 /
// Q4_K / Q5_K / Q6_K matrix). Unforced: fused, with the integer-dot kernel where the device runs
// 4x8-bit dot products in hardware (integerDotProduct4x8BitPackedSignedAccelerated) and the rows
// are long (k_dot_min_cols): emulated dot products (lavapipe) and short rows lose more to the
// quantize dispatch and its barrier than they gain.
struct matvec_variant {
  bool fuse = true;
  bool dot_forced = false;
  bool dot_off = false;
};
constexpr int64_t k_dot_min_cols = 1024;

matvec_variant matvec_choice(const context&) {
  const std::string v = forced_variant("matvec");
  if (v.empty()) return {};
  if (v == "fused") return {true, false, true};
  if (v == "separate") return {false, false, true};
  if (v == "dot") return {true, true, false};
  throw error(
      fmt::format("TANDEM_VK_VARIANT: matvec has no variant '{}' (fused, separate, dot)", v));
}

bool matvec_fusion(const context& ctx) {
  return matvec_choice(ctx).fuse;
}

// Whether a product of type t with rows of cols takes the integer-dot kernel (scratch xq of
// enough bytes for n_tok rows given).
bool use_dot(recorder& rec, dtype t, int64_t cols, int n_tok, const buffer_range& xq) {
  const matvec_variant v = matvec_choice(rec.ctx());
  if (v.dot_off || !has_dot_kernel(t) || xq.size < quantized_bytes(n_tok, cols)) return false;
  const auto& caps = rec.ctx().caps();
  if (v.dot_forced) {
    if (!caps.integer_dot)
      throw error(
          "TANDEM_VK_VARIANT: matvec=dot needs a device with integer dot products "
          "(shaderIntegerDotProduct); this one has none");
    return true;
  }
  return caps.integer_dot_accelerated && cols >= k_dot_min_cols;
}

// ops::quantize_q8 (the hazard tracker puts the barrier before the product that reads it).
void quantize(recorder& rec, const buffer_range& x, const buffer_range& u, const buffer_range& xq,
              int64_t cols, int n_tok, int ldx, bool glu) {
  ops::quantize_q8(rec, x, u, xq, cols, n_tok, ldx, glu);
}

}  // namespace

void ops::quantize_q8(recorder& rec, const buffer_range& x, const buffer_range& u,
                      const buffer_range& xq, int64_t cols, int n_tok, int ldx, bool glu,
                      bool norm, float eps) {
  if (glu && norm) throw std::logic_error("ops::quantize_q8 takes glu or norm, not both");
  const auto& p = norm ? rec.pipes().get(kernel::quantize_q8, dtype::f32, {0u, 1u})
                       : rec.pipes().get(kernel::quantize_q8, dtype::f32, {glu ? 1u : 0u});
  const uint64_t row_blocks = static_cast<uint64_t>(cols / 32);
  const uint64_t blocks = row_blocks * static_cast<uint64_t>(n_tok);
  uint32_t gx, gy = 1, gz = 1;
  if (norm) {  // a workgroup per (blocks of a row, token): each sums its token's squares
    gx = div_up(row_blocks, p.wg);
    gz = u32(n_tok);
  } else {
    rec.split_groups(div_up(blocks, p.wg), &gx, &gy);
  }
  const uint64_t nx = static_cast<uint64_t>(cols) * static_cast<uint64_t>(n_tok);
  // norm: every workgroup reads its token's row once more for the squares (L2-resident), and the
  // weight; a square-add and a scale per element
  const uint64_t norm_bytes = norm ? nx * 4 * gx + static_cast<uint64_t>(cols) * 4 : 0;
  rec.cost(nx * 4 * (glu ? 2 : 1) + quantized_bytes(n_tok, cols) + norm_bytes,
           nx * (glu ? 7 : 3) + (norm ? 4 * nx : 0));
  // reads: x, and u (the GLU's up or the norm weight)
  rec.dispatch(p, gx, gy, gz, quantize_push{u32(cols), u32(n_tok), u32(ldx), eps},
               {x, glu || norm ? u : x, xq});
  if (parity_break("quantize_q8")) parity_double(rec, xq, quantized_bytes(n_tok, cols) / 4);
}

namespace {

// One part of a matvec dispatch: a weight piece and where its rows go.
struct matvec_part {
  const device_weight::piece* piece;
  buffer_range y;
  int ldy;
};

// One dispatch of the matvec over 1..3 parts of type t (rows of cols), all reading x (and u with
// glu), n_tok <= 4 tokens per workgroup layer z.
// dot: x is the quantized activations (xq) and the integer-dot kernel runs (no glu).
// norm: the product is of rms_norm(x) * u (u: the norm weight, cols floats; eps), not of x.
void matvec_dispatch(recorder& rec, dtype t, int64_t cols, const matvec_part* parts, int n_parts,
                     const buffer_range& x, const buffer_range& u, int n_tok, int ldx, bool acc,
                     bool glu, bool dot = false, bool norm = false, float eps = 0.0f,
                     const ops::rope_kv_in* rk = nullptr) {
  const uint32_t np = static_cast<uint32_t>(n_parts);
  const uint32_t a1 = acc ? 1u : 0u, g1 = glu ? 1u : 0u;
  const uint32_t neox = rk && rk->style == rope_style::neox ? 1u : 0u;
  // The rope epilogue's STEP (constant 2): the position from the step buffer (binding 14; x,
  // unread, if none).
  const bool from_step = rk && rk->step.size > 0;
  const kernel rope_k = dot ? kernel::matvec_dot_rope : kernel::matvec_rope;
  const auto& p = rk     ? from_step ? rec.pipes().get(rope_k, t, {neox, 1u})
                                     : rec.pipes().get(rope_k, t, {neox})
                  : dot  ? rec.pipes().get(kernel::matvec_dot, t, {a1, np})
                  : norm ? rec.pipes().get(kernel::matvec, t, {a1, g1, np, 1u})
                         : rec.pipes().get(kernel::matvec, t, {a1, g1, np});
  int64_t rows = 0;
  uint64_t w_bytes = 0;
  for (int i = 0; i < n_parts; ++i) {
    rows += parts[i].piece->rows;
    w_bytes += row_bytes(t, static_cast<uint64_t>(cols)) * static_cast<uint64_t>(parts[i].piece->rows);
  }
  uint32_t tpr = matvec_row_threads(p.wg, dot ? cols / 4 : cols, rows);  // dot: blocks
  if (rk) tpr = std::min<uint32_t>(tpr, p.wg / 4);  // the rope epilogue: units of 4 rows
  const uint32_t rpw = p.wg / tpr;
  matvec_push push{u32(cols), u32(n_tok), u32(ldx), tpr, u32(n_parts), 0, 0, 0, 0, 0, 0, 0, 0, 0,
                   eps};
  uint32_t* rows_of = &push.rows0;
  uint32_t* ldy_of = &push.ldy0;
  uint32_t* off_of = &push.y_off0;
  uint64_t groups = 0;
  for (int i = 0; i < n_parts; ++i) {
    rows_of[i] = u32(parts[i].piece->rows);
    ldy_of[i] = u32(parts[i].ldy);
    off_of[i] = u32(parts[i].piece->row0);
    groups += div_up(static_cast<uint64_t>(parts[i].piece->rows), rpw);
  }
  const matvec_part& a = parts[0];
  const matvec_part& b = parts[std::min(1, n_parts - 1)];
  const matvec_part& c = parts[std::min(2, n_parts - 1)];
  uint32_t gx, gy;
  rec.split_groups(groups, &gx, &gy);
  const uint64_t nt = static_cast<uint64_t>(n_tok), r = static_cast<uint64_t>(rows);
  const uint64_t k = static_cast<uint64_t>(cols);
  const uint64_t x_bytes = dot ? quantized_bytes(n_tok, cols) : nt * k * 4 * (glu ? 2 : 1);
  // norm: the weight read once more, per token a square-add per column and a scale per row
  rec.cost(w_bytes + x_bytes + nt * r * 4 * (acc ? 2 : 1) + (norm ? 4 * k : 0),
           2 * nt * k * r + (glu ? 4 * nt * k : 0) + (norm ? 2 * nt * k + nt * r : 0));
  if (rk) {  // + the table rows read, the biases, the F16 rows written; 6 flops per pair
    const bool bias = rk->bq.size > 0;
    const uint64_t pairs = nt * static_cast<uint64_t>(rk->n_head + rk->n_head_kv) * (rk->n_rot / 2);
    const uint64_t kv = static_cast<uint64_t>(parts[1].piece->rows);
    rec.cost(nt * (static_cast<uint64_t>(rk->n_rot) * 4 + (bias ? r * 4 : 0) + 2 * kv * 2),
             6 * pairs);
    const matvec_rope_push rp{push,
                              {u32(rk->head_dim), u32(rk->n_rot), u32(rk->pos0),
                               (bias ? 1u : 0u) | (rk->write_kv ? 2u : 0u)}};
    rec.dispatch(
        p, gx, gy, div_up(nt, 4), rp,
        {a.piece->range, b.piece->range, c.piece->range, x, u, a.y, b.y, c.y, rk->table,
         rk->k_cache, rk->v_cache, bias ? rk->bq : x, bias ? rk->bk : x, bias ? rk->bv : x,
         from_step ? rk->step : x});
    return;
  }
  rec.dispatch(p, gx, gy, div_up(nt, 4), push,
               {a.piece->range, b.piece->range, c.piece->range, x, glu || norm ? u : x, a.y, b.y,
                c.y});
}

}  // namespace

std::string weight_unsupported(dtype t, int64_t cols) {
  switch (t) {
    case dtype::f32:
    case dtype::f16:
    case dtype::q8_0:
    case dtype::q4_0:
    case dtype::q4_k:
    case dtype::q5_k:
    case dtype::q6_k:
      break;
    default:
      return fmt::format("the Vulkan backend has no kernel for type {}", dtype_name(t));
  }
  const uint32_t bs = traits(t).block_size;
  if (cols % bs != 0)
    return fmt::format("rows of {} elements are not a multiple of the {} block size {}", cols,
                       dtype_name(t), bs);
  return {};
}

device_weight upload_weight(arena& a, uploader& up, dtype t, int64_t cols, int64_t rows,
                            const void* data, uint64_t piece_cap) {
  if (auto why = weight_unsupported(t, cols); !why.empty()) throw error("vulkan: " + why);
  device_weight w;
  w.type = t;
  w.cols = cols;
  w.rows = rows;
  w.row_bytes = row_bytes(t, static_cast<uint64_t>(cols));
  // Headroom for the arena's padding; a piece is bound whole.
  uint64_t limit = std::min<uint64_t>(max_piece_bytes(a.ctx()), a.max_alloc() - 256);
  if (piece_cap) limit = std::min(limit, piece_cap);
  if (w.row_bytes > limit)
    throw error(
        fmt::format("vulkan: one row of {} bytes exceeds the device's buffer limits", w.row_bytes));
  const int64_t rows_per_piece = static_cast<int64_t>(limit / w.row_bytes);
  const auto* src = static_cast<const uint8_t*>(data);
  for (int64_t r0 = 0; r0 < rows; r0 += rows_per_piece) {
    device_weight::piece p;
    p.row0 = r0;
    p.rows = std::min(rows_per_piece, rows - r0);
    const uint64_t n = w.row_bytes * static_cast<uint64_t>(p.rows);
    p.range = a.alloc(n);
    up.upload(p.range, 0, src + w.row_bytes * static_cast<uint64_t>(r0), n);
    w.pieces.push_back(p);
  }
  return w;
}

uint64_t max_piece_bytes(const context& ctx) {
  return std::min<uint64_t>(ctx.caps().max_storage_range, ctx.caps().max_allocation) - 256;
}

device_weight layout_weight(dtype t, int64_t cols, int64_t rows, uint64_t limit, uint64_t align,
                            uint64_t* cursor) {
  if (auto why = weight_unsupported(t, cols); !why.empty()) throw error("vulkan: " + why);
  device_weight w;
  w.type = t;
  w.cols = cols;
  w.rows = rows;
  w.row_bytes = row_bytes(t, static_cast<uint64_t>(cols));
  if (w.row_bytes > limit)
    throw error(
        fmt::format("vulkan: one row of {} bytes exceeds the device's buffer limits", w.row_bytes));
  const int64_t rows_per_piece = static_cast<int64_t>(limit / w.row_bytes);
  for (int64_t r0 = 0; r0 < rows; r0 += rows_per_piece) {
    device_weight::piece p;
    p.row0 = r0;
    p.rows = std::min(rows_per_piece, rows - r0);
    *cursor = (*cursor + align - 1) / align * align;
    p.range.offset = *cursor;
    p.range.size = w.row_bytes * static_cast<uint64_t>(p.rows);
    *cursor += (p.range.size + 15) / 16 * 16 + 16;  // shaders may read a word past the end
    w.pieces.push_back(p);
  }
  return w;
}

device_weight rebase(const device_weight& w, const buffer_range& region) {
  device_weight r = w;
  for (auto& p : r.pieces) {
    p.range.buf = region.buf;
    p.range.data = region.data ? static_cast<char*>(region.data) + p.range.offset : nullptr;
    p.range.offset += region.offset;
  }
  return r;
}

std::vector<float> rope_table(int n_pos, int n_rot, float freq_base, float freq_scale) {
  const int half = n_rot / 2;
  std::vector<float> t(static_cast<size_t>(n_pos) * static_cast<size_t>(half) * 2);
  for (int pos = 0; pos < n_pos; ++pos)
    for (int i = 0; i < half; ++i) {
      // The same expression as cpu::ref::rope, so that both paths rotate by the same angle.
      const float theta =
          static_cast<float>(pos) * freq_scale * std::pow(freq_base, -2.0f * i / n_rot);
      const size_t k =
          2 * (static_cast<size_t>(pos) * static_cast<size_t>(half) + static_cast<size_t>(i));
      t[k] = std::cos(theta);
      t[k + 1] = std::sin(theta);
    }
  return t;
}

// Flash attention's launch shape. Shared memory (shaders/flash_attn.comp) holds R query rows of
// head_dim floats (R <= min(32, 2048 / head_dim)) and tiles of kt positions (up to 128 where the
// rows are few, 16 at head_dim 256). A workgroup takes as many query heads of one KV group as fit (all of them up to
// R: K/V are read once per group) and, with the rows left, that many query tokens (prompts).
//
// The KV split (flash-decoding): a decode step has only n_head_kv workgroups (4 on a GQA 32/4
// model), far too few for a GPU with 132 SMs, each walking the whole context. Splitting the
// positions into n_split ranges gives n_head_kv * n_split workgroups, up to two per compute unit
// (context caps: the SM/CU count from the driver, or its estimate), while every split keeps at
// least 128 positions so that the partials (head_dim + 2 floats per row and split) and
// the reduce pass stay small next to the K/V reads. Prompts have workgroups enough: one split.
//
// What an H100 should reach at 4096 tokens (TinyLlama 1.1B: 22 layers, 4 KV heads of 64 dims,
// F16 cache): K+V are 4096 x 2 x 256 x 2 B = 4 MiB per layer, 88 MiB per token, ~30 us at
// ~3 TB/s. The plan gives min(2 x 132 / 4, 4096 / 128) = 32 splits, 128 workgroups (about one
// per SM) each streaming 64 KiB: ~1-2 us of memory time per layer, so the two dispatches (partial,
// reduce) are bound by launch and barrier latency, ~5 us per layer, ~0.1 ms per token, against
// ~0.2 ms for the Q4_0 weights (~0.6 GB): attention at ~25-35 % of a 4096-token step until the
// per-dispatch cost falls (recorded command buffers), and 20-40x under the unsplit kernel's
// 3-9 ms (4-32 workgroups each reading the whole context, K rows strided across the lanes).
attention_plan plan_attention(const context& ctx, int n_tok, int pos0, int n_head, int n_head_kv,
                              int head_dim, uint64_t scratch_bytes, attention_variant v) {
  if (head_dim % 2 != 0 || head_dim > 256 || head_dim <= 0 || n_head_kv <= 0 ||
      n_head % n_head_kv != 0)
    throw error(
        fmt::format("vulkan: attention needs an even head_dim <= 256 and n_head a "
                    "multiple of n_head_kv (head_dim {}, n_head {}, n_head_kv {})",
                    head_dim, n_head, n_head_kv));
  if (v.k == attention_variant::kind::automatic) {
    const std::string f = forced_variant("attention");
    if (f == "basic") {
      v.k = attention_variant::kind::basic;
    } else if (f == "flash") {
      v = {attention_variant::kind::flash, 1};
    } else if (f.rfind("split", 0) == 0 && f.size() > 5 && f.size() <= 7 &&
               f.find_first_not_of("0123456789", 5) == std::string::npos &&
               std::stoi(f.substr(5)) >= 2 && std::stoi(f.substr(5)) <= 64) {
      v = {attention_variant::kind::flash, std::stoi(f.substr(5))};
    } else if (!f.empty()) {
      throw error(fmt::format("TANDEM_VK_VARIANT: unknown attention variant '{}' (known: basic, "
                              "flash, split<N> with N from 2 to 64)",
                              f));
    }
  }
  attention_plan pl;
  if (v.k == attention_variant::kind::basic) {
    pl.flash = false;
    return pl;
  }
  const uint32_t hd = u32(head_dim), group = u32(n_head / n_head_kv), nt = u32(n_tok);
  const uint32_t rows = std::min(32u, 2048u / hd);
  pl.heads_per_wg = std::min(group, rows);
  pl.toks_per_wg = std::clamp(rows / pl.heads_per_wg, 1u, nt);
  // The largest tile (a power of two <= 128) whose q rows, K/V tiles and scores fit the shader's
  // pool of 7168 words, with at most 8 score rows per lane (R <= 8 * 128 / kt).
  const uint32_t r = pl.heads_per_wg * pl.toks_per_wg;
  auto fits = [&](uint32_t kt) {
    return r * hd + kt * (hd / 2 + 1) + kt * (hd / 2) + r * (kt + 1) <= 7168 && r <= 8 * 128 / kt;
  };
  pl.kt = 128;
  while (pl.kt > 1 && !fits(pl.kt)) pl.kt /= 2;
  const uint32_t n_hblk = (group + pl.heads_per_wg - 1) / pl.heads_per_wg;
  pl.groups_x = u32(n_head_kv) * n_hblk;
  pl.groups_y = (nt + pl.toks_per_wg - 1) / pl.toks_per_wg;
  const uint64_t n_pos = static_cast<uint64_t>(pos0) + nt;
  uint64_t want = static_cast<uint64_t>(std::max(v.n_split, 0));
  if (want == 0) {
    const uint64_t base = static_cast<uint64_t>(pl.groups_x) * pl.groups_y;
    const uint64_t target = 2ull * ctx.caps().compute_units;
    want = std::min<uint64_t>((target + base - 1) / base, n_pos / 128);
  }
  // Partials of one split: acc (n_q floats) and (m, l) per token and head.
  const uint64_t per_split = static_cast<uint64_t>(nt) * n_head * (hd + 2) * sizeof(float);
  want = std::clamp<uint64_t>(std::min<uint64_t>(want, scratch_bytes / per_split), 1, 64);
  uint64_t len = (n_pos + want - 1) / want;
  if (v.n_split == 0) len = (len + pl.kt - 1) / pl.kt * pl.kt;  // whole tiles when chosen here
  pl.split_len = u32(static_cast<int64_t>(len));
  pl.n_split = u32(static_cast<int64_t>((n_pos + len - 1) / len));
  return pl;
}

bool dot_may_run(const context& ctx) {
  const matvec_variant v = matvec_choice(ctx);
  return ctx.caps().integer_dot && !v.dot_off &&
         (v.dot_forced || ctx.caps().integer_dot_accelerated);
}

bool has_dot_kernel(dtype t) {
  return t == dtype::q4_0 || t == dtype::q8_0 || t == dtype::q4_k || t == dtype::q5_k ||
         t == dtype::q6_k;
}

uint64_t quantized_bytes(int n_tok, int64_t cols) {
  return static_cast<uint64_t>(n_tok) * static_cast<uint64_t>(cols / 32) * 40;
}

namespace ops {
namespace {

// The prompt (tiled) kernel in the variant asked for, or the one the device picks.
void matmul_tiled(recorder& rec, const device_weight& w, const buffer_range& x,
                  const buffer_range& y, int n_tok, int ldx, int ldy, bool accumulate,
                  matmul_kernel kind) {
  matmul_variant v = matmul_variant::f32;
  switch (kind) {
    case matmul_kernel::tiled_vec4: v = matmul_variant::vec4; break;
    case matmul_kernel::tiled_coopmat: v = matmul_variant::coopmat; break;
    case matmul_kernel::tiled_f32: v = matmul_variant::f32; break;
    default: v = pick_matmul_variant(rec.pipes(), w.type); break;
  }
  // TANDEM_PARITY_BREAK=matmul[_<type>] breaks every variant, matmul_<variant>[_<type>] one.
  const std::string vname = std::string("matmul_") + matmul_variant_name(v);
  const bool broken = parity_break("matmul", &w.type) ||
                      (v != matmul_variant::f32 && parity_break(vname.c_str(), &w.type));
  const auto& p = rec.pipes().get(kernel::matmul, matmul_shader_variant(rec.ctx(), v), w.type,
                                  {accumulate ? 1u : 0u});
  // Tile of a workgroup: rows x tokens (the comments of shaders/matmul*.comp).
  const uint32_t bm = v == matmul_variant::vec4 ? 128 : 64;
  const uint32_t bn = v == matmul_variant::f32 ? 32 : 64;
  const uint64_t act_bytes = static_cast<uint64_t>(n_tok) * static_cast<uint64_t>(w.cols) * 4;
  for (const auto& piece : w.pieces) {
    const matmul_push push{u32(w.cols), u32(piece.rows), u32(n_tok), u32(ldx),
                           u32(ldy),    u32(piece.row0), 1};
    const uint64_t out = static_cast<uint64_t>(n_tok) * static_cast<uint64_t>(piece.rows) * 4;
    rec.cost(piece.range.size + act_bytes + out * (accumulate ? 2 : 1),
             2 * static_cast<uint64_t>(piece.rows) * static_cast<uint64_t>(w.cols) *
                 static_cast<uint64_t>(n_tok));
    rec.dispatch(p, div_up(static_cast<uint64_t>(piece.rows), bm),
                 div_up(static_cast<uint64_t>(n_tok), bn), 1, push, {piece.range, x, y});
  }
  if (broken) parity_double(rec, y, static_cast<uint64_t>(n_tok) * ldy);
}

}  // namespace

void rms_norm(recorder& rec, const buffer_range& x, const buffer_range& w, const buffer_range& y,
              int n, int n_rows, int x_row0, int ldx, int ldy, float eps) {
  const auto& p = rec.pipes().get(kernel::rms_norm);
  // x read, y written, w read once; per element a square-add, a scale and a multiply
  rec.cost(4 * u64(n) * (2 * u64(n_rows) + 1), 4 * u64(n) * u64(n_rows));
  rec.dispatch(p, u32(n_rows), 1, 1, rms_norm_push{u32(n), u32(x_row0), u32(ldx), u32(ldy), eps},
               {x, w, y});
  if (parity_break("rms_norm")) parity_double(rec, y, static_cast<uint64_t>(n_rows) * ldy);
}

void rope(recorder& rec, const buffer_range& x, const buffer_range& table, int n_tok, int n_heads,
          int head_dim, int n_rot, int pos0, int ld, rope_style style) {
  const auto& p = rec.pipes().get(kernel::rope, dtype::f32, {style == rope_style::neox ? 1u : 0u});
  // the rotated elements read and written, a cos/sin pair per pair and position; 6 per pair
  const uint64_t pairs = u64(n_tok) * u64(n_heads) * u64(n_rot / 2);
  rec.cost(8 * 2 * pairs + 8 * u64(n_tok) * u64(n_rot / 2), 6 * pairs);
  rec.dispatch(p, div_up(static_cast<uint64_t>(n_rot / 2), p.wg), u32(n_heads), u32(n_tok),
               rope_push{u32(n_tok), u32(n_heads), u32(head_dim), u32(n_rot), u32(pos0), u32(ld)},
               {x, table});
  if (parity_break("rope")) parity_double(rec, x, static_cast<uint64_t>(n_tok) * ld);
}

void matmul(recorder& rec, const device_weight& w, const buffer_range& x, const buffer_range& y,
            int n_tok, int ldx, int ldy, bool accumulate, matmul_kernel kind,
            const buffer_range& xq) {
  if (kind == matmul_kernel::automatic)
    kind = n_tok <= 4 ? matmul_kernel::vector : matmul_kernel::tiled;
  if (kind != matmul_kernel::vector) {
    matmul_tiled(rec, w, x, y, n_tok, ldx, ldy, accumulate, kind);
    return;
  }
  const bool dot = use_dot(rec, w.type, w.cols, n_tok, xq);
  if (dot) quantize(rec, x, x, xq, w.cols, n_tok, ldx, false);
  for (const auto& piece : w.pieces) {
    const matvec_part part{&piece, y, ldy};
    matvec_dispatch(rec, w.type, w.cols, &part, 1, dot ? xq : x, x, n_tok, ldx, accumulate, false,
                    dot);
  }
  if (dot ? parity_break("matvec_dot", &w.type) : parity_break("matvec", &w.type))
    parity_double(rec, y, static_cast<uint64_t>(n_tok) * ldy);
}

bool matmul_fuses(recorder& rec, int n_tok, matmul_kernel kind) {
  if (kind == matmul_kernel::automatic)
    kind = n_tok <= 4 ? matmul_kernel::vector : matmul_kernel::tiled;
  return kind == matmul_kernel::vector && matvec_fusion(rec.ctx());
}

namespace {

// Whether matmul_multi's outputs take one dispatch of the vector kernel.
bool multi_fuses(recorder& rec, std::initializer_list<ops::matmul_out> outs, int n_tok,
                 matmul_kernel kind) {
  if (outs.size() < 1 || outs.size() > 3)
    throw std::logic_error("ops::matmul_multi takes 1 to 3 outputs");
  const device_weight& w0 = *outs.begin()->w;
  bool fuse = ops::matmul_fuses(rec, n_tok, kind);
  for (const ops::matmul_out& o : outs)
    fuse &= o.w->type == w0.type && o.w->cols == w0.cols && o.w->pieces.size() == 1;
  return fuse;
}

// Whether every output of an unfused matmul_multi takes the integer-dot vector kernel on rows of
// one length (then the activations are quantized once for all of them).
bool multi_dot(recorder& rec, std::initializer_list<ops::matmul_out> outs, int n_tok,
               matmul_kernel kind, const buffer_range& xq) {
  if (kind == matmul_kernel::automatic)
    kind = n_tok <= 4 ? matmul_kernel::vector : matmul_kernel::tiled;
  if (kind != matmul_kernel::vector) return false;
  for (const ops::matmul_out& o : outs)
    if (o.w->cols != outs.begin()->w->cols || !use_dot(rec, o.w->type, o.w->cols, n_tok, xq))
      return false;
  return true;
}

// matmul_multi's products on the integer-dot kernel, x already quantized into xq: one dispatch
// of every output (fuse: one type, one piece each) or one per output and piece.
void dot_products(recorder& rec, std::initializer_list<ops::matmul_out> outs,
                  const buffer_range& xq, const buffer_range& x, int n_tok, int ldx, bool fuse) {
  const device_weight& w0 = *outs.begin()->w;
  if (fuse) {
    matvec_part parts[3];
    int n = 0;
    for (const ops::matmul_out& o : outs) parts[n++] = {&o.w->pieces[0], o.y, o.ldy};
    matvec_dispatch(rec, w0.type, w0.cols, parts, n, xq, x, n_tok, ldx, false, false, true);
  } else {
    for (const ops::matmul_out& o : outs)
      for (const auto& piece : o.w->pieces) {
        const matvec_part part{&piece, o.y, o.ldy};
        matvec_dispatch(rec, o.w->type, o.w->cols, &part, 1, xq, x, n_tok, ldx, false, false,
                        true);
      }
  }
  for (const ops::matmul_out& o : outs)
    if (parity_break("matvec_dot", &o.w->type))
      parity_double(rec, o.y, static_cast<uint64_t>(n_tok) * static_cast<uint64_t>(o.ldy));
}

}  // namespace

void matmul_multi(recorder& rec, std::initializer_list<matmul_out> outs, const buffer_range& x,
                  int n_tok, int ldx, matmul_kernel kind, const buffer_range& xq) {
  const bool fuse = multi_fuses(rec, outs, n_tok, kind);
  const device_weight& w0 = *outs.begin()->w;
  // Fused, or types differ (Q4_K_M's Q4_K and Q6_K) or pieces: x quantized once for every product.
  if (fuse ? use_dot(rec, w0.type, w0.cols, n_tok, xq) : multi_dot(rec, outs, n_tok, kind, xq)) {
    quantize(rec, x, x, xq, w0.cols, n_tok, ldx, false);
    dot_products(rec, outs, xq, x, n_tok, ldx, fuse);
    return;
  }
  if (!fuse) {
    for (const matmul_out& o : outs)
      matmul(rec, *o.w, x, o.y, n_tok, ldx, o.ldy, false, kind, xq);
    return;
  }
  matvec_part parts[3];
  int n = 0;
  for (const matmul_out& o : outs) parts[n++] = {&o.w->pieces[0], o.y, o.ldy};
  matvec_dispatch(rec, w0.type, w0.cols, parts, n, x, x, n_tok, ldx, false, false);
  if (parity_break("matvec", &w0.type))
    for (const matmul_out& o : outs)
      parity_double(rec, o.y, static_cast<uint64_t>(n_tok) * static_cast<uint64_t>(o.ldy));
}

void matmul_multi_norm(recorder& rec, std::initializer_list<matmul_out> outs,
                       const buffer_range& x, const rms_norm_in& norm, int n_tok, int ldx,
                       matmul_kernel kind, const buffer_range& xq) {
  const device_weight& w0 = *outs.begin()->w;
  const int n = static_cast<int>(w0.cols);
  const bool fuse = multi_fuses(rec, outs, n_tok, kind);
  // The integer-dot kernel: the norm fused into the activations' quantization (quantize_q8's
  // NORM), whether the products then take one dispatch or one each.
  if (fuse ? use_dot(rec, w0.type, w0.cols, n_tok, xq) : multi_dot(rec, outs, n_tok, kind, xq)) {
    if (norm.write_h) rms_norm(rec, x, norm.w, norm.h, n, n_tok, 0, ldx, ldx, norm.eps);
    ops::quantize_q8(rec, x, norm.w, xq, w0.cols, n_tok, ldx, false, true, norm.eps);
    dot_products(rec, outs, xq, x, n_tok, ldx, fuse);
    // A broken rms_norm doubles h, i.e. (the products being linear) the products' outputs.
    if (parity_break("rms_norm"))
      for (const matmul_out& o : outs)
        parity_double(rec, o.y, static_cast<uint64_t>(n_tok) * static_cast<uint64_t>(o.ldy));
    return;
  }
  if (!fuse) {
    rms_norm(rec, x, norm.w, norm.h, n, n_tok, 0, ldx, ldx, norm.eps);
    matmul_multi(rec, outs, norm.h, n_tok, ldx, kind, xq);
    return;
  }
  if (norm.write_h) rms_norm(rec, x, norm.w, norm.h, n, n_tok, 0, ldx, ldx, norm.eps);
  matvec_part parts[3];
  int np = 0;
  for (const matmul_out& o : outs) parts[np++] = {&o.w->pieces[0], o.y, o.ldy};
  matvec_dispatch(rec, w0.type, w0.cols, parts, np, x, norm.w, n_tok, ldx, false, false, false,
                  true, norm.eps);
  // A broken rms_norm doubles h, i.e. (the product being linear) the products' outputs.
  const bool broken = parity_break("matvec", &w0.type) || parity_break("rms_norm");
  if (broken)
    for (const matmul_out& o : outs)
      parity_double(rec, o.y, static_cast<uint64_t>(n_tok) * static_cast<uint64_t>(o.ldy));
}

bool rope_kv_in_matvec() {
  const std::string f = forced_variant("rope_kv");
  if (f.empty() || f == "matvec") return true;
  if (f == "fused" || f == "separate") return false;
  throw error(fmt::format(
      "TANDEM_VK_VARIANT: unknown rope_kv variant '{}' (known: matvec, fused, separate)", f));
}

bool qkv_rope_fuses(recorder& rec, const matmul_out& q, const matmul_out& k, const matmul_out& v,
                    int n_tok, const rope_kv_in& rk, const buffer_range& xq) {
  if (!rope_kv_in_matvec() || n_tok != 1 ||
      !multi_fuses(rec, {q, k, v}, n_tok, matmul_kernel::vector))
    return false;
  const int d = rk.head_dim, nr = rk.n_rot;
  const int quad = rk.style == rope_style::neox ? 4 : 2;  // rows a workgroup's unit holds
  const int64_t n_q = static_cast<int64_t>(rk.n_head) * d,
                n_kv = static_cast<int64_t>(rk.n_head_kv) * d;
  const bool biases = rk.bq.size > 0 && rk.bk.size > 0 && rk.bv.size > 0;
  const bool no_bias = rk.bq.size == 0 && rk.bk.size == 0 && rk.bv.size == 0;
  return d > 0 && d % quad == 0 && nr % quad == 0 && nr <= d && q.w->rows == n_q &&
         k.w->rows == n_kv && v.w->rows == n_kv && (biases || no_bias);
}

void matmul_qkv_rope(recorder& rec, const matmul_out& q, const matmul_out& k, const matmul_out& v,
                     const buffer_range& x, const rms_norm_in& norm, const rope_kv_in& rk,
                     int n_tok, int ldx, const buffer_range& xq) {
  if (!qkv_rope_fuses(rec, q, k, v, n_tok, rk, xq))
    throw std::logic_error("ops::matmul_qkv_rope where qkv_rope_fuses is false");
  const matvec_part parts[3] = {
      {&q.w->pieces[0], q.y, q.ldy}, {&k.w->pieces[0], k.y, k.ldy}, {&v.w->pieces[0], v.y, v.ldy}};
  // The integer-dot kernel (matvec_dot_rope): the norm goes into the activations' quantization.
  const bool dot = use_dot(rec, q.w->type, q.w->cols, n_tok, xq);
  if (dot) ops::quantize_q8(rec, x, norm.w, xq, q.w->cols, n_tok, ldx, false, true, norm.eps);
  matvec_dispatch(rec, q.w->type, q.w->cols, parts, 3, dot ? xq : x, norm.w, n_tok, ldx, false,
                  false, dot, !dot, norm.eps, &rk);
  // TANDEM_PARITY_BREAK=matvec_rope (matvec_dot_rope) doubles q (a model run diverges at rope:q
  // after the prompt).
  if (parity_break(dot ? "matvec_dot_rope" : "matvec_rope"))
    parity_double(rec, q.y, static_cast<uint64_t>(n_tok) * static_cast<uint64_t>(q.ldy));
}

void matmul_swiglu(recorder& rec, const device_weight& w, const buffer_range& g,
                   const buffer_range& u, const buffer_range& y, int n_tok, int ldx, int ldy,
                   bool accumulate, matmul_kernel kind, const buffer_range& xq) {
  if (!matmul_fuses(rec, n_tok, kind)) {
    swiglu(rec, g, u, g, n_tok * ldx);
    matmul(rec, w, g, y, n_tok, ldx, ldy, accumulate, kind);
    return;
  }
  const bool dot = use_dot(rec, w.type, w.cols, n_tok, xq);
  if (dot) quantize(rec, g, u, xq, w.cols, n_tok, ldx, true);  // silu(g) * u, quantized
  for (const auto& piece : w.pieces) {
    const matvec_part part{&piece, y, ldy};
    matvec_dispatch(rec, w.type, w.cols, &part, 1, dot ? xq : g, u, n_tok, ldx, accumulate,
                    !dot, dot);
  }
  if (parity_break(dot ? "matvec_dot" : "matvec", &w.type))
    parity_double(rec, y, static_cast<uint64_t>(n_tok) * ldy);
}

void kv_store(recorder& rec, const buffer_range& x, const buffer_range& cache, int n, int n_tok,
              int pos0, int ldx) {
  const auto& p = rec.pipes().get(kernel::kv_store);
  const uint64_t first = static_cast<uint64_t>(pos0) * static_cast<uint64_t>(n);
  const uint64_t last = first + static_cast<uint64_t>(n_tok) * static_cast<uint64_t>(n);
  const uint64_t words = (last + 1) / 2 - first / 2;
  uint32_t gx, gy;
  rec.split_groups(div_up(words, p.wg), &gx, &gy);
  if (parity_break("kv_store")) parity_double(rec, x, static_cast<uint64_t>(n_tok) * ldx);
  rec.cost(6 * u64(n_tok) * u64(n), 0);  // F32 rows read, F16 rows written
  rec.dispatch(p, gx, gy, 1, kv_store_push{u32(n), u32(n_tok), u32(pos0), u32(ldx)}, {x, cache});
}

void attention(recorder& rec, const buffer_range& q, const buffer_range& k_cache,
               const buffer_range& v_cache, const buffer_range& out, int n_tok, int pos0,
               int n_head, int n_head_kv, int head_dim, const buffer_range& scratch,
               attention_variant v, const buffer_range& step) {
  const attention_plan pl =
      plan_attention(rec.ctx(), n_tok, pos0, n_head, n_head_kv, head_dim, scratch.size, v);
  const uint64_t nt = static_cast<uint64_t>(n_tok), hd = static_cast<uint64_t>(head_dim);
  const uint64_t n_q = static_cast<uint64_t>(n_head) * hd;
  const uint64_t n_kv = static_cast<uint64_t>(n_head_kv) * hd;
  // The least it must move: q, the K/V rows of positions 0 .. pos0 + n_tok - 1 once, the output;
  // 4 flops per (query head, position, dim): q.k and p v.
  const uint64_t n_pos = static_cast<uint64_t>(pos0) + nt;
  const uint64_t qk_pairs = nt * static_cast<uint64_t>(pos0) + nt * (nt + 1) / 2;
  const uint64_t kv_bytes = 2 * n_pos * n_kv * 2;
  const uint64_t flops = 4 * qk_pairs * static_cast<uint64_t>(n_head) * hd;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  bool broken = parity_break("attention");
  const bool from_step = step.size > 0;
  if (!pl.flash) {
    if (from_step) throw std::logic_error("ops::attention: the basic kernel reads no step buffer");
    const auto& p = rec.pipes().get(kernel::attention);
    const attention_push push{u32(n_tok),     u32(pos0),          u32(n_head), u32(n_head_kv),
                              u32(head_dim),  u32(n_q),           u32(n_kv),   scale};
    rec.cost(kv_bytes + 2 * nt * n_q * sizeof(float), flops);
    rec.dispatch(p, u32(n_head), u32(n_tok), 1, push, {q, k_cache, v_cache, out});
  } else {
    broken |= parity_break("flash_attn") || (pl.n_split > 1 && parity_break("flash_reduce"));
    const uint64_t ml_off = static_cast<uint64_t>(pl.n_split) * nt * n_q;
    const flash_attn_push push{u32(n_tok),       u32(pos0),        u32(n_head),
                               u32(n_head_kv),   u32(head_dim),    u32(n_q),
                               u32(n_kv),        scale,            pl.heads_per_wg,
                               pl.toks_per_wg,   pl.kt,            pl.n_split,
                               pl.split_len,     u32(static_cast<int64_t>(ml_off))};
    const uint64_t part_bytes = pl.n_split > 1 ? (ml_off + 2 * ml_off / hd) * sizeof(float) : 0;
    // STEP (1): pos0 and the split from the step buffer, the groups by an indirect dispatch.
    const auto& p = from_step ? rec.pipes().get(kernel::flash_attn, dtype::f32, {1u})
                              : rec.pipes().get(kernel::flash_attn);
    rec.cost(kv_bytes + nt * n_q * sizeof(float) + (pl.n_split > 1 ? part_bytes : nt * n_q * 4),
             flops);
    // Without a step buffer its binding gets q (read-only here, never read by the kernel).
    const std::initializer_list<buffer_range> bufs = {
        q, k_cache, v_cache, out, pl.n_split > 1 ? scratch : out, from_step ? step : q};
    if (from_step)
      rec.dispatch_indirect(p, step.sub(offsetof(step_params, groups_x), 12), push, bufs);
    else
      rec.dispatch(p, pl.groups_x, pl.groups_y, pl.n_split, push, bufs);
    if (pl.n_split > 1) {  // (the hazard tracker puts the barrier before the reduce pass)
      const auto& r = from_step ? rec.pipes().get(kernel::flash_reduce, dtype::f32, {1u})
                                : rec.pipes().get(kernel::flash_reduce);
      rec.cost(part_bytes + nt * n_q * sizeof(float), 3 * ml_off);
      rec.dispatch(r, u32(n_head), u32(n_tok), 1,
                   flash_reduce_push{u32(n_tok), u32(n_head), u32(head_dim), u32(n_q),
                                     pl.n_split, u32(static_cast<int64_t>(ml_off))},
                   {scratch, out, from_step ? step : scratch});
    }
  }
  if (broken) parity_double(rec, out, nt * n_q);
}

bool fused_rope_kv() {
  const std::string f = forced_variant("rope_kv");
  if (f.empty() || f == "fused" || f == "matvec") return true;
  if (f == "separate") return false;
  throw error(fmt::format(
      "TANDEM_VK_VARIANT: unknown rope_kv variant '{}' (known: matvec, fused, separate)", f));
}

void rotary_kv(recorder& rec, const buffer_range& q, const buffer_range& k, const buffer_range& v,
               const buffer_range& table, const buffer_range& k_cache, const buffer_range& v_cache,
               int n_tok, int n_head, int n_head_kv, int head_dim, int n_rot, int pos0, int ldq,
               int ldkv, rope_style style, const buffer_range& step) {
  if (head_dim % 2 != 0 || head_dim > 256 || n_rot > head_dim || n_rot % 2 != 0)
    throw error(fmt::format("vulkan: rotary_kv needs an even head_dim <= 256 and an even n_rot "
                            "<= head_dim (head_dim {}, n_rot {})",
                            head_dim, n_rot));
  // STEP (constant 2): the position from the step buffer (its binding: the table, unread, if none).
  const bool from_step = step.size > 0;
  const uint32_t neox = style == rope_style::neox ? 1u : 0u;
  const auto& p = from_step ? rec.pipes().get(kernel::rotary_kv, dtype::f32, {neox, 1u})
                            : rec.pipes().get(kernel::rotary_kv, dtype::f32, {neox});
  const uint64_t nt = static_cast<uint64_t>(n_tok);
  const uint64_t n_q = static_cast<uint64_t>(n_head) * head_dim;
  const uint64_t n_kv = static_cast<uint64_t>(n_head_kv) * head_dim;
  // The kv_store break doubles the rows before (v: kv_store:v diverges first, as unfused).
  if (parity_break("kv_store")) parity_double(rec, v, nt * static_cast<uint64_t>(ldkv));
  const uint64_t pairs = nt * static_cast<uint64_t>(n_head + n_head_kv) * (n_rot / 2);
  // Reads q, k, v and the table rows; writes q, k (F32) and k, v (F16).
  rec.cost(nt * ((n_q + 2 * n_kv) * 4 + static_cast<uint64_t>(n_rot) * 4 + (n_q + n_kv) * 4 +
                 2 * n_kv * 2),
           pairs * 6);
  rec.dispatch(p, u32(n_head + 2 * n_head_kv), u32(n_tok), 1,
               rotary_kv_push{u32(n_tok), u32(n_head), u32(n_head_kv), u32(head_dim), u32(n_rot),
                              u32(pos0), u32(ldq), u32(ldkv)},
               {q, k, v, table, k_cache, v_cache, from_step ? step : table});
  // The rope break (and its own) doubles q after, as the unfused rope's: a model run with either
  // kernel broken diverges at rope:q. (The op check's filters keep rope and rotary_kv apart.)
  if (parity_break("rotary_kv") || parity_break("rope"))
    parity_double(rec, q, nt * static_cast<uint64_t>(ldq));
}

void swiglu(recorder& rec, const buffer_range& g, const buffer_range& u, const buffer_range& y,
            int n) {
  const uint64_t n64 = static_cast<uint64_t>(n);  // reads g, u; writes y; exp, add, div, mul
  elementwise(rec, kernel::swiglu, swiglu_push{u32(n)}, {g, u, y}, y, n, {12 * n64, 4 * n64});
}

void add(recorder& rec, const buffer_range& y, const buffer_range& b, int n, int nb) {
  const uint64_t n64 = static_cast<uint64_t>(n), nb64 = static_cast<uint64_t>(nb);
  elementwise(rec, kernel::add, add_push{u32(n), u32(nb)}, {y, b}, y, n,
              {8 * n64 + 4 * nb64, n64});
}

const pipeline& elementwise_grid(recorder& rec, kernel k, size_t push_size, size_t n_bufs,
                                 int64_t n, uint32_t* gx, uint32_t* gy) {
  const op_row& row = op_rows[static_cast<size_t>(k)];
  if (row.typed || row.spec != op_spec::none || row.push_size != push_size ||
      row.bindings != n_bufs)
    throw std::logic_error(fmt::format(
        "ops::elementwise({}): {} push bytes and {} buffers given, the op table says {} and {}{}",
        row.name, push_size, n_bufs, row.push_size, row.bindings,
        row.typed || row.spec != op_spec::none ? " (and variants: not element-wise)" : ""));
  const pipeline& p = rec.pipes().get(k);
  rec.split_groups(div_up(static_cast<uint64_t>(std::max<int64_t>(n, 0)), p.wg), gx, gy);
  return p;
}

void elementwise_done(recorder& rec, kernel k, const buffer_range& out, int64_t n) {
  if (parity_break(op_rows[static_cast<size_t>(k)].name))
    parity_double(rec, out, static_cast<uint64_t>(n));
}

}  // namespace ops
}  // namespace tandem::vk
