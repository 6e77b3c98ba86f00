// The op cases (tools/op_check/op_check.h): every op of vulkan/op_table.h against the scalar CPU
// reference (cpu/ops_ref.h) on random data, for every weight type the matrix kernels read, on odd
// shapes (sizes that are not multiples of the workgroup, GQA ratios 1, 2, 4 and 8, weights split
// into pieces), each reduction kernel in both its subgroup and its shared-memory variant.
//
// Thresholds (NMSE = sum (ref - gpu)^2 / sum ref^2):
//   rms_norm, swiglu, attention  1e-10  float vs double sums, the device's exp, online softmax
//   rope                         1e-12  the same cos/sin table; only fma contraction differs
//   add                          0      one IEEE add
//   kv_store                     exact  the same round-to-nearest-even to F16, bit for bit
//   flash_attn, flash_reduce     1e-10  as attention (tiles, splits: another order of the sums)
//   rotary_kv                    1e-12  q, k as rope; the caches bit for bit (F16 of its own k)
//   matvec, matmul (every type)  1e-9   weights decode exactly, activations stay F32; only the
//                                       order of summation differs (matmul variants f32, vec4)
//   matmul coopmat (every type)  1e-5   F16 inputs (x and weights rounded to F16: ~1e-7)
//   matvec, matmul Q4_0/Q8_0/Q6_K loads=u16 vs loads=u32   0   the 16-bit and the 32-bit weight
//                                       loads (pipeline_cache::loads16), both forced where the
//                                       device has 16/8-bit storage: bit for bit the same
//   quantize_q8, matvec_dot      1e-6   against activations rounded to int8 as the kernel does:
//                                       exact but for a rounding tie after the device's 1/d or
//                                       exp (one level of one element); run where the device has
//                                       integer dot products (lavapipe has). K-quants: the
//                                       same (integer sums per 32-element sub-block; the
//                                       Q4_K/Q5_K min term through the activation block sums).
//                                       quantize_q8 with the norm: the same, on n >= 288 elements
//   matvec_dot_rope              1e-6   matvec_dot's; the caches bit for bit as matvec_rope's
// Measured on lavapipe: at most 3.5e-12 (matvec on K-quant blocks; matvec_dot on K-quants 2.4e-11),
// most cases 1e-13 or exactly 0, so every case is 280x or more under its threshold, while a real
// bug (a wrong scale, index or block layout) gives 1e-4 or far more (matvec_dot: a Q4_K/Q5_K min
// off by one 8.8e-5 at the least, a Q6_K half-block scale swapped 1.1e-2, a Q5_K fifth bit from
// the wrong plane 2.1).
#include "tools/op_check/op_check.h"

#include <fmt/format.h>

#include "runtime/error.h"

#ifdef TANDEM_HAVE_VULKAN  // the build has a Vulkan backend

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "cpu/ops_ref.h"
#include "runtime/blocks.h"
#include "runtime/fp16.h"
#include "shaders/push_constants.h"
#include "vulkan/check.h"
#include "vulkan/context.h"
#include "vulkan/host_buffer.h"
#include "vulkan/matmul_variant.h"
#include "vulkan/memory.h"
#include "vulkan/op_table.h"
#include "vulkan/ops.h"
#include "vulkan/pipeline.h"

namespace tandem::vk {
namespace {

std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

class checker {
 public:
  checker(context& ctx, const op_check_options& opt) : ctx_(ctx), opt_(opt) {}

  // The ops of the table (all, or opt.op), each in the variants it has: reductions in their
  // subgroup and shared-memory variants, the rest once.
  std::vector<op_check> run() {
    bool found = opt_.op.empty();
    for (int i = 0; i < n_ops; ++i) found |= opt_.op == op_names[i];
    if (!found) throw error(fmt::format("op_check: '{}' is no op of vulkan/op_table.h", opt_.op));
    std::vector<bool> variants{false};
    if (ctx_.caps().subgroup_arithmetic) variants.insert(variants.begin(), true);
    for (int i = 0; i < n_ops; ++i) {
      const std::string name = op_names[i];
      if (!opt_.op.empty() && opt_.op != name) continue;
      const op_cases* c = cases_of(name);
      if (!c)
        throw error(fmt::format("op_check: the op table's {} has no cases in "
                                "tools/op_check/op_check.cpp; add them",
                                name));
      for (bool sg : variants) {
        runner r(ctx_, sg);
        const std::string v = r.subgroups() ? "subgroup" : "shared";
        (this->*c->run)(r, c->reduction || c->runs_per_variant ? v : "-", sg == variants.front());
        if (!c->reduction && !c->runs_per_variant) break;
      }
    }
    return std::move(out_);
  }

 private:
  // The cases of one op of the table.
  struct op_cases {
    const char* op;
    void (checker::*run)(runner&, const std::string& variant, bool first_variant);
    bool reduction;         // has a subgroup variant: its cases run in both variants
    bool runs_per_variant;  // runs in every variant though not a reduction (see matmul)
  };
  static const op_cases* cases_of(const std::string& op) {
    static const op_cases all[] = {
        {"rms_norm", &checker::rms_norm, true, false},
        {"rope", &checker::rope, false, false},
        {"swiglu", &checker::swiglu, false, false},
        {"add", &checker::add, false, false},
        {"kv_store", &checker::kv_store, false, false},
        {"attention", &checker::attention, true, false},
        {"matvec", &checker::matvec, true, false},
        {"matmul", &checker::matmul, false, true},
        {"flash_attn", &checker::flash_attn, false, false},
        {"flash_reduce", &checker::flash_reduce, false, false},
        {"rotary_kv", &checker::rotary_kv, false, false},
        {"quantize_q8", &checker::quantize_q8, false, false},
        {"matvec_dot", &checker::matvec_dot, true, false},
        {"matvec_rope", &checker::matvec_rope, true, false},
        {"matvec_dot_rope", &checker::matvec_dot_rope, true, false},
    };
    for (const auto& c : all)
      if (op == c.op) return &c;
    return nullptr;
  }

  static constexpr dtype k_types[] = {dtype::f32,  dtype::f16,  dtype::q8_0, dtype::q4_0,
                                      dtype::q4_k, dtype::q5_k, dtype::q6_k};

  bool wanted(const std::string& op, const std::string& type) const {
    if (opt_.filter.empty()) return true;
    return op.find(opt_.filter) != std::string::npos ||
           (op + "_" + type).find(opt_.filter) != std::string::npos;
  }
  uint32_t seed(uint32_t k) const { return opt_.seed * 7919u + k; }

  // The expected F16 K/V caches against the device's: whether every bit matches, and both as
  // floats (k and v interleaved) for record().
  static bool compare_caches(const std::vector<uint16_t>& kc, const std::vector<uint16_t>& vc,
                             const host_buffer& bkc, const host_buffer& bvc,
                             std::vector<float>* cref, std::vector<float>* cgot) {
    for (size_t i = 0; i < kc.size(); ++i) {
      cref->push_back(fp16_to_fp32(kc[i]));
      cgot->push_back(fp16_to_fp32(bkc.halves()[i]));
      cref->push_back(fp16_to_fp32(vc[i]));
      cgot->push_back(fp16_to_fp32(bvc.halves()[i]));
    }
    return std::equal(kc.begin(), kc.end(), bkc.halves()) &&
           std::equal(vc.begin(), vc.end(), bvc.halves());
  }

  void record(std::string op, std::string type, std::string variant, std::string shape,
              const std::vector<float>& ref, const std::vector<float>& got, double threshold) {
    double num = 0, den = 0, max_abs = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      const double d = static_cast<double>(ref[i]) - static_cast<double>(got[i]);
      num += d * d;
      den += static_cast<double>(ref[i]) * ref[i];
      max_abs = std::max(max_abs, std::fabs(d));
    }
    op_check c;
    c.op = std::move(op);
    c.type = std::move(type);
    c.variant = std::move(variant);
    c.shape = std::move(shape);
    c.nmse = den > 0 ? num / den : num;
    if (!std::isfinite(c.nmse)) c.nmse = INFINITY;
    c.max_abs_err = max_abs;
    c.threshold = threshold;
    c.pass = c.nmse <= threshold && ref.size() == got.size();
    out_.push_back(std::move(c));
  }

