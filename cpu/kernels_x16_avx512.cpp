// AVX-512 VNNI kernels on the x16 layouts of repack.h: zmm lanes are 16 weight rows, and every
// vpdpbusd multiplies 4 levels of each row by one broadcast of 4 activation bytes.
//
// Q4_K: the low nibbles of a qs vector are sub-block 2p, the high nibbles (masked, not shifted:
// 16x their level) sub-block 2p + 1. Per super-block and row, the integer sum
// 16 * sum_even(sc * dot) + sum_odd(sc * dot) stays below 2^29, so it is exact in int32 and
// scaled once (d * xd / 16); the mins term sum_j(min_j * bsum_j) is one vpdpwssd per pair.
// Q5_K: each sub-block's fifth bit moves to bit 4 (a shift and a mask, or one vgf2p8affineqb on
// CPUs with GFNI) and joins its nibble (one vpternlogd); levels 0..31 keep sum(sc * dot) below
// 2^26; the mins as Q4_K. Q6_K's top two bits move the same way.
// Q6_K: levels are stored unsigned (+32); per super-block and row sum(sc * dot) < 2^28, and the
// offset 32 * sum(sc * bsum) is subtracted in int32. Q4_0 / Q8_0: levels unsigned (+8 / +128),
// the offset is the block's activation sum times 8 / 128.
// The gemm tiles (prompt path) use the same loads for up to 8 tokens: each weight vector is
// unpacked once and multiplied by each token's broadcast bytes; sub-block offsets are applied in
// float from the activation groups' float sums (q8_groups::s).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstring>

#include "cpu/kernels.h"
#include "runtime/blocks.h"
#include "cpu/repack.h"

namespace tandem::cpu {
namespace {

inline __m512i bcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

inline __m512i load_u8x16_epi32(const uint8_t* p) {
  return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

inline __m512 load_bf16x16(const uint16_t* p) {
  const __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

inline __m512 load_f16x16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// Q4_K / Q5_K: sum_j(min_j * activation sum_j) of one super-block per row (bsums: its 16 sums
// per 16 activations).
template <typename X16>
inline __m512i k_mins(const X16& B, const int16_t* bsums) {
  const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bsums));
  // Sums per sub-block of 32, as int16 pairs (2q, 2q + 1).
  alignas(16) int32_t pairs[4];
  _mm_store_si128(reinterpret_cast<__m128i*>(pairs),
                  _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1)));
  __m512i mins = _mm512_setzero_si512();
#pragma GCC unroll 4
  for (int q = 0; q < 4; ++q) {
    const __m512i mn =
        _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(B.mn[q])));
    mins = _mm512_dpwssd_epi32(mins, mn, _mm512_set1_epi32(pairs[q]));
  }
  return mins;
}

// acc[t] -= f0 * s0[t] + f1 * s1[t]: the offset terms (mins, level offsets) of two sub-blocks.
template <int NT>
inline void sub_offsets(__m512* acc, __m512 f0, __m512 f1, const float* s0, const float* s1) {
#pragma GCC unroll 8
  for (int t = 0; t < NT; ++t) {
    acc[t] = _mm512_fnmadd_ps(f0, _mm512_set1_ps(s0[t]), acc[t]);
    acc[t] = _mm512_fnmadd_ps(f1, _mm512_set1_ps(s1[t]), acc[t]);
  }
}

// Software prefetch of the block dist bytes ahead of b (TANDEM_PREFETCH; 0 = off). Always inlined:
// GCC 12 dropped these prefetches from the always-inlined Q5_K / Q6_K kernel bodies when this was
// a plain inline function (single-thread Q5_K matvec from memory at about half speed).
[[gnu::always_inline]] inline void prefetch_ahead(const void* b, size_t bytes, int dist) {
  if (dist <= 0) return;
  const char* p = static_cast<const char*>(b) + dist;
  for (size_t off = 0; off < bytes; off += 64) _mm_prefetch(p + off, _MM_HINT_T0);
}

// prefetch_ahead of a block's lines in two halves: the kernel calls it with half 0 (the first half
// of the lines) at the block's start and with half 1 halfway through the block's steps. Q5_K and
// Q6_K, the kernels with the most work per byte, stream faster so than with the whole burst at the
// start: tinyllama Q6_K tg32 +2-5%, Q5_K_M +3-4% (2 threads; three sets of 4-8 alternating
// rounds: with the choice as a switch in one binary, then against the binary before). The burst in
// quarters was 8-11% slower; Q4_K, Q4_0, Q8_0 and F16 in halves were slower or even
// (cpu/kernels.h has the figures).
template <typename Block>
[[gnu::always_inline]] inline void prefetch_half(const Block& b, int dist, int half) {
  constexpr size_t lines = (sizeof(Block) + 63) / 64, first = lines / 2;
  if (half == 0)
    prefetch_ahead(&b, 64 * first, dist);
  else
    prefetch_ahead(reinterpret_cast<const char*>(&b) + 64 * first, 64 * (lines - first), dist);
}

inline __mmask16 row_mask(int64_t rows, int64_t g) {
  const int64_t n = rows - g * x16_rows;
  return n >= x16_rows ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1);
}

using tile_fn = void (*)(const void*, int64_t, const int8_t*, const float*, const float*, float*,
                         int64_t, __mmask16);

