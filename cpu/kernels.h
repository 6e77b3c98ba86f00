// The CPU kernel table: one set of matrix kernels per instruction-set level (scalar reference,
// AVX2, AVX-512), chosen once at start-up from CPUID and overridable for tests and benchmarks.
//
// Kernels take plain pointers, sizes and a row range, and know nothing of threads: cpu::matmul
// (cpu/matmul.cpp) quantizes the activations once per call, then splits rows across threads.
//
// Activations for quantized weights are 8-bit with a float scale per block:
//  * q8_32  (Q4_0, Q8_0 matrix-vector): scale per 32, plus the integer sum of each block; for
//    Q4_0 the bytes of each pair of blocks are interleaved by halves (q8_32p, see
//    interleave_q8_32_pairs) so that one vector of nibbles meets one vector of activations;
//  * q8_256 (K-quant matrix-vector): scale per 256 (as ggml's Q8_K), integer sums per 16;
//  * gemm groups (every quantized type, n_tok >= gemm_min_tokens): tokens in groups of 8,
//    interleaved 4 bytes at a time so that one broadcast feeds a vector of weight rows; scale
//    per 32 (Q4_0, Q8_0) or 256 (K-quants) and the float sum (scale * integer sum) per weight
//    sub-block (32, or 16 for Q6_K).
//  * q16_64 (F16 weights in x16 form, repack.h): 16-bit levels, |level| <= 4095, with a float
//    scale per 64 (d = max|x| / 4095), in row order for one token and in groups of 8 tokens
//    interleaved 2 levels at a time for the gemm.
// Blocks of 32 and 256 follow llama.cpp's Q8_0 and Q8_K rounding exactly (kernels.cpp), so that
// results track llama.cpp's. Every level uses the same quantized activations (the quantizers are
// part of the table but must agree bit for bit), so levels differ only in float summation order.
#pragma once
#include <cstddef>
#include <cstdint>

#include "runtime/dtype.h"

