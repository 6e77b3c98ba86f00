// End to end through the CLI on the real models in ../shared/models: golden greedy text, F16
// models, error messages at the boundary.
#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/engine.h"
#include "runtime/model.h"
#include "runtime/tokenizer.h"
#include "tests/greedy_text.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

const std::string k_stories = test::model_path("stories260K.gguf");

TEST(EndToEnd, Stories260KGoldenOnceUponATime) {
  auto r = test::run_cli("run -m " + k_stories + " -p 'Once upon a time' -n 60 --temp 0");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, test::read_file(test::model_path("golden/stories260K_t0_n64_once.txt")));
  EXPECT_NE(r.err.find("tokens/s"), std::string::npos) << r.err;
}

TEST(EndToEnd, Stories260KGoldenIds) {
  // The generated ids themselves, through the library API.
  std::istringstream golden(test::read_file(test::model_path("golden/stories260K_t0_n64_once.ids")));
  std::string line, prompt_line, gen_line;
  while (std::getline(golden, line)) {
    if (line.rfind("prompt_ids", 0) == 0) prompt_line = line.substr(line.find(':') + 1);
    if (line.rfind("generated_ids", 0) == 0) gen_line = line.substr(line.find(':') + 1);
  }
  std::vector<int32_t> prompt, want;
  std::istringstream ps(prompt_line), gs(gen_line);
  for (int32_t v; ps >> v;) prompt.push_back(v);
  for (int32_t v; gs >> v;) want.push_back(v);
  ASSERT_EQ(prompt.size(), 5u);
  ASSERT_EQ(want.size(), 60u);

  auto m = model::load(k_stories);
  auto tok = tokenizer::from_gguf(m->file());
  EXPECT_EQ(tok->encode("Once upon a time", true), prompt);
  engine eng(*m, engine_options{});
  std::vector<float> logits = eng.eval(prompt);
  std::vector<int32_t> got;
  for (size_t i = 0; i < want.size(); ++i) {
    int32_t next = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    got.push_back(next);
    logits = eng.eval({next});
  }
  EXPECT_EQ(got, want);
}

TEST(EndToEnd, Stories260KGoldenFromBos) {
  auto r = test::run_cli("run -m " + k_stories + " -p '' -n 256 --temp 0");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, test::read_file(test::model_path("golden/stories260K_t0_n256_noprompt.txt")));
}

TEST(EndToEnd, BatchSizeDoesNotChangeOutput) {
  auto a = test::run_cli("run -m " + k_stories + " -p 'Once upon a time' -n 30 --temp 0 -b 2 -t 1");
  auto b = test::run_cli("run -m " + k_stories + " -p 'Once upon a time' -n 30 --temp 0 -t 2");
  ASSERT_EQ(a.status, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
}

TEST(EndToEnd, SeedMakesSamplingReproducible) {
  const std::string args = "run -m " + k_stories +
                           " -p 'Once upon a time' -n 40 --temp 0.9 --top-k 40 --top-p 0.9 "
                           "--min-p 0.05 --repeat-penalty 1.1 --seed ";
  auto a = test::run_cli(args + "42");
  auto b = test::run_cli(args + "42");
  auto c = test::run_cli(args + "7");
  ASSERT_EQ(a.status, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.out, c.out);
}

TEST(EndToEnd, TinyRandomF16LoadsAndGenerates) {
  const std::string path = test::model_path("llama-2-tiny-random.gguf");
  auto r = test::run_cli("run -m " + path + " -p 'Hello world' -n 16 --temp 0 --offload 0");
  ASSERT_EQ(r.status, 0) << r.err;
  const std::string want = test::engine_greedy_text(path, "Hello world", 16, "0");
  EXPECT_GT(want.size(), std::string("Hello world").size());
  EXPECT_EQ(r.out, want + "\n") << r.err;
  EXPECT_NE(r.err.find("generation: 16 tokens"), std::string::npos) << r.err;
}

TEST(EndToEnd, PromptLongerThanContextIsRefused) {
  auto r = test::run_cli("run -m " + k_stories + " -p 'Once upon a time there was a dog' -c 4 -n 4");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("error: the prompt has"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("raise -c"), std::string::npos) << r.err;
}

TEST(EndToEnd, GenerationStopsAtFullContext) {
  auto r = test::run_cli("run -m " + k_stories + " -p 'Once' -c 16 -n 100 --temp 0");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("context full"), std::string::npos) << r.err;
}

TEST(EndToEnd, BadFileGetsOneLineError) {
  auto r = test::run_cli("run -m " + test::model_path("README.md") + " -p hi");
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find("not a GGUF file"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

TEST(EndToEnd, VocabOnlyFileIsNotAModel) {
  auto r = test::run_cli("run -m " + test::model_path("vocab/ggml-vocab-llama-spm.gguf") + " -p hi");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("error: "), std::string::npos) << r.err;
}

TEST(EndToEnd, InfoPrintsMetadataAndTensors) {
  auto r = test::run_cli("info -m " + k_stories);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("llama.embedding_length"), std::string::npos);
  EXPECT_NE(r.out.find("blk.0.attn_q.weight"), std::string::npos);
  EXPECT_NE(r.out.find("n_head_kv 4"), std::string::npos) << r.out;
}

TEST(EndToEnd, HelpExplainsFlags) {
  auto r = test::run_cli("run --help");
  ASSERT_EQ(r.status, 0);
  for (const char* flag : {"--temp", "--top-k", "--top-p", "--min-p", "--repeat-penalty", "--seed",
                           "--ctx-size", "--threads", "--offload", "--n-predict"})
    EXPECT_NE(r.out.find(flag), std::string::npos) << flag;
}

}  // namespace
}  // namespace tandem
