// One weight block of Q4_0 or Q8_0 dotted with one activation block of quantize_q8.comp through
// OpSDot (4 int8 pairs per instruction). Included once per weight binding like dequant.glsl (DQ
// names the functions, w the binding); needs dequant.glsl's loads (the same DQ) and xq[] (the
// quantized activations, binding 3).

// Weight block wb (block index of the row-major block grid) . activation block at word a.
float DQ(dot_block)(uint wb, uint a) {
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
}