namespace tandem::cpu {

// ---- levels ---------------------------------------------------------------------------------

enum class kernel_level { scalar = 0, avx2 = 1, avx512 = 2 };

const char* kernel_level_name(kernel_level l);
// The best level this CPU and OS support (AVX-512 needs F, BW, VL, DQ and VNNI).
kernel_level best_kernel_level();
bool cpu_supports(kernel_level l);
// GFNI (vgf2p8affineqb), which the AVX-512 level's Q5_K / Q6_K matrix-vector kernels use where
// present (Ice Lake and Zen 4 on; Skylake-X and Cascade Lake have AVX-512 without it).
bool cpu_supports_gfni();
// The level matmul uses. At start-up: TANDEM_KERNELS=scalar|avx2|avx512 if set (and supported),
// otherwise best_kernel_level().
kernel_level active_kernel_level();
// Throws tandem::error when the CPU lacks the level.
void set_kernel_level(kernel_level l);

// Software prefetch of the weight stream, in bytes ahead of the current block (0 = off), read
// once per kernel call. Each weight type has its measured default (below);
// set_prefetch_distance(bytes >= 0) or TANDEM_PREFETCH=bytes sets one distance for every type, and
// a negative value goes back to the defaults.
void set_prefetch_distance(int bytes);
int prefetch_distance();  // the distance set for every type, or -1: the per-type defaults
int prefetch_distance(dtype t);
// The defaults below were measured per type (end to end and with tandem_kernel_bench); the
// figures are in docs/performance.md ("Prefetch distance").
constexpr int default_prefetch_distance(dtype t) {
  switch (t) {
    case dtype::q4_0:
    case dtype::q8_0:
    case dtype::q5_k:
    case dtype::q6_k:
      return 6144;
    default:
      return 4096;
  }
}

// ---- activations ------------------------------------------------------------------------------

inline constexpr int gemm_group = 8;  // tokens per interleaved activation group
inline constexpr int gemm_rows = 16;  // weight rows per repacked tile

// One token's activations in q8_32 (q8_32p) or q8_256 form.
struct q8_row {
  const int8_t* q;       // cols
  const float* d;        // cols / 32 (q8_32), cols / 256 (q8_256) or cols / 64 (q16_64)
  const int32_t* sum;    // q8_32: sum of q per 32
  const int16_t* bsums;  // q8_256: sum of q per 16
  const int16_t* q16;    // q16_64: cols levels (q unused)
};
inline constexpr int q16_block = 64;
inline constexpr int q16_level_max = 4095;

// All tokens' activations in gemm form. Group g holds tokens 8g .. 8g + 7 (zero padded):
// q + g * cols * 8:  [cols / 4][8 tokens][4 bytes]
// d + g * cols / db * 8: [cols / db][8 tokens]
// s + g * cols / sb * 8: [cols / sb][8 tokens], s = d * sum(q over the sub-block)
// In q16_64 form q16 + g * cols * 8 is [cols / 2][8 tokens][2 levels], d is per 64 (db = 64) and
// there are no sums (q and s null).
struct q8_groups {
  const int8_t* q;
  const float* d;
  const float* s;
  int64_t cols;
  int sb;     // sub-block of the sums: 32, or 16 for Q6_K
  int db;     // block of the scales: 32 (Q8_0 rule), 256 (Q8_K rule) or 64 (q16_64)
  int n_tok;  // valid tokens
  const int16_t* q16 = nullptr;
};

// ---- kernel signatures ------------------------------------------------------------------------
// w points at row 0 of a rows x cols matrix with rb bytes per row; kernels compute rows [r0, r1).

// y[r] = dot(W row r, x) for a float activation row.
using mv_f32_fn = void (*)(const void* w, size_t rb, int64_t cols, const float* x, float* y,
                           int64_t r0, int64_t r1);
// y[t * ldy + r] for n_tok float activation rows x (n_tok x cols).
using mm_f32_fn = void (*)(const void* w, size_t rb, int64_t cols, const float* x, int n_tok,
                           float* y, int64_t ldy, int64_t r0, int64_t r1);
// y[r] = dot(W row r, x) for one quantized activation row.
using mv_q8_fn = void (*)(const void* w, size_t rb, int64_t cols, const q8_row& x, float* y,
                          int64_t r0, int64_t r1);
// y[t * ldy + r] for all tokens of x. r0 is a multiple of gemm_rows. scratch holds
// gemm_scratch_bytes(cols) bytes, 64-byte aligned, private to the caller's thread.
using mm_q8_fn = void (*)(const void* w, size_t rb, int64_t cols, const q8_groups& x, float* y,
                          int64_t ldy, int64_t r0, int64_t r1, void* scratch);

// x16 (row-interleaved, repack.h) weights: p is the packed matrix of rows x cols; kernels compute
// row groups [g0, g1) (16 rows each) and write only rows < rows. Activations as for mv_q8 / mm_q8.
using mv_x16_fn = void (*)(const void* p, int64_t rows, int64_t cols, const q8_row& x, float* y,
                           int64_t g0, int64_t g1);
using mm_x16_fn = void (*)(const void* p, int64_t rows, int64_t cols, const q8_groups& x, float* y,
                           int64_t ldy, int64_t g0, int64_t g1);

enum class act_format : uint8_t { f32, q8_32, q8_32p, q8_256, q16_64 };
inline constexpr int n_act_formats = 5;

// Turns q8_32 bytes into q8_32p: blocks 2p and 2p + 1 become [2p: 0-15, 2p+1: 0-15, 2p: 16-31,
// 2p+1: 16-31] (Q4_0 keeps elements j and j + 16 in one byte). An odd last block stays as it is.
void interleave_q8_32_pairs(int8_t* q, int64_t cols);
// Index of element e of block i (cols / 32 blocks in all) in q8_32p bytes.
inline int64_t q8_32p_index(int64_t i, int e, int64_t nb) {
  if (i == nb - 1 && nb % 2) return 32 * i + e;
  return 64 * (i / 2) + (e < 16 ? 0 : 32) + (i % 2) * 16 + e % 16;
}

struct type_kernels {
  act_format mv_act = act_format::f32;  // activations of mv_q8 (f32 for float weights)
  mv_f32_fn mv_f32 = nullptr;           // float weights
  mm_f32_fn mm_f32 = nullptr;
  mv_q8_fn mv_q8 = nullptr;  // quantized weights
  mm_q8_fn mm_q8 = nullptr;
  int gemm_sb = 32;            // sub-block of q8_groups::s for mm_q8
  int gemm_db = 32;            // block of q8_groups::d for mm_q8: 32 (Q8_0 rule) or 256 (Q8_K rule)
  mv_x16_fn mv_x16 = nullptr;  // on the packed layout, where this level has kernels for it
  mm_x16_fn mm_x16 = nullptr;
  act_format x16_act = act_format::f32;  // activations of mv_x16 (mm_x16: the gemm form of it)
};

// Activation quantizers (same results at every level).
using quant_q8_32_fn = void (*)(const float* x, int64_t cols, int8_t* q, float* d, int32_t* sum);
using quant_q8_256_fn = void (*)(const float* x, int64_t cols, int8_t* q, float* d, int16_t* bsums);
// Quantizes n (<= 8) tokens x (n x cols) into group layout, zero padding to 8: scales per db
// (32 or 256), sums per sb (16 or 32).
using quant_group_fn = void (*)(const float* x, int n, int64_t cols, int sb, int db, int8_t* q,
                                float* d, float* s);
// q16_64 for one token, and for n (<= 8) tokens in group layout (zero padded to 8).
using quant_q16_fn = void (*)(const float* x, int64_t cols, int16_t* q, float* d);
using quant_group_q16_fn = void (*)(const float* x, int n, int64_t cols, int16_t* q, float* d);

struct kernel_table {
  kernel_level level = kernel_level::scalar;
  type_kernels f32, f16, q4_0, q8_0, q4_k, q5_k, q6_k;
  quant_q8_32_fn quant_q8_32 = nullptr;
  quant_q8_256_fn quant_q8_256 = nullptr;
  quant_group_fn quant_group = nullptr;
  quant_q16_fn quant_q16 = nullptr;
  quant_group_q16_fn quant_group_q16 = nullptr;
  // n_tok from which mm_q8 beats mv_q8 per token.
  int gemm_min_tokens = 4;

