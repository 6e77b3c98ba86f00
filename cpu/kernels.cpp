// The kernel table: CPUID detection and level selection, the prefetch knob, the activation
// quantizers, and the scalar reference kernels every SIMD kernel is tested against.
#include "cpu/kernels.h"

#include <cpuid.h>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <type_traits>
#include <vector>

#include "runtime/fp16.h"
#include "runtime/blocks.h"
#include "runtime/error.h"

namespace tandem::cpu {

// ---- levels -------------------------------------------------------------------------------------

namespace {

uint64_t xgetbv0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

struct cpu_features {
  bool avx2 = false;    // AVX2 + FMA + F16C, with the OS saving YMM state
  bool avx512 = false;  // F + DQ + BW + VL + VNNI, with the OS saving ZMM state
  bool gfni = false;
};

cpu_features detect() {
  cpu_features f;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = c & (1u << 27), avx = c & (1u << 28), fma = c & (1u << 12),
             f16c = c & (1u << 29);
  if (!osxsave || !avx) return f;
  const uint64_t xcr0 = xgetbv0();
  if ((xcr0 & 0x6) != 0x6) return f;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  f.avx2 = (b & (1u << 5)) && fma && f16c;
  const bool avx512 = (b & (1u << 16)) && (b & (1u << 17)) && (b & (1u << 30)) &&
                      (b & (1u << 31)) && (c & (1u << 11));
  f.avx512 = f.avx2 && avx512 && (xcr0 & 0xe6) == 0xe6;
  f.gfni = c & (1u << 8);
  return f;
}

const cpu_features& features() {
  static const cpu_features f = detect();
  return f;
}

const kernel_table* initial_table() {
  kernel_level l = best_kernel_level();
  if (const char* env = std::getenv("TANDEM_KERNELS"); env && *env) {
    const std::string_view v(env);
    bool known = true;
    kernel_level want = l;
    if (v == "scalar")
      want = kernel_level::scalar;
    else if (v == "avx2")
      want = kernel_level::avx2;
    else if (v == "avx512")
      want = kernel_level::avx512;
    else
      known = false;
    if (!known)
      std::fprintf(stderr, "warning: TANDEM_KERNELS=%s is not scalar, avx2 or avx512; using %s\n",
                   env, kernel_level_name(l));
    else if (!cpu_supports(want))
      std::fprintf(stderr, "warning: TANDEM_KERNELS=%s: this CPU lacks it; using %s\n", env,
                   kernel_level_name(l));
    else
      l = want;
  }
  return &kernels(l);
}

std::atomic<const kernel_table*>& active_table() {
  static std::atomic<const kernel_table*> t{initial_table()};
  return t;
}

// TANDEM_PREFETCH=<bytes> sets one distance for every type (for measuring it end to end with
// tandem bench); -1: the per-type defaults.
int initial_prefetch() {
  const char* env = std::getenv("TANDEM_PREFETCH");
  if (!env || !*env) return -1;
  char* end = nullptr;
  const long v = std::strtol(env, &end, 10);
  if (*end != '\0' || v < 0 || v > (1 << 20)) {
    std::fprintf(stderr,
                 "warning: TANDEM_PREFETCH=%s is not a byte count (0 .. 1048576); using the "
                 "defaults\n",
                 env);
    return -1;
  }
  return static_cast<int>(v);
}
std::atomic<int> g_prefetch{initial_prefetch()};

}  // namespace

const char* kernel_level_name(kernel_level l) {
  switch (l) {
    case kernel_level::scalar:
      return "scalar";
    case kernel_level::avx2:
      return "avx2";
    case kernel_level::avx512:
      return "avx512";
  }
  return "?";
}

bool cpu_supports(kernel_level l) {
  switch (l) {
    case kernel_level::scalar:
      return true;
    case kernel_level::avx2:
      return features().avx2;
    case kernel_level::avx512:
      return features().avx512;
  }
  return false;
}

bool cpu_supports_gfni() {
  return features().gfni;
}

kernel_level best_kernel_level() {
  if (cpu_supports(kernel_level::avx512)) return kernel_level::avx512;
  if (cpu_supports(kernel_level::avx2)) return kernel_level::avx2;
  return kernel_level::scalar;
}

kernel_level active_kernel_level() {
  return active_table().load()->level;
}

void set_kernel_level(kernel_level l) {
  if (!cpu_supports(l))
    throw error(fmt::format("this CPU does not support the {} kernels", kernel_level_name(l)));
  active_table().store(&kernels(l));
}

void set_prefetch_distance(int bytes) {
  g_prefetch.store(std::max(-1, bytes));
}
int prefetch_distance() {
  return g_prefetch.load(std::memory_order_relaxed);
}
int prefetch_distance(dtype t) {
  const int all = g_prefetch.load(std::memory_order_relaxed);
  return all >= 0 ? all : default_prefetch_distance(t);
}

const kernel_table& kernels(kernel_level l) {
  switch (l) {
    case kernel_level::avx512:
      return avx512_kernel_table();
    case kernel_level::avx2:
      return avx2_kernel_table();
    default:
      return scalar_kernel_table();
  }
}

const kernel_table& kernels() {
  return *active_table().load(std::memory_order_relaxed);
}

const type_kernels* kernel_table::find(dtype t) const {
  const type_kernels* k = nullptr;
  switch (t) {
    case dtype::f32:
      k = &f32;
      break;
    case dtype::f16:
      k = &f16;
      break;
    case dtype::q4_0:
      k = &q4_0;
      break;
    case dtype::q8_0:
      k = &q8_0;
      break;
    case dtype::q4_k:
      k = &q4_k;
      break;
    case dtype::q5_k:
      k = &q5_k;
      break;
    case dtype::q6_k:
      k = &q6_k;
      break;
    default:
      return nullptr;
  }
  return (k->mv_f32 || k->mv_q8) ? k : nullptr;
}

void interleave_q8_32_pairs(int8_t* q, int64_t cols) {
  int8_t tmp[64];
  for (int64_t p = 0; p + 1 < cols / 32; p += 2) {
    int8_t* b = q + 32 * p;
    std::memcpy(tmp, b, 16);
    std::memcpy(tmp + 16, b + 32, 16);
    std::memcpy(tmp + 32, b + 16, 16);
    std::memcpy(tmp + 48, b + 48, 16);
    std::memcpy(b, tmp, 64);
  }
}

size_t gemm_scratch_bytes(int64_t cols) {
  // Per 16 weights of a row: 16 bytes of levels + 2 x 4 bytes of scales (Q6_K's 16-blocks).
  return static_cast<size_t>(cols) * 24 + 64;
}

uint8_t* thread_gemm_scratch(int64_t cols) {
  thread_local std::vector<uint8_t> buf;
  const size_t bytes = gemm_scratch_bytes(cols) + 64;
  if (buf.size() < bytes) buf.resize(bytes);
  const auto a = reinterpret_cast<uintptr_t>(buf.data());
  return buf.data() + (64 - a % 64) % 64;
}

// ---- activation quantizers ----------------------------------------------------------------------
// llama.cpp's rules, so that logits (and perplexity) track llama.cpp's as closely as rounding
// allows: blocks of 32 as ggml's x86 quantize_row_q8_0 (d = amax / 127 rounded to fp16, levels
// round(x * 127 / amax)), blocks of 256 as quantize_row_q8_K_ref (iscale = -127 / max with max
// the signed value of largest magnitude, d = 1 / iscale). Rounding is to nearest even (the SIMD
// versions use cvtps2dq under the default rounding mode).

namespace {

inline int8_t q8_round(float v) {
  const float r = std::nearbyint(v);
  return static_cast<int8_t>(std::max(-127.0f, std::min(127.0f, r)));
}

// Quantizes 32 elements (Q8_0 rule); returns the scale.
inline float quant_block32(const float* x, int8_t* q) {
  float amax = 0;
  for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float d = fp16_to_fp32(fp32_to_fp16(amax / 127.0f));
  const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
  for (int i = 0; i < 32; ++i) q[i] = q8_round(x[i] * id);
  return d;
}

// Quantizes 256 elements (Q8_K rule); returns the scale.
inline float quant_block256(const float* x, int8_t* q) {
  float amax = 0, max = 0;
  for (int i = 0; i < 256; ++i) {
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  }
  if (amax == 0.0f) {
    std::memset(q, 0, 256);
    return 0.0f;
  }
  const float iscale = -127.0f / max;
  for (int i = 0; i < 256; ++i) q[i] = q8_round(iscale * x[i]);
  return 1 / iscale;
}

void quant_q8_32_ref(const float* x, int64_t cols, int8_t* q, float* d, int32_t* sum) {
  for (int64_t b = 0; b < cols / 32; ++b) {
    d[b] = quant_block32(x + 32 * b, q + 32 * b);
    int32_t s = 0;
    for (int i = 0; i < 32; ++i) s += q[32 * b + i];
    sum[b] = s;
  }
}

}  // namespace

void quant_q16_64_ref(const float* x, int64_t cols, int16_t* q, float* d) {
  for (int64_t b = 0; b < cols / q16_block; ++b) {
    const float* xb = x + q16_block * b;
    float amax = 0;
    for (int i = 0; i < q16_block; ++i) amax = std::max(amax, std::fabs(xb[i]));
    const float dd = amax / q16_level_max, id = dd > 0 ? 1 / dd : 0.0f;
    d[b] = dd;
    for (int i = 0; i < q16_block; ++i) {
      // As cvtps2dq: round to nearest even, and NaN (from non-finite input) to INT32_MIN.
      const float v = std::nearbyint(xb[i] * id);
      const int32_t l = std::isnan(v) ? INT32_MIN : static_cast<int32_t>(v);
      q[q16_block * b + i] = static_cast<int16_t>(std::clamp(l, -q16_level_max, q16_level_max));
    }
  }
}

void quant_group_q16_ref(const float* x, int n, int64_t cols, int16_t* q, float* d) {
  constexpr int g = gemm_group;
  std::memset(q, 0, static_cast<size_t>(cols) * g * sizeof(int16_t));
  std::fill(d, d + cols / q16_block * g, 0.0f);
  int16_t tmp[q16_block];
  float dd;
  for (int t = 0; t < n; ++t) {
    for (int64_t b = 0; b < cols / q16_block; ++b) {
      quant_q16_64_ref(x + t * cols + q16_block * b, q16_block, tmp, &dd);
      d[b * g + t] = dd;
      for (int i = 0; i < q16_block; ++i) {
        const int64_t e = b * q16_block + i;
        q[(e / 2) * 2 * g + t * 2 + e % 2] = tmp[i];
      }
    }
  }
}

namespace {

void quant_q8_256_ref(const float* x, int64_t cols, int8_t* q, float* d, int16_t* bsums) {
  for (int64_t b = 0; b < cols / 256; ++b) {
    d[b] = quant_block256(x + 256 * b, q + 256 * b);
    for (int j = 0; j < 16; ++j) {
      int s = 0;
      for (int i = 0; i < 16; ++i) s += q[256 * b + 16 * j + i];
      bsums[16 * b + j] = static_cast<int16_t>(s);
    }
  }
}

void quant_group_ref(const float* x, int n, int64_t cols, int sb, int db, int8_t* q, float* d,
                     float* s) {
  constexpr int g = gemm_group;
  std::memset(q, 0, static_cast<size_t>(cols) * g);
  std::fill(d, d + cols / db * g, 0.0f);
  std::fill(s, s + cols / sb * g, 0.0f);
  int8_t tmp[256];
  for (int t = 0; t < n; ++t) {
    const float* xt = x + t * cols;
    for (int64_t b = 0; b < cols / db; ++b) {
      const float dd =
          db == 32 ? quant_block32(xt + 32 * b, tmp) : quant_block256(xt + 256 * b, tmp);
      d[b * g + t] = dd;
      for (int i = 0; i < db; ++i) {
        const int64_t e = b * db + i;
        q[(e / 4) * 4 * g + t * 4 + e % 4] = tmp[i];
      }
      for (int h = 0; h < db / sb; ++h) {
        int sum = 0;
        for (int i = 0; i < sb; ++i) sum += tmp[h * sb + i];
        s[(b * (db / sb) + h) * g + t] = dd * static_cast<float>(sum);
      }
    }
  }
}

// ---- scalar matrix-vector kernels ---------------------------------------------------------------

const uint8_t* row_ptr(const void* w, size_t rb, int64_t r) {
  return static_cast<const uint8_t*>(w) + static_cast<size_t>(r) * rb;
}

void mv_f32_ref(const void* w, size_t rb, int64_t cols, const float* x, float* y, int64_t r0,
                int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const auto* wr = reinterpret_cast<const float*>(row_ptr(w, rb, r));
    float acc = 0;
    for (int64_t i = 0; i < cols; ++i) acc += wr[i] * x[i];
    y[r] = acc;
  }
}

void mv_f16_ref(const void* w, size_t rb, int64_t cols, const float* x, float* y, int64_t r0,
                int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const auto* wr = reinterpret_cast<const uint16_t*>(row_ptr(w, rb, r));
    float acc = 0;
    for (int64_t i = 0; i < cols; ++i) acc += fp16_to_fp32(wr[i]) * x[i];
    y[r] = acc;
  }
}

