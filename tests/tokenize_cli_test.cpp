// `tandem tokenize` reproduces every vocabulary golden (llama.cpp's test-tokenizer-0 strings,
// which it tokenizes without BOS), adds BOS by default where the vocabulary wants it, parses
// control tokens only when asked, and says what is wrong with bad arguments.
#include <gtest/gtest.h>

#include <sstream>

#include "runtime/gguf.h"
#include "runtime/tokenizer.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

std::vector<std::vector<int32_t>> id_lines(const std::string& text) {
  std::vector<std::vector<int32_t>> r;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream in(line);
    auto& v = r.emplace_back();
    for (int32_t id; in >> id;) v.push_back(id);
  }
  return r;
}

const char* const k_vocabs[] = {"llama-spm", "phi-3",     "gpt-2", "starcoder",
                                "deepseek-llm", "llama-bpe", "qwen2"};
// The .inp files end every string with this line.
const std::string k_sep = "'\\n__ggml_vocab_test__\\n'";

TEST(TokenizeCli, ReproducesEveryGolden) {
  for (const char* v : k_vocabs) {
    const std::string base = test::model_path(std::string("vocab/ggml-vocab-") + v + ".gguf");
    const auto golden = id_lines(test::read_file(base + ".out"));
    ASSERT_EQ(golden.size(), 46u) << v;
    auto r = test::run_cli("tokenize -m " + base + " -f " + base + ".inp --no-bos --separator " +
                           k_sep);
    ASSERT_EQ(r.status, 0) << v << ": " << r.err;
    // One line per string, ids separated by single spaces.
    for (const char* bad : {"  ", " \n", "\n "})
      EXPECT_EQ(r.out.find(bad), std::string::npos) << v;
    EXPECT_EQ(id_lines(r.out), golden) << v;

    // By default BOS comes first where the vocabulary asks for it (Llama 2, Phi-3, DeepSeek,
    // Llama 3), and not for GPT-2, StarCoder and Qwen2.
    auto f = gguf_file::open(base);
    auto tok = tokenizer::from_gguf(*f);
    auto d = test::run_cli("tokenize -m " + base + " -f " + base + ".inp --separator " + k_sep);
    ASSERT_EQ(d.status, 0) << v << ": " << d.err;
    const auto with_bos = id_lines(d.out);
    ASSERT_EQ(with_bos.size(), golden.size()) << v;
    for (size_t i = 0; i < golden.size(); ++i) {
      std::vector<int32_t> want = golden[i];
      if (tok->add_bos_default()) want.insert(want.begin(), tok->bos());
      EXPECT_EQ(with_bos[i], want) << v << " string " << i;
    }
  }
}

TEST(TokenizeCli, OneText) {
  const std::string spm = test::model_path("vocab/ggml-vocab-llama-spm.gguf");
  auto r = test::run_cli("tokenize -m " + spm + " -p 'Hello world'");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "1 15043 3186\n");
  r = test::run_cli("tokenize -m " + spm + " -p 'Hello world' --no-bos");
  EXPECT_EQ(r.out, "15043 3186\n");
  r = test::run_cli("tokenize -m " + spm + " -p '' --no-bos");
  EXPECT_EQ(r.out, "\n");
  r = test::run_cli("tokenize -m " + spm + " -p '<s>' --no-bos");
  EXPECT_EQ(r.out, "529 29879 29958\n");
  r = test::run_cli("tokenize -m " + spm + " -p '<s>' --no-bos --parse-special");
  EXPECT_EQ(r.out, "1\n");
  // Several strings: one line each; a separator at the very end closes the last one.
  r = test::run_cli("tokenize -m " + spm + " -p 'Hello|world|' --separator '|' --no-bos");
  EXPECT_EQ(r.out, "15043\n3186\n");
  r = test::run_cli("tokenize -m " + spm + " -p '|Hello' --separator '|'");
  EXPECT_EQ(r.out, "1\n1 15043\n");
  const std::string l3 = test::model_path("vocab/ggml-vocab-llama-bpe.gguf");
  r = test::run_cli("tokenize -m " + l3 +
                    " -p '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
                    "Hi<|eot_id|>' --no-bos --parse-special");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "128000 128006 882 128007 271 13347 128009\n");
}

TEST(TokenizeCli, Errors) {
  const std::string spm = test::model_path("vocab/ggml-vocab-llama-spm.gguf");
  auto r = test::run_cli("tokenize -m " + spm);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("-p TEXT or -f FILE"), std::string::npos) << r.err;
  r = test::run_cli("tokenize -m " + spm + " -f " + test::temp_dir() + "/missing.txt");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("missing.txt"), std::string::npos) << r.err;
  r = test::run_cli("tokenize -m " + spm + " -p a -f b");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("excludes"), std::string::npos) << r.err;
  r = test::run_cli("tokenize -m " + spm + " -p a --separator '\\q'");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("\\q"), std::string::npos) << r.err;
  r = test::run_cli("tokenize -m " + test::model_path("quant/ppl-sample.txt") + " -p a");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("ppl-sample.txt"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace tandem
