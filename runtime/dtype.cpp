#include "runtime/dtype.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <stdexcept>
#include <string>

namespace tandem {
namespace {
struct entry {
  uint32_t id;
  dtype_traits tr;
};
constexpr std::array<entry, 15> k_types = {{
    {0, {"f32", 1, 4, true}},
    {1, {"f16", 1, 2, true}},
    {2, {"q4_0", 32, 18, true}},
    {3, {"q4_1", 32, 20, false}},
    {6, {"q5_0", 32, 22, false}},
    {7, {"q5_1", 32, 24, false}},
    {8, {"q8_0", 32, 34, true}},
    {9, {"q8_1", 32, 36, false}},
    {10, {"q2_k", 256, 84, false}},
    {11, {"q3_k", 256, 110, false}},
    {12, {"q4_k", 256, 144, true}},
    {13, {"q5_k", 256, 176, true}},
    {14, {"q6_k", 256, 210, true}},
    {15, {"q8_k", 256, 292, false}},
    {30, {"bf16", 1, 2, false}},
}};
}  // namespace

std::optional<dtype_traits> dtype_info(uint32_t id) {
  for (const auto& e : k_types)
    if (e.id == id) return e.tr;
  return std::nullopt;
}

const dtype_traits& traits(dtype t) {
  for (const auto& e : k_types)
    if (e.id == static_cast<uint32_t>(t)) return e.tr;
  throw std::logic_error("traits: unknown dtype");
}

std::optional<dtype> parse_dtype(std::string_view s) {
  std::string low(s);
  std::transform(low.begin(), low.end(), low.begin(), [](unsigned char c) { return std::tolower(c); });
  for (const auto& e : k_types)
    if (e.tr.name == low) return static_cast<dtype>(e.id);
  return std::nullopt;
}

}  // namespace tandem
