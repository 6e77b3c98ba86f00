// Forcing a kernel variant. Where an op has several kernels (a device picks one by its features
// and the shape), TANDEM_VK_VARIANT=<op>=<variant>[,<op>=<variant>...] forces one, so that tests
// and gpu-cpu-parity run every variant a device may pick on any device (lavapipe in CI); an
// unknown variant name is an error naming the known ones. Read on every call (tests set it
// between cases), so keep it out of per-element loops: it is called once per dispatch at most.
#pragma once
#include <cstdlib>
#include <string>
#include <string_view>

namespace tandem::vk {

// The variant forced for op, or "" when none is.
inline std::string forced_variant(std::string_view op) {
  const char* env = std::getenv("TANDEM_VK_VARIANT");
  if (!env) return {};
  std::string_view s(env);
  while (!s.empty()) {
    const size_t comma = s.find(',');
    const std::string_view item = s.substr(0, comma);
    const size_t eq = item.find('=');
    if (eq != std::string_view::npos && item.substr(0, eq) == op)
      return std::string(item.substr(eq + 1));
    if (comma == std::string_view::npos) break;
    s.remove_prefix(comma + 1);
  }
  return {};
}

}  // namespace tandem::vk