  // Kernels for t, or nullptr when the table has none.
  const type_kernels* find(dtype t) const;
};

// The table of a level (which must be supported) and the active one.
const kernel_table& kernels(kernel_level l);
const kernel_table& kernels();

// Bytes of per-thread scratch an mm_q8 kernel needs for rows of cols elements.
size_t gemm_scratch_bytes(int64_t cols);
// The calling thread's own gemm_scratch_bytes(cols) bytes, 64-byte aligned (for the x16 gemms,
// whose signature has no scratch).
uint8_t* thread_gemm_scratch(int64_t cols);

// ---- shared helpers for the gemm kernels
// ---------------------------------------------------------

// Repacks rows [r0, r0 + nr) (nr <= 16) of a quantized matrix into the gemm tile layout, padding
// to 16 rows with zeros. Per sub-block of B elements: [B / 4][16 rows][4 levels], dw[16], mw[16]
// (B * 16 + 128 bytes). q8_signed: Q8_0 levels stay signed (qs) with mw = 0 (for maddubs).
void repack_gemm_tile(dtype t, const void* w, size_t rb, int64_t r0, int nr, int64_t cols,
                      bool q8_signed, uint8_t* tile);
// The same with AVX2 (defined in kernels_avx2.cpp; only when cpu_supports(avx2)).
void repack_gemm_tile_avx2(dtype t, const void* w, size_t rb, int64_t r0, int nr, int64_t cols,
                           bool q8_signed, uint8_t* tile);
inline constexpr int gemm_sub_block(dtype t) {
  return t == dtype::q6_k ? 16 : 32;
}

// Rows [r0, r0 + nr) (nr <= 16) against every activation group of x, from a tile in the layout
// above (kernels_avx2.cpp; only when cpu_supports(avx2)): the AVX2 gemm, shared by the GGUF rows
// (repacked per tile) and the x16 layouts (unpacked per tile).
void gemm_tile_avx2(dtype t, const uint8_t* tile, int nr, int64_t cols, const q8_groups& x,
                    float* y, int64_t ldy, int64_t r0);
// The same with AVX-512 VNNI (kernels_avx512.cpp), on tiles whose Q8_0 levels are unsigned.
void gemm_tile_avx512(dtype t, const uint8_t* tile, int nr, int64_t cols, const q8_groups& x,
                      float* y, int64_t ldy, int64_t r0);
// Unpacks one row group of an x16 matrix (nb blocks from blocks) into the tile layout above, Q8_0
// levels signed (kernels_x16_avx2.cpp; only when cpu_supports(avx2)).
void unpack_x16_tile_avx2(dtype t, const void* blocks, int64_t nb, uint8_t* tile);

// The scalar q16_64 quantizers (kernels.cpp).
void quant_q16_64_ref(const float* x, int64_t cols, int16_t* q, float* d);
void quant_group_q16_ref(const float* x, int n, int64_t cols, int16_t* q, float* d);

// The AVX2 level's x16 kernels and q16_64 quantizers (kernels_x16_avx2.cpp).
void quant_q16_64_avx2(const float* x, int64_t cols, int16_t* q, float* d);
void quant_group_q16_avx2(const float* x, int n, int64_t cols, int16_t* q, float* d);
void mv_f16_x16_avx2(const void* p, int64_t rows, int64_t cols, const q8_row& x, float* y,
                     int64_t g0, int64_t g1);
void mm_f16_x16_avx2(const void* p, int64_t rows, int64_t cols, const q8_groups& x, float* y,
                     int64_t ldy, int64_t g0, int64_t g1);
void mv_q4_0_x16_avx2(const void* p, int64_t rows, int64_t cols, const q8_row& x, float* y,
                      int64_t g0, int64_t g1);
void mm_q4_0_x16_avx2(const void* p, int64_t rows, int64_t cols, const q8_groups& x, float* y,
                      int64_t ldy, int64_t g0, int64_t g1);
void mv_q8_0_x16_avx2(const void* p, int64_t rows, int64_t cols, const q8_row& x, float* y,
                      int64_t g0, int64_t g1);
void mm_q8_0_x16_avx2(const void* p, int64_t rows, int64_t cols, const q8_groups& x, float* y,
                      int64_t ldy, int64_t g0, int64_t g1);
void mv_q4_k_x16_avx2(const void* p, int64_t rows, int64_t cols, const q8_row& x, float* y,
                      int64_t g0, int64_t g1);
void mm_q4_k_x16_avx2(const void* p, int64_t rows, int64_t cols, const q8_groups& x, float* y,
                      int64_t ldy, int64_t g0, int64_t g1);
void mv_q5_k_x16_avx2(const void* p, int64_t rows, int64_t cols, const q8_row& x, float* y,
                      int64_t g0, int64_t g1);
void mm_q5_k_x16_avx2(const void* p, int64_t rows, int64_t cols, const q8_groups& x, float* y,
                      int64_t ldy, int64_t g0, int64_t g1);
void mv_q6_k_x16_avx2(const void* p, int64_t rows, int64_t cols, const q8_row& x, float* y,
                      int64_t g0, int64_t g1);
void mm_q6_k_x16_avx2(const void* p, int64_t rows, int64_t cols, const q8_groups& x, float* y,
                      int64_t ldy, int64_t g0, int64_t g1);

// The AVX-512 level's x16 kernels (kernels_x16_avx512.cpp).
void quant_q16_64_avx512(const float* x, int64_t cols, int16_t* q, float* d);
void quant_group_q16_avx512(const float* x, int n, int64_t cols, int16_t* q, float* d);
void mv_f16_x16_avx512(const void* p, int64_t rows, int64_t cols, const q8_row& x, float* y,
                       int64_t g0, int64_t g1);
void mm_f16_x16_avx512(const void* p, int64_t rows, int64_t cols, const q8_groups& x, float* y,
                       int64_t ldy, int64_t g0, int64_t g1);
void mv_q4_k_x16_avx512(const void* p, int64_t rows, int64_t cols, const q8_row& x, float* y,
                        int64_t g0, int64_t g1);
void mm_q4_k_x16_avx512(const void* p, int64_t rows, int64_t cols, const q8_groups& x, float* y,
                        int64_t ldy, int64_t g0, int64_t g1);
void mv_q5_k_x16_avx512(const void* p, int64_t rows, int64_t cols, const q8_row& x, float* y,
                        int64_t g0, int64_t g1);
void mm_q5_k_x16_avx512(const void* p, int64_t rows, int64_t cols, const q8_groups& x, float* y,
                        int64_t ldy, int64_t g0, int64_t g1);
void mv_q6_k_x16_avx512(const void* p, int64_t rows, int64_t cols, const q8_row& x, float* y,
                        int64_t g0, int64_t g1);
// The same with the high bits moved by vgf2p8affineqb (only when cpu_supports_gfni() too): the
// same integer sums, so the same bits, for fewer instructions per vpdpbusd.
void mv_q5_k_x16_avx512_gfni(const void* p, int64_t rows, int64_t cols, const q8_row& x, float* y,
                             int64_t g0, int64_t g1);
void mv_q6_k_x16_avx512_gfni(const void* p, int64_t rows, int64_t cols, const q8_row& x, float* y,
                             int64_t g0, int64_t g1);
void mm_q6_k_x16_avx512(const void* p, int64_t rows, int64_t cols, const q8_groups& x, float* y,
                        int64_t ldy, int64_t g0, int64_t g1);
void mv_q4_0_x16_avx512(const void* p, int64_t rows, int64_t cols, const q8_row& x, float* y,
                        int64_t g0, int64_t g1);
void mm_q4_0_x16_avx512(const void* p, int64_t rows, int64_t cols, const q8_groups& x, float* y,
                        int64_t ldy, int64_t g0, int64_t g1);
void mv_q8_0_x16_avx512(const void* p, int64_t rows, int64_t cols, const q8_row& x, float* y,
                        int64_t g0, int64_t g1);
void mm_q8_0_x16_avx512(const void* p, int64_t rows, int64_t cols, const q8_groups& x, float* y,
                        int64_t ldy, int64_t g0, int64_t g1);

// Per-level tables, defined in kernels.cpp, kernels_avx2.cpp and kernels_avx512.cpp. The SIMD
// ones may only be called when cpu_supports() says so.
const kernel_table& scalar_kernel_table();
const kernel_table& avx2_kernel_table();
const kernel_table& avx512_kernel_table();

}  // namespace tandem::cpu
