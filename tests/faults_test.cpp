// Faults outside the model file: a full disk or a read-only directory under `tandem quantize`,
// Ctrl-C in `tandem run`, a model file cut short while its layers are being read by the cache.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <thread>

#include "runtime/engine.h"
#include "runtime/error.h"
#include "runtime/gguf.h"
#include "runtime/layer_cache.h"
#include "runtime/model.h"
#include "tests/test_util.h"
#include "tests/tiny_model.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;

std::string fresh_dir(const std::string& name) {
  const std::string d = test::temp_dir() + "/" + name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> r;
  for (const auto& e : fs::directory_iterator(dir)) r.push_back(e.path().filename().string());
  std::sort(r.begin(), r.end());
  return r;
}

const std::string k_stories = test::model_path("stories260K.gguf");

// ---- tandem quantize -------------------------------------------------------------------------

TEST(Faults, QuantizeOnAFullDiskLeavesTheOldFileAndNoTemporary) {
  const std::string dir = fresh_dir("quantize-full");
  const std::string out = dir + "/out.gguf";
  { std::ofstream(out) << "the file that was there"; }
  // RLIMIT_FSIZE (ulimit -f, in 512- or 1024-byte blocks) makes writes past 100 KiB fail with
  // EFBIG, as a full disk fails them with ENOSPC; SIGXFSZ ignored so that write() reports it.
  auto r = test::run_cli_env("trap '' XFSZ; ulimit -f 100;",
                             "quantize " + k_stories + " " + out + " f16");
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_EQ(r.err.rfind("error: " + out + ": write failed: File too large (disk full?)", 0), 0u)
      << r.err;
  EXPECT_EQ(test::read_file(out), "the file that was there");
  EXPECT_EQ(files_in(dir), std::vector<std::string>{"out.gguf"});
}