template <mv_f32_fn mv>
void mm_f32_ref(const void* w, size_t rb, int64_t cols, const float* x, int n_tok, float* y,
                int64_t ldy, int64_t r0, int64_t r1) {
  for (int t = 0; t < n_tok; ++t) mv(w, rb, cols, x + t * cols, y + t * ldy, r0, r1);
}

void mv_q4_0_ref(const void* w, size_t rb, int64_t cols, const q8_row& x, float* y, int64_t r0,
                 int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const auto* b = reinterpret_cast<const block_q4_0*>(row_ptr(w, rb, r));
    float acc = 0;
    const int64_t nb = cols / 32;
    for (int64_t i = 0; i < nb; ++i) {
      int isum = 0;
      for (int j = 0; j < 16; ++j)
        isum += (b[i].qs[j] & 15) * x.q[q8_32p_index(i, j, nb)] +
                (b[i].qs[j] >> 4) * x.q[q8_32p_index(i, j + 16, nb)];
      acc += fp16_to_fp32(b[i].d) * x.d[i] * static_cast<float>(isum - 8 * x.sum[i]);
    }
    y[r] = acc;
  }
}

void mv_q8_0_ref(const void* w, size_t rb, int64_t cols, const q8_row& x, float* y, int64_t r0,
                 int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const auto* b = reinterpret_cast<const block_q8_0*>(row_ptr(w, rb, r));
    float acc = 0;
    for (int64_t i = 0; i < cols / 32; ++i) {
      int isum = 0;
      for (int j = 0; j < 32; ++j) isum += b[i].qs[j] * x.q[32 * i + j];
      acc += fp16_to_fp32(b[i].d) * x.d[i] * static_cast<float>(isum);
    }
    y[r] = acc;
  }
}

