// Weight decoding for the matrix kernels, one variant per type (the build defines one of
// TYPE_F32, TYPE_F16, TYPE_Q8_0, TYPE_Q4_0, TYPE_Q4_K, TYPE_Q5_K, TYPE_Q6_K). Weights stay in
// their GGUF block layout (bit-exact with ggml), read as 32-bit words: blocks of 18, 34 or 210
// bytes are only 2-byte aligned, so multi-byte loads go through ld_u32_a2 (or, with LOADS_U16,
// 16-bit loads; below). The includer declares
//   layout(binding = 0) readonly buffer w_buf { uint w[]; };
// and binds one piece of a weight (whole rows, padded past the end to 16 bytes). With W_VEC4
// defined it also declares `uvec4 w4[]` on the same binding, and F32/F16 rows are read 16 bytes
// at a time where aligned.
//
// Several weights in one shader (the matvec's fused Q/K/V): include this file once per binding,
// each time with `#define DQ(f) f##_<suffix>` and w / w4 defined to that binding's arrays; every
// function name goes through DQ (the identity by default).
//
// With LOADS_U16 (the `_u16` builds of Q4_0, Q8_0 and Q6_K; devices with 16- and 8-bit storage
// access) the includer also declares, on the same binding,
//   uint16_t w16[];  int8_t w8[];
// (GL_EXT_shader_16bit_storage / GL_EXT_shader_8bit_storage), and halves and 4-byte runs of a
// block are read as aligned 16-bit loads (combined into 32 bits), a Q6_K scale as one int8 load:
// no loads of the neighbouring word and no merge of unaligned halves. The decoded values are
// bit-identical to the 32-bit loads' (the same bits reach the same arithmetic).
//
// dequant8(row, g, cols, v) decodes elements 8g .. 8g+7 of a row; for F32/F16 elements at or
// past cols read as 0 (the caller zeroes its x there too). All block sizes are multiples of 8,
// and 8 aligned elements always share one scale.
#ifndef DQ
#define DQ(f) f
#endif

uint DQ(ld_u8)(uint b) { return (w[b >> 2] >> ((b & 3u) * 8u)) & 0xffu; }
#ifdef LOADS_U16
// Half at an even byte offset: one 16-bit load.
float DQ(ld_f16)(uint b) { return unpackHalf2x16(uint(w16[b >> 1])).x; }
// Four bytes at an even byte offset: two aligned 16-bit loads.
uint DQ(ld_u32_a2)(uint b) {
  const uint i = b >> 1;
  return uint(w16[i]) | (uint(w16[i + 1u]) << 16);
}
// A signed byte.
int DQ(ld_i8)(uint b) { return int(w8[b]); }
#else
// Half at an even byte offset.
float DQ(ld_f16)(uint b) {
  const uint word = w[b >> 2];
  return unpackHalf2x16((b & 2u) != 0u ? word >> 16 : word).x;
}
// Four bytes at an even byte offset.
uint DQ(ld_u32_a2)(uint b) {
  const uint i = b >> 2;
  if ((b & 2u) == 0u) return w[i];
  return (w[i] >> 16) | (w[i + 1] << 16);
}
int DQ(ld_i8)(uint b) { return bitfieldExtract(int(DQ(ld_u8)(b)), 0, 8); }
#endif

#if defined(TYPE_F32)
#define WEIGHT_IS_FLOAT 1
#define QK 1u
#define BLOCK_BYTES 4u
void DQ(dequant8)(uint row, uint g, uint cols, out float v[8]) {
  const uint e0 = 8u * g;
  const uint base = row * cols + e0;
#ifdef W_VEC4
  if ((base & 3u) == 0u && e0 + 8u <= cols) {  // two 16-byte loads
    const vec4 a = uintBitsToFloat(w4[base >> 2]), b = uintBitsToFloat(w4[(base >> 2) + 1u]);
    v[0] = a[0]; v[1] = a[1]; v[2] = a[2]; v[3] = a[3];
    v[4] = b[0]; v[5] = b[1]; v[6] = b[2]; v[7] = b[3];
    return;
  }
#endif
  for (uint k = 0; k < 8u; ++k) v[k] = e0 + k < cols ? uintBitsToFloat(w[base + k]) : 0.0;
}

