// One weight block of Q4_0 or Q8_0, or one 32-element sub-block of a Q4_K / Q5_K / Q6_K
// super-block, dotted with one activation block of quantize_q8.comp through OpSDot (4 int8 pairs
// per instruction). Included once per weight binding like dequant.glsl (DQ names the functions,
// w the binding); needs dequant.glsl's loads (the same DQ) and xq[] (the quantized activations,
// binding 3).
//
// K-quants: wb counts 32-element sub-blocks of the row-major grid (8 per super-block), so the
// caller's loop is the same for every type. Per sub-block, with the activation block's scale dx,
// quants a[l] and their sum S (word 9):
//   Q4_K / Q5_K  w = d*sc*q - dmin*m:     dot = dx * (d*sc * sum q*a - dmin*m * S)
//   Q6_K         w = d*sc[h]*(q - 32), two halves h of 16 elements with int8 scales:
//                dot = dx * d * (sc[0] * sum_h0 (q-32)*a + sc[1] * sum_h1 (q-32)*a),
//                q - 32 packed as signed bytes (no sums of half blocks needed).

// Weight block wb (block index of the row-major block grid) . activation block at word a.
float DQ(dot_block)(uint wb, uint a) {
#if defined(TYPE_Q4_0) || defined(TYPE_Q8_0)
  const uint b = wb * BLOCK_BYTES;
  const float d = DQ(ld_f16)(b) * uintBitsToFloat(xq[a + 8u]);
  int s = 0;
#if defined(TYPE_Q4_0)
  for (uint k = 0; k < 4u; ++k) {
    const uint qw = DQ(ld_u32_a2)(b + 2u + 4u * k);
    s += sdot(qw & 0x0f0f0f0fu, xq[a + k], 0);               // elements 4k .. 4k+3
    s += sdot((qw >> 4) & 0x0f0f0f0fu, xq[a + 4u + k], 0);   // elements 16+4k ..
  }
  s -= 8 * int(xq[a + 9u]);  // the quants are nibble - 8
#else
  for (uint k = 0; k < 8u; ++k) s += sdot(DQ(ld_u32_a2)(b + 2u + 4u * k), xq[a + k], 0);
#endif
  return d * float(s);

#elif defined(TYPE_Q4_K) || defined(TYPE_Q5_K)
  // 144 / 176-byte blocks: every field 4-byte aligned, plain word loads.
  const uint b = (wb >> 3) * BLOCK_BYTES, j = wb & 7u;
  const uint c = j >> 1, shift = 4u * (j & 1u);  // chunk of 64, low or high nibble
  const vec2 dm = unpackHalf2x16(w[b >> 2]);     // d, dmin
  uint sc, m;
  DQ(scale_min_k4)(j, b + 4u, sc, m);
  const uint q = (b + QS_OFFSET + 32u * c) >> 2;
#if defined(TYPE_Q5_K)
  const uint h = (b + 16u) >> 2;
#endif
  int s = 0;
  for (uint k = 0; k < 8u; ++k) {
    uint qw = (w[q + k] >> shift) & 0x0f0f0f0fu;  // elements 4k .. 4k+3 of the sub-block
#if defined(TYPE_Q5_K)
    qw |= ((w[h + k] >> j) & 0x01010101u) << 4;  // bit j of qh[l]: the fifth bit
#endif
    s += sdot(qw, xq[a + k], 0);
  }
  const float dx = uintBitsToFloat(xq[a + 8u]);
  return dx * (dm.x * float(sc) * float(s) - dm.y * float(m) * float(int(xq[a + 9u])));

#elif defined(TYPE_Q6_K)
  // 210-byte blocks: only 2-byte aligned, loads through ld_u32_a2.
  const uint b = (wb >> 3) * BLOCK_BYTES, j = wb & 7u;
  const uint n = j >> 2, k4 = j & 3u;  // half of 128, quarter of 32 in it
  const uint ql = b + 64u * n + 32u * (k4 & 1u), qh = b + 128u + 32u * n;
  const uint ls = 4u * (k4 >> 1), hs = 2u * k4;
  const int scw = int(DQ(ld_u32_a2)(b + 192u + 8u * n + 2u * k4));  // scales of the two halves
  int s0 = 0, s1 = 0;
  for (uint k = 0; k < 8u; ++k) {
    const uint lo = (DQ(ld_u32_a2)(ql + 4u * k) >> ls) & 0x0f0f0f0fu;
    const uint hi = (DQ(ld_u32_a2)(qh + 4u * k) >> hs) & 0x03030303u;
    // q - 32 in each byte (q < 64): (q + 128 - 32) ^ 128, no borrow between bytes
    const uint qs = (((lo | (hi << 4)) | 0x80808080u) - 0x20202020u) ^ 0x80808080u;
    const int p = sdot(qs, xq[a + k], 0);
    if (k < 4u) s0 += p; else s1 += p;
  }
  const float d = DQ(ld_f16)(b + 208u) * uintBitsToFloat(xq[a + 8u]);
  return d * float(bitfieldExtract(scw, 0, 8) * s0 + bitfieldExtract(scw, 8, 8) * s1);
#else
#error "dot_block.glsl: no integer-dot kernel for this type"
#endif
}