// Row groups [g0, g1) against every activation group; tiles[n] handles n tokens (1..8). A row
// group is cols / block_cols blocks of block_bytes.
void mm_x16(const void* p, int64_t rows, int64_t cols, const q8_groups& x, float* y, int64_t ldy,
            int64_t g0, int64_t g1, const tile_fn* tiles, int block_cols, size_t block_bytes) {
  constexpr int g = gemm_group;
  const int64_t nb = cols / block_cols;
  const int n_groups = (x.n_tok + g - 1) / g;
  for (int64_t rg = g0; rg < g1; ++rg) {
    const void* b = static_cast<const uint8_t*>(p) + static_cast<size_t>(rg * nb) * block_bytes;
    const __mmask16 rows_m = row_mask(rows, rg);
    for (int gi = 0; gi < n_groups; ++gi) {
      const int nt = x.n_tok - gi * g < g ? x.n_tok - gi * g : g;
      // q16_64 activations (F16) have 2-byte levels and no sums.
      const int8_t* xq =
          x.q16 ? reinterpret_cast<const int8_t*>(x.q16 + gi * cols * g) : x.q + gi * cols * g;
      tiles[nt](b, nb, xq, x.d + gi * (cols / x.db) * g,
                x.s ? x.s + gi * (cols / x.sb) * g : nullptr, y + gi * g * ldy + rg * x16_rows, ldy,
                rows_m);
    }
  }
}

// The tiles of one type for 1..8 tokens (index 0 unused).
template <template <int> class Tile>
constexpr tile_fn k_tiles[gemm_group + 1] = {nullptr,      Tile<1>::run, Tile<2>::run,
                                             Tile<3>::run, Tile<4>::run, Tile<5>::run,
                                             Tile<6>::run, Tile<7>::run, Tile<8>::run};

}  // namespace

// ---- Q4_K ------------------------------------------------------------------------------------

void mv_q4_k_x16_avx512(const void* p, int64_t rows, int64_t cols, const q8_row& x, float* y,
                        int64_t g0, int64_t g1) {
  const int64_t nb = cols / qk_k;
  const int pf = prefetch_distance(dtype::q4_k);
  const auto* blocks = static_cast<const block_q4_k_x16*>(p);
  const __m512i m_lo = _mm512_set1_epi8(0x0F), m_hi = _mm512_set1_epi8(static_cast<char>(0xF0));
  for (int64_t g = g0; g < g1; ++g) {
    const block_q4_k_x16* b = blocks + g * nb;
    __m512 acc = _mm512_setzero_ps(), acc_m = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; ++i) {
      const block_q4_k_x16& B = b[i];
      prefetch_ahead(&B, sizeof(B), pf);
      const int8_t* xq = x.q + qk_k * i;
      __m512i sl[4], sh[4];
#pragma GCC unroll 4
      for (int q = 0; q < 4; ++q) sl[q] = sh[q] = _mm512_setzero_si512();
#pragma GCC unroll 8
      for (int s = 0; s < 8; ++s) {
#pragma GCC unroll 4
        for (int q = 0; q < 4; ++q) {
          const __m512i w = _mm512_loadu_si512(B.qs[s][q]);
          sl[q] =
              _mm512_dpbusd_epi32(sl[q], _mm512_and_si512(w, m_lo), bcast4(xq + 64 * q + 4 * s));
          sh[q] = _mm512_dpbusd_epi32(sh[q], _mm512_and_si512(w, m_hi),
                                      bcast4(xq + 64 * q + 32 + 4 * s));
        }
      }
      __m512i lo = _mm512_setzero_si512(), hi = lo;
#pragma GCC unroll 4
      for (int q = 0; q < 4; ++q) {
        lo = _mm512_add_epi32(lo, _mm512_mullo_epi32(sl[q], load_u8x16_epi32(B.sc[2 * q])));
        hi = _mm512_add_epi32(hi, _mm512_mullo_epi32(sh[q], load_u8x16_epi32(B.sc[2 * q + 1])));
      }
      const __m512i tot = _mm512_add_epi32(_mm512_slli_epi32(lo, 4), hi);
      const __m512i mins = k_mins(B, x.bsums + 16 * i);
      const __m512 xd = _mm512_set1_ps(x.d[i]);
      acc = _mm512_fmadd_ps(
          _mm512_cvtepi32_ps(tot),
          _mm512_mul_ps(load_f16x16(B.d), _mm512_mul_ps(xd, _mm512_set1_ps(0.0625f))), acc);
      acc_m =
          _mm512_fmadd_ps(_mm512_cvtepi32_ps(mins), _mm512_mul_ps(load_f16x16(B.dmin), xd), acc_m);
    }
    _mm512_mask_storeu_ps(y + g * x16_rows, row_mask(rows, g), _mm512_sub_ps(acc, acc_m));
  }
}

namespace {

// 16 rows x NT tokens of one activation group (kernels.h: q8_groups, sb 32, db 256).
template <int NT>
struct mm_q4_k_x16_tile {
  static void run(const void* blk, int64_t nb, const int8_t* xq, const float* xd, const float* xs,
                  float* y, int64_t ldy, __mmask16 rows) {
    const auto* b = static_cast<const block_q4_k_x16*>(blk);
    constexpr int g = gemm_group;
    const __m512i m_lo = _mm512_set1_epi8(0x0F), m_hi = _mm512_set1_epi8(static_cast<char>(0xF0));
    const __m512i m_word = _mm512_set1_epi32(0xFFFF);
    __m512 acc[NT];
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; ++i) {
      const block_q4_k_x16& B = b[i];
      const int8_t* xi = xq + i * qk_k * g;
      __m512i isum[NT];
#pragma GCC unroll 8
      for (int t = 0; t < NT; ++t) isum[t] = _mm512_setzero_si512();
      for (int j = 0; j < 8; ++j) {
        const __m512i mask = (j & 1) ? m_hi : m_lo;
        __m512i sj[NT];
#pragma GCC unroll 8
        for (int t = 0; t < NT; ++t) sj[t] = _mm512_setzero_si512();
#pragma GCC unroll 8
        for (int s = 0; s < 8; ++s) {
          const __m512i w = _mm512_and_si512(_mm512_loadu_si512(B.qs[s][j / 2]), mask);
          const int8_t* xk = xi + (8 * j + s) * 4 * g;
#pragma GCC unroll 8
          for (int t = 0; t < NT; ++t) sj[t] = _mm512_dpbusd_epi32(sj[t], w, bcast4(xk + 4 * t));
        }
        __m512i sc = load_u8x16_epi32(B.sc[j]);
        if (!(j & 1)) sc = _mm512_slli_epi32(sc, 4);
#pragma GCC unroll 8
        for (int t = 0; t < NT; ++t)
          isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(sj[t], sc));
      }
      const __m512 dv = _mm512_mul_ps(load_f16x16(B.d), _mm512_set1_ps(0.0625f));
      const float* xdi = xd + i * g;
#pragma GCC unroll 8
      for (int t = 0; t < NT; ++t)
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]),
                                 _mm512_mul_ps(dv, _mm512_set1_ps(xdi[t])), acc[t]);
      const __m512 dmin = load_f16x16(B.dmin);
      const float* xsi = xs + i * 8 * g;
      for (int q = 0; q < 4; ++q) {
        const __m512i mn =
            _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(B.mn[q])));
        const __m512 m0 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_and_si512(mn, m_word)), dmin);
        const __m512 m1 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(mn, 16)), dmin);
        sub_offsets<NT>(acc, m0, m1, xsi + 2 * q * g, xsi + (2 * q + 1) * g);
      }
    }
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) _mm512_mask_storeu_ps(y + t * ldy, rows, acc[t]);
  }
};

}  // namespace

