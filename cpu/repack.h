// Row-interleaved weight layouts ("x16"): 16 rows of a quantized matrix stored together, block
// by block, so that one zmm register (or two ymm) holds the same 4 columns of 16 rows. A
// matrix-vector kernel then multiplies 16 rows by one broadcast of 4 activation bytes (vpdpbusd;
// vpmaddubsw on 8 rows at a time with AVX2), and each
// row's sub-block scale is a vector lane: scales are applied once per sub-block for 16 rows
// instead of being broadcast lane by lane within each row. This is what lets decode run at the
// memory limit on K-quants (llama.cpp's CPU "repack" buffers do the same for Q4_0 and Q4_K).
//
// The CPU backend packs a weight at load when the active kernel table has kernels for its packed
// layout (type_kernels::mv_x16); the GGUF rows are then no longer read. Weights that go through
// the layer cache (--mem-budget) stay in GGUF layout.
//
// Layouts are defined here, independent of the instruction set; packing the quantized types is
// exact and reversible (unpack_x16 restores the GGUF bytes, which the tests check). F16 is packed
// into 14-bit integers with a scale per 64 columns, which rounds (block_f16_x16).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "cpu/large_buffer.h"
#include "runtime/dtype.h"

namespace tandem::cpu {

inline constexpr int x16_rows = 16;

// Q4_K, 16 rows x 256 columns (one super-block of each row).
//  qs[s][p][r][e]: low nibble = level of column 4s + e of sub-block 2p of row r, high nibble =
//                  the same column of sub-block 2p + 1 (as GGUF Q4_K pairs sub-blocks); step-major
//                  so that the matrix-vector kernel (all pairs per step) reads memory in order;
//  sc[j][r], mn[p][r][2]: the 6-bit scale of sub-block j and the mins of sub-blocks 2p, 2p + 1;
//  d[r], dmin[r]: the rows' F16 super-block scales.
// Rows past the matrix's end are zero (d = dmin = 0).
struct block_q4_k_x16 {
  uint8_t qs[8][4][x16_rows][4];
  uint8_t sc[8][x16_rows];
  uint8_t mn[4][x16_rows][2];
  uint16_t d[x16_rows];
  uint16_t dmin[x16_rows];
};
static_assert(sizeof(block_q4_k_x16) == 2368);

// Q5_K, 16 rows x 256 columns: Q4_K's low 4 bits, then the fifth bits, then the scales.
//  qs[s][p][r][e]: as Q4_K;
//  qh[s][r][e]: bit j = the fifth bit of column 4s + e of sub-block j (GGUF's qh[4s + e]);
//  sc, mn, d, dmin: as Q4_K.
struct block_q5_k_x16 {
  uint8_t qs[8][4][x16_rows][4];
  uint8_t qh[8][x16_rows][4];
  uint8_t sc[8][x16_rows];
  uint8_t mn[4][x16_rows][2];
  uint16_t d[x16_rows];
  uint16_t dmin[x16_rows];
};
static_assert(sizeof(block_q5_k_x16) == 2880);

// Q6_K, 16 rows x 256 columns. Columns in 8 groups of 32 (group G = columns 32G .. 32G + 31,
// sub-blocks of 16: 2G and 2G + 1); levels unsigned (0..63, the value is level - 32). Stored in
// the order the matrix-vector kernel reads (scales first, then step by step), 1% larger than
// GGUF so that blocks are whole cache lines:
//  d[r]: F16 super-block scale;  sc[G][r][2]: the int8 scales of sub-blocks 2G, 2G + 1;
//  step[s].ql[p][r][e]: low 4 bits of column 4s + e of group 2p (low nibble) and 2p + 1 (high);
//  step[s].qh[p][r][e]: bits 2k, 2k + 1 = the top 2 bits of column 4s + e of group 4p + k.
struct block_q6_k_x16 {
  uint16_t d[x16_rows];
  int8_t sc[8][x16_rows][2];
  uint8_t pad[32];  // keeps every vector load of the steps within one cache line
  struct {
    uint8_t ql[4][x16_rows][4];
    uint8_t qh[2][x16_rows][4];
  } step[8];
};
static_assert(sizeof(block_q6_k_x16) == 3392);

// Q4_0, 16 rows x 64 columns (GGUF blocks 2i and 2i + 1 of each row):
//  d[b][r]: F16 scale of block b (0, 1);
//  qs[s][b][r][e]: GGUF byte 4s + e of block b: low nibble = column 4s + e, high = 16 + 4s + e
//  (step-major: the kernels read memory in order).
struct block_q4_0_x16 {
  uint16_t d[2][x16_rows];
  uint8_t qs[4][2][x16_rows][4];
};
static_assert(sizeof(block_q4_0_x16) == 576);

// Q8_0, 16 rows x 64 columns: d as Q4_0; qs[s][b][r][e] = level of column 4s + e of block b plus
// 128 (unsigned, for vpdpbusd).
struct block_q8_0_x16 {
  uint16_t d[2][x16_rows];
  uint8_t qs[8][2][x16_rows][4];
};
static_assert(sizeof(block_q8_0_x16) == 1088);

// F16, 16 rows x 128 columns, as 14-bit integers with a scale per row and 64 columns, so that
// prompts run on int16 dot products (vpdpwssd: twice the multiply-adds per cycle of FP32 FMA):
//  d[h][r]: BF16 scale (the range of F32 in 2 bytes) of columns 64h .. 64h + 63 of row r, rounded
//           up from max|w| / 8191 so that every level fits;
//  qs[s][r][2]: round(w / d) of columns 2s, 2s + 1 of row r, |level| <= 8191.
// Unlike the other layouts this one rounds: each weight moves by at most d / 2, max|w| * 2^-14
// of its 64 columns (about a third of F16's own rounding for a typical weight). Activations go
// with it in q16_64 form (kernels.h, |level| <= 4095 per 64), so a 64-column int32 sum stays
// below 64 * 8191 * 4095 < 2^31.
struct block_f16_x16 {
  uint16_t d[2][x16_rows];
  int16_t qs[64][x16_rows][2];
};
static_assert(sizeof(block_f16_x16) == 4160);
inline constexpr int f16_x16_level_max = 8191;

// Columns of one x16 block of type t (256 for K-quants, 128 for F16, 64 for Q4_0 / Q8_0).
int x16_block_cols(dtype t);

// Whether t has an x16 layout and cols fit its blocks.
bool x16_supported(dtype t, int64_t cols);
// Bytes of the packed matrix: ceil(rows / 16) groups, each cols / 256 blocks, group-major.
size_t x16_bytes(dtype t, int64_t rows, int64_t cols);
// Packs row groups [g0, g1) of a rows x cols matrix (rb bytes per GGUF row) into dst (the whole
// packed matrix). Groups are independent, so callers may split them across threads.
void pack_x16(dtype t, const void* w, size_t rb, int64_t rows, int64_t cols, int64_t g0, int64_t g1,
              void* dst);
// The reverse, for tests: writes the GGUF rows of the matrix (for F16, the rounded weights).
void unpack_x16(dtype t, const void* src, int64_t rows, int64_t cols, void* w, size_t rb);

// A packed copy of one weight matrix.
class packed_matrix {
 public:
  packed_matrix() = default;
  // Packs with the threads of cpu::parallel_for, into its own buffer, or into dst (x16_bytes,
  // 64-byte aligned, owned by the caller and outliving this object).
  packed_matrix(dtype t, const void* w, int64_t rows, int64_t cols, void* dst = nullptr);

  explicit operator bool() const { return data_ != nullptr; }
  dtype type() const { return type_; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  const void* data() const { return data_; }
  size_t nbytes() const { return bytes_; }

 private:
  large_buffer buf_;  // when not packed into the caller's memory
  const void* data_ = nullptr;
  dtype type_ = dtype::f32;
  int64_t rows_ = 0, cols_ = 0;
  size_t bytes_ = 0;
};

}  // namespace tandem::cpu
