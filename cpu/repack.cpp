// Packing GGUF rows into the x16 layouts of repack.h, and back (scalar; runs once at load).
#include "cpu/repack.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <type_traits>

#include "runtime/fp16.h"
#include "cpu/parallel.h"
#include "runtime/blocks.h"

namespace tandem::cpu {

int x16_block_cols(dtype t) {
  switch (t) {
    case dtype::q4_k:
    case dtype::q5_k:
    case dtype::q6_k:
      return qk_k;
    case dtype::f16:
      return 128;
    case dtype::q4_0:
    case dtype::q8_0:
      return 64;
    default:
      return 0;
  }
}

bool x16_supported(dtype t, int64_t cols) {
  const int bc = x16_block_cols(t);
  return bc > 0 && cols > 0 && cols % bc == 0;
}

namespace {
size_t x16_block_bytes(dtype t) {
  switch (t) {
    case dtype::q4_k:
      return sizeof(block_q4_k_x16);
    case dtype::q5_k:
      return sizeof(block_q5_k_x16);
    case dtype::q6_k:
      return sizeof(block_q6_k_x16);
    case dtype::q4_0:
      return sizeof(block_q4_0_x16);
    case dtype::f16:
      return sizeof(block_f16_x16);
    default:
      return sizeof(block_q8_0_x16);
  }
}
}  // namespace

size_t x16_bytes(dtype t, int64_t rows, int64_t cols) {
  if (!x16_supported(t, cols)) return 0;
  const int64_t groups = (rows + x16_rows - 1) / x16_rows;
  return static_cast<size_t>(groups * (cols / x16_block_cols(t))) * x16_block_bytes(t);
}

namespace {

// BF16 bits of the smallest BF16 >= v (v >= 0, finite), and the float they stand for.
uint16_t bf16_round_up(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  if (bits & 0xFFFFu) bits += 0x10000u;
  return static_cast<uint16_t>(bits >> 16);
}
float bf16_to_f32(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float v;
  std::memcpy(&v, &bits, 4);
  return v;
}

// Every F16 value as a float (256 KiB, built once): packing converts each weight once, and the
// branchy scalar conversion would dominate load time.
const float* f16_table() {
  static const std::unique_ptr<float[]> table = [] {
    auto t = std::make_unique<float[]>(65536);
    for (uint32_t h = 0; h < 65536; ++h) t[h] = fp16_to_fp32(static_cast<uint16_t>(h));
    return t;
  }();
  return table.get();
}

// Round to nearest even for |v| < 2^22 (what nearbyint does), without a library call or a branch:
// v + 1.5 * 2^23 lands where the float spacing is 1.
inline float round_even(float v) {
  constexpr float magic = 12582912.0f;
  return (v + magic) - magic;
}

void pack_f16_group(const uint8_t* w, size_t rb, int64_t rows, int64_t nb, int64_t g,
                    block_f16_x16* out) {
  const float* f16 = f16_table();
  for (int64_t i = 0; i < nb; ++i) {
    block_f16_x16& o = out[i];
    std::memset(&o, 0, sizeof(o));
    for (int r = 0; r < x16_rows; ++r) {
      const int64_t row = g * x16_rows + r;
      if (row >= rows) break;
      const auto* src = reinterpret_cast<const uint16_t*>(w + static_cast<size_t>(row) * rb);
      for (int h = 0; h < 2; ++h) {
        float v[64], amax = 0;
        for (int e = 0; e < 64; ++e) {
          // Non-finite weights (a broken file) become 0 rather than undefined conversions.
          v[e] = f16[src[128 * i + 64 * h + e]];
          if (!std::isfinite(v[e])) v[e] = 0;
          amax = std::max(amax, std::fabs(v[e]));
        }
        o.d[h][r] = bf16_round_up(amax / f16_x16_level_max);
        const float d = bf16_to_f32(o.d[h][r]), id = d > 0 ? 1 / d : 0.0f;
        for (int e = 0; e < 64; ++e) {
          const float q = round_even(v[e] * id);
          const float c = std::clamp(q, -float{f16_x16_level_max}, float{f16_x16_level_max});
          o.qs[32 * h + e / 2][r][e % 2] = static_cast<int16_t>(c);
        }
      }
    }
  }
}

void unpack_f16_group(const block_f16_x16* in, int64_t rows, int64_t nb, int64_t g, uint8_t* w,
                      size_t rb) {
  for (int64_t i = 0; i < nb; ++i)
    for (int r = 0; r < x16_rows; ++r) {
      const int64_t row = g * x16_rows + r;
      if (row >= rows) break;
      auto* dst = reinterpret_cast<uint16_t*>(w + static_cast<size_t>(row) * rb);
      for (int c = 0; c < 128; ++c)
        dst[128 * i + c] =
            fp32_to_fp16(bf16_to_f32(in[i].d[c / 64][r]) * in[i].qs[c / 2][r][c % 2]);
    }
}

// Q4_K, and Q5_K (the same with qh: GGUF's qh[l] bit j is the fifth bit of column l of sub-block
// j).
template <typename Blk, typename X16>
void pack_q45_k_group(const uint8_t* w, size_t rb, int64_t rows, int64_t nb, int64_t g, X16* out) {
  for (int64_t i = 0; i < nb; ++i) {
    X16& o = out[i];
    std::memset(&o, 0, sizeof(o));
    for (int r = 0; r < x16_rows; ++r) {
      const int64_t row = g * x16_rows + r;
      if (row >= rows) break;
      const auto& b = reinterpret_cast<const Blk*>(w + static_cast<size_t>(row) * rb)[i];
      o.d[r] = b.d;
      o.dmin[r] = b.dmin;
      for (int j = 0; j < 8; ++j) {
        uint8_t sc, m;
        get_scale_min_k4(j, b.scales, &sc, &m);
        o.sc[j][r] = sc;
        o.mn[j / 2][r][j % 2] = m;
      }
      // GGUF: qs[32p + l] holds column l of sub-block 2p (low nibble) and of 2p + 1 (high).
      for (int p = 0; p < 4; ++p)
        for (int s = 0; s < 8; ++s)
          for (int e = 0; e < 4; ++e) o.qs[s][p][r][e] = b.qs[32 * p + 4 * s + e];
      if constexpr (std::is_same_v<Blk, block_q5_k>)
        for (int s = 0; s < 8; ++s)
          for (int e = 0; e < 4; ++e) o.qh[s][r][e] = b.qh[4 * s + e];
    }
  }
}

template <typename Blk, typename X16>
void unpack_q45_k_group(const X16* in, int64_t rows, int64_t nb, int64_t g, uint8_t* w, size_t rb) {
  for (int64_t i = 0; i < nb; ++i) {
    const X16& o = in[i];
    for (int r = 0; r < x16_rows; ++r) {
      const int64_t row = g * x16_rows + r;
      if (row >= rows) break;
      auto& b = reinterpret_cast<Blk*>(w + static_cast<size_t>(row) * rb)[i];
      b.d = o.d[r];
      b.dmin = o.dmin[r];
      // The inverse of get_scale_min_k4.
      for (int j = 0; j < 4; ++j) {
        const uint8_t sc_lo = o.sc[j][r], m_lo = o.mn[j / 2][r][j % 2];
        const uint8_t sc_hi = o.sc[j + 4][r], m_hi = o.mn[(j + 4) / 2][r][j % 2];
        b.scales[j] = static_cast<uint8_t>((sc_lo & 63) | ((sc_hi >> 4) << 6));
        b.scales[j + 4] = static_cast<uint8_t>((m_lo & 63) | ((m_hi >> 4) << 6));
        b.scales[j + 8] = static_cast<uint8_t>((sc_hi & 0xF) | ((m_hi & 0xF) << 4));
      }
      for (int p = 0; p < 4; ++p)
        for (int s = 0; s < 8; ++s)
          for (int e = 0; e < 4; ++e) b.qs[32 * p + 4 * s + e] = o.qs[s][p][r][e];
      if constexpr (std::is_same_v<Blk, block_q5_k>)
        for (int s = 0; s < 8; ++s)
          for (int e = 0; e < 4; ++e) b.qh[4 * s + e] = o.qh[s][r][e];
    }
  }
}

// Q6_K element n = 128h + 32m + l (l < 32): low 4 bits in ql[64h + 32(m % 2) + l] (the high
// nibble for m >= 2), top 2 bits at bit 2m of qh[32h + l].
void pack_q6_k_group(const uint8_t* w, size_t rb, int64_t rows, int64_t nb, int64_t g,
                     block_q6_k_x16* out) {
  uint8_t lv[qk_k];
  for (int64_t i = 0; i < nb; ++i) {
    block_q6_k_x16& o = out[i];
    std::memset(&o, 0, sizeof(o));
    for (int r = 0; r < x16_rows; ++r) {
      const int64_t row = g * x16_rows + r;
      if (row >= rows) break;
      const auto& b = reinterpret_cast<const block_q6_k*>(w + static_cast<size_t>(row) * rb)[i];
      for (int h = 0; h < 2; ++h)
        for (int m = 0; m < 4; ++m)
          for (int l = 0; l < 32; ++l) {
            const uint8_t q = b.ql[64 * h + 32 * (m % 2) + l];
            lv[128 * h + 32 * m + l] = static_cast<uint8_t>(
                ((m < 2 ? q : q >> 4) & 0xF) | (((b.qh[32 * h + l] >> (2 * m)) & 3) << 4));
          }
      o.d[r] = b.d;
      for (int sb = 0; sb < 16; ++sb) o.sc[sb / 2][r][sb % 2] = b.scales[sb];
      for (int s = 0; s < 8; ++s)
        for (int e = 0; e < 4; ++e) {
          const uint8_t* v = lv + 4 * s + e;  // v[32 G]: column 4s + e of group G
          for (int p = 0; p < 4; ++p)
            o.step[s].ql[p][r][e] = static_cast<uint8_t>((v[64 * p] & 0xF) | (v[64 * p + 32] << 4));
          for (int p = 0; p < 2; ++p)
            o.step[s].qh[p][r][e] =
                static_cast<uint8_t>((v[128 * p] >> 4) | ((v[128 * p + 32] >> 4) << 2) |
                                     ((v[128 * p + 64] >> 4) << 4) | ((v[128 * p + 96] >> 4) << 6));
        }
    }
  }
}

void unpack_q6_k_group(const block_q6_k_x16* in, int64_t rows, int64_t nb, int64_t g, uint8_t* w,
                       size_t rb) {
  for (int64_t i = 0; i < nb; ++i) {
    const block_q6_k_x16& o = in[i];
    for (int r = 0; r < x16_rows; ++r) {
      const int64_t row = g * x16_rows + r;
      if (row >= rows) break;
      auto& b = reinterpret_cast<block_q6_k*>(w + static_cast<size_t>(row) * rb)[i];
      std::memset(b.ql, 0, sizeof(b.ql));
      std::memset(b.qh, 0, sizeof(b.qh));
      b.d = o.d[r];
      for (int sb = 0; sb < 16; ++sb) b.scales[sb] = o.sc[sb / 2][r][sb % 2];
      for (int n = 0; n < qk_k; ++n) {
        const int G = n / 32, s = n % 32 / 4, e = n % 4;
        const int v = ((o.step[s].ql[G / 2][r][e] >> (4 * (G % 2))) & 0xF) |
                      (((o.step[s].qh[G / 4][r][e] >> (2 * (G % 4))) & 3) << 4);
        const int h = n / 128, m = n % 128 / 32, l = n % 32;
        b.ql[64 * h + 32 * (m % 2) + l] |= static_cast<uint8_t>((v & 0xF) << (m < 2 ? 0 : 4));
        b.qh[32 * h + l] |= static_cast<uint8_t>((v >> 4) << (2 * m));
      }
    }
  }
}

// Q4_0 and Q8_0: two GGUF blocks per x16 block. ToX16: GGUF rows -> x16, else back.
template <typename Blk, typename X16, bool ToX16>
void copy_q8_q4_group(std::conditional_t<ToX16, const uint8_t*, uint8_t*> w, size_t rb,
                      int64_t rows, int64_t nb, int64_t g,
                      std::conditional_t<ToX16, X16*, const X16*> x) {
  constexpr int steps = sizeof(Blk::qs) / 4;
  constexpr uint8_t flip = std::is_same_v<Blk, block_q8_0> ? 0x80 : 0;  // signed <-> + 128
  using blk_ptr = std::conditional_t<ToX16, const Blk*, Blk*>;
  for (int64_t i = 0; i < nb; ++i) {
    auto& o = x[i];
    if constexpr (ToX16) std::memset(&o, 0, sizeof(o));
    for (int r = 0; r < x16_rows; ++r) {
      const int64_t row = g * x16_rows + r;
      if (row >= rows) break;
      for (int b = 0; b < 2; ++b) {
        auto& blk = reinterpret_cast<blk_ptr>(w + static_cast<size_t>(row) * rb)[2 * i + b];
        if constexpr (ToX16) {
          o.d[b][r] = blk.d;
          for (int s = 0; s < steps; ++s)
            for (int e = 0; e < 4; ++e)
              o.qs[s][b][r][e] = static_cast<uint8_t>(blk.qs[4 * s + e]) ^ flip;
        } else {
          blk.d = o.d[b][r];
          for (int s = 0; s < steps; ++s)
            for (int e = 0; e < 4; ++e)
              blk.qs[4 * s + e] = static_cast<std::remove_reference_t<decltype(blk.qs[0])>>(
                  o.qs[s][b][r][e] ^ flip);
        }
      }
    }
  }
}

}  // namespace

void pack_x16(dtype t, const void* w, size_t rb, int64_t rows, int64_t cols, int64_t g0, int64_t g1,
              void* dst) {
  if (!x16_supported(t, cols)) return;
  const int64_t nb = cols / x16_block_cols(t);
  const auto* src = static_cast<const uint8_t*>(w);
  for (int64_t g = g0; g < g1; ++g) {
    if (t == dtype::q4_0)
      copy_q8_q4_group<block_q4_0, block_q4_0_x16, true>(
          src, rb, rows, nb, g, static_cast<block_q4_0_x16*>(dst) + g * nb);
    else if (t == dtype::q8_0)
      copy_q8_q4_group<block_q8_0, block_q8_0_x16, true>(
          src, rb, rows, nb, g, static_cast<block_q8_0_x16*>(dst) + g * nb);
    else if (t == dtype::f16)
      pack_f16_group(src, rb, rows, nb, g, static_cast<block_f16_x16*>(dst) + g * nb);
    else if (t == dtype::q6_k)
      pack_q6_k_group(src, rb, rows, nb, g, static_cast<block_q6_k_x16*>(dst) + g * nb);
    else if (t == dtype::q5_k)
      pack_q45_k_group<block_q5_k>(src, rb, rows, nb, g, static_cast<block_q5_k_x16*>(dst) + g * nb);
    else
      pack_q45_k_group<block_q4_k>(src, rb, rows, nb, g, static_cast<block_q4_k_x16*>(dst) + g * nb);
  }
}

void unpack_x16(dtype t, const void* src, int64_t rows, int64_t cols, void* w, size_t rb) {
  if (!x16_supported(t, cols)) return;
  const int64_t nb = cols / x16_block_cols(t);
  auto* out = static_cast<uint8_t*>(w);
  for (int64_t g = 0; g < (rows + x16_rows - 1) / x16_rows; ++g) {
    if (t == dtype::q4_0)
      copy_q8_q4_group<block_q4_0, block_q4_0_x16, false>(
          out, rb, rows, nb, g, static_cast<const block_q4_0_x16*>(src) + g * nb);
    else if (t == dtype::q8_0)
      copy_q8_q4_group<block_q8_0, block_q8_0_x16, false>(
          out, rb, rows, nb, g, static_cast<const block_q8_0_x16*>(src) + g * nb);
    else if (t == dtype::f16)
      unpack_f16_group(static_cast<const block_f16_x16*>(src) + g * nb, rows, nb, g, out, rb);
    else if (t == dtype::q6_k)
      unpack_q6_k_group(static_cast<const block_q6_k_x16*>(src) + g * nb, rows, nb, g, out, rb);
    else if (t == dtype::q5_k)
      unpack_q45_k_group<block_q5_k>(static_cast<const block_q5_k_x16*>(src) + g * nb, rows, nb, g,
                                     out, rb);
    else
      unpack_q45_k_group<block_q4_k>(static_cast<const block_q4_k_x16*>(src) + g * nb, rows, nb, g,
                                     out, rb);
  }
}

packed_matrix::packed_matrix(dtype t, const void* w, int64_t rows, int64_t cols, void* dst)
    : type_(t), rows_(rows), cols_(cols), bytes_(x16_bytes(t, rows, cols)) {
  if (bytes_ == 0) return;
  if (dst == nullptr) {
    buf_ = large_buffer(bytes_);
    dst = buf_.data();
  }
  data_ = dst;
  const size_t rb = row_bytes(t, static_cast<uint64_t>(cols));
  parallel_for((rows + x16_rows - 1) / x16_rows, 4,
               [&](int64_t g0, int64_t g1) { pack_x16(t, w, rb, rows, cols, g0, g1, dst); });
}

}  // namespace tandem::cpu