void mm_q4_k_x16_avx512(const void* p, int64_t rows, int64_t cols, const q8_groups& x, float* y,
                        int64_t ldy, int64_t g0, int64_t g1) {
  mm_x16(p, rows, cols, x, y, ldy, g0, g1, k_tiles<mm_q4_k_x16_tile>, qk_k, sizeof(block_q4_k_x16));
}

// ---- Q5_K ------------------------------------------------------------------------------------

namespace {

// The 5-bit levels of sub-block j at step s (16 rows x 4 columns): the nibble of qs, and bit j of
// each qh byte moved to bit 4 (value 16), joined by one vpternlogd ((A & B) | C = 0xEA). q5_shift
// moves bit j there by a shift and a mask (any AVX-512 CPU).
struct q5_shift {
  static __m512i bit(__m512i qh, int j) {
    const __m512i m10 = _mm512_set1_epi8(0x10);
    __m512i v;
    switch (j) {
      case 0:
        v = _mm512_slli_epi16(qh, 4);
        break;
      case 1:
        v = _mm512_slli_epi16(qh, 3);
        break;
      case 2:
        v = _mm512_slli_epi16(qh, 2);
        break;
      case 3:
        v = _mm512_slli_epi16(qh, 1);
        break;
      case 4:
        v = qh;
        break;
      case 5:
        v = _mm512_srli_epi16(qh, 1);
        break;
      case 6:
        v = _mm512_srli_epi16(qh, 2);
        break;
      default:
        v = _mm512_srli_epi16(qh, 3);
        break;
    }
    return _mm512_and_si512(v, m10);
  }
};

#pragma GCC push_options
#pragma GCC target("gfni")
// With GFNI, one vgf2p8affineqb: the bit matrix whose row for output bit 4 (byte 7 - 4 of the
// qword) selects input bit j, all other rows zero.
struct q5_gfni {
  static __m512i bit(__m512i qh, int j) {
    return _mm512_gf2p8affine_epi64_epi8(qh, _mm512_set1_epi64(int64_t{1} << (24 + j)), 0);
  }
};
#pragma GCC pop_options

template <class Bits>
[[gnu::always_inline]] inline __m512i q5_levels(const block_q5_k_x16& B, int s, int j) {
  const __m512i w = _mm512_loadu_si512(B.qs[s][j / 2]);
  const __m512i lo = (j & 1) ? _mm512_srli_epi16(w, 4) : w;
  return _mm512_ternarylogic_epi32(lo, _mm512_set1_epi8(0x0F),
                                   Bits::bit(_mm512_loadu_si512(B.qh[s]), j), 0xEA);
}

// Q5_K against q8_256 activations: per super-block and row sum_j(sc_j * dot_j) < 2^26 (levels
// 0..31); the mins as Q4_K.
template <class Bits>
[[gnu::always_inline]] inline void mv_q5_k_x16(const void* p, int64_t rows, int64_t cols,
                                               const q8_row& x, float* y, int64_t g0, int64_t g1) {
  const int64_t nb = cols / qk_k;
  const int pf = prefetch_distance(dtype::q5_k);
  const auto* blocks = static_cast<const block_q5_k_x16*>(p);
  for (int64_t g = g0; g < g1; ++g) {
    const block_q5_k_x16* b = blocks + g * nb;
    __m512 acc = _mm512_setzero_ps(), acc_m = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; ++i) {
      const block_q5_k_x16& B = b[i];
      const int8_t* xq = x.q + qk_k * i;
      __m512i a[8];
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) a[j] = _mm512_setzero_si512();
#pragma GCC unroll 8
      for (int s = 0; s < 8; ++s) {
        if (s % 4 == 0) prefetch_half(B, pf, s / 4);
#pragma GCC unroll 8
        for (int j = 0; j < 8; ++j)
          a[j] = _mm512_dpbusd_epi32(a[j], q5_levels<Bits>(B, s, j), bcast4(xq + 32 * j + 4 * s));
      }
      __m512i tot = _mm512_setzero_si512();
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j)
        tot = _mm512_add_epi32(tot, _mm512_mullo_epi32(a[j], load_u8x16_epi32(B.sc[j])));
      const __m512i mins = k_mins(B, x.bsums + 16 * i);
      const __m512 xd = _mm512_set1_ps(x.d[i]);
      acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot), _mm512_mul_ps(load_f16x16(B.d), xd), acc);
      acc_m =
          _mm512_fmadd_ps(_mm512_cvtepi32_ps(mins), _mm512_mul_ps(load_f16x16(B.dmin), xd), acc_m);
    }
    _mm512_mask_storeu_ps(y + g * x16_rows, row_mask(rows, g), _mm512_sub_ps(acc, acc_m));
  }
}

}  // namespace

