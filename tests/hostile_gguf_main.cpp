// hostile_gguf DIR: writes the hostile model corpus (and its two well-formed bases) into DIR and
// prints one line per file: its name and what it does wrong. Used for fuzzing seeds and by hand.
#include <cstdio>
#include <exception>
#include <filesystem>

#include "tests/hostile_gguf.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: hostile_gguf DIR\n");
    return 2;
  }
  try {
    std::filesystem::create_directories(argv[1]);
    tandem::test::write_hostile_bases(argv[1]);
    for (const auto& c : tandem::test::write_hostile_ggufs(argv[1]))
      std::printf("%s.gguf\t%s\n", c.name.c_str(), c.what.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