// Q4_K and Q5_K: sum_j sc_j * dot_j * d - dmin * sum_j m_j * (sum of x over sub-block j).
template <bool five>
void mv_q45_k_ref(const void* w, size_t rb, int64_t cols, const q8_row& x, float* y, int64_t r0,
                  int64_t r1) {
  using block = std::conditional_t<five, block_q5_k, block_q4_k>;
  for (int64_t r = r0; r < r1; ++r) {
    const auto* b = reinterpret_cast<const block*>(row_ptr(w, rb, r));
    float acc = 0;
    for (int64_t i = 0; i < cols / qk_k; ++i) {
      const int8_t* xq = x.q + qk_k * i;
      const int16_t* bs = x.bsums + 16 * i;
      int sumi = 0, summ = 0;
      for (int j = 0; j < 8; ++j) {
        uint8_t sc, m;
        get_scale_min_k4(j, b[i].scales, &sc, &m);
        const uint8_t* qs = b[i].qs + 32 * (j / 2);
        int isum = 0;
        for (int l = 0; l < 32; ++l) {
          int q = j % 2 ? qs[l] >> 4 : qs[l] & 15;
          if constexpr (five) q += (b[i].qh[l] >> j & 1) << 4;
          isum += q * xq[32 * j + l];
        }
        sumi += sc * isum;
        summ += m * (bs[2 * j] + bs[2 * j + 1]);
      }
      const float d = fp16_to_fp32(b[i].d) * x.d[i], dmin = fp16_to_fp32(b[i].dmin) * x.d[i];
      acc += d * static_cast<float>(sumi) - dmin * static_cast<float>(summ);
    }
    y[r] = acc;
  }
}