void mv_q5_k_x16_avx512(const void* p, int64_t rows, int64_t cols, const q8_row& x, float* y,
                        int64_t g0, int64_t g1) {
  mv_q5_k_x16<q5_shift>(p, rows, cols, x, y, g0, g1);
}

__attribute__((target("gfni"))) void mv_q5_k_x16_avx512_gfni(const void* p, int64_t rows,
                                                             int64_t cols, const q8_row& x,
                                                             float* y, int64_t g0, int64_t g1) {
  mv_q5_k_x16<q5_gfni>(p, rows, cols, x, y, g0, g1);
}

// The prompt path unpacks each row group into the gemm tile once (5-bit levels cost a shift, a
// mask and a merge per vector, which a tile per token group would repeat) and runs the tile gemm.
void mm_q5_k_x16_avx512(const void* p, int64_t rows, int64_t cols, const q8_groups& x, float* y,
                        int64_t ldy, int64_t g0, int64_t g1) {
  const int64_t nb = cols / qk_k;
  uint8_t* tile = thread_gemm_scratch(cols);
  for (int64_t g = g0; g < g1; ++g) {
    unpack_x16_tile_avx2(dtype::q5_k, static_cast<const block_q5_k_x16*>(p) + g * nb, nb, tile);
    const int64_t left = rows - g * x16_rows;
    gemm_tile_avx512(dtype::q5_k, tile, static_cast<int>(left < x16_rows ? left : x16_rows), cols,
                     x, y, ldy, g * x16_rows);
  }
}

// ---- Q6_K ------------------------------------------------------------------------------------

namespace {

// Q6_K: the 6-bit levels of group G (columns 32G + 4s .. + 3 of 16 rows) at step s: the nibble of
// ql, and bits 2k, 2k + 1 of each qh byte (k = G % 4) at bits 4, 5. q6_shift moves them by a shift
// and masks them in the vpternlogd that joins the two (A | (B & C) = 0xF8).
struct q6_shift {
  static __m512i levels(__m512i l, __m512i h, int G) {
    const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
    const __m512i lo = _mm512_and_si512((G & 1) ? _mm512_srli_epi16(l, 4) : l, m4);
    __m512i hi;
    switch (G & 3) {
      case 0:
        hi = _mm512_slli_epi16(h, 4);
        break;
      case 1:
        hi = _mm512_slli_epi16(h, 2);
        break;
      case 2:
        hi = h;
        break;
      default:
        hi = _mm512_srli_epi16(h, 2);
        break;
    }
    return _mm512_ternarylogic_epi32(lo, hi, m30, 0xF8);
  }
};

#pragma GCC push_options
#pragma GCC target("gfni")
// With GFNI, one vgf2p8affineqb moves and masks the two bits (rows 4 and 5 of the bit matrix,
// bytes 3 and 2 of the qword, select input bits 2k and 2k + 1), and the vpternlogd masks the
// nibble instead ((A & B) | C = 0xEA).
struct q6_gfni {
  static __m512i levels(__m512i l, __m512i h, int G) {
    const int k = G & 3;
    const int64_t m = (int64_t{1} << (24 + 2 * k)) | (int64_t{2} << (16 + 2 * k));
    return _mm512_ternarylogic_epi32((G & 1) ? _mm512_srli_epi16(l, 4) : l, _mm512_set1_epi8(0x0F),
                                     _mm512_gf2p8affine_epi64_epi8(h, _mm512_set1_epi64(m), 0),
                                     0xEA);
  }
};
#pragma GCC pop_options

template <class Bits = q6_shift>
[[gnu::always_inline]] inline __m512i q6_levels(const block_q6_k_x16& B, int s, int G) {
  return Bits::levels(_mm512_loadu_si512(B.step[s].ql[G / 2]),
                      _mm512_loadu_si512(B.step[s].qh[G / 4]), G);
}

// The int8 scales of sub-blocks 2G and 2G + 1 as int16 pairs per row, and either one as int32.
inline __m512i q6_scale_pairs(const block_q6_k_x16& B, int G) {
  return _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(B.sc[G])));
}
inline __m512i q6_scale(__m512i pairs, int odd) {
  return odd ? _mm512_srai_epi32(pairs, 16) : _mm512_srai_epi32(_mm512_slli_epi32(pairs, 16), 16);
}

template <class Bits>
[[gnu::always_inline]] inline void mv_q6_k_x16(const void* p, int64_t rows, int64_t cols,
                                               const q8_row& x, float* y, int64_t g0, int64_t g1) {
  const int64_t nb = cols / qk_k;
  const int pf = prefetch_distance(dtype::q6_k);
  const auto* blocks = static_cast<const block_q6_k_x16*>(p);
  for (int64_t g = g0; g < g1; ++g) {
    const block_q6_k_x16* b = blocks + g * nb;
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; ++i) {
      const block_q6_k_x16& B = b[i];
      prefetch_half(B, pf, 0);
      const int8_t* xq = x.q + qk_k * i;
      // Levels are stored + 32: subtract 32 * sum(scale * activation sum) per sub-block of 16.
      __m512i off = _mm512_setzero_si512();
#pragma GCC unroll 8
      for (int G = 0; G < 8; ++G) {
        int32_t pair;
        std::memcpy(&pair, x.bsums + 16 * i + 2 * G, 4);
        off = _mm512_dpwssd_epi32(off, q6_scale_pairs(B, G), _mm512_set1_epi32(pair));
      }
      __m512i isum = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(off, 5));
#pragma GCC unroll 2
      for (int hs = 0; hs < 2; ++hs) {  // sub-blocks 2G + hs: steps 4hs .. 4hs + 3
        if (hs == 1) prefetch_half(B, pf, 1);
        __m512i a[8];
#pragma GCC unroll 8
        for (int G = 0; G < 8; ++G) a[G] = _mm512_setzero_si512();
#pragma GCC unroll 4
        for (int s = 4 * hs; s < 4 * hs + 4; ++s) {
#pragma GCC unroll 8
          for (int G = 0; G < 8; ++G)
            a[G] = _mm512_dpbusd_epi32(a[G], q6_levels<Bits>(B, s, G), bcast4(xq + 32 * G + 4 * s));
        }
#pragma GCC unroll 8
        for (int G = 0; G < 8; ++G)
          isum =
              _mm512_add_epi32(isum, _mm512_mullo_epi32(a[G], q6_scale(q6_scale_pairs(B, G), hs)));
      }
      acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum),
                            _mm512_mul_ps(load_f16x16(B.d), _mm512_set1_ps(x.d[i])), acc);
    }
    _mm512_mask_storeu_ps(y + g * x16_rows, row_mask(rows, g), acc);
  }
}

}  // namespace

