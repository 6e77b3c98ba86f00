#include "vulkan/ops.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "runtime/error.h"
#include "shaders/push_constants.h"
#include "vulkan/matmul_variant.h"

namespace tandem::vk {

namespace {

uint32_t u32(int64_t v) {
  return static_cast<uint32_t>(v);
}
uint32_t div_up(uint64_t a, uint64_t b) {
  return static_cast<uint32_t>((a + b - 1) / b);
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
  rec.dispatch(p, u32(n_rows), 1, 1, rms_norm_push{u32(n), u32(x_row0), u32(ldx), u32(ldy), eps},
               {x, w, y});
  if (parity_break("rms_norm")) parity_double(rec, y, static_cast<uint64_t>(n_rows) * ldy);
}

void rope(recorder& rec, const buffer_range& x, const buffer_range& table, int n_tok, int n_heads,
          int head_dim, int n_rot, int pos0, int ld, rope_style style) {
  const auto& p = rec.pipes().get(kernel::rope, dtype::f32, {style == rope_style::neox ? 1u : 0u});
  rec.dispatch(p, div_up(static_cast<uint64_t>(n_rot / 2), p.wg), u32(n_heads), u32(n_tok),
               rope_push{u32(n_tok), u32(n_heads), u32(head_dim), u32(n_rot), u32(pos0), u32(ld)},
               {x, table});
  if (parity_break("rope")) parity_double(rec, x, static_cast<uint64_t>(n_tok) * ld);
}

void matmul(recorder& rec, const device_weight& w, const buffer_range& x, const buffer_range& y,
            int n_tok, int ldx, int ldy, bool accumulate, matmul_kernel kind) {
  if (kind == matmul_kernel::automatic)
    kind = n_tok <= 4 ? matmul_kernel::vector : matmul_kernel::tiled;
  if (kind != matmul_kernel::vector) {
    matmul_tiled(rec, w, x, y, n_tok, ldx, ldy, accumulate, kind);
    return;
  }
  const kernel k = kind == matmul_kernel::vector ? kernel::matvec : kernel::matmul;
  const bool broken = parity_break(k == kernel::matvec ? "matvec" : "matmul", &w.type);
  const auto& p = rec.pipes().get(k, w.type, {accumulate ? 1u : 0u});
  // matvec: invocations per row, enough for the row's groups of 8 columns (short rows share a
  // workgroup instead of leaving most of it idle).
  uint32_t row_threads = 1;
  while (row_threads < p.wg && row_threads * 8 < w.cols) row_threads *= 2;
  const uint32_t rows_per_wg = p.wg / row_threads;
  for (const auto& piece : w.pieces) {
    const matmul_push push{u32(w.cols), u32(piece.rows), u32(n_tok), u32(ldx),
                           u32(ldy),    u32(piece.row0), row_threads};
    uint32_t gx, gy;
    rec.split_groups(div_up(static_cast<uint64_t>(piece.rows), rows_per_wg), &gx, &gy);
    rec.dispatch(p, gx, gy, div_up(static_cast<uint64_t>(n_tok), 4), push, {piece.range, x, y});
  }
  if (broken) parity_double(rec, y, static_cast<uint64_t>(n_tok) * ldy);
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
  rec.dispatch(p, gx, gy, 1, kv_store_push{u32(n), u32(n_tok), u32(pos0), u32(ldx)}, {x, cache});
}

void attention(recorder& rec, const buffer_range& q, const buffer_range& k_cache,
               const buffer_range& v_cache, const buffer_range& out, int n_tok, int pos0,
               int n_head, int n_head_kv, int head_dim) {
  if (head_dim % 2 != 0 || head_dim > 256 || n_head % n_head_kv != 0)
    throw error(
        fmt::format("vulkan: attention needs an even head_dim <= 256 and n_head a "
                    "multiple of n_head_kv (head_dim {}, n_head {}, n_head_kv {})",
                    head_dim, n_head, n_head_kv));
  const auto& p = rec.pipes().get(kernel::attention);
  const attention_push push{u32(n_tok),
                            u32(pos0),
                            u32(n_head),
                            u32(n_head_kv),
                            u32(head_dim),
                            u32(n_head * head_dim),
                            u32(n_head_kv * head_dim),
                            1.0f / std::sqrt(static_cast<float>(head_dim))};
  rec.dispatch(p, u32(n_head), u32(n_tok), 1, push, {q, k_cache, v_cache, out});
  if (parity_break("attention"))
    parity_double(rec, out, static_cast<uint64_t>(n_tok) * n_head * head_dim);
}

void swiglu(recorder& rec, const buffer_range& g, const buffer_range& u, const buffer_range& y,
            int n) {
  const auto& p = rec.pipes().get(kernel::swiglu);
  uint32_t gx, gy;
  rec.split_groups(div_up(static_cast<uint64_t>(n), p.wg), &gx, &gy);
  rec.dispatch(p, gx, gy, 1, swiglu_push{u32(n)}, {g, u, y});
  if (parity_break("swiglu")) parity_double(rec, y, static_cast<uint64_t>(n));
}

void add(recorder& rec, const buffer_range& y, const buffer_range& b, int n, int nb) {
  const auto& p = rec.pipes().get(kernel::add);
  uint32_t gx, gy;
  rec.split_groups(div_up(static_cast<uint64_t>(n), p.wg), &gx, &gy);
  rec.dispatch(p, gx, gy, 1, add_push{u32(n), u32(nb)}, {y, b});
  if (parity_break("add")) parity_double(rec, y, static_cast<uint64_t>(n));
}

}  // namespace ops
}  // namespace tandem::vk
