#include "vulkan/matmul_variant.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "runtime/blocks.h"
#include "runtime/error.h"
#include "vulkan/host_buffer.h"
#include "vulkan/ops.h"
#include "vulkan/self_check.h"
#include "vulkan/variant.h"

namespace tandem::vk {

namespace {

matmul_variant parse_forced(const context& ctx) {
  const std::string f = forced_variant("matmul");
  if (f.empty()) return ctx.caps().coopmat_n ? matmul_variant::coopmat : matmul_variant::vec4;
  for (auto v : {matmul_variant::f32, matmul_variant::vec4, matmul_variant::coopmat})
    if (f == matmul_variant_name(v)) {
      if (v == matmul_variant::coopmat && !ctx.caps().coopmat_n)
        throw error(fmt::format(
            "vulkan: TANDEM_VK_VARIANT=matmul=coopmat needs VK_NV_cooperative_matrix with an "
            "F16 16x16x16 or 16x8x16 shape (F32 accumulate, 32-lane subgroups), which {} lacks; "
            "force vec4 or f32 instead",
            ctx.info().name));
      return v;
    }
  throw error(fmt::format(
      "vulkan: TANDEM_VK_VARIANT names an unknown matmul variant '{}' (known: f32, vec4, coopmat)",
      f));
}

// The next variant to try when v fails its self-check.
matmul_variant fallback_of(matmul_variant v) {
  return v == matmul_variant::coopmat ? matmul_variant::vec4 : matmul_variant::f32;
}

std::string kernel_name(const context& ctx, matmul_variant v, dtype t) {
  const std::string sv = matmul_shader_variant(ctx, v);
  return fmt::format("matmul_{}{}", sv.empty() ? "" : sv + "_", dtype_name(t));
}

matmul_kernel kind_of(matmul_variant v) {
  switch (v) {
    case matmul_variant::vec4:
      return matmul_kernel::tiled_vec4;
    case matmul_variant::coopmat:
      return matmul_kernel::tiled_coopmat;
    default:
      return matmul_kernel::tiled_f32;
  }
}

std::vector<float> normal(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

// One shape: the NMSE of the variant's y against the reference.
double check_shape(pipeline_cache& pipes, command_stream& cs, matmul_variant v, dtype t,
                   int64_t cols, int64_t rows, int n_tok, bool acc, std::mt19937& rng) {
  context& ctx = pipes.ctx();
  const uint64_t rb = row_bytes(t, static_cast<uint64_t>(cols));
  const auto wf = normal(static_cast<size_t>(rows * cols), rng);
  std::vector<uint8_t> wq(rb * static_cast<uint64_t>(rows));
  for (int64_t r = 0; r < rows; ++r)
    quantize_row(t, wf.data() + r * cols, wq.data() + rb * static_cast<uint64_t>(r), cols);
  const auto x = normal(static_cast<size_t>(cols) * static_cast<size_t>(n_tok), rng);
  const auto y0 = normal(static_cast<size_t>(rows) * static_cast<size_t>(n_tok), rng);
  host_buffer bw(ctx, wq.size()), bx(ctx, x.size() * 4), by(ctx, y0.size() * 4);
  bw.set(wq);
  bx.set(x);
  by.set(y0);
  device_weight w;
  w.type = t;
  w.cols = cols;
  w.rows = rows;
  w.row_bytes = rb;
  w.pieces.push_back({bw.range(), 0, rows});
  recorder& r = cs.begin();
  ops::matmul(r, w, bx, by, n_tok, static_cast<int>(cols), static_cast<int>(rows), acc, kind_of(v));
  cs.wait(cs.submit());
  const std::vector<float> got = by.floats(y0.size());

  std::vector<float> wd(static_cast<size_t>(cols));
  double num = 0, den = 0;
  for (int64_t row = 0; row < rows; ++row) {
    dequantize_row(t, wq.data() + rb * static_cast<uint64_t>(row), wd.data(), cols);
    for (int tok = 0; tok < n_tok; ++tok) {
      double s = 0;
      for (int64_t c = 0; c < cols; ++c)
        s += static_cast<double>(wd[static_cast<size_t>(c)]) *
             x[static_cast<size_t>(tok * cols + c)];
      const size_t i = static_cast<size_t>(tok * rows + row);
      if (acc) s += y0[i];
      const double d = s - got[i];
      num += d * d;
      den += s * s;
    }
  }
  const double nmse = den > 0 ? num / den : num;
  return std::isfinite(nmse) ? nmse : INFINITY;
}

}  // namespace

const char* matmul_variant_name(matmul_variant v) {
  switch (v) {
    case matmul_variant::vec4:
      return "vec4";
    case matmul_variant::coopmat:
      return "coopmat";
    default:
      return "f32";
  }
}

std::string matmul_shader_variant(const context& ctx, matmul_variant v) {
  switch (v) {
    case matmul_variant::vec4:
      return "vec4";
    case matmul_variant::coopmat:
      return ctx.caps().coopmat_n == 8 ? "coopmat_n8" : "coopmat";
    default:
      return "";
  }
}

self_check_result matmul_self_check(pipeline_cache& pipes, matmul_variant v, dtype t) {
  // Its own command stream on the compute queue: the caller may be recording a frame. The
  // transfer dependency noted for the caller's next submit is kept for it.
  context& ctx = pipes.ctx();
  struct keep_pending {  // also when the check throws
    context& ctx;
    uint64_t value;
    ~keep_pending() { ctx.depend(ctx.compute(), ctx.transfer(), value); }
  } keep{ctx, ctx.compute().pending};
  self_check_result res;
  res.threshold = v == matmul_variant::coopmat ? 1e-5 : 1e-9;
  {
    command_stream cs(pipes, 1);
    std::mt19937 rng(0x7a11 + static_cast<uint32_t>(t));
    const int64_t bs = std::max<int64_t>(traits(t).block_size, 1);
    struct shape {
      int64_t cols, rows;
      int n_tok;
      bool acc;
    };
    // Rows and tokens off the tile sizes; float rows of an odd length.
    const shape shapes[] = {{bs == 1 ? 100 : 2 * bs, 77, 13, false},
                            {bs == 1 ? 264 : 3 * bs, 140, 70, true}};
    for (const shape& s : shapes)
      res.nmse =
          std::max(res.nmse, check_shape(pipes, cs, v, t, s.cols, s.rows, s.n_tok, s.acc, rng));
  }
  return res;
}

matmul_variant pick_matmul_variant(pipeline_cache& pipes, dtype t) {
  context& ctx = pipes.ctx();
  matmul_variant v = parse_forced(ctx);
  const bool everything = self_check_everything();
  while (v == matmul_variant::coopmat || everything) {
    const std::string name = kernel_name(ctx, v, t);
    const std::string fb =
        v == matmul_variant::f32 ? std::string("nothing") : kernel_name(ctx, fallback_of(v), t);
    if (kernel_trusted(ctx, name, fb, [&] { return matmul_self_check(pipes, v, t); })) break;
    if (v == matmul_variant::f32)
      throw error(
          fmt::format("vulkan: no prompt matmul kernel for {} agrees with the reference "
                      "on {}; run without --offload",
                      dtype_name(t), ctx.info().name));
    v = fallback_of(v);
  }
  return v;
}

}  // namespace tandem::vk