#elif defined(TYPE_F16)
#define WEIGHT_IS_FLOAT 1
#define QK 1u
#define BLOCK_BYTES 2u
void DQ(dequant8)(uint row, uint g, uint cols, out float v[8]) {
  const uint e0 = 8u * g;
  const uint base = row * cols + e0;  // in halves
#ifdef W_VEC4
  if ((base & 7u) == 0u && e0 + 8u <= cols) {  // one 16-byte load
    const uvec4 q = w4[base >> 3];
    for (uint k = 0; k < 4u; ++k) {
      const vec2 f = unpackHalf2x16(q[k]);
      v[2u * k] = f.x;
      v[2u * k + 1u] = f.y;
    }
    return;
  }
#endif
  if ((base & 1u) == 0u && e0 + 8u <= cols) {
    for (uint k = 0; k < 4u; ++k) {
      const vec2 f = unpackHalf2x16(w[base / 2u + k]);
      v[2u * k] = f.x;
      v[2u * k + 1u] = f.y;
    }
  } else {
    for (uint k = 0; k < 8u; ++k) {
      const uint h = base + k;
      v[k] = e0 + k < cols ? unpackHalf2x16(w[h >> 1] >> ((h & 1u) * 16u)).x : 0.0;
    }
  }
}

#elif defined(TYPE_Q8_0)
// block_q8_0 { half d; int8 qs[32]; }: x = d * qs[i].
#define QK 32u
#define BLOCK_BYTES 34u
void DQ(dequant8)(uint row, uint g, uint cols, out float v[8]) {
  const uint b = row * (cols / QK) * BLOCK_BYTES + (g >> 2) * BLOCK_BYTES;
  const float d = DQ(ld_f16)(b);
  const uint q = b + 2u + (g & 3u) * 8u;
  const int q0 = int(DQ(ld_u32_a2)(q)), q1 = int(DQ(ld_u32_a2)(q + 4u));
  for (int k = 0; k < 4; ++k) {
    v[k] = float(bitfieldExtract(q0, 8 * k, 8)) * d;
    v[4 + k] = float(bitfieldExtract(q1, 8 * k, 8)) * d;
  }
}

#elif defined(TYPE_Q4_0)
// block_q4_0 { half d; uint8 qs[16]; }: x[j] = d * ((qs[j] & 15) - 8), x[j + 16] from the high
// nibble.
#define QK 32u
#define BLOCK_BYTES 18u
void DQ(dequant8)(uint row, uint g, uint cols, out float v[8]) {
  const uint b = row * (cols / QK) * BLOCK_BYTES + (g >> 2) * BLOCK_BYTES;
  const float d = DQ(ld_f16)(b);
  const uint sub = g & 3u;
  const uint q = b + 2u + (sub & 1u) * 8u;
  const uint shift = (sub >> 1) * 4u;
  const uint q0 = DQ(ld_u32_a2)(q), q1 = DQ(ld_u32_a2)(q + 4u);
  for (uint k = 0; k < 4u; ++k) {
    v[k] = float(int((q0 >> (8u * k + shift)) & 15u) - 8) * d;
    v[4u + k] = float(int((q1 >> (8u * k + shift)) & 15u) - 8) * d;
  }
}

