// Helpers shared by the test suites: model paths, temporary files, running the CLI.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <system_error>
#include <vector>
#include <sys/wait.h>

namespace tandem::test {

inline std::string models_dir() { return TANDEM_MODELS_DIR; }
inline std::string model_path(const std::string& rel) { return models_dir() + "/" + rel; }

// n normal values with standard deviation sigma, the same for the same seed.
inline std::vector<float> gaussian(size_t n, uint32_t seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A fresh temporary directory per test process, removed with everything in it when the process
// exits.
inline std::string temp_dir() {
  struct owned_dir {
    std::string path;
    owned_dir() {
      std::string tmpl = (std::filesystem::temp_directory_path() / "tandem-test-XXXXXX").string();
      if (mkdtemp(tmpl.data())) path = tmpl;
    }
    ~owned_dir() {
      std::error_code ec;
      if (!path.empty()) std::filesystem::remove_all(path, ec);
    }
  };
  static owned_dir dir;
  if (dir.path.empty()) {
    std::fprintf(stderr, "cannot create a temporary directory under %s\n",
                 std::filesystem::temp_directory_path().c_str());
    std::abort();
  }
  return dir.path;
}

struct run_result {
  int status = -1;
  std::string out, err;
};

// Runs the tandem CLI with args (a shell-quoted string), capturing stdout and stderr; env is
// prefixed to the command line (e.g. "TANDEM_KERNELS=scalar").
inline run_result run_cli_env(const std::string& env, const std::string& args) {
  static int counter = 0;
  const std::string base = temp_dir() + "/cli" + std::to_string(counter++);
  const std::string cmd = env + " " + std::string(TANDEM_CLI) + " " + args + " >" + base + ".out 2>" + base + ".err";
  int rc = std::system(cmd.c_str());
  run_result r;
  r.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  r.out = read_file(base + ".out");
  r.err = read_file(base + ".err");
  return r;
}

inline run_result run_cli(const std::string& args) { return run_cli_env("", args); }

}  // namespace tandem::test