  void rms_norm(runner& run, const std::string& v, bool) {
    if (!wanted("rms_norm", "f32")) return;
    struct shape {
      int n, rows, row0, pad;
    };
    for (const shape s : {shape{1, 1, 0, 0}, shape{7, 3, 0, 0}, shape{100, 2, 1, 3},
                          shape{257, 5, 0, 0}, shape{1000, 4, 2, 1}, shape{4096, 1, 0, 0},
                          shape{4097, 2, 0, 0}}) {
      const int ldx = s.n + s.pad;
      const auto x = random_floats(static_cast<size_t>(ldx) * (s.rows + s.row0), seed(1), 3.0f);
      const auto w = random_floats(static_cast<size_t>(s.n), seed(2));
      host_buffer bx(ctx_, x.size() * 4), bw(ctx_, w.size() * 4),
          by(ctx_, static_cast<size_t>(s.n) * s.rows * 4);
      bx.set(x);
      bw.set(w);
      run.run([&](recorder& r) {
        ops::rms_norm(r, bx, bw, by, s.n, s.rows, s.row0, ldx, s.n, 1e-5f);
      });
      std::vector<float> ref(static_cast<size_t>(s.n) * s.rows);
      for (int t = 0; t < s.rows; ++t)
        cpu::ref::rms_norm(&ref[static_cast<size_t>(t) * s.n],
                          &x[static_cast<size_t>(t + s.row0) * ldx], w.data(), s.n, 1e-5f);
      record("rms_norm", "f32", v,
             fmt::format("n={} rows={} row0={} ldx={}", s.n, s.rows, s.row0, ldx), ref,
             by.floats(ref.size()), 1e-10);
    }
  }

  void rope(runner& run, const std::string&, bool) {
    if (!wanted("rope", "f32")) return;
    struct shape {
      int n_tok, heads, head_dim, n_rot, pos0;
      float base, scale;
    };
    for (rope_style style : {rope_style::adjacent, rope_style::neox}) {
      for (const shape s :
           {shape{1, 1, 2, 2, 0, 10000.f, 1.f}, shape{5, 3, 10, 10, 17, 10000.f, 1.f},
            shape{7, 4, 64, 32, 100, 500000.f, 0.25f}, shape{3, 5, 128, 128, 1000, 10000.f, 1.f},
            shape{3, 5, 130, 130, 1000, 10000.f, 1.f}}) {
        const int ld = s.heads * s.head_dim;
        auto x = random_floats(static_cast<size_t>(ld) * s.n_tok, seed(3));
        const auto table = rope_table(s.pos0 + s.n_tok, s.n_rot, s.base, s.scale);
        host_buffer bx(ctx_, x.size() * 4), bt(ctx_, std::max<size_t>(table.size() * 4, 16));
        bx.set(x);
        bt.set(table);
        run.run([&](recorder& r) {
          ops::rope(r, bx, bt, s.n_tok, s.heads, s.head_dim, s.n_rot, s.pos0, ld, style);
        });
        for (int t = 0; t < s.n_tok; ++t)
          cpu::ref::rope(&x[static_cast<size_t>(t) * ld], s.heads, s.head_dim, s.n_rot,
                         s.pos0 + t, s.base, s.scale, style);
        record("rope", "f32", "-",
               fmt::format("{} n_tok={} heads={} head_dim={} n_rot={} pos0={}",
                           style == rope_style::neox ? "neox" : "adjacent", s.n_tok, s.heads,
                           s.head_dim, s.n_rot, s.pos0),
               x, bx.floats(x.size()), 1e-12);
      }
    }
  }

  void swiglu(runner& run, const std::string&, bool) {
    if (!wanted("swiglu", "f32")) return;
    for (int n : {1, 1000, 12345}) {
      const auto g = random_floats(static_cast<size_t>(n), seed(4), 4.0f);
      const auto u = random_floats(static_cast<size_t>(n), seed(5));
      host_buffer bg(ctx_, g.size() * 4), bu(ctx_, u.size() * 4);
      bg.set(g);
      bu.set(u);
      run.run([&](recorder& r) { ops::swiglu(r, bg, bu, bg, n); });  // in place, as the backend
      std::vector<float> ref(g.size());
      cpu::ref::swiglu(ref.data(), g.data(), u.data(), n);
      record("swiglu", "f32", "-", fmt::format("n={}", n), ref, bg.floats(ref.size()), 1e-10);
    }
  }

  void add(runner& run, const std::string&, bool) {
    if (!wanted("add", "f32")) return;
    for (const auto& [n, nb] : {std::pair{999, 999}, std::pair{7 * 13, 13}, std::pair{1, 1}}) {
      const auto y = random_floats(static_cast<size_t>(n), seed(6));
      const auto b = random_floats(static_cast<size_t>(nb), seed(7));
      host_buffer by(ctx_, y.size() * 4), bb(ctx_, b.size() * 4);
      by.set(y);
      bb.set(b);
      run.run([&](recorder& r) { ops::add(r, by, bb, n, nb); });
      std::vector<float> ref(y);
      for (int i = 0; i < n; ++i) ref[static_cast<size_t>(i)] += b[static_cast<size_t>(i % nb)];
      record("add", "f32", "-", fmt::format("n={} nb={}", n, nb), ref, by.floats(ref.size()), 0);
    }
  }

  // The whole cache is compared (as floats): the rows written and their neighbours, which must
  // keep their contents.
  void kv_store(runner& run, const std::string&, bool) {
    if (!wanted("kv_store", "f16")) return;
    struct shape {
      int n, n_tok, pos0;
    };
    for (const shape s : {shape{7, 1, 0}, shape{7, 4, 3}, shape{16, 5, 2}, shape{9, 3, 5},
                          shape{1, 1, 1}, shape{257, 3, 4}}) {
      const int ldx = s.n + 2;
      auto x = random_floats(static_cast<size_t>(ldx) * s.n_tok, seed(8), 2.0f);
      // Values that exercise the F16 rounding: subnormal, halfway, overflow, negative zero.
      const float special[] = {3e-6f, -1e-7f, 1.00048828125f, 70000.f, -0.0f, 65519.f, 6.1e-5f};
      for (size_t i = 0; i < std::size(special) && i < x.size(); ++i) x[i] = special[i];
      const int n_pos = s.pos0 + s.n_tok + 2;
      std::vector<uint16_t> cache(static_cast<size_t>(n_pos) * s.n, 0x3abc);
      host_buffer bx(ctx_, x.size() * 4), bc(ctx_, cache.size() * 2);
      bx.set(x);
      bc.set(cache);
      run.run([&](recorder& r) { ops::kv_store(r, bx, bc, s.n, s.n_tok, s.pos0, ldx); });
      for (int t = 0; t < s.n_tok; ++t)
        for (int i = 0; i < s.n; ++i)
          cache[static_cast<size_t>(s.pos0 + t) * s.n + i] =
              fp32_to_fp16(x[static_cast<size_t>(t) * ldx + i]);
      std::vector<float> ref(cache.size()), got(cache.size());
      const std::vector<uint16_t> bits(bc.halves(), bc.halves() + cache.size());
      const bool same_bits = bits == cache;  // -0 against +0 is a float match, not a bit match
      for (size_t i = 0; i < cache.size(); ++i) {
        ref[i] = fp16_to_fp32(cache[i]);
        got[i] = fp16_to_fp32(bits[i]);
        // inf == inf is a match (70000 overflows); the NMSE of two equal infinities is not 0.
        if (std::isinf(ref[i]) && ref[i] == got[i]) ref[i] = got[i] = 65504.f;
      }
      record("kv_store", "f16", "-",
             fmt::format("n={} n_tok={} pos0={} ldx={} bits{}", s.n, s.n_tok, s.pos0, ldx,
                         same_bits ? "=" : " differ"),
             ref, got, 0);
      if (!same_bits) out_.back().pass = false;
    }
  }

  void attention(runner& run, const std::string& v, bool) {
    if (!wanted("attention", "f32")) return;
    struct shape {
      int n_head, n_head_kv, head_dim, n_tok, pos0;
    };
    // GQA ratios 1, 2, 4, 8; odd head_dims; decode (n_tok 1) and prompt batches.
    const shape shapes[] = {
        {4, 4, 8, 1, 0},    {4, 2, 8, 1, 200},  {8, 2, 64, 9, 0},  {8, 1, 64, 9, 130},
        {6, 3, 130, 3, 40}, {4, 4, 256, 2, 127}, {2, 1, 2, 37, 0}, {16, 2, 32, 1, 300},
        {12, 3, 6, 5, 7},   {32, 4, 128, 1, 63},
    };
    for (const shape s : shapes) {
      const int ldq = s.n_head * s.head_dim, kvs = s.n_head_kv * s.head_dim;
      const int n_pos = s.pos0 + s.n_tok;
      const auto q = random_floats(static_cast<size_t>(ldq) * s.n_tok, seed(9));
      const auto kf = random_floats(static_cast<size_t>(kvs) * n_pos, seed(10));
      const auto vf = random_floats(static_cast<size_t>(kvs) * n_pos, seed(11));
      std::vector<uint16_t> k(kf.size()), vv(vf.size());
      for (size_t i = 0; i < kf.size(); ++i) {
        k[i] = fp32_to_fp16(kf[i]);
        vv[i] = fp32_to_fp16(vf[i]);
      }
      host_buffer bq(ctx_, q.size() * 4), bk(ctx_, k.size() * 2), bv(ctx_, vv.size() * 2),
          bo(ctx_, q.size() * 4);
      bq.set(q);
      bk.set(k);
      bv.set(vv);
      run.run([&](recorder& r) {
        ops::attention(r, bq, bk, bv, bo, s.n_tok, s.pos0, s.n_head, s.n_head_kv, s.head_dim, {},
                       {attention_variant::kind::basic, 0});
      });
      std::vector<float> ref(q.size());
      cpu::ref::attention(ref.data(), q.data(), k.data(), vv.data(), s.n_tok, s.pos0, s.n_head,
                          s.n_head_kv, s.head_dim, 0, s.n_head);
      record("attention", "f32", v,
             fmt::format("heads={}/{} (gqa {}) head_dim={} n_tok={} pos0={}", s.n_head,
                         s.n_head_kv, s.n_head / s.n_head_kv, s.head_dim, s.n_tok, s.pos0),
             ref, bo.floats(ref.size()), 1e-10);
    }
  }

