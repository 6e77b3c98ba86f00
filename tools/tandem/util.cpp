#include <fmt/format.h>

#include <cctype>
#include <cmath>

#include "runtime/error.h"
#include "tools/tandem/commands.h"

namespace tandem::cli {

uint64_t parse_size(const std::string& s) {
  size_t pos = 0;
  double v = 0;
  try {
    v = std::stod(s, &pos);
  } catch (...) {
    pos = 0;
  }
  std::string unit = s.substr(pos);
  for (auto& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (!unit.empty() && unit.back() == 'B') unit.pop_back();
  if (!unit.empty() && unit.back() == 'I') unit.pop_back();
  double mul = unit.empty() ? 1 : unit == "K" ? 1024.0 : unit == "M" ? 1048576.0
             : unit == "G" ? 1073741824.0 : unit == "T" ? 1099511627776.0 : -1;
  if (pos == 0 || mul < 0 || v < 0 || !std::isfinite(v))
    throw error(fmt::format("'{}' is not a size; write e.g. 512M, 4G or a number of bytes", s));
  return static_cast<uint64_t>(v * mul);
}

std::string format_bytes(uint64_t n) {
  if (n >= (1ull << 30)) return fmt::format("{:.2f} GiB", n / 1073741824.0);
  if (n >= (1ull << 20)) return fmt::format("{:.2f} MiB", n / 1048576.0);
  if (n >= (1ull << 10)) return fmt::format("{:.2f} KiB", n / 1024.0);
  return fmt::format("{} B", n);
}

}  // namespace tandem::cli