void mv_q6_k_ref(const void* w, size_t rb, int64_t cols, const q8_row& x, float* y, int64_t r0,
                 int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const auto* b = reinterpret_cast<const block_q6_k*>(row_ptr(w, rb, r));
    float acc = 0;
    for (int64_t i = 0; i < cols / qk_k; ++i) {
      const int8_t* xq = x.q + qk_k * i;
      int sumi = 0, off = 0;
      for (int e = 0; e < qk_k; ++e) {
        const int h = e / 128, l = e % 32, quarter = (e % 128) / 32;
        const uint8_t ql = b[i].ql[64 * h + l + 32 * (quarter & 1)];
        const int lo = quarter < 2 ? ql & 15 : ql >> 4;
        const int hi = (b[i].qh[32 * h + l] >> (2 * quarter)) & 3;
        sumi += b[i].scales[e / 16] * (lo | hi << 4) * xq[e];
      }
      for (int j = 0; j < 16; ++j) off += b[i].scales[j] * x.bsums[16 * i + j];
      acc += fp16_to_fp32(b[i].d) * x.d[i] * static_cast<float>(sumi - 32 * off);
    }
    y[r] = acc;
  }
}

// ---- scalar gemm on grouped activations ---------------------------------------------------------

// Decodes sub-block sb of a row into levels q (0..255) with w = dw * q + mw (B = 32, or 16 for
// Q6_K).
void decode_sub_block(dtype t, const uint8_t* row, int64_t sb, uint8_t* q, float* dw, float* mw) {
  switch (t) {
    case dtype::q4_0: {
      const auto& b = reinterpret_cast<const block_q4_0*>(row)[sb];
      for (int j = 0; j < 16; ++j) {
        q[j] = b.qs[j] & 15;
        q[j + 16] = b.qs[j] >> 4;
      }
      *dw = fp16_to_fp32(b.d);
      *mw = -8.0f * *dw;
      return;
    }
    case dtype::q8_0: {
      const auto& b = reinterpret_cast<const block_q8_0*>(row)[sb];
      for (int j = 0; j < 32; ++j) q[j] = static_cast<uint8_t>(b.qs[j] + 128);
      *dw = fp16_to_fp32(b.d);
      *mw = -128.0f * *dw;
      return;
    }
    case dtype::q4_k:
    case dtype::q5_k: {
      const bool five = t == dtype::q5_k;
      const uint8_t* blk = row + (sb / 8) * (five ? sizeof(block_q5_k) : sizeof(block_q4_k));
      const int j = static_cast<int>(sb % 8);
      const auto* b4 = reinterpret_cast<const block_q4_k*>(blk);
      const auto* b5 = reinterpret_cast<const block_q5_k*>(blk);
      const uint8_t* scales = five ? b5->scales : b4->scales;
      const uint8_t* qs = (five ? b5->qs : b4->qs) + 32 * (j / 2);
      for (int l = 0; l < 32; ++l) {
        q[l] = static_cast<uint8_t>(j % 2 ? qs[l] >> 4 : qs[l] & 15);
        if (five) q[l] = static_cast<uint8_t>(q[l] | ((b5->qh[l] >> j & 1) << 4));
      }
      uint8_t sc, m;
      get_scale_min_k4(j, scales, &sc, &m);
      *dw = fp16_to_fp32(five ? b5->d : b4->d) * sc;
      *mw = -(fp16_to_fp32(five ? b5->dmin : b4->dmin) * m);
      return;
    }
    case dtype::q6_k: {
      const auto& b = reinterpret_cast<const block_q6_k*>(row)[sb / 16];
      const int j = static_cast<int>(sb % 16);
      for (int i = 0; i < 16; ++i) {
        const int e = 16 * j + i;
        const int h = e / 128, l = e % 32, quarter = (e % 128) / 32;
        const uint8_t ql = b.ql[64 * h + l + 32 * (quarter & 1)];
        const int lo = quarter < 2 ? ql & 15 : ql >> 4;
        const int hi = (b.qh[32 * h + l] >> (2 * quarter)) & 3;
        q[i] = static_cast<uint8_t>(lo | hi << 4);
      }
      *dw = fp16_to_fp32(b.d) * static_cast<float>(b.scales[j]);
      *mw = -32.0f * *dw;
      return;
    }
    default:
      return;
  }
}