void mv_q6_k_x16_avx512(const void* p, int64_t rows, int64_t cols, const q8_row& x, float* y,
                        int64_t g0, int64_t g1) {
  mv_q6_k_x16<q6_shift>(p, rows, cols, x, y, g0, g1);
}

__attribute__((target("gfni"))) void mv_q6_k_x16_avx512_gfni(const void* p, int64_t rows,
                                                             int64_t cols, const q8_row& x,
                                                             float* y, int64_t g0, int64_t g1) {
  mv_q6_k_x16<q6_gfni>(p, rows, cols, x, y, g0, g1);
}

namespace {

// 16 rows x NT tokens of one activation group (sb 16, db 256).
template <int NT>
struct mm_q6_k_x16_tile {
  static void run(const void* blk, int64_t nb, const int8_t* xq, const float* xd, const float* xs,
                  float* y, int64_t ldy, __mmask16 rows) {
    const auto* b = static_cast<const block_q6_k_x16*>(blk);
    constexpr int g = gemm_group;
    __m512 acc[NT];
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; ++i) {
      const block_q6_k_x16& B = b[i];
      const int8_t* xi = xq + i * qk_k * g;
      __m512i isum[NT];
#pragma GCC unroll 8
      for (int t = 0; t < NT; ++t) isum[t] = _mm512_setzero_si512();
      for (int G = 0; G < 8; ++G) {
        const __m512i pairs = q6_scale_pairs(B, G);
#pragma GCC unroll 2
        for (int hs = 0; hs < 2; ++hs) {
          __m512i a[NT];
#pragma GCC unroll 8
          for (int t = 0; t < NT; ++t) a[t] = _mm512_setzero_si512();
#pragma GCC unroll 4
          for (int s = 4 * hs; s < 4 * hs + 4; ++s) {
            const __m512i v = q6_levels(B, s, G);
            const int8_t* xk = xi + (8 * G + s) * 4 * g;
#pragma GCC unroll 8
            for (int t = 0; t < NT; ++t) a[t] = _mm512_dpbusd_epi32(a[t], v, bcast4(xk + 4 * t));
          }
          const __m512i sc = q6_scale(pairs, hs);
#pragma GCC unroll 8
          for (int t = 0; t < NT; ++t)
            isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(a[t], sc));
        }
      }
      const __m512 dv = load_f16x16(B.d);
      const float* xdi = xd + i * g;
#pragma GCC unroll 8
      for (int t = 0; t < NT; ++t)
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]),
                                 _mm512_mul_ps(dv, _mm512_set1_ps(xdi[t])), acc[t]);
      // - 32 d sum_sb(scale_sb * s_sb): s is the activations' float sum per sub-block of 16.
      const __m512 d32 = _mm512_mul_ps(dv, _mm512_set1_ps(32.0f));
      const float* xsi = xs + i * 16 * g;
      for (int G = 0; G < 8; ++G) {
        const __m512i pairs = q6_scale_pairs(B, G);
        const __m512 f0 = _mm512_mul_ps(_mm512_cvtepi32_ps(q6_scale(pairs, 0)), d32);
        const __m512 f1 = _mm512_mul_ps(_mm512_cvtepi32_ps(q6_scale(pairs, 1)), d32);
        sub_offsets<NT>(acc, f0, f1, xsi + 2 * G * g, xsi + (2 * G + 1) * g);
      }
    }
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) _mm512_mask_storeu_ps(y + t * ldy, rows, acc[t]);
  }
};

}  // namespace

void mm_q6_k_x16_avx512(const void* p, int64_t rows, int64_t cols, const q8_groups& x, float* y,
                        int64_t ldy, int64_t g0, int64_t g1) {
  mm_x16(p, rows, cols, x, y, ldy, g0, g1, k_tiles<mm_q6_k_x16_tile>, qk_k, sizeof(block_q6_k_x16));
}

// ---- Q4_0 and Q8_0 (blocks of 32, two per x16 block) ---------------------------------------

