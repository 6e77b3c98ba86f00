// `tandem template`: prints exactly the rendering (no newline added), or exits 1 with one
// "error: ..." line.
#include <gtest/gtest.h>

#include "runtime/chat_template.h"
#include "tests/test_util.h"

namespace {

std::string tpl(const std::string& name) { return tandem::test::model_path("templates/" + name + ".jinja"); }
std::string case_file(const std::string& name) { return tandem::test::model_path("templates/cases/" + name + ".json"); }

}  // namespace

TEST(TemplateCli, RendersATemplateFileExactly) {
  // Qwen2.5 uses neither bos_token nor eos_token, so the golden holds for a case without them.
  auto r = tandem::test::run_cli("template --template " + tpl("Qwen-Qwen2.5-7B-Instruct") + " " + case_file("toolcall"));
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(r.out, tandem::test::read_file(tandem::test::model_path("templates/golden/Qwen-Qwen2.5-7B-Instruct.toolcall.txt")));
}

TEST(TemplateCli, TemplateErrorExitsOneWithTheMessage) {
  auto r = tandem::test::run_cli("template --template " + tpl("google-gemma-2-2b-it") + " " + case_file("system"));
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, "error: System role not supported\n");
  std::string bad = tandem::test::temp_dir() + "/bad.jinja";
  FILE* f = std::fopen(bad.c_str(), "w");
  ASSERT_TRUE(f);
  std::fputs("{% for m in messages %}\n{{ m.role | nope }}{% endfor %}", f);
  std::fclose(f);
  r = tandem::test::run_cli("template --template " + bad + " " + case_file("single"));
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.err, "error: chat template line 2, column 13: no filter named 'nope'\n");
  r = tandem::test::run_cli("template --template " + bad + " /nonexistent/case.json");
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.err, "error: cannot read the case file '/nonexistent/case.json'\n");
}

TEST(TemplateCli, ModelTemplateWithTheVocabsSpecialTokens) {
  // Phi-3's template starts with bos_token, which comes from the vocabulary ("<s>").
  auto r = tandem::test::run_cli("template -m " + tandem::test::model_path("vocab/ggml-vocab-phi-3.gguf") + " " + case_file("multiturn"));
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(r.out, tandem::test::read_file(std::string(TANDEM_TEST_DATA_DIR) + "/template_cli/vocab-phi-3.multiturn.txt"));
}

TEST(TemplateCli, ModelWithoutTemplateGetsChatMLAndSaysSo) {
  const std::string model = tandem::test::model_path("stories260K.gguf");
  auto r = tandem::test::run_cli("template -m " + model + " " + case_file("multiturn"));
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err, model + " has no tokenizer.chat_template; using the built-in ChatML template\n");
  EXPECT_EQ(r.out, tandem::test::read_file(std::string(TANDEM_TEST_DATA_DIR) + "/builtin_templates/chatml.multiturn.txt"));
}

TEST(TemplateCli, ChatTemplateOptionPicksABuiltinAndPrintTemplateShowsIt) {
  auto r = tandem::test::run_cli("template --chat-template llama3 " + case_file("single"));
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
  r = tandem::test::run_cli("template --chat-template gemma --print-template");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, tandem::chat_template::builtin("gemma"));
  r = tandem::test::run_cli("template --chat-template nope " + case_file("single"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("--chat-template 'nope' is neither a built-in template (chatml, gemma"), std::string::npos) << r.err;
}
