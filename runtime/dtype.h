// Tensor element types as numbered by GGUF (ggml_type), with their block geometry.
// The reader needs the geometry to validate sizes; the kernels live in cpu/ and vulkan/.
#pragma once
#include <cstdint>
#include <optional>
#include <string_view>

namespace tandem {

enum class dtype : uint32_t {
  f32 = 0,
  f16 = 1,
  q4_0 = 2,
  q4_1 = 3,
  q5_0 = 6,
  q5_1 = 7,
  q8_0 = 8,
  q8_1 = 9,
  q2_k = 10,
  q3_k = 11,
  q4_k = 12,
  q5_k = 13,
  q6_k = 14,
  q8_k = 15,
  bf16 = 30,
};

struct dtype_traits {
  std::string_view name;
  uint32_t block_size;  // elements per block
  uint32_t type_size;   // bytes per block
  bool computable;      // Tandem has kernels for it
};

// Geometry of a GGUF type id, or nullopt when the id is not a known ggml type.
std::optional<dtype_traits> dtype_info(uint32_t id);
const dtype_traits& traits(dtype t);
inline std::string_view dtype_name(dtype t) { return traits(t).name; }
// Bytes of a row of n elements (n must be a multiple of the block size).
inline uint64_t row_bytes(dtype t, uint64_t n) {
  const auto& tr = traits(t);
  return n / tr.block_size * tr.type_size;
}
// Parses "f16", "q4_0", "Q4_K" ... ; nullopt when unknown.
std::optional<dtype> parse_dtype(std::string_view s);

}  // namespace tandem