// Q4_0 against q8_32p activations: the 64 bytes of a pair of blocks are [2i: 0-15, 2i+1: 0-15,
// 2i: 16-31, 2i+1: 16-31], so block b's columns 4s.. are at 16b + 4s and 16 + 4s.. at 32 + 16b +
// 4s. U x16 blocks (64 U columns) per call: 4U independent vpdpbusd chains, scaled into acc (even
// GGUF blocks) and acc2 (odd).
template <int U>
inline void q4_0_x16_blocks(const block_q4_0_x16* B, const q8_row& x, int64_t i, __m512& acc,
                            __m512& acc2) {
  const __m512i m_lo = _mm512_set1_epi8(0x0F), m_hi = _mm512_set1_epi8(static_cast<char>(0xF0));
  const int8_t* xq = x.q + 64 * i;
  __m512i lo[2 * U], hi[2 * U];
#pragma GCC unroll 8
  for (int k = 0; k < 2 * U; ++k) lo[k] = hi[k] = _mm512_setzero_si512();
#pragma GCC unroll 4
  for (int u = 0; u < U; ++u) {
#pragma GCC unroll 4
    for (int s = 0; s < 4; ++s) {
#pragma GCC unroll 2
      for (int k = 0; k < 2; ++k) {
        const __m512i w = _mm512_loadu_si512(B[u].qs[s][k]);
        const int8_t* xb = xq + 64 * u + 16 * k + 4 * s;
        lo[2 * u + k] = _mm512_dpbusd_epi32(lo[2 * u + k], _mm512_and_si512(w, m_lo), bcast4(xb));
        hi[2 * u + k] =
            _mm512_dpbusd_epi32(hi[2 * u + k], _mm512_and_si512(w, m_hi), bcast4(xb + 32));
      }
    }
  }
#pragma GCC unroll 8
  for (int k = 0; k < 2 * U; ++k) {
    // 16 * (sum(level * x) - 8 * sum(x)), levels 0..15 (the value is level - 8).
    const __m512i tot = _mm512_sub_epi32(_mm512_add_epi32(_mm512_slli_epi32(lo[k], 4), hi[k]),
                                         _mm512_set1_epi32(128 * x.sum[2 * i + k]));
    const __m512 sc =
        _mm512_mul_ps(load_f16x16(B[k / 2].d[k & 1]), _mm512_set1_ps(x.d[2 * i + k] * 0.0625f));
    if (k & 1)
      acc2 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot), sc, acc2);
    else
      acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot), sc, acc);
  }
}

// Q8_0 against q8_32 activations; levels are stored + 128. U x16 blocks per call: 4U chains.
template <int U>
inline void q8_0_x16_blocks(const block_q8_0_x16* B, const q8_row& x, int64_t i, __m512& acc,
                            __m512& acc2) {
  const int8_t* xq = x.q + 64 * i;
  __m512i a[4 * U];
#pragma GCC unroll 8
  for (int k = 0; k < 4 * U; ++k) a[k] = _mm512_setzero_si512();
#pragma GCC unroll 4
  for (int u = 0; u < U; ++u) {
#pragma GCC unroll 4
    for (int s = 0; s < 8; s += 2) {
#pragma GCC unroll 2
      for (int k = 0; k < 2; ++k) {
        const int8_t* xb = xq + 64 * u + 32 * k + 4 * s;
        __m512i* ak = a + 4 * u + 2 * k;
        ak[0] = _mm512_dpbusd_epi32(ak[0], _mm512_loadu_si512(B[u].qs[s][k]), bcast4(xb));
        ak[1] = _mm512_dpbusd_epi32(ak[1], _mm512_loadu_si512(B[u].qs[s + 1][k]), bcast4(xb + 4));
      }
    }
  }
#pragma GCC unroll 8
  for (int k = 0; k < 2 * U; ++k) {
    const __m512i tot = _mm512_sub_epi32(_mm512_add_epi32(a[2 * k], a[2 * k + 1]),
                                         _mm512_set1_epi32(128 * x.sum[2 * i + k]));
    const __m512 sc = _mm512_mul_ps(load_f16x16(B[k / 2].d[k & 1]), _mm512_set1_ps(x.d[2 * i + k]));
    if (k & 1)
      acc2 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot), sc, acc2);
    else
      acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot), sc, acc);
  }
}

// Q4_0 / Q8_0 matrix-vector: U x16 blocks per step (four: 256 columns, 16 chains for Q4_0), one
// prefetch burst each, as the K-quant kernels do: in a stand-alone loop over 600 MB of packed
// tinyllama and stories110M FFN matrices (2 threads, prefetch 4096), four blocks stream at 90-105%
// of the paired probe where one block per step reached 71-96% (with or without prefetch); two
// blocks per step reached 81-96%. The rest of a row whose block count is not a multiple of U goes
// one block at a time.
template <typename Block, void (*step_u)(const Block*, const q8_row&, int64_t, __m512&, __m512&),
          void (*step_1)(const Block*, const q8_row&, int64_t, __m512&, __m512&), int U>
static void mv_x16_by_steps(dtype t, const void* p, int64_t rows, int64_t cols, const q8_row& x,
                            float* y, int64_t g0, int64_t g1) {
  const int64_t nb = cols / 64, nb_u = nb / U * U;
  const int pf = prefetch_distance(t);
  const auto* blocks = static_cast<const Block*>(p);
  for (int64_t g = g0; g < g1; ++g) {
    const Block* b = blocks + g * nb;
    __m512 acc = _mm512_setzero_ps(), acc2 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i < nb_u; i += U) {
      prefetch_ahead(b + i, U * sizeof(Block), pf);
      step_u(b + i, x, i, acc, acc2);
    }
    for (; i < nb; ++i) {
      prefetch_ahead(b + i, sizeof(Block), pf);
      step_1(b + i, x, i, acc, acc2);
    }
    _mm512_mask_storeu_ps(y + g * x16_rows, row_mask(rows, g), _mm512_add_ps(acc, acc2));
  }
}

void mv_q4_0_x16_avx512(const void* p, int64_t rows, int64_t cols, const q8_row& x, float* y,
                        int64_t g0, int64_t g1) {
  mv_x16_by_steps<block_q4_0_x16, q4_0_x16_blocks<4>, q4_0_x16_blocks<1>, 4>(dtype::q4_0, p, rows,
                                                                             cols, x, y, g0, g1);
}