  // The flash kernel (shaders/flash_attn.comp): head blocks and token tiles on odd shapes. GQA
  // 1, 4, 8 and 32 (more query heads than a workgroup's rows), head_dim 32..256 and 48, 80, 6;
  // decode and prompts of up to 70 tokens after a filled cache (pos0 > 0).
  struct flash_shape {
    int n_head, n_head_kv, head_dim, n_tok, pos0;
  };
  static constexpr flash_shape k_flash_shapes[] = {
      {4, 4, 32, 1, 100},  {8, 2, 64, 1, 257},  {32, 4, 128, 1, 300}, {8, 1, 256, 1, 77},
      {4, 1, 48, 1, 130},  {2, 2, 80, 1, 45},   {8, 8, 64, 1, 0},     {32, 1, 128, 2, 50},
      {4, 1, 64, 70, 13},  {8, 1, 32, 33, 5},   {4, 4, 48, 17, 40},   {16, 2, 128, 9, 31},
      {8, 1, 256, 5, 3},   {8, 2, 80, 3, 29},   {4, 4, 6, 11, 2},     {8, 8, 32, 1, 1000},
  };

  // One split (the output written by flash_attn itself), and the automatic plan where it keeps
  // one split.
  void flash_attn(runner& run, const std::string&, bool) {
    if (!wanted("flash_attn", "f32")) return;
    for (const flash_shape& s : k_flash_shapes) {
      attention_case(run, "flash_attn", "split1", s, {attention_variant::kind::flash, 1});
      const auto pl = plan_attention(ctx_, s.n_tok, s.pos0, s.n_head, s.n_head_kv, s.head_dim,
                                     scratch_bytes(s, 64));
      if (pl.n_split == 1) attention_case(run, "flash_attn", "auto", s, {});
    }
  }

  // Several splits (partials, then flash_reduce): counts that do not divide the context, more
  // splits than tiles, and the automatic plan where it splits.
  void flash_reduce(runner& run, const std::string&, bool) {
    if (!wanted("flash_reduce", "f32")) return;
    for (const flash_shape& s : k_flash_shapes) {
      for (int n : {2, 3, 7}) {  // (unless the context is too short to give n splits)
        const attention_variant av{attention_variant::kind::flash, n};
        if (plan_attention(ctx_, s.n_tok, s.pos0, s.n_head, s.n_head_kv, s.head_dim,
                           scratch_bytes(s, 64), av)
                .n_split != static_cast<uint32_t>(n))
          continue;
        attention_case(run, "flash_reduce", fmt::format("split{}", n), s,
                       {attention_variant::kind::flash, n});
      }
      const auto pl = plan_attention(ctx_, s.n_tok, s.pos0, s.n_head, s.n_head_kv, s.head_dim,
                                     scratch_bytes(s, 64));
      if (pl.n_split > 1) attention_case(run, "flash_reduce", "auto", s, {});
    }
  }

  static uint64_t scratch_bytes(const flash_shape& s, int n_split) {
    return static_cast<uint64_t>(n_split) * s.n_tok * s.n_head * (s.head_dim + 2) * 4;
  }

  void attention_case(runner& run, const char* op, const std::string& variant,
                      const flash_shape& s, attention_variant av) {
    const int ldq = s.n_head * s.head_dim, kvs = s.n_head_kv * s.head_dim;
    const int n_pos = s.pos0 + s.n_tok;
    const auto q = random_floats(static_cast<size_t>(ldq) * s.n_tok, seed(20));
    const auto kf = random_floats(static_cast<size_t>(kvs) * n_pos, seed(21));
    const auto vf = random_floats(static_cast<size_t>(kvs) * n_pos, seed(22));
    std::vector<uint16_t> k(kf.size()), vv(vf.size());
    for (size_t i = 0; i < kf.size(); ++i) {
      k[i] = fp32_to_fp16(kf[i]);
      vv[i] = fp32_to_fp16(vf[i]);
    }
    const uint64_t sb = scratch_bytes(s, 64);
    host_buffer bq(ctx_, q.size() * 4), bk(ctx_, k.size() * 2), bv(ctx_, vv.size() * 2),
        bo(ctx_, q.size() * 4), bs(ctx_, sb);
    bq.set(q);
    bk.set(k);
    bv.set(vv);
    const auto pl =
        plan_attention(ctx_, s.n_tok, s.pos0, s.n_head, s.n_head_kv, s.head_dim, sb, av);
    run.run([&](recorder& r) {
      ops::attention(r, bq, bk, bv, bo, s.n_tok, s.pos0, s.n_head, s.n_head_kv, s.head_dim, bs,
                     av);
    });
    std::vector<float> ref(q.size());
    cpu::ref::attention(ref.data(), q.data(), k.data(), vv.data(), s.n_tok, s.pos0, s.n_head,
                        s.n_head_kv, s.head_dim, 0, s.n_head);
    record(op, "f32", variant,
           fmt::format("heads={}/{} head_dim={} n_tok={} pos0={} splits={} rows={}x{} kt={}", s.n_head,
                       s.n_head_kv, s.head_dim, s.n_tok, s.pos0, pl.n_split, pl.heads_per_wg,
                       pl.toks_per_wg, pl.kt),
           ref, bo.floats(ref.size()), 1e-10);
  }

  // RoPE fused with the KV store: q and k against the CPU rope (as the rope case), the caches bit
  // for bit: k rows the F16 of the roped k the kernel wrote back, v rows the F16 of v, the
  // neighbouring positions untouched.
  void rotary_kv(runner& run, const std::string&, bool) {
    if (!wanted("rotary_kv", "f32")) return;
    struct shape {
      int n_tok, n_head, n_head_kv, head_dim, n_rot, pos0;
    };
    for (rope_style style : {rope_style::adjacent, rope_style::neox}) {
      for (const shape s : {shape{1, 4, 4, 8, 8, 0}, shape{5, 8, 2, 64, 32, 17},
                            shape{3, 4, 1, 128, 128, 100}, shape{7, 6, 3, 130, 130, 1000},
                            shape{70, 4, 1, 48, 48, 5}, shape{1, 8, 8, 256, 256, 3},
                            shape{2, 8, 1, 80, 64, 40}}) {
        const int n_q = s.n_head * s.head_dim, n_kv = s.n_head_kv * s.head_dim;
        const int ldq = n_q + 3, ldkv = n_kv + 1;
        auto q = random_floats(static_cast<size_t>(ldq) * s.n_tok, seed(23));
        auto k = random_floats(static_cast<size_t>(ldkv) * s.n_tok, seed(24), 2.0f);
        const auto v = random_floats(static_cast<size_t>(ldkv) * s.n_tok, seed(25), 2.0f);
        const auto table = rope_table(s.pos0 + s.n_tok, s.n_rot, 10000.f, 1.f);
        const int n_pos = s.pos0 + s.n_tok + 2;
        std::vector<uint16_t> kc(static_cast<size_t>(n_pos) * n_kv, 0x3abc), vc(kc);
        host_buffer bq(ctx_, q.size() * 4), bk(ctx_, k.size() * 4), bv(ctx_, v.size() * 4),
            bt(ctx_, table.size() * 4), bkc(ctx_, kc.size() * 2), bvc(ctx_, vc.size() * 2);
        bq.set(q);
        bk.set(k);
        bv.set(v);
        bt.set(table);
        bkc.set(kc);
        bvc.set(vc);
        run.run([&](recorder& r) {
          ops::rotary_kv(r, bq, bk, bv, bt, bkc, bvc, s.n_tok, s.n_head, s.n_head_kv, s.head_dim,
                         s.n_rot, s.pos0, ldq, ldkv, style);
        });
        const auto gq = bq.floats(q.size()), gk = bk.floats(k.size());
        for (int t = 0; t < s.n_tok; ++t) {
          cpu::ref::rope(&q[static_cast<size_t>(t) * ldq], s.n_head, s.head_dim, s.n_rot,
                         s.pos0 + t, 10000.f, 1.f, style);
          cpu::ref::rope(&k[static_cast<size_t>(t) * ldkv], s.n_head_kv, s.head_dim, s.n_rot,
                         s.pos0 + t, 10000.f, 1.f, style);
          for (int i = 0; i < n_kv; ++i) {
            const size_t c = static_cast<size_t>(s.pos0 + t) * n_kv + i;
            kc[c] = fp32_to_fp16(gk[static_cast<size_t>(t) * ldkv + i]);
            vc[c] = fp32_to_fp16(v[static_cast<size_t>(t) * ldkv + i]);
          }
        }
        std::vector<float> ref(q), got(gq);
        ref.insert(ref.end(), k.begin(), k.end());
        got.insert(got.end(), gk.begin(), gk.end());
        const std::string name =
            fmt::format("{} n_tok={} heads={}/{} head_dim={} n_rot={} pos0={}",
                        style == rope_style::neox ? "neox" : "adjacent", s.n_tok, s.n_head,
                        s.n_head_kv, s.head_dim, s.n_rot, s.pos0);
        record("rotary_kv", "f32", "-", name + " q,k", ref, got, 1e-12);
        std::vector<float> cref, cgot;
        const bool same = compare_caches(kc, vc, bkc, bvc, &cref, &cgot);
        record("rotary_kv", "f16", "-", name + (same ? " cache bits=" : " cache bits differ"),
               cref, cgot, 0);
        if (!same) out_.back().pass = false;
      }
    }
  }

