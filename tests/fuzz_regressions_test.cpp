// Replays what the fuzz targets (tests/fuzz) found: every file under
// tests/fuzz/regressions/TARGET/ goes through that target's body, in the normal build and under
// ASan (tools/sanitize.sh). A target body catches tandem::error itself; a crash, a sanitizer
// report or a broken invariant (abort) fails the test. Also runs each body on inputs that reach
// deep into it, so that the replay would notice a body that stopped doing anything.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <map>

#include "tests/fuzz/fuzz.h"
#include "tests/hostile_gguf.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

using body = std::function<void(const uint8_t*, size_t)>;

const std::map<std::string, body>& targets() {
  static const std::map<std::string, body> t = {
      {"gguf", fuzz::gguf},
      {"gguf_header", fuzz::gguf_header},
      {"tokenizer", fuzz::tokenizer},
      {"sampler", fuzz::sampler},
      {"template", fuzz::template_text},
      {"template_messages", fuzz::template_messages},
      {"request", fuzz::request},
  };
  return t;
}

void feed(const body& fn, const std::string& bytes) {
  fn(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

TEST(FuzzRegressions, EveryCommittedInputReplays) {
  namespace fs = std::filesystem;
  int files = 0;
  for (const auto& dir : fs::directory_iterator(TANDEM_FUZZ_REGRESSIONS)) {
    if (!dir.is_directory()) continue;
    const std::string target = dir.path().filename().string();
    auto it = targets().find(target);
    ASSERT_NE(it, targets().end()) << "regressions for an unknown target: " << dir.path();
    for (const auto& f : fs::directory_iterator(dir.path())) {
      SCOPED_TRACE(f.path().string());
      feed(it->second, test::read_file(f.path().string()));
      ++files;
    }
  }
  std::printf("replayed %d regression inputs\n", files);
}

TEST(FuzzRegressions, TheHostileCorpusGoesThroughTheGgufTargets) {
  const std::string dir = test::temp_dir() + "/fuzz-hostile";
  std::filesystem::create_directories(dir);
  std::vector<std::string> paths = test::write_hostile_bases(dir);
  for (const auto& c : test::write_hostile_ggufs(dir)) paths.push_back(dir + "/" + c.name + ".gguf");
  for (const auto& p : paths) {
    const std::string bytes = test::read_file(p);
    feed(fuzz::gguf, bytes);
    feed(fuzz::gguf_header, bytes.substr(0, bytes.size() / 2));
  }
}

TEST(FuzzRegressions, TheTokenizerAndSamplerBodiesRun) {
  for (char vocab = 0; vocab < 7; ++vocab)
    for (char mode : {0, 1, 2, 3, 4, 12})
      feed(fuzz::tokenizer, std::string{vocab, mode} + " Hello, world! 3.14 \xe4\xb8\x96 <s>\n\t");
  feed(fuzz::sampler, std::string(64, '\x3f'));
  feed(fuzz::sampler, std::string(64, '\xff'));  // NaN parameters
}

TEST(FuzzRegressions, TheTemplateBodiesRun) {
  feed(fuzz::template_text, "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}");
  feed(fuzz::template_text, "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");  // stopped
  for (char k = 0; k < 10; ++k)
    feed(fuzz::template_messages, std::string(1, k) + test::read_file(test::model_path(
                                                          "templates/cases/toolcall.json")));
}

TEST(FuzzRegressions, TheRequestBodyRuns) {
  feed(fuzz::request, std::string(1, '\0') + test::read_file(test::model_path(
                                                   "templates/cases/toolcall.json")));
  feed(fuzz::request, std::string(1, '\1') + R"({"prompt": "Once", "max_tokens": 4, "stop": ["."]})");
  feed(fuzz::request, std::string(1, '\0') + R"({"messages": 3, "temperature": 1e999})");
  feed(fuzz::request, std::string(1, '\0') + "{\"messages\": [");
}

}  // namespace
}  // namespace tandem