void mv_q8_0_x16_avx512(const void* p, int64_t rows, int64_t cols, const q8_row& x, float* y,
                        int64_t g0, int64_t g1) {
  mv_x16_by_steps<block_q8_0_x16, q8_0_x16_blocks<4>, q8_0_x16_blocks<1>, 4>(dtype::q8_0, p, rows,
                                                                             cols, x, y, g0, g1);
}

namespace {

// 16 rows x NT tokens of one activation group (sb 32, db 32), Q4_0 or Q8_0.
template <bool Q8, int NT>
struct mm_q80_q40_x16_tile {
  static void run(const void* blk, int64_t nb, const int8_t* xq, const float* xd, const float* xs,
                  float* y, int64_t ldy, __mmask16 rows) {
    constexpr int g = gemm_group;
    const __m512i m_lo = _mm512_set1_epi8(0x0F), m_hi = _mm512_set1_epi8(static_cast<char>(0xF0));
    __m512 acc[NT];
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; ++i) {
      for (int k = 0; k < 2; ++k) {
        const int64_t blk32 = 2 * i + k;  // the GGUF block
        const int8_t* xb = xq + blk32 * 32 * g;
        __m512i a[NT], h[NT];
#pragma GCC unroll 8
        for (int t = 0; t < NT; ++t) a[t] = h[t] = _mm512_setzero_si512();
        const uint16_t* d;
        if constexpr (Q8) {
          const auto& B = static_cast<const block_q8_0_x16*>(blk)[i];
          d = B.d[k];
#pragma GCC unroll 8
          for (int s = 0; s < 8; ++s) {
            const __m512i w = _mm512_loadu_si512(B.qs[s][k]);
#pragma GCC unroll 8
            for (int t = 0; t < NT; ++t)
              a[t] = _mm512_dpbusd_epi32(a[t], w, bcast4(xb + s * 4 * g + 4 * t));
          }
        } else {
          const auto& B = static_cast<const block_q4_0_x16*>(blk)[i];
          d = B.d[k];
#pragma GCC unroll 4
          for (int s = 0; s < 4; ++s) {
            const __m512i w = _mm512_loadu_si512(B.qs[s][k]);
            const __m512i wl = _mm512_and_si512(w, m_lo), wh = _mm512_and_si512(w, m_hi);
#pragma GCC unroll 8
            for (int t = 0; t < NT; ++t) {
              a[t] = _mm512_dpbusd_epi32(a[t], wl, bcast4(xb + s * 4 * g + 4 * t));
              h[t] = _mm512_dpbusd_epi32(h[t], wh, bcast4(xb + (4 + s) * 4 * g + 4 * t));
            }
          }
        }
        // Q8_0: d * xd * sum(level * x) - 128 d s; Q4_0: d xd / 16 * 16 sum(level * x) - 8 d s.
        const __m512 dv = load_f16x16(d);
        const __m512 dv_i = Q8 ? dv : _mm512_mul_ps(dv, _mm512_set1_ps(0.0625f));
        const __m512 dv_o = _mm512_mul_ps(dv, _mm512_set1_ps(Q8 ? 128.0f : 8.0f));
        const float* xdi = xd + blk32 * g;
        const float* xsi = xs + blk32 * g;
#pragma GCC unroll 8
        for (int t = 0; t < NT; ++t) {
          const __m512i tot = Q8 ? a[t] : _mm512_add_epi32(_mm512_slli_epi32(a[t], 4), h[t]);
          acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot),
                                   _mm512_mul_ps(dv_i, _mm512_set1_ps(xdi[t])), acc[t]);
          acc[t] = _mm512_fnmadd_ps(dv_o, _mm512_set1_ps(xsi[t]), acc[t]);
        }
      }
    }
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) _mm512_mask_storeu_ps(y + t * ldy, rows, acc[t]);
  }
};

template <int NT>
using q4_0_tile = mm_q80_q40_x16_tile<false, NT>;
template <int NT>
using q8_0_tile = mm_q80_q40_x16_tile<true, NT>;

}  // namespace

void mm_q4_0_x16_avx512(const void* p, int64_t rows, int64_t cols, const q8_groups& x, float* y,
                        int64_t ldy, int64_t g0, int64_t g1) {
  mm_x16(p, rows, cols, x, y, ldy, g0, g1, k_tiles<q4_0_tile>, 64, sizeof(block_q4_0_x16));
}

void mm_q8_0_x16_avx512(const void* p, int64_t rows, int64_t cols, const q8_groups& x, float* y,
                        int64_t ldy, int64_t g0, int64_t g1) {
  mm_x16(p, rows, cols, x, y, ldy, g0, g1, k_tiles<q8_0_tile>, 64, sizeof(block_q8_0_x16));
}

// ---- F16 (14-bit levels, BF16 scale per 64 columns; q16_64 activations) --------------------

namespace {
// One block of 64 activations: the scale, and the levels as 32 int32 pairs (2 x 16 lanes).
// Bit for bit quant_q16_64_ref: the same division, and cvtps rounds to nearest even as
// nearbyint does.
inline float quant_q16_block(const float* x, __m512i* pairs) {
  __m512 v[4];
  __m512 amax = _mm512_setzero_ps();
#pragma GCC unroll 4
  for (int k = 0; k < 4; ++k) {
    v[k] = _mm512_loadu_ps(x + 16 * k);
    amax = _mm512_max_ps(amax, _mm512_abs_ps(v[k]));
  }
  const float dd = _mm512_reduce_max_ps(amax) / q16_level_max;
  const __m512 id = _mm512_set1_ps(dd > 0 ? 1 / dd : 0.0f);
  const __m512i lo = _mm512_set1_epi32(-q16_level_max), hi = _mm512_set1_epi32(q16_level_max);
  __m256i h[4];
#pragma GCC unroll 4
  for (int k = 0; k < 4; ++k) {
    const __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(v[k], id));
    h[k] = _mm512_cvtepi32_epi16(_mm512_min_epi32(_mm512_max_epi32(q, lo), hi));
  }
  pairs[0] = _mm512_inserti64x4(_mm512_castsi256_si512(h[0]), h[1], 1);
  pairs[1] = _mm512_inserti64x4(_mm512_castsi256_si512(h[2]), h[3], 1);
  return dd;
}
}  // namespace