  // The normed Q/K/V product with the biases, RoPE and the KV-cache append in its epilogue
  // (ops::matmul_qkv_rope, the op matvec_rope) on every type, both rope styles, odd shapes
  // (head_dim 6..256, n_rot < head_dim, GQA, positions > 0, with and without biases), against
  // rms_norm, matmul, the bias and cpu::ref::rope; the caches bit for bit the F16 of the kernel's
  // own k and v (write_kv; without it, k and v stay untouched and the caches match the reference's
  // F16).
  void matvec_rope(runner& run, const std::string& v, bool) {
    struct shape {
      int n_head, n_head_kv, head_dim, n_rot, pos0;
      bool bias, write_kv;
    };
    variant_guard guard("matvec=fused,rope_kv=matvec");
    for (dtype t : k_types) {
      if (!wanted("matvec_rope", std::string(dtype_name(t)))) continue;
      const int64_t cols = t == dtype::f32 || t == dtype::f16     ? 100
                           : t == dtype::q8_0 || t == dtype::q4_0 ? 96
                                                                  : 256;
      // Every shape on F32 and Q4_0 (the epilogue does not depend on the type), two on the rest.
      const bool all = t == dtype::f32 || t == dtype::q4_0;
      for (rope_style style : {rope_style::adjacent, rope_style::neox})
        for (const shape sh :
             {shape{2, 1, 20, 12, 7, true, true}, shape{1, 1, 6, 6, 0, false, true},
              shape{4, 2, 8, 8, 3, true, false}, shape{3, 1, 12, 8, 17, false, false},
              shape{2, 2, 64, 32, 100, true, true}, shape{4, 1, 32, 32, 5, false, true},
              shape{1, 1, 256, 256, 1000, true, false}}) {
          rope_case(run, v, t, cols, style, sh.n_head, sh.n_head_kv, sh.head_dim, sh.n_rot, sh.pos0,
                    sh.bias, sh.write_kv);
          if (!all && sh.head_dim != 20) break;
        }
    }
  }

  // The same on the integer-dot kernel (forced: matvec=dot; ops::matmul_qkv_rope quantizes the
  // normed activations, quantize_q8 with NORM, then the op matvec_dot_rope) for every type it
  // has: the reference's h rounded as the kernel rounds it (q8_round), threshold 1e-6 as
  // matvec_dot's (a rounding tie of one element; the epilogue itself is matvec_rope's, 1e-9).
  void matvec_dot_rope(runner& run, const std::string& v, bool) {
    if (!ctx_.caps().integer_dot) return;
    struct shape {
      int n_head, n_head_kv, head_dim, n_rot, pos0;
      bool bias, write_kv;
    };
    variant_guard guard("matvec=dot,rope_kv=matvec");
    for (dtype t : {dtype::q8_0, dtype::q4_0, dtype::q4_k, dtype::q5_k, dtype::q6_k}) {
      if (!wanted("matvec_dot_rope", std::string(dtype_name(t)))) continue;
      const int64_t cols = t == dtype::q8_0 || t == dtype::q4_0 ? 96 : 256;
      const bool all = t == dtype::q4_0 || t == dtype::q4_k;  // the rest: the first shape
      for (rope_style style : {rope_style::adjacent, rope_style::neox})
        for (const shape sh :
             {shape{2, 1, 20, 12, 7, true, true}, shape{4, 2, 8, 8, 3, true, false},
              shape{3, 1, 12, 8, 17, false, false}, shape{2, 2, 64, 32, 100, true, true},
              shape{1, 1, 256, 256, 1000, false, true}}) {
          rope_case(run, v, t, cols, style, sh.n_head, sh.n_head_kv, sh.head_dim, sh.n_rot, sh.pos0,
                    sh.bias, sh.write_kv, true);
          if (!all) break;
        }
    }
  }

