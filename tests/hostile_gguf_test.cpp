// The hostile model corpus (tests/hostile_gguf.cpp): every file is refused by the loader with a
// one-line tandem::error that names the file and the problem; none crashes, hangs or allocates
// more than a bound proportional to its size. Each load runs in a child process, so that a crash
// is reported as a failure of that file instead of ending the test, and (outside sanitizer builds,
// whose shadow memory needs terabytes of address space) under an address-space limit.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "runtime/chat_template.h"
#include "runtime/error.h"
#include "runtime/model.h"
#include "runtime/tokenizer.h"
#include "tests/hostile_gguf.h"
#include "tests/test_util.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TANDEM_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define TANDEM_TEST_SANITIZED 1
#endif
#endif

namespace tandem {
namespace {

// Everything a program does with a file before it computes: the model, then its tokenizer, one
// encode, and the rendering of its chat template (where it has one) for one user message.
std::vector<int32_t> load_everything(const std::string& path) {
  auto m = model::load(path);
  auto tok = tokenizer::from_gguf(m->file());
  if (const gguf_value* t = m->file().find("tokenizer.chat_template");
      t && t->type == gguf_type::string) {
    chat_inputs in;
    in.messages = nlohmann::ordered_json::parse(R"([{"role": "user", "content": "ab"}])");
    chat_template(t->str).render(in);
  }
  return tok->encode("ab", tok->add_bos_default());
}

enum class outcome { refused, loaded, out_of_memory, other_exception, crashed };

struct result {
  outcome how = outcome::crashed;
  std::string message;
};

// The address space a load may add: a fixed allowance plus 128 bytes per byte of file (a metadata
// value costs ~90 bytes per byte of a u8 array; nothing else comes close). The fixed part covers
// the program's own needs and the chat template engine's limits (32 MiB of output or of any one
// value, a few copies of which may be alive at once).
uint64_t allowance(uint64_t file_size) { return (256ull << 20) + 128 * file_size; }

uint64_t vm_size() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmSize:", 0) == 0) return std::stoull(line.substr(7)) * 1024;
  return 0;
}

result load_in_child(const std::string& path) {
  int fds[2];
  if (pipe(fds) != 0) return {outcome::crashed, "pipe failed"};
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    // A hang ends as a signal, reported as a crash: 60 s of CPU (SIGXCPU; CPU time, not wall
    // time, so that a busy machine does not fail it), or 10 minutes of waiting (SIGALRM).
    rlimit cpu{60, 61};
    setrlimit(RLIMIT_CPU, &cpu);
    alarm(600);
#ifndef TANDEM_TEST_SANITIZED
    const uint64_t limit = vm_size() + allowance(std::filesystem::file_size(path));
    rlimit rl{limit, limit};
    setrlimit(RLIMIT_AS, &rl);
#endif
    int code = 1;
    std::string msg;
    try {
      load_everything(path);
    } catch (const error& e) {
      code = 0, msg = e.what();
    } catch (const std::bad_alloc&) {
      code = 2, msg = "std::bad_alloc";
    } catch (const std::exception& e) {
      code = 3, msg = std::string("not a tandem::error: ") + e.what();
    }
    if (!msg.empty() && write(fds[1], msg.data(), msg.size()) < 0) code = 4;
    _exit(code);
  }
  close(fds[1]);
  std::string msg;
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) msg.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFSIGNALED(status))
    return {outcome::crashed, "killed by signal " + std::to_string(WTERMSIG(status))};
  switch (WEXITSTATUS(status)) {
    case 0: return {outcome::refused, msg};
    case 1: return {outcome::loaded, msg};
    case 2: return {outcome::out_of_memory, msg};
    case 3: return {outcome::other_exception, msg};
    default: return {outcome::crashed, "exit status " + std::to_string(WEXITSTATUS(status))};
  }
}

// expect is a list of alternatives separated by '|'.
bool mentions(const std::string& msg, const std::string& expect) {
  std::stringstream ss(expect);
  for (std::string alt; std::getline(ss, alt, '|');)
    if (msg.find(alt) != std::string::npos) return true;
  return false;
}

