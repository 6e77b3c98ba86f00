// The load progress bar of `tandem run` and `tandem chat` (on stderr, when it is a terminal).
#include <unistd.h>

#include <cstdio>

#include "tools/tandem/commands.h"

namespace tandem::cli {

bool stderr_is_terminal() { return isatty(fileno(stderr)) != 0; }

bool draw_load_progress(float done) {
  constexpr int width = 30;
  const int filled = static_cast<int>(done * width + 0.5f);
  std::fprintf(stderr, "\rloading [");
  for (int i = 0; i < width; ++i) std::fputc(i < filled ? '=' : ' ', stderr);
  std::fprintf(stderr, "] %3d%%", static_cast<int>(done * 100 + 0.5f));
  if (done >= 1.0f) std::fprintf(stderr, "\r\033[K");  // the bar goes once the model is loaded
  std::fflush(stderr);
  return true;
}

}  // namespace tandem::cli
