// The automatic memory plan end to end, with TANDEM_MEM_LIMIT standing in for a cgroup limit: a
// model that does not fit streams through the layer cache without flags, says so in one line,
// and gives the same greedy output; a decode token reads only the streamed layers' bytes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <regex>
#include <string>
#include <vector>

#include "runtime/engine.h"
#include "runtime/layer_cache.h"
#include "runtime/model.h"
#include "runtime/tandem.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

const std::string k_stories = test::model_path("stories260K.gguf");
// --offload 0: the layer cache is the CPU path's (a GPU would otherwise take the layers).
const std::string k_once = " -p 'Once upon a time' -n 60 --temp 0 --offload 0";

// A stories15M-shaped Q4_0 model (6 layers of ~550 KiB; embedding and output head ~5 MB each).
std::string stories15m_q4_0() {
  const std::string path = test::temp_dir() + "/memplan-stories15M-q4_0.gguf";
  auto r = test::run_cli("make-model --shape stories15M --type q4_0 --vocab " +
                         test::model_path("vocab/ggml-vocab-llama-spm.gguf") + " -o " + path);
  EXPECT_EQ(r.status, 0) << r.err;
  return path;
}

// The "streaming K of N layers" note: K, or -1 when absent.
int streamed_in_note(const std::string& err, int n_layers) {
  std::smatch mm;
  const std::regex re("tandem: model [0-9.]+ [KMG]iB \\(\\+ KV cache .*\\) > memory limit [0-9.]+ "
                      "[KMG]iB \\(TANDEM_MEM_LIMIT\\): streaming ([0-9]+) of " +
                      std::to_string(n_layers) + " layers from disk\n");
  return std::regex_search(err, mm, re) ? std::stoi(mm[1].str()) : -1;
}