#elif defined(TYPE_Q4_K) || defined(TYPE_Q5_K)
// block_q4_K { half d; half dmin; uint8 scales[12]; uint8 qs[128]; } (144 bytes)
// block_q5_K { half d; half dmin; uint8 scales[12]; uint8 qh[32]; uint8 qs[128]; } (176 bytes)
// 8 sub-blocks of 32 with 6-bit scales and mins; element e of chunk c = e / 64 is the low (e % 64
// < 32) or high nibble of qs[32c + e % 32]; Q5_K adds bit (2c + high) of qh[e % 32] as 16.
#define QK 256u
#if defined(TYPE_Q4_K)
#define BLOCK_BYTES 144u
#define QS_OFFSET 16u
#else
#define BLOCK_BYTES 176u
#define QS_OFFSET 48u
#endif
void DQ(scale_min_k4)(uint j, uint sb, out uint sc, out uint m) {
  if (j < 4u) {
    sc = DQ(ld_u8)(sb + j) & 63u;
    m = DQ(ld_u8)(sb + j + 4u) & 63u;
  } else {
    sc = (DQ(ld_u8)(sb + j + 4u) & 15u) | ((DQ(ld_u8)(sb + j - 4u) >> 6) << 4);
    m = (DQ(ld_u8)(sb + j + 4u) >> 4) | ((DQ(ld_u8)(sb + j) >> 6) << 4);
  }
}
void DQ(dequant8)(uint row, uint g, uint cols, out float v[8]) {
  const uint b = row * (cols / QK) * BLOCK_BYTES + (g >> 5) * BLOCK_BYTES;
  const uint gi = g & 31u;
  const uint c = gi >> 3, hi = (gi >> 2) & 1u, l0 = 8u * (gi & 3u);
  const float d = DQ(ld_f16)(b), dmin = DQ(ld_f16)(b + 2u);
  uint sc, m;
  DQ(scale_min_k4)(2u * c + hi, b + 4u, sc, m);
  const float d1 = d * float(sc), m1 = dmin * float(m);
  const uint q = b + QS_OFFSET + 32u * c + l0;
  const uint q0 = DQ(ld_u32_a2)(q), q1 = DQ(ld_u32_a2)(q + 4u);
#if defined(TYPE_Q5_K)
  const uint h0 = DQ(ld_u32_a2)(b + 16u + l0), h1 = DQ(ld_u32_a2)(b + 20u + l0);
  const uint hb = 2u * c + hi;
#endif
  for (uint k = 0; k < 4u; ++k) {
    uint n0 = (q0 >> (8u * k + 4u * hi)) & 15u;
    uint n1 = (q1 >> (8u * k + 4u * hi)) & 15u;
#if defined(TYPE_Q5_K)
    n0 += ((h0 >> (8u * k + hb)) & 1u) << 4;
    n1 += ((h1 >> (8u * k + hb)) & 1u) << 4;
#endif
    v[k] = d1 * float(n0) - m1;
    v[4u + k] = d1 * float(n1) - m1;
  }
}

#elif defined(TYPE_Q6_K)
// block_q6_K { uint8 ql[128]; uint8 qh[64]; int8 scales[16]; half d; } (210 bytes): two halves
// of 128; in half n, quarter k of 32 takes the low (k < 2) or high nibble of
// ql[64n + 32(k & 1) + l] and bits 2k of qh[32n + l], minus 32, scaled by scales[8n + l/16 + 2k].
#define QK 256u
#define BLOCK_BYTES 210u
void DQ(dequant8)(uint row, uint g, uint cols, out float v[8]) {
  const uint b = row * (cols / QK) * BLOCK_BYTES + (g >> 5) * BLOCK_BYTES;
  const uint gi = g & 31u;
  const uint n = gi >> 4, k4 = (gi >> 2) & 3u, l0 = 8u * (gi & 3u);
  const float d = DQ(ld_f16)(b + 208u);
  const int sc = DQ(ld_i8)(b + 192u + 8u * n + l0 / 16u + 2u * k4);
  const float ds = d * float(sc);
  const uint ql = b + 64u * n + l0 + (k4 & 1u) * 32u;
  const uint qh = b + 128u + 32u * n + l0;
  const uint l_0 = DQ(ld_u32_a2)(ql), l_1 = DQ(ld_u32_a2)(ql + 4u);
  const uint h_0 = DQ(ld_u32_a2)(qh), h_1 = DQ(ld_u32_a2)(qh + 4u);
  const uint ls = 4u * (k4 >> 1), hs = 2u * k4;
  for (uint k = 0; k < 4u; ++k) {
    const uint a0 = ((l_0 >> (8u * k + ls)) & 15u) | (((h_0 >> (8u * k + hs)) & 3u) << 4);
    const uint a1 = ((l_1 >> (8u * k + ls)) & 15u) | (((h_1 >> (8u * k + hs)) & 3u) << 4);
    v[k] = ds * float(int(a0) - 32);
    v[4u + k] = ds * float(int(a1) - 32);
  }
}

#else
#error "dequant.glsl: define one TYPE_*"
#endif