TEST(Faults, QuantizeIntoAReadOnlyDirectoryWritesNothing) {
  const std::string dir = fresh_dir("quantize-ro");
  // As root, permissions do not stop a write: make the directory immutable instead.
  const bool root = geteuid() == 0;
  const std::string lock = root ? "chattr +i " + dir + " 2>/dev/null" : "chmod 0555 " + dir;
  const std::string unlock = root ? "chattr -i " + dir + " 2>/dev/null" : "chmod 0755 " + dir;
  if (std::system(lock.c_str()) != 0) GTEST_SKIP() << "cannot make " << dir << " read-only";
  struct restore {
    std::string cmd;
    ~restore() { (void)std::system(cmd.c_str()); }
  } restore_{unlock};
  const std::string out = dir + "/out.gguf";
  auto r = test::run_cli("quantize " + k_stories + " " + out + " f16");
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_EQ(r.err.rfind("error: " + out + ": cannot create " + out + ".tmp.", 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_TRUE(files_in(dir).empty());
}

TEST(Faults, QuantizeReplacesTheOutputOnlyWhenComplete) {
  const std::string dir = fresh_dir("quantize-ok");
  const std::string out = dir + "/out.gguf";
  { std::ofstream(out) << "old"; }
  auto r = test::run_cli("quantize " + k_stories + " " + out + " f16");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(files_in(dir), std::vector<std::string>{"out.gguf"});
  EXPECT_EQ(model::load(out)->hp().n_layer, 5);
}

// ---- Ctrl-C in tandem run ------------------------------------------------------------------

// A random model that never ends a generation by itself: no end-of-generation token and a
// context of 64K tokens, so that only SIGINT stops `-n -1` in any reasonable time.
std::string endless_model() {
  const std::string tiny = test::temp_dir() + "/endless-src.gguf";
  test::tiny_shape s;
  s.n_layer = 1;
  test::write_tiny_model(tiny, s);
  auto src = gguf_file::open(tiny);
  gguf_writer w;
  for (const auto& [k, v] : src->metadata()) w.set_value(k, v);
  // "x" encodes as "\u2581" "x" (the space prefix, then the letter); the rest are "x3" ...
  std::vector<std::string> toks = {"<unk>", "<s>", "\xe2\x96\x81", "x"};
  std::vector<int32_t> types = {2, 3, 1, 1};
  for (int i = 4; i < s.n_vocab; ++i) {
    toks.emplace_back("x");
    toks.back() += std::to_string(i);  // (not "x" + ...: GCC 12 warns falsely of an overlap)
    types.push_back(1);
  }
  w.set_array_string("tokenizer.ggml.tokens", toks);
  w.set_array_i32("tokenizer.ggml.token_type", types);
  w.set_u32("tokenizer.ggml.eos_token_id", 0xFFFFFFFFu);  // none
  w.set_u32("llama.context_length", 1 << 16);
  for (const auto& t : src->tensors())
    w.add_tensor(t.name, t.type, std::vector<int64_t>(t.ne, t.ne + t.n_dims),
                 std::vector<uint8_t>(t.data, t.data + t.nbytes));
  const std::string path = test::temp_dir() + "/endless.gguf";
  w.write(path);
  return path;
}

TEST(Faults, SigintStopsTandemRunCleanly) {
  const std::string model = endless_model();
  int out[2], err[2];
  ASSERT_EQ(pipe(out), 0);
  ASSERT_EQ(pipe(err), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    dup2(out[1], 1), dup2(err[1], 2);
    close(out[0]), close(err[0]), close(out[1]), close(err[1]);
    execl(TANDEM_CLI, TANDEM_CLI, "run", "-m", model.c_str(), "-p", "x", "-n", "-1", "-c",
          "65536", "--temp", "0.8", "-s", "1", "--offload", "0", "-t", "1", nullptr);
    _exit(127);
  }
  close(out[1]), close(err[1]);
  // Wait for generated text beyond the prompt: the generation loop is running.
  std::string got;
  char buf[4096];
  while (got.size() < 200) {
    const ssize_t n = read(out[0], buf, sizeof buf);
    ASSERT_GT(n, 0) << "tandem run ended before printing 200 bytes: " << got;
    got.append(buf, static_cast<size_t>(n));
  }
  ASSERT_EQ(kill(pid, SIGINT), 0);
  for (ssize_t n; (n = read(out[0], buf, sizeof buf)) > 0;) got.append(buf, static_cast<size_t>(n));
  std::string errs;
  for (ssize_t n; (n = read(err[0], buf, sizeof buf)) > 0;) errs.append(buf, static_cast<size_t>(n));
  close(out[0]), close(err[0]);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "ended by signal " << WTERMSIG(status)
                                 << (WCOREDUMP(status) ? " (core dumped)" : "") << "\n" << errs;
  EXPECT_EQ(WEXITSTATUS(status), 130) << errs;
  EXPECT_EQ(got.rfind("x", 0), 0u) << got.substr(0, 100);  // the prompt first
  EXPECT_EQ(got.back(), '\n');  // the partial line was finished and flushed
  EXPECT_NE(errs.find("tandem: interrupted after "), std::string::npos) << errs;
  EXPECT_NE(errs.find("generation: "), std::string::npos) << errs;  // the timings still print
}

// ---- the layer cache meets a file cut short -----------------------------------------------

TEST(Faults, AModelCutShortUnderTheLayerCacheStopsTheRequestNamingFileAndOffset) {
  // Layers last in the file, so that cutting into them leaves the embedding, the output norm
  // and the head (read through the mapping, not the cache) whole.
  const std::string src_path = test::temp_dir() + "/cut-src.gguf";
  test::tiny_shape s;
  s.n_layer = 4;
  s.n_embd = 64;
  s.n_ff = 128;
  test::write_tiny_model(src_path, s);
  auto src = gguf_file::open(src_path);
  gguf_writer w;
  for (const auto& [k, v] : src->metadata()) w.set_value(k, v);
  for (bool layers : {false, true})
    for (const auto& t : src->tensors())
      if ((t.name.rfind("blk.", 0) == 0) == layers)
        w.add_tensor(t.name, t.type, std::vector<int64_t>(t.ne, t.ne + t.n_dims),
                     std::vector<uint8_t>(t.data, t.data + t.nbytes));
  const std::string path = test::temp_dir() + "/cut.gguf";
  w.write(path);

  auto m = model::load(path);
  const uint64_t layer = m->layer(0).nbytes();
  engine_options eo;
  eo.n_ctx = 32;
  eo.n_batch = 4;
  eo.n_threads = 1;
  eo.prefetch_distance = 0;
  layer_cache_metrics metrics;
  eo.metrics = &metrics;
  // The smallest budget the engine takes: it holds only part of the layers.
  std::unique_ptr<engine> eng;
  for (eo.mem_budget = layer; !eng && eo.mem_budget < 64 * layer; eo.mem_budget += layer / 4) {
    try {
      eng = std::make_unique<engine>(*m, eo);
    } catch (const error&) {
    }
  }
  ASSERT_TRUE(eng);
  eng->eval({1, 5, 7});  // every layer read once: the file is whole
  ASSERT_TRUE(metrics.active);  // (the metrics are filled as layers compute)
  ASSERT_LT(metrics.capacity_layers, s.n_layer);

  const gguf_tensor* last = m->layer(s.n_layer - 1).ffn_down.t;
  const uint64_t cut = static_cast<uint64_t>(last->data - m->file().base()) + 64;
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(cut)), 0);
  std::string msg;
  try {
    for (int k = 0; k < 3; ++k) eng->eval({9});
  } catch (const error& e) {
    msg = e.what();
  }
  ASSERT_FALSE(msg.empty()) << "three tokens ran on a model cut short";
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("offset "), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
}

}  // namespace
}  // namespace tandem