template <dtype T>
void mm_q8_ref(const void* w, size_t rb, int64_t cols, const q8_groups& x, float* y, int64_t ldy,
               int64_t r0, int64_t r1, void*) {
  constexpr int g = gemm_group;
  const int sb = T == dtype::q6_k ? 16 : 32;
  const int64_t nsb = cols / sb;
  const int n_groups = (x.n_tok + g - 1) / g;
  uint8_t q[32];
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = row_ptr(w, rb, r);
    for (int gi = 0; gi < n_groups; ++gi) {
      const int8_t* xq = x.q + gi * cols * g;
      const float* xd = x.d + gi * (cols / x.db) * g;
      const float* xs = x.s + gi * nsb * g;
      float acc[g] = {};
      for (int64_t s = 0; s < nsb; ++s) {
        float dw, mw;
        decode_sub_block(T, row, s, q, &dw, &mw);
        for (int t = 0; t < g; ++t) {
          int isum = 0;
          for (int i = 0; i < sb; ++i) {
            const int64_t e = s * sb + i;
            isum += q[i] * xq[(e / 4) * 4 * g + t * 4 + e % 4];
          }
          acc[t] +=
              dw * xd[(s * sb / x.db) * g + t] * static_cast<float>(isum) + mw * xs[s * g + t];
        }
      }
      for (int t = 0; t < g && gi * g + t < x.n_tok; ++t) y[(gi * g + t) * ldy + r] = acc[t];
    }
  }
}