TEST(MemoryPlanEndToEnd, Stories260KGoldenUnderATinyLimit) {
  const std::string golden = test::read_file(test::model_path("golden/stories260K_t0_n64_once.txt"));
  // 10M is tiny here: 8 MiB + 1/16 of the limit are kept free for the process itself, so the
  // plan has about 1.4 MiB for the 1.1 MiB of weights, the KV cache and scratch.
  auto r = test::run_cli_env("TANDEM_MEM_LIMIT=10M", "run -m " + k_stories + k_once + " --verbose");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, golden);
  const int streamed = streamed_in_note(r.err, 5);
  EXPECT_GE(streamed, 1) << r.err;
  EXPECT_NE(r.err.find("layer cache: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("direct I/O"), std::string::npos) << r.err;
  // No limit: no plan, no note.
  auto free_run = test::run_cli("run -m " + k_stories + k_once);
  ASSERT_EQ(free_run.status, 0) << free_run.err;
  EXPECT_EQ(free_run.out, golden);
  EXPECT_EQ(free_run.err.find("memory limit"), std::string::npos) << free_run.err;
}

TEST(MemoryPlanEndToEnd, AMadeModelStreamsWhatDoesNotFitWithTheSameOutput) {
  const std::string path = stories15m_q4_0();
  const std::string args = "run -m " + path + " -p 'Once upon a time' -n 24 --temp 0 --offload 0";
  // Layers read through the cache keep the GGUF layout: compare with the mapped, unpacked run
  // (TANDEM_REPACK=0 also keeps the plan's copy of the output head unpacked).
  auto whole = test::run_cli_env("TANDEM_REPACK=0", args);
  ASSERT_EQ(whole.status, 0) << whole.err;
  EXPECT_EQ(whole.err.find("memory limit"), std::string::npos) << whole.err;
  int last = 0;
  // Less memory, more layers streamed. (8 MiB + 1/16 of the limit are kept free for the process;
  // the output head, 4.9 MiB, is held in memory; the rest is KV cache, scratch and layers.)
  for (const char* limit : {"22M", "18M", "17M"}) {
    auto r = test::run_cli_env(std::string("TANDEM_REPACK=0 TANDEM_MEM_LIMIT=") + limit,
                               args + " --verbose");
    ASSERT_EQ(r.status, 0) << limit << "\n" << r.err;
    EXPECT_EQ(r.out, whole.out) << limit;
    const int streamed = streamed_in_note(r.err, 6);
    EXPECT_GE(streamed, 1) << limit << "\n" << r.err;
    EXPECT_LE(streamed, 6) << limit;
    EXPECT_GE(streamed, last) << limit;
    last = streamed;
    EXPECT_NE(r.err.find("policy: "), std::string::npos) << r.err;
  }
  EXPECT_EQ(last, 6);
  // All the layers fit, the embedding and output head do not: the cache holds every layer.
  auto roomy = test::run_cli_env("TANDEM_REPACK=0 TANDEM_MEM_LIMIT=24M", args);
  ASSERT_EQ(roomy.status, 0) << roomy.err;
  EXPECT_EQ(roomy.out, whole.out);
  EXPECT_NE(roomy.err.find("all 6 layers kept in the layer cache"), std::string::npos) << roomy.err;
  // No room for the output head's copy beside a layer: it is read from the mapping.
  auto tight = test::run_cli_env("TANDEM_REPACK=0 TANDEM_MEM_LIMIT=12M", args);
  ASSERT_EQ(tight.status, 0) << tight.err;
  EXPECT_EQ(tight.out, whole.out);
  EXPECT_NE(tight.err.find("the output head (4.94 MiB) is read from the file mapping"),
            std::string::npos)
      << tight.err;
  EXPECT_EQ(streamed_in_note(tight.err, 6), 6) << tight.err;
  // A limit too small for even one layer beside the KV cache: one line, no crash.
  auto tiny = test::run_cli_env("TANDEM_MEM_LIMIT=10M", args);
  EXPECT_EQ(tiny.status, 1);
  EXPECT_NE(tiny.err.find("error: the memory limit, 10.00 MiB (TANDEM_MEM_LIMIT), is too small"),
            std::string::npos)
      << tiny.err;
  auto bad = test::run_cli_env("TANDEM_MEM_LIMIT=lots", args);
  EXPECT_EQ(bad.status, 1);
  EXPECT_NE(bad.err.find("TANDEM_MEM_LIMIT='lots' is not a size"), std::string::npos) << bad.err;
}

// Sets an environment variable for the scope of a test (the engine reads it when built).
struct scoped_env {
  std::string name;
  scoped_env(const char* n, const char* v) : name(n) { setenv(n, v, 1); }
  ~scoped_env() { unsetenv(name.c_str()); }
};

TEST(MemoryPlanEndToEnd, ADecodeTokenReadsOnlyTheStreamedLayers) {
  const std::string path = stories15m_q4_0();
  auto m = model::load(path);
  for (int distance : {-1, 0, 2}) {  // the default ring, none, a larger one
    scoped_env limit("TANDEM_MEM_LIMIT", "22M");
    layer_cache_metrics metrics;
    engine_options eo;
    eo.offload = "0";
    eo.metrics = &metrics;
    eo.prefetch_distance = distance;
    engine eng(*m, eo);
    std::vector<float> logits = eng.eval({1, 403, 407, 261, 378});
    const layer_cache_metrics warm = metrics;
    ASSERT_TRUE(warm.active);
    ASSERT_GT(warm.streamed_layers, 0);
    ASSERT_LT(warm.streamed_layers, 6);
    const int n_tokens = 12;
    for (int t = 0; t < n_tokens; ++t) {
      const auto best = std::max_element(logits.begin(), logits.begin() + m->hp().n_vocab);
      logits = eng.eval({static_cast<int32_t>(best - logits.begin())});
    }
    const layer_cache_metrics d = metrics - warm;
    EXPECT_EQ(d.passes, static_cast<uint64_t>(n_tokens));
    const double per_token = static_cast<double>(d.bytes_read) / n_tokens;
    // The streamed layers' buffers, and their bytes in the file (buffers round to pages).
    EXPECT_NEAR(per_token, static_cast<double>(warm.streamed_bytes), 0.1 * warm.streamed_bytes)
        << "distance " << distance;
    const double file_bytes = static_cast<double>(warm.streamed_layers) * m->layer(0).nbytes();
    EXPECT_NEAR(per_token, file_bytes, 0.1 * file_bytes) << "distance " << distance;
    // Without the policy every token would read every layer.
    EXPECT_LT(per_token, 0.9 * 6 * m->layer(0).nbytes());
  }
}

TEST(MemoryPlanEndToEnd, TheCApiLoadReportsThePlan) {
  scoped_env limit("TANDEM_MEM_LIMIT", "10M");
  tandem_model_params p = tandem_model_params_default();
  p.offload = "0";
  tandem_model* model = tandem_model_load(k_stories.c_str(), &p);
  ASSERT_NE(model, nullptr) << tandem_last_error();
  char* notes = tandem_model_notes(model);
  const std::string text = notes ? notes : "";
  tandem_string_free(notes);
  tandem_model_free(model);
  std::string as_printed;  // one "tandem: " line per note, as tandem run prints them
  for (size_t a = 0; a <= text.size();) {
    const size_t b = std::min(text.find('\n', a), text.size());
    as_printed += "tandem: " + text.substr(a, b - a) + "\n";
    a = b + 1;
  }
  EXPECT_GE(streamed_in_note(as_printed, 5), 1) << text;
}

TEST(MemoryPlanEndToEnd, InfoShowsTheLimitAndWhereItComesFrom) {
  auto r = test::run_cli_env("TANDEM_MEM_LIMIT=320M", "info");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("memory limit: 320.00 MiB (TANDEM_MEM_LIMIT)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("TANDEM_MEM_LIMIT"), std::string::npos) << r.out;
  auto plain = test::run_cli("info -m " + k_stories);
  ASSERT_EQ(plain.status, 0) << plain.err;
  EXPECT_NE(plain.out.find("memory limit: "), std::string::npos) << plain.out;
}

}  // namespace
}  // namespace tandem