  void rope_case(runner& run, const std::string& v, dtype t, int64_t cols, rope_style style,
                 int n_head, int n_head_kv, int hd, int n_rot, int pos0, bool bias, bool write_kv,
                 bool dot = false) {
    const std::string op = dot ? "matvec_dot_rope" : "matvec_rope";
    const int n_q = n_head * hd, n_kv = n_head_kv * hd, c = static_cast<int>(cols);
    const uint32_t s0 = seed(80 + static_cast<uint32_t>(n_q + 3 * n_kv + n_rot + pos0));
    arena a(ctx_, memory_kind::device, 8 << 20);
    std::vector<uint8_t> qw[3];
    const int64_t rows[3] = {n_q, n_kv, n_kv};
    std::vector<device_weight> w;
    for (int i = 0; i < 3; ++i) w.push_back(random_weight(a, t, cols, rows[i], s0 + i, &qw[i]));
    const auto x = random_floats(static_cast<size_t>(cols), s0 + 10, 3.0f);
    const auto nw = random_floats(static_cast<size_t>(cols), s0 + 11);
    std::vector<float> b[3];
    for (int i = 0; i < 3; ++i) b[i] = random_floats(static_cast<size_t>(rows[i]), s0 + 12 + i);
    const auto table = rope_table(pos0 + 1, n_rot, 10000.f, 1.f);
    const int n_pos = pos0 + 3;
    std::vector<uint16_t> kc(static_cast<size_t>(n_pos) * n_kv, 0x3abc), vc(kc);
    const std::vector<float> sentinel(static_cast<size_t>(n_q), 7.0f);
    host_buffer bx(ctx_, x.size() * 4), bn(ctx_, nw.size() * 4), bh(ctx_, x.size() * 4),
        bt(ctx_, table.size() * 4), bkc(ctx_, kc.size() * 2), bvc(ctx_, vc.size() * 2);
    std::vector<std::unique_ptr<host_buffer>> y, bb;
    for (int i = 0; i < 3; ++i) {
      y.push_back(std::make_unique<host_buffer>(ctx_, static_cast<size_t>(rows[i]) * 4));
      y.back()->set(std::vector<float>(sentinel.begin(), sentinel.begin() + rows[i]));
      bb.push_back(std::make_unique<host_buffer>(ctx_, static_cast<size_t>(rows[i]) * 4));
      bb.back()->set(b[i]);
    }
    bx.set(x);
    bn.set(nw);
    bt.set(table);
    bkc.set(kc);
    bvc.set(vc);
    const ops::matmul_out oq{&w[0], *y[0], n_q}, ok{&w[1], *y[1], n_kv}, ov{&w[2], *y[2], n_kv};
    // Odd positions read the position from a step buffer as a replayed layer does (STEP), with
    // a wrong one in the push constants.
    const bool from_step = pos0 % 2 == 1;
    host_buffer bstep(ctx_, sizeof(step_params));
    step_params sp{};
    sp.pos0 = static_cast<uint32_t>(pos0);
    bstep.set(std::vector<step_params>{sp});
    ops::rope_kv_in rk{bt,        bkc, bvc,   {},   {},    {},      n_head,
                       n_head_kv, hd,  n_rot, pos0, style, write_kv, {}};
    if (from_step) {
      rk.pos0 = pos0 + 5;
      rk.step = bstep;
    }
    if (bias) {
      rk.bq = *bb[0];
      rk.bk = *bb[1];
      rk.bv = *bb[2];
    }
    const std::string name =
        fmt::format("qkv+rope {} cols={} heads={}/{} head_dim={} n_rot={} pos0={}{}{}",
                    style == rope_style::neox ? "neox" : "adjacent", cols, n_head, n_head_kv, hd,
                    n_rot, pos0, bias ? " +bias" : "", write_kv ? " +kv f32" : "") +
        (from_step ? " +step" : "");
    bool fuses = false;
    host_buffer bq(ctx_, quantized_bytes(1, cols));
    const buffer_range xq = dot ? static_cast<buffer_range>(bq) : buffer_range{};
    run.run([&](recorder& r) {
      fuses = ops::qkv_rope_fuses(r, oq, ok, ov, 1, rk, xq);
      if (fuses) ops::matmul_qkv_rope(r, oq, ok, ov, bx, {bn, 1e-5f, bh, false}, rk, 1, c, xq);
    });
    // NEOX needs head_dim and n_rot multiples of 4 (the rest falls back, in forward_layer).
    const bool should = style != rope_style::neox || (hd % 4 == 0 && n_rot % 4 == 0);
    if (fuses != should) {
      record(op, std::string(dtype_name(t)), v, name + " (fuses?)", {1}, {0}, 0);
      return;
    }
    if (!fuses) return;
    std::vector<float> h(static_cast<size_t>(cols)), ref[3];
    cpu::ref::rms_norm(h.data(), x.data(), nw.data(), c, 1e-5f);
    if (dot) h = q8_round(h);
    for (int i = 0; i < 3; ++i) {
      ref[i].assign(static_cast<size_t>(rows[i]), 0.0f);
      cpu::ref::matmul(t, qw[i].data(), cols, rows[i], h.data(), 1, ref[i].data(), 0, rows[i]);
      if (bias)
        for (size_t j = 0; j < ref[i].size(); ++j) ref[i][j] += b[i][j];
    }
    cpu::ref::rope(ref[0].data(), n_head, hd, n_rot, pos0, 10000.f, 1.f, style);
    cpu::ref::rope(ref[1].data(), n_head_kv, hd, n_rot, pos0, 10000.f, 1.f, style);
    std::vector<float> g[3];
    for (int i = 0; i < 3; ++i) g[i] = y[i]->floats(static_cast<size_t>(rows[i]));
    std::vector<float> r_all = ref[0], g_all = g[0];
    if (write_kv)
      for (int i = 1; i < 3; ++i) {
        r_all.insert(r_all.end(), ref[i].begin(), ref[i].end());
        g_all.insert(g_all.end(), g[i].begin(), g[i].end());
      }
    record(op, std::string(dtype_name(t)), v, name + " q,k,v", r_all, g_all, dot ? 1e-6 : 1e-9);
    if (!write_kv)  // k and v not written as F32
      for (int i = 1; i < 3; ++i)
        for (float e : g[i])
          if (e != 7.0f) out_.back().pass = false;
    // The caches: the F16 of the kernel's own k and v (write_kv), else of the reference's.
    for (int i = 0; i < n_kv; ++i) {
      const size_t cpos = static_cast<size_t>(pos0) * n_kv + i;
      kc[cpos] = fp32_to_fp16((write_kv ? g[1] : ref[1])[static_cast<size_t>(i)]);
      vc[cpos] = fp32_to_fp16((write_kv ? g[2] : ref[2])[static_cast<size_t>(i)]);
    }
    std::vector<float> cref, cgot;
    const bool same = compare_caches(kc, vc, bkc, bvc, &cref, &cgot);
    record(op, "f16", v, name + (same ? " cache bits=" : " cache bits differ"), cref,
           cgot, write_kv ? 0.0 : 1e-6);
    if (write_kv && !same) out_.back().pass = false;
  }

  struct mcase {
    int64_t rows;
    int n_tok;
    bool acc;
    uint64_t piece_rows;  // 0: one piece; else the weight is split into pieces of that many rows
    matmul_kernel kind;
  };

  // The vector kernel (every variant).
  void matvec(runner& run, const std::string& v, bool) {
    const auto vec = matmul_kernel::vector;
    const std::vector<mcase> cases = {{1, 1, false, 0, vec},  {67, 1, false, 0, vec},
                                      {130, 3, true, 0, vec}, {67, 4, false, 0, vec},
                                      {67, 5, false, 0, vec}, {67, 2, true, 20, vec}};
    for (dtype t : k_types) matrix(run, "matvec", v, t, cases);
    for (dtype t : k_types)
      for (const char* l : loads_of(t)) {  // the fused dispatches in each weight-load variant
        const variant_guard guard(l);
        fused(run, *l ? v + " " + l : v, t);
      }
  }

  // The weight-load variants to force for type t (pipeline_cache::loads16): loads=u32 and
  // loads=u16 where the device has both for t, else "" (the one there is).
  std::vector<const char*> loads_of(dtype t) const {
    if (ctx_.caps().storage16 && (t == dtype::q4_0 || t == dtype::q8_0 || t == dtype::q6_k))
      return {"loads=u32", "loads=u16"};
    return {""};
  }

  // The fused dispatches of the vector kernel: Q/K/V- and gate/up-like groups in one dispatch
  // (ops::matmul_multi) and the down product reading silu(g) * u (ops::matmul_swiglu); each also
  // through its fallback (the tiled kernel; a group of two types; a weight in pieces).
  void fused(runner& run, const std::string& v, dtype t) {
    const std::string type(dtype_name(t));
    if (!wanted("matvec", type)) return;
    variant_guard guard("matvec=fused");  // whatever TANDEM_VK_VARIANT says outside
    const auto vec = matmul_kernel::vector, til = matmul_kernel::tiled;
    const int64_t cols = t == dtype::f32 || t == dtype::f16                ? 100
                         : t == dtype::q8_0 || t == dtype::q4_0 ? 96
                                                                          : 256;
    const dtype other = t == dtype::f32 ? dtype::f16 : dtype::f32;
    multi(run, v, t, t, cols, {67, 20, 20}, 1, vec);
    multi(run, v, t, t, cols, {130, 130}, 3, vec);
    multi(run, v, t, t, 2 * cols, {2100, 300, 7}, 1, vec);  // 32 lanes per row
    multi(run, v, t, other, cols, {67, 20, 20}, 2, vec);     // two types: one dispatch each
    multi(run, v, t, t, cols, {67, 20}, 6, til);
    // The rms norm fused into the product (ops::matmul_multi_norm): h not written, or written
    // (the capture's path, checked too), and its fallbacks (two types, tiled; rms_norm first).
    multi(run, v, t, t, cols, {67, 20, 20}, 1, vec, norm_mode::fused);
    multi(run, v, t, t, cols, {131, 5}, 4, vec, norm_mode::fused_h);
    multi(run, v, t, t, 2 * cols, {2100, 300, 7}, 3, vec, norm_mode::fused);
    multi(run, v, t, other, cols, {67, 20, 20}, 2, vec, norm_mode::fused);
    multi(run, v, t, t, cols, {67, 20}, 5, til, norm_mode::fused_h);
    glu(run, v, t, cols, 67, 1, true, 0, vec);
    glu(run, v, t, 2 * cols, 130, 4, false, 0, vec);
    glu(run, v, t, cols, 67, 3, true, 20, vec);
    glu(run, v, t, cols, 67, 7, true, 0, til);
  }

