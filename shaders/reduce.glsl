// Workgroup reductions: subgroup operations where the device has them, a shared-memory tree
// otherwise (the build compiles both variants, USE_SUBGROUP = 1 / 0). Include it AFTER the
// shader's `layout(local_size_x...) in;`: gl_WorkGroupSize means (1, 1, 1) before that line.
// All of them: uniform control flow only, workgroup size a power of two <= MAX_WG.
#ifndef TANDEM_REDUCE_GLSL
#define TANDEM_REDUCE_GLSL

#define MAX_WG 256

shared float red_buf[MAX_WG];

// Sum of v over the workgroup, returned to every invocation.
float wg_sum(float v) {
#if USE_SUBGROUP
  v = subgroupAdd(v);
  if (gl_NumSubgroups == 1) return v;
  barrier();
  if (subgroupElect()) red_buf[gl_SubgroupID] = v;
  barrier();
  float s = 0.0;
  for (uint i = 0; i < gl_NumSubgroups; ++i) s += red_buf[i];
  return s;
#else
  const uint tid = gl_LocalInvocationIndex;
  barrier();
  red_buf[tid] = v;
  barrier();
  for (uint s = gl_WorkGroupSize.x / 2; s > 0; s >>= 1) {
    if (tid < s) red_buf[tid] += red_buf[tid + s];
    barrier();
  }
  return red_buf[0];
#endif
}

// Maximum of v over the workgroup, returned to every invocation.
float wg_max(float v) {
#if USE_SUBGROUP
  v = subgroupMax(v);
  if (gl_NumSubgroups == 1) return v;
  barrier();
  if (subgroupElect()) red_buf[gl_SubgroupID] = v;
  barrier();
  float s = red_buf[0];
  for (uint i = 1; i < gl_NumSubgroups; ++i) s = max(s, red_buf[i]);
  return s;
#else
  const uint tid = gl_LocalInvocationIndex;
  barrier();
  red_buf[tid] = v;
  barrier();
  for (uint s = gl_WorkGroupSize.x / 2; s > 0; s >>= 1) {
    if (tid < s) red_buf[tid] = max(red_buf[tid], red_buf[tid + s]);
    barrier();
  }
  return red_buf[0];
#endif
}

// Sums over aligned segments of seg invocations (a power of two, seg uniform); every invocation
// gets its own segment's sum.
float segment_sum(float v, uint seg) {
  if (seg == gl_WorkGroupSize.x) return wg_sum(v);
  const uint tid = gl_LocalInvocationIndex;
  barrier();
  red_buf[tid] = v;
  barrier();
  for (uint s = seg / 2; s > 0; s >>= 1) {
    if (tid % seg < s) red_buf[tid] += red_buf[tid + s];
    barrier();
  }
  return red_buf[tid - tid % seg];
}

#endif
