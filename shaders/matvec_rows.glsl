// The row bookkeeping shared by the matvec kernels (matvec.comp, matvec_dot.comp): which part and
// row a lane works on, the sum over a row's lanes, the store. The includer declares p
// (matvec_push), y0..y2 (bindings 5..7), ACC, PARTS, and includes reduce.glsl first.
#ifndef TANDEM_MATVEC_ROWS_GLSL
#define TANDEM_MATVEC_ROWS_GLSL

// The part (uniform per workgroup: workgroups of part 0, then of part 1, then of part 2) and the
// row of this lane; false past the part's rows.
bool find_row(uint rows_per_wg, out uint part, out uint row) {
  uint wg = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
  const uint wg0 = (p.rows0 + rows_per_wg - 1u) / rows_per_wg;
  const uint wg1 = (p.rows1 + rows_per_wg - 1u) / rows_per_wg;
  part = 0u;
  uint rows = p.rows0;
  if (p.n_parts > 1u && wg >= wg0) {
    wg -= wg0;
    part = 1u;
    rows = p.rows1;
    if (p.n_parts > 2u && wg >= wg1) {
      wg -= wg1;
      part = 2u;
      rows = p.rows2;
    }
  }
  row = wg * rows_per_wg + gl_LocalInvocationIndex / p.row_threads;
  return row < rows;
}

// Sum over the row's row_threads lanes (aligned segments), returned to every lane of the row.
float row_sum(float v, uint tpr) {
#if USE_SUBGROUP
  // Subgroups hold consecutive invocation indices (true of every driver for a 1-D workgroup
  // whose size is a multiple of the subgroup size).
  if (tpr >= gl_SubgroupSize && gl_WorkGroupSize.x % gl_SubgroupSize == 0u) {
    v = subgroupAdd(v);
    if (tpr == gl_SubgroupSize) return v;
    const uint tid = gl_LocalInvocationIndex;
    barrier();
    if (subgroupElect()) red_buf[tid / gl_SubgroupSize] = v;
    barrier();
    const uint n = tpr / gl_SubgroupSize, first = (tid / tpr) * n;
    float s = 0.0;
    for (uint i = 0; i < n; ++i) s += red_buf[first + i];
    return s;
  }
#endif
  return segment_sum(v, tpr);
}

void store(uint part, uint t, uint row, float s) {
  if (PARTS == 1u || part == 0u) {
    const uint i = t * p.ldy0 + p.y_off0 + row;
    y0[i] = ACC ? y0[i] + s : s;
  } else if (part == 1u) {
    const uint i = t * p.ldy1 + p.y_off1 + row;
    y1[i] = ACC ? y1[i] + s : s;
  } else {
    const uint i = t * p.ldy2 + p.y_off2 + row;
    y2[i] = ACC ? y2[i] + s : s;
  }
}

#endif