  // x (n_tok rows of cols) as the integer-dot kernels see it: blocks of 32 quantized as
  // shaders/quantize_q8.comp does (d = amax / 127 in F32, round half away from zero), dequantized.
  static std::vector<float> q8_round(const std::vector<float>& x) {
    std::vector<float> y(x.size());
    for (size_t b = 0; b + 32 <= x.size(); b += 32) {
      float amax = 0;
      for (size_t j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b + j]));
      const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
      for (size_t j = 0; j < 32; ++j) y[b + j] = std::round(x[b + j] * id) * d;
    }
    return y;
  }

  // TANDEM_VK_VARIANT set for the lifetime of the guard (the ops read it per dispatch): value
  // first (it wins for its ops), what was set outside after it (for the other ops); "" changes
  // nothing.
  struct variant_guard {
    std::string old;
    bool had;
    explicit variant_guard(const char* value) {
      const char* o = std::getenv("TANDEM_VK_VARIANT");
      had = o != nullptr;
      if (had) old = o;
      const std::string v = had && *o ? std::string(value) + "," + old : std::string(value);
      setenv("TANDEM_VK_VARIANT", v.c_str(), 1);
    }
    ~variant_guard() {
      if (had)
        setenv("TANDEM_VK_VARIANT", old.c_str(), 1);
      else
        unsetenv("TANDEM_VK_VARIANT");
    }
  };

  // The activation quantizer of the integer-dot matvec, read back (quants times scale, and the
  // block sums times scale) against q8_round. Exact but for a rounding tie resolved the other
  // way after the device's 1/d or exp (one level in one element, NMSE ~1e-6 at the worst):
  // threshold 1e-6; a wrong scale or packing gives 1e-3 or more.
  // NORM (x := rms_norm(x) * w, the row's squares summed by the kernel): the normed values differ
  // from the reference's by float rounding (~1e-7 relative), which moves an element across a
  // rounding boundary rarely; one level of one element is NMSE ~3 / (127^2 n) for n elements,
  // under 1e-6 from n = 190: the norm cases have n >= 288 (cols 96 x 3 tokens, 4128 x 2 with a
  // row of 65 workgroups' blocks). eps 0.25 (a material share of the mean square, which is ~1.3)
  // and 1e-5, so that a dropped or wrong eps fails; a wrong weight or sum of squares gives 1e-3+.
  void quantize_q8(runner& run, const std::string& v, bool) {
    if (!wanted("quantize_q8", "f32") || !ctx_.caps().integer_dot) return;
    for (const int mode : {0, 1, 2})  // plain, glu, norm
      for (const auto& [cols, n_tok] : {std::pair{32, 1}, {96, 3}, {4128, 2}}) {
        const bool glu = mode == 1, norm = mode == 2;
        if (norm && cols == 32) continue;  // too few elements for the threshold (above)
        const size_t n = static_cast<size_t>(cols) * n_tok;
        const auto x = random_floats(n, seed(70 + cols + n_tok), 2.0f), u = random_floats(n, 71);
        const float eps = cols == 96 ? 0.25f : 1e-5f;
        std::vector<float> h = x;
        if (glu) cpu::ref::swiglu(h.data(), x.data(), u.data(), static_cast<int>(n));
        if (norm)
          for (int t = 0; t < n_tok; ++t)
            cpu::ref::rms_norm(h.data() + static_cast<size_t>(t) * cols,
                               x.data() + static_cast<size_t>(t) * cols, u.data(), cols, eps);
        const uint64_t qb = quantized_bytes(n_tok, cols);
        host_buffer bx(ctx_, n * 4), bu(ctx_, n * 4), bq(ctx_, qb);
        bx.set(x);
        bu.set(u);
        run.run([&](recorder& r) {
          ops::quantize_q8(r, bx, bu, bq, cols, n_tok, cols, glu, norm, eps);
        });
        const auto fl = bq.floats(qb / 4);
        std::vector<uint32_t> words(fl.size());
        std::memcpy(words.data(), fl.data(), fl.size() * 4);
        std::vector<float> ref = q8_round(h), got(n), ref_s, got_s;
        for (size_t b = 0; b < n / 32; ++b) {
          float d;
          std::memcpy(&d, &words[b * 10 + 8], 4);
          int sum = 0;
          for (size_t j = 0; j < 32; ++j) {
            const int q = static_cast<int8_t>((words[b * 10 + j / 4] >> (8 * (j % 4))) & 0xff);
            got[b * 32 + j] = static_cast<float>(q) * d;
            sum += q;
          }
          if (sum != static_cast<int>(words[b * 10 + 9])) got[b * 32] += 1e3f;  // sum mismatch
        }
        record("quantize_q8", "f32", v,
               fmt::format("cols={} n_tok={}{}", cols, n_tok,
                           glu ? " glu" : norm ? fmt::format(" norm eps={}", eps) : ""),
               ref, got, 1e-6);
      }
  }

  // The integer-dot matvec (forced: TANDEM_VK_VARIANT=matvec=dot) on every type it has, through
  // the three entry points (one product, Q/K/V-like parts, SwiGLU-down), against the reference on
  // the activations rounded as the kernel rounds them (q8_round): integer sums are exact, so only
  // the order of the float scalings differs, but for a rare rounding tie (see quantize_q8): 1e-6.
  // K-quants on 1 and 5 super-blocks; "mixed": Q/K/V-like parts of two types (as Q4_K_M's Q4_K
  // and Q6_K), which run as separate products, each quantizing the activations.
  void matvec_dot(runner& run, const std::string& v, bool) {
    if (!ctx_.caps().integer_dot) return;
    variant_guard guard("matvec=dot");
    const auto vec = matmul_kernel::vector;
    for (dtype t : {dtype::q8_0, dtype::q4_0, dtype::q4_k, dtype::q5_k, dtype::q6_k}) {
      const std::string type(dtype_name(t));
      if (!wanted("matvec_dot", type)) continue;
      const bool kq = t == dtype::q4_k || t == dtype::q5_k || t == dtype::q6_k;
      const dtype t2 = kq ? (t == dtype::q6_k ? dtype::q4_k : dtype::q6_k)
                          : (t == dtype::q8_0 ? dtype::q4_0 : dtype::q8_0);
      for (int64_t cols : kq ? std::vector<int64_t>{256, 1280} : std::vector<int64_t>{32, 544}) {
        struct dcase {
          // 0 one product, 1 three parts, 2 swiglu-down, 3 three parts of two types; 4 and 5:
          // 1 and 3 with the rms norm fused into the quantization (ops::matmul_multi_norm; 4
          // also writes h, as a capture asks, checked against the reference's h)
          int kind;
          int64_t rows;
          int n_tok;
          bool acc;
          uint64_t piece_rows;
        };
        for (const dcase c : {dcase{0, 1, 1, false, 0}, dcase{0, 130, 3, true, 0},
                              dcase{0, 67, 4, false, 0}, dcase{0, 67, 2, true, 20},
                              dcase{0, 300, 2, false, 0}, dcase{1, 67, 2, false, 0},
                              dcase{1, 2100, 1, false, 0}, dcase{3, 45, 3, false, 0},
                              dcase{2, 67, 3, true, 0}, dcase{2, 130, 4, false, 20},
                              dcase{4, 67, 2, false, 0}, dcase{4, 2100, 1, false, 0},
                              dcase{5, 45, 3, false, 0}}) {
          const uint32_t s0 = seed(80 + static_cast<uint32_t>(cols + c.rows + c.n_tok + c.kind));
          arena a(ctx_, memory_kind::device, 8 << 20);
          const bool norm = c.kind >= 4, mixed = c.kind == 3 || c.kind == 5;
          const int np = c.kind == 0 || c.kind == 2 ? 1 : 3;
          const int64_t prow[3] = {c.rows, 20, 7};
          const dtype pt[3] = {t, t, mixed ? t2 : t};
          std::vector<std::vector<uint8_t>> q(3);
          std::vector<device_weight> w;
          for (int i = 0; i < np; ++i)
            w.push_back(random_weight(a, pt[i], cols, prow[i], s0 + 3 * i, &q[i], c.piece_rows));
          const size_t nx = static_cast<size_t>(cols) * c.n_tok;
          const auto x = random_floats(nx, s0 + 10, 2.0f), u = random_floats(nx, s0 + 11);
          std::vector<std::unique_ptr<host_buffer>> y;
          std::vector<std::vector<float>> y0;
          for (int i = 0; i < np; ++i) {
            y0.push_back(random_floats(static_cast<size_t>(prow[i]) * c.n_tok, s0 + 20 + i));
            y.push_back(std::make_unique<host_buffer>(ctx_, y0.back().size() * 4));
            y.back()->set(y0.back());
          }
          host_buffer bx(ctx_, nx * 4), bu(ctx_, nx * 4), bh(ctx_, nx * 4),
              bq(ctx_, quantized_bytes(c.n_tok, cols));
          bx.set(x);
          bu.set(u);
          bh.set(std::vector<float>(nx, 7.0f));
          const int ci = static_cast<int>(cols);
          const float eps = 1e-5f;
          run.run([&](recorder& r) {
            if (norm)  // the norm weight: u's first row
              ops::matmul_multi_norm(r,
                                     {{&w[0], *y[0], static_cast<int>(prow[0])},
                                      {&w[1], *y[1], static_cast<int>(prow[1])},
                                      {&w[2], *y[2], static_cast<int>(prow[2])}},
                                     bx, {bu, eps, bh, c.kind == 4}, c.n_tok, ci, vec, bq);
            else if (c.kind == 0)
              ops::matmul(r, w[0], bx, *y[0], c.n_tok, ci, static_cast<int>(c.rows), c.acc, vec,
                          bq);
            else if (c.kind == 1 || c.kind == 3)
              ops::matmul_multi(r,
                                {{&w[0], *y[0], static_cast<int>(prow[0])},
                                 {&w[1], *y[1], static_cast<int>(prow[1])},
                                 {&w[2], *y[2], static_cast<int>(prow[2])}},
                                bx, c.n_tok, ci, vec, bq);
            else
              ops::matmul_swiglu(r, w[0], bx, bu, *y[0], c.n_tok, ci, static_cast<int>(c.rows),
                                 c.acc, vec, bq);
          });
          std::vector<float> h = x;
          if (c.kind == 2) cpu::ref::swiglu(h.data(), x.data(), u.data(), static_cast<int>(nx));
          if (norm)
            for (int k = 0; k < c.n_tok; ++k)
              cpu::ref::rms_norm(h.data() + static_cast<size_t>(k) * cols,
                                 x.data() + static_cast<size_t>(k) * cols, u.data(), ci, eps);
          const std::vector<float> h_ref = h;
          h = q8_round(h);
          std::vector<float> ref, got;
          for (int i = 0; i < np; ++i) {
            std::vector<float> part(y0[static_cast<size_t>(i)].size());
            cpu::ref::matmul(pt[i], q[i].data(), cols, prow[i], h.data(), c.n_tok, part.data(), 0,
                             prow[i]);
            if (c.acc)
              for (size_t k = 0; k < part.size(); ++k) part[k] += y0[static_cast<size_t>(i)][k];
            ref.insert(ref.end(), part.begin(), part.end());
            const auto g = y[static_cast<size_t>(i)]->floats(part.size());
            got.insert(got.end(), g.begin(), g.end());
          }
          const std::string what[] = {"",
                                      "parts=3 ",
                                      "swiglu-down ",
                                      fmt::format("parts=3 mixed={} ", dtype_name(t2)),
                                      "norm+parts=3 +h ",
                                      fmt::format("norm+parts=3 mixed={} ", dtype_name(t2))};
          record("matvec_dot", type, v,
                 fmt::format("{}cols={} rows={} n_tok={}{}{}", what[c.kind], cols, c.rows,
                             c.n_tok, c.acc ? " acc" : "",
                             w[0].pieces.size() > 1 ? fmt::format(" pieces={}", w[0].pieces.size())
                                                    : ""),
                 ref, got, 1e-6);
          if (c.piece_rows && w[0].pieces.size() < 2) out_.back().pass = false;
          if (c.kind == 4)  // h as a capture reads it (rms_norm: 1e-10, as its own check)
            record("matvec_dot", type, v,
                   fmt::format("norm h cols={} n_tok={}", cols, c.n_tok), h_ref, bh.floats(nx),
                   1e-10);
          if (c.kind == 5 && bh.floats(1)[0] != 7.0f) out_.back().pass = false;  // h untouched
        }
      }
    }
  }

  device_weight random_weight(arena& a, dtype t, int64_t cols, int64_t rows, uint32_t s,
                              std::vector<uint8_t>* q, uint64_t piece_rows = 0) {
    const uint64_t rb = row_bytes(t, static_cast<uint64_t>(cols));
    const auto wf = random_floats(static_cast<size_t>(cols * rows), s);
    q->assign(rb * static_cast<uint64_t>(rows), 0);
    for (int64_t r = 0; r < rows; ++r)
      quantize_row(t, wf.data() + r * cols, q->data() + rb * static_cast<uint64_t>(r), cols);
    uploader up(ctx_, 1 << 16);
    device_weight w = upload_weight(a, up, t, cols, rows, q->data(), piece_rows * rb);
    up.finish();
    return w;
  }

  enum class norm_mode { none, fused, fused_h };  // fused_h: h written as well (capture)

  void multi(runner& run, const std::string& v, dtype t, dtype t1, int64_t cols,
             const std::vector<int64_t>& rows, int n_tok, matmul_kernel kind,
             norm_mode norm = norm_mode::none) {
    const size_t n = rows.size();
    const uint32_t s0 = seed(40 + static_cast<uint32_t>(cols + rows[0] + n_tok + 7 * n));
    arena a(ctx_, memory_kind::device, 8 << 20);
    std::vector<std::vector<uint8_t>> q(n);
    std::vector<device_weight> w;
    std::vector<std::unique_ptr<host_buffer>> y;
    for (size_t i = 0; i < n; ++i) {
      w.push_back(random_weight(a, i == 1 ? t1 : t, cols, rows[i], s0 + 3 * i, &q[i]));
      const auto y0 = random_floats(static_cast<size_t>(rows[i] * n_tok), s0 + 3 * i + 1);
      y.push_back(std::make_unique<host_buffer>(ctx_, y0.size() * 4));
      y.back()->set(y0);  // overwritten: the products do not accumulate
    }
    const auto x = random_floats(static_cast<size_t>(cols) * n_tok, s0 + 99,
                                 norm != norm_mode::none ? 3.0f : 1.0f);
    const auto nw = random_floats(static_cast<size_t>(cols), s0 + 98);
    host_buffer bx(ctx_, x.size() * 4), bn(ctx_, nw.size() * 4), bh(ctx_, x.size() * 4);
    bx.set(x);
    bn.set(nw);
    bh.set(std::vector<float>(x.size(), 7.0f));
    const int c = static_cast<int>(cols);
    const float eps = 1e-5f;
    const ops::rms_norm_in nin{bn, eps, bh, norm == norm_mode::fused_h};
    run.run([&](recorder& r) {
      const auto y_of = [&](size_t i) {
        return ops::matmul_out{&w[i], *y[i], static_cast<int>(rows[i])};
      };
      if (norm != norm_mode::none && n == 3)
        ops::matmul_multi_norm(r, {y_of(0), y_of(1), y_of(2)}, bx, nin, n_tok, c, kind);
      else if (norm != norm_mode::none)
        ops::matmul_multi_norm(r, {y_of(0), y_of(1)}, bx, nin, n_tok, c, kind);
      else if (n == 3)
        ops::matmul_multi(r, {y_of(0), y_of(1), y_of(2)}, bx, n_tok, c, kind);
      else
        ops::matmul_multi(r, {y_of(0), y_of(1)}, bx, n_tok, c, kind);
    });
    std::vector<float> xin = x;  // the products' input: x, or rms_norm(x) * nw
    if (norm != norm_mode::none)
      for (int tk = 0; tk < n_tok; ++tk)
        cpu::ref::rms_norm(&xin[static_cast<size_t>(tk) * cols],
                           &x[static_cast<size_t>(tk) * cols], nw.data(), c, eps);
    std::vector<float> ref, got;
    std::string rows_s;
    for (size_t i = 0; i < n; ++i) {
      std::vector<float> part(static_cast<size_t>(rows[i] * n_tok));
      cpu::ref::matmul(w[i].type, q[i].data(), cols, rows[i], xin.data(), n_tok, part.data(), 0,
                       rows[i]);
      ref.insert(ref.end(), part.begin(), part.end());
      const auto g = y[i]->floats(part.size());
      got.insert(got.end(), g.begin(), g.end());
      rows_s += (i ? "+" : "") + std::to_string(rows[i]);
    }
    // h: written by the fallbacks and with fused_h; left as it was (7s) by the fused kernel.
    const bool h_written = norm == norm_mode::fused_h || t1 != t || kind == matmul_kernel::tiled;
    if (norm != norm_mode::none) {
      const auto h = bh.floats(x.size());
      got.insert(got.end(), h.begin(), h.end());
      if (h_written) ref.insert(ref.end(), xin.begin(), xin.end());
      else ref.insert(ref.end(), h.begin(), h.end());
    }
    const char* norm_s = norm == norm_mode::none      ? ""
                         : norm == norm_mode::fused ? " +rms_norm"
                                                    : " +rms_norm (h written)";
    record("matvec", std::string(dtype_name(t)), v,
           fmt::format("{}{} cols={} rows={}{} n_tok={}{}", n == 3 ? "fused qkv" : "fused gate_up",
                       norm_s, cols, rows_s,
                       t1 != t ? fmt::format(" ({} second)", dtype_name(t1)) : "", n_tok,
                       kind == matmul_kernel::tiled ? " tiled" : ""),
           ref, got, 1e-9);
    // The fused kernel leaves h alone (it must not write it when no capture asks).
    if (norm == norm_mode::fused && !h_written)
      for (float e : bh.floats(x.size()))
        if (e != 7.0f) out_.back().pass = false;
  }

  void glu(runner& run, const std::string& v, dtype t, int64_t cols, int64_t rows, int n_tok,
           bool acc, uint64_t piece_rows, matmul_kernel kind) {
    const uint32_t s0 = seed(60 + static_cast<uint32_t>(cols + rows + n_tok));
    arena a(ctx_, memory_kind::device, 4 << 20);
    std::vector<uint8_t> q;
    const device_weight w = random_weight(a, t, cols, rows, s0, &q, piece_rows);
    const size_t nx = static_cast<size_t>(cols) * n_tok;
    const auto g = random_floats(nx, s0 + 1, 2.0f), u = random_floats(nx, s0 + 2);
    const auto y0 = random_floats(static_cast<size_t>(rows) * n_tok, s0 + 3);
    host_buffer bg(ctx_, nx * 4), bu(ctx_, nx * 4), by(ctx_, y0.size() * 4);
    bg.set(g);
    bu.set(u);
    by.set(y0);
    run.run([&](recorder& r) {
      ops::matmul_swiglu(r, w, bg, bu, by, n_tok, static_cast<int>(cols), static_cast<int>(rows),
                         acc, kind);
    });
    std::vector<float> h(nx), ref(y0.size());
    cpu::ref::swiglu(h.data(), g.data(), u.data(), static_cast<int>(nx));
    cpu::ref::matmul(t, q.data(), cols, rows, h.data(), n_tok, ref.data(), 0, rows);
    if (acc)
      for (size_t i = 0; i < ref.size(); ++i) ref[i] += y0[i];
    record("matvec", std::string(dtype_name(t)), v,
           fmt::format("fused swiglu-down cols={} rows={} n_tok={}{}{}{}", cols, rows, n_tok,
                       acc ? " acc" : "",
                       w.pieces.size() > 1 ? fmt::format(" pieces={}", w.pieces.size()) : "",
                       kind == matmul_kernel::tiled ? " tiled" : ""),
           ref, by.floats(ref.size()), 1e-9);
    if (piece_rows && w.pieces.size() < 2) out_.back().pass = false;  // the split must happen
  }

  // The automatic choice between the kernels (in every reduction variant, since it may pick the
  // vector one), then each variant of the tiled kernel this device can run (no reduction: in the
  // first reduction variant only) on rows and tokens off its tiles, accumulating or not, in
  // pieces, and on long rows.
  void matmul(runner& run, const std::string& v, bool first_variant) {
    const auto aut = matmul_kernel::automatic;
    const std::vector<mcase> auto_cases = {
        {200, 70, false, 0, aut}, {67, 2, true, 20, aut}, {130, 40, false, 33, aut}};
    for (dtype t : k_types) {
      // The variant the device picks for prompts (coopmat: F16 inputs, its own threshold).
      const bool f16_inputs = wanted("matmul", std::string(dtype_name(t))) &&
                              pick_matmul_variant(run.pipes(), t) == matmul_variant::coopmat;
      matrix(run, "matmul", v, t, auto_cases, f16_inputs ? 1e-5 : 1e-9);
    }
    if (!first_variant) return;
    std::vector<matmul_variant> variants = {matmul_variant::f32, matmul_variant::vec4};
    if (ctx_.caps().coopmat_n) variants.push_back(matmul_variant::coopmat);
    for (matmul_variant mv : variants) {
      const matmul_kernel k = mv == matmul_variant::f32    ? matmul_kernel::tiled_f32
                              : mv == matmul_variant::vec4 ? matmul_kernel::tiled_vec4
                                                           : matmul_kernel::tiled_coopmat;
      const std::vector<mcase> cases = {{67, 1, false, 0, k},    {1, 5, false, 0, k},
                                        {67, 5, false, 0, k},    {130, 7, false, 0, k},
                                        {130, 33, true, 0, k},   {67, 33, true, 0, k},
                                        {200, 70, false, 0, k},  {300, 65, true, 0, k},
                                        {130, 40, false, 33, k}, {257, 69, true, 100, k}};
      // F16 inputs: the rounding of x and of the weights to F16 (~1e-7), far above 1e-9.
      const double threshold = mv == matmul_variant::coopmat ? 1e-5 : 1e-9;
      for (dtype t : k_types) {
        matrix(run, "matmul", matmul_variant_name(mv), t, cases, threshold);
        matrix(run, "matmul", matmul_variant_name(mv), t, {{67, 9, true, 0, k}}, threshold, 4096);
      }
    }
  }

  // long_cols: only rows of that length, else 1 to 3 blocks (and odd lengths for F32/F16).
  void matrix(runner& run, const std::string& op, const std::string& v, dtype t,
              const std::vector<mcase>& cases, double threshold = 1e-9, int64_t long_cols = 0) {
    const std::string type(dtype_name(t));
    if (!wanted(op, type)) return;
    std::vector<int64_t> cols_list;
    switch (t) {
      case dtype::f32:
      case dtype::f16: cols_list = {1, 33, 100, 256}; break;
      case dtype::q8_0:
      case dtype::q4_0: cols_list = {32, 96, 256, 544}; break;
      default: cols_list = {256, 768}; break;
    }
    if (long_cols) cols_list = {long_cols};
    for (int64_t cols : cols_list) {
      const uint64_t rb = row_bytes(t, static_cast<uint64_t>(cols));
      for (const mcase& c : cases) {
        const uint32_t s0 = seed(12 + static_cast<uint32_t>(cols + c.rows * 3 + c.n_tok));
        const auto wf = random_floats(static_cast<size_t>(cols * c.rows), s0);
        std::vector<uint8_t> wq(rb * static_cast<uint64_t>(c.rows));
        for (int64_t r = 0; r < c.rows; ++r)
          quantize_row(t, wf.data() + r * cols, wq.data() + rb * static_cast<uint64_t>(r), cols);
        const auto x = random_floats(static_cast<size_t>(cols) * c.n_tok, s0 + 1);
        const auto y0 = random_floats(static_cast<size_t>(c.rows) * c.n_tok, s0 + 2);
        arena a(ctx_, memory_kind::device, 1 << 20);
        uploader up(ctx_, 1 << 16);  // small staging: exercises the chunked, double-buffered path
        const device_weight w =
            upload_weight(a, up, t, cols, c.rows, wq.data(), c.piece_rows * rb);
        up.finish();
        host_buffer bx(ctx_, x.size() * 4), by(ctx_, y0.size() * 4);
        bx.set(x);
        std::vector<float> ref(y0.size());
        cpu::ref::matmul(t, wq.data(), cols, c.rows, x.data(), c.n_tok, ref.data(), 0, c.rows);
        if (c.acc)
          for (size_t i = 0; i < ref.size(); ++i) ref[i] += y0[i];
        const char* kind = c.kind == matmul_kernel::automatic ? " auto" : "";
        const std::string shape =
            fmt::format("cols={} rows={} n_tok={}{}{}{}", cols, c.rows, c.n_tok,
                        c.acc ? " acc" : "", kind,
                        w.pieces.size() > 1 ? fmt::format(" pieces={}", w.pieces.size()) : "");
        // Each weight-load variant against the reference; the 16-bit loads also bit for bit
        // against the 32-bit ones (threshold 0: the same bits reach the same arithmetic).
        std::vector<float> first;
        for (const char* l : loads_of(t)) {
          const variant_guard guard(l);
          by.set(y0);
          run.run([&](recorder& r) {
            ops::matmul(r, w, bx, by, c.n_tok, static_cast<int>(cols), static_cast<int>(c.rows),
                        c.acc, c.kind);
          });
          const std::vector<float> got = by.floats(ref.size());
          record(op, type, *l ? v + " " + l : v, shape, ref, got, threshold);
          if (c.piece_rows && w.pieces.size() < 2) out_.back().pass = false;  // must be split
          if (!first.empty()) record(op, type, v + " loads=u16 vs u32", shape, first, got, 0.0);
          first = got;
        }
      }
    }
  }

  context& ctx_;
  const op_check_options& opt_;
  std::vector<op_check> out_;
};

}  // namespace
}  // namespace tandem::vk

namespace tandem {

std::vector<op_check> check_gpu_ops(vk::context& ctx, const op_check_options& opt) {
  vk::op_scope scope("op check");
  return vk::checker(ctx, opt).run();
}

std::vector<op_check> check_gpu_ops(const op_check_options& opt, std::string* why) {
  vk::context_options co;
  co.allow_cpu_device = opt.allow_cpu_device;
  auto ctx = vk::context::create(co, why);
  if (!ctx) return {};
  return check_gpu_ops(*ctx, opt);
}

}  // namespace tandem

#else  // no Vulkan backend in this build

namespace tandem {

std::vector<op_check> check_gpu_ops(const op_check_options&, std::string* why) {
  if (why) *why = "this build has no Vulkan backend (glslangValidator or Vulkan headers missing)";
  return {};
}

}  // namespace tandem

#endif  // TANDEM_HAVE_VULKAN