void quant_q16_64_avx512(const float* x, int64_t cols, int16_t* q, float* d) {
  for (int64_t b = 0; b < cols / q16_block; ++b) {
    __m512i pairs[2];
    d[b] = quant_q16_block(x + q16_block * b, pairs);
    _mm512_storeu_si512(q + q16_block * b, pairs[0]);
    _mm512_storeu_si512(q + q16_block * b + 32, pairs[1]);
  }
}

void quant_group_q16_avx512(const float* x, int n, int64_t cols, int16_t* q, float* d) {
  constexpr int g = gemm_group;
  if (n < g) {
    std::memset(q, 0, static_cast<size_t>(cols) * g * sizeof(int16_t));
    std::memset(d, 0, static_cast<size_t>(cols / q16_block) * g * sizeof(float));
  }
  // Each token's levels in row order, then pair p of token t to int32 slot 8p + t, a block of 64
  // columns at a time so the rows stay in L1.
  alignas(64) int32_t rows[g][q16_block / 2];
  auto* out = reinterpret_cast<int32_t*>(q);
  for (int64_t b = 0; b < cols / q16_block; ++b) {
    for (int t = 0; t < n; ++t) {
      __m512i pairs[2];
      d[b * g + t] = quant_q16_block(x + t * cols + q16_block * b, pairs);
      _mm512_store_si512(rows[t], pairs[0]);
      _mm512_store_si512(rows[t] + 16, pairs[1]);
    }
    int32_t* o = out + (q16_block / 2) * g * b;
    for (int p = 0; p < q16_block / 2; ++p)
      for (int t = 0; t < n; ++t) o[p * g + t] = rows[t][p];
  }
}

// One vpdpwssd multiplies 2 columns of 16 rows by one broadcast of 2 activation levels; a
// 64-column int32 sum is below 64 * 8191 * 4095 < 2^31 (repack.h), then scaled in float.

void mv_f16_x16_avx512(const void* p, int64_t rows, int64_t cols, const q8_row& x, float* y,
                       int64_t g0, int64_t g1) {
  const int64_t nb = cols / 128;
  const int pf = prefetch_distance(dtype::f16);
  const auto* blocks = static_cast<const block_f16_x16*>(p);
  for (int64_t g = g0; g < g1; ++g) {
    const block_f16_x16* b = blocks + g * nb;
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; ++i) {
      const block_f16_x16& B = b[i];
      prefetch_ahead(&B, sizeof(B), pf);
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        const int16_t* xq = x.q16 + 128 * i + 64 * h;
        __m512i a[4];
#pragma GCC unroll 4
        for (int k = 0; k < 4; ++k) a[k] = _mm512_setzero_si512();
#pragma GCC unroll 32
        for (int s = 0; s < 32; ++s)
          a[s % 4] = _mm512_dpwssd_epi32(a[s % 4], _mm512_loadu_si512(B.qs[32 * h + s]),
                                         bcast4(reinterpret_cast<const int8_t*>(xq + 2 * s)));
        const __m512i tot =
            _mm512_add_epi32(_mm512_add_epi32(a[0], a[1]), _mm512_add_epi32(a[2], a[3]));
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot),
                              _mm512_mul_ps(load_bf16x16(B.d[h]), _mm512_set1_ps(x.d[2 * i + h])),
                              acc);
      }
    }
    _mm512_mask_storeu_ps(y + g * x16_rows, row_mask(rows, g), acc);
  }
}

namespace {

// 16 rows x NT tokens of one q16_64 activation group: [cols / 2][8 tokens][2 levels].
template <int NT>
struct mm_f16_x16_tile {
  static void run(const void* blk, int64_t nb, const int8_t* xq8, const float* xd, const float*,
                  float* y, int64_t ldy, __mmask16 rows) {
    constexpr int g = gemm_group;
    const auto* xq = reinterpret_cast<const int16_t*>(xq8);
    __m512 acc[NT];
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; ++i) {
      const auto& B = static_cast<const block_f16_x16*>(blk)[i];
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        const int16_t* xb = xq + (128 * i + 64 * h) * g;
        __m512i a[NT];
#pragma GCC unroll 8
        for (int t = 0; t < NT; ++t) a[t] = _mm512_setzero_si512();
#pragma GCC unroll 8
        for (int s = 0; s < 32; ++s) {
          const __m512i w = _mm512_loadu_si512(B.qs[32 * h + s]);
#pragma GCC unroll 8
          for (int t = 0; t < NT; ++t)
            a[t] = _mm512_dpwssd_epi32(
                a[t], w, bcast4(reinterpret_cast<const int8_t*>(xb + 2 * g * s + 2 * t)));
        }
        const __m512 dw = load_bf16x16(B.d[h]);
        const float* xdi = xd + (2 * i + h) * g;
#pragma GCC unroll 8
        for (int t = 0; t < NT; ++t)
          acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a[t]),
                                   _mm512_mul_ps(dw, _mm512_set1_ps(xdi[t])), acc[t]);
      }
    }
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) _mm512_mask_storeu_ps(y + t * ldy, rows, acc[t]);
  }
};

}  // namespace

void mm_f16_x16_avx512(const void* p, int64_t rows, int64_t cols, const q8_groups& x, float* y,
                       int64_t ldy, int64_t g0, int64_t g1) {
  mm_x16(p, rows, cols, x, y, ldy, g0, g1, k_tiles<mm_f16_x16_tile>, 128, sizeof(block_f16_x16));
}

}  // namespace tandem::cpu