std::string corpus_dir() {
  const std::string dir = test::temp_dir() + "/hostile";
  std::filesystem::create_directories(dir);
  return dir;
}

TEST(HostileGguf, TheBaseModelsLoadAndTokenize) {
  const auto bases = test::write_hostile_bases(corpus_dir());
  EXPECT_EQ(load_everything(bases[0]), (std::vector<int32_t>{1, 6, 5}));  // <s> ▁a b
  EXPECT_EQ(load_everything(bases[1]), (std::vector<int32_t>{2}));        // ab
  for (const auto& p : bases) EXPECT_EQ(load_in_child(p).how, outcome::loaded) << p;
}

TEST(HostileGguf, EveryFileIsRefusedWithAOneLineMessage) {
  const std::string dir = corpus_dir();
  const auto cases = test::write_hostile_ggufs(dir);
  EXPECT_GE(cases.size(), 40u);
  int refused = 0;
  for (const auto& c : cases) {
    const std::string path = dir + "/" + c.name + ".gguf";
    const result r = load_in_child(path);
    std::printf("%-32s %s\n", c.name.c_str(), r.message.c_str());
    switch (r.how) {
      case outcome::loaded: ADD_FAILURE() << c.name << " (" << c.what << ") was accepted"; continue;
      case outcome::out_of_memory:
        ADD_FAILURE() << c.name << " (" << c.what << ") allocated more than "
                      << allowance(std::filesystem::file_size(path)) << " bytes";
        continue;
      case outcome::other_exception:
      case outcome::crashed:
        ADD_FAILURE() << c.name << " (" << c.what << "): " << r.message;
        continue;
      case outcome::refused: break;
    }
    ++refused;
    EXPECT_TRUE(mentions(r.message, c.expect))
        << c.name << " (" << c.what << "): expected '" << c.expect << "' in: " << r.message;
    EXPECT_EQ(r.message.find('\n'), std::string::npos) << c.name << ": " << r.message;
    if (!c.at_render) {
      EXPECT_EQ(r.message.rfind(path + ": ", 0), 0u) << c.name << " does not name the file: "
                                                      << r.message;
    }
    EXPECT_LT(r.message.size(), 600u) << c.name << ": " << r.message;
  }
  EXPECT_EQ(refused, static_cast<int>(cases.size()));
}

// The CLI turns a refusal into one "error: ..." line and exit status 1.
TEST(HostileGguf, TandemRunExitsWithOneErrorLine) {
  const std::string dir = corpus_dir();
  const auto cases = test::write_hostile_ggufs(dir);
  const std::string bases = test::write_hostile_bases(dir)[0];
  auto ok = test::run_cli("run -m " + bases + " -p ab -n 2 --offload 0");
  EXPECT_EQ(ok.status, 0) << ok.err;
  std::vector<std::string> truncated;
  for (const auto& c : cases)
    if (c.name.rfind("truncated_at_", 0) == 0) truncated.push_back(c.name);
  ASSERT_FALSE(truncated.empty());
  const std::vector<std::string> picked = {"bad_magic", "tensor_overlap_same_offset",
                                           "bos_out_of_range", "context_length_0",
                                           "array_count_2^64-1", truncated[truncated.size() / 2]};
  int checked = 0;
  for (const auto& c : cases) {
    if (std::find(picked.begin(), picked.end(), c.name) == picked.end()) continue;
    ++checked;
    auto r = test::run_cli("run -m " + dir + "/" + c.name + ".gguf -p ab -n 2 --offload 0");
    EXPECT_EQ(r.status, 1) << c.name << ": " << r.err;
    EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << c.name << ": " << r.err;
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << c.name << ": " << r.err;
    EXPECT_TRUE(mentions(r.err, c.expect)) << c.name << ": " << r.err;
    EXPECT_TRUE(r.out.empty()) << c.name << ": " << r.out;
  }
  EXPECT_EQ(checked, 6);
}

}  // namespace
}  // namespace tandem