kernel_table make_scalar_table() {
  kernel_table k;
  k.level = kernel_level::scalar;
  k.f32 = {act_format::f32, mv_f32_ref, mm_f32_ref<mv_f32_ref>, nullptr, nullptr, 32};
  k.f16 = {act_format::f32, mv_f16_ref, mm_f32_ref<mv_f16_ref>, nullptr, nullptr, 32};
  k.q4_0 = {act_format::q8_32p, nullptr, nullptr, mv_q4_0_ref, mm_q8_ref<dtype::q4_0>, 32, 32};
  k.q8_0 = {act_format::q8_32, nullptr, nullptr, mv_q8_0_ref, mm_q8_ref<dtype::q8_0>, 32, 32};
  k.q4_k = {act_format::q8_256,     nullptr, nullptr, mv_q45_k_ref<false>,
            mm_q8_ref<dtype::q4_k>, 32,      256};
  k.q5_k = {act_format::q8_256,     nullptr, nullptr, mv_q45_k_ref<true>,
            mm_q8_ref<dtype::q5_k>, 32,      256};
  k.q6_k = {act_format::q8_256, nullptr, nullptr, mv_q6_k_ref, mm_q8_ref<dtype::q6_k>, 16, 256};
  k.quant_q8_32 = quant_q8_32_ref;
  k.quant_q8_256 = quant_q8_256_ref;
  k.quant_group = quant_group_ref;
  k.quant_q16 = quant_q16_64_ref;
  k.quant_group_q16 = quant_group_q16_ref;
  k.gemm_min_tokens = 4;
  return k;
}

}  // namespace

void repack_gemm_tile(dtype t, const void* w, size_t rb, int64_t r0, int nr, int64_t cols,
                      bool q8_signed, uint8_t* tile) {
  const int B = gemm_sub_block(t);
  const int64_t nsb = cols / B;
  const size_t sbs = static_cast<size_t>(B) * gemm_rows + 128;
  uint8_t q[32];
  for (int r = 0; r < gemm_rows; ++r) {
    const uint8_t* row = r < nr ? row_ptr(w, rb, r0 + r) : nullptr;
    for (int64_t s = 0; s < nsb; ++s) {
      float dw = 0, mw = 0;
      if (row) {
        decode_sub_block(t, row, s, q, &dw, &mw);
        if (q8_signed && t == dtype::q8_0) {
          for (int i = 0; i < 32; ++i) q[i] = static_cast<uint8_t>(q[i] - 128);
          mw = 0;
        }
      } else {
        std::memset(q, 0, sizeof(q));
      }
      uint8_t* base = tile + static_cast<size_t>(s) * sbs;
      for (int k = 0; k < B / 4; ++k) std::memcpy(base + k * 64 + r * 4, q + 4 * k, 4);
      std::memcpy(base + B * 16 + 4 * r, &dw, 4);
      std::memcpy(base + B * 16 + 64 + 4 * r, &mw, 4);
    }
  }
}

const kernel_table& scalar_kernel_table() {
  static const kernel_table t = make_scalar_table();
  return t;
}

}  // namespace tandem::cpu
