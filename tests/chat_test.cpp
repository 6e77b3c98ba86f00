// `tandem chat` and the chat side of the C API: a piped conversation on stories260K gives what
// tandem_generate gives for the same rendered prompts; models made by `tandem make-model` with
// real vocabularies (Qwen2's, Llama 3's) and their templates chat, and their generations end by
// every stop rule with the right finish reason (end-of-turn tokens through a chain model with
// the same vocabulary, tests/chain_model.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "runtime/chat_template.h"
#include "runtime/gguf.h"
#include "runtime/tandem.h"
#include "tests/chain_model.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

std::string take(char* s) {
  std::string out = s ? s : "";
  tandem_string_free(s);
  return out;
}

struct collected {
  std::vector<std::string> pieces;
  std::string all() const {
    std::string s;
    for (auto& p : pieces) s += p;
    return s;
  }
};

bool collect(const char* text, size_t len, int32_t, void* ud) {
  static_cast<collected*>(ud)->pieces.emplace_back(text, len);
  return true;
}

bool refuse(const char*, size_t, int32_t, void*) { return false; }

tandem_generate_params greedy(collected* out, int max_tokens) {
  tandem_generate_params p = tandem_generate_params_default();
  p.sampling.temperature = 0.0f;
  p.max_tokens = max_tokens;
  p.on_token = collect;
  p.user_data = out;
  return p;
}

tandem_model* load(const std::string& path, int n_ctx = 0) {
  tandem_model_params p = tandem_model_params_default();
  p.offload = "0";
  p.n_threads = 1;
  p.n_ctx = n_ctx;
  tandem_model* m = tandem_model_load(path.c_str(), &p);
  EXPECT_NE(m, nullptr) << tandem_last_error();
  return m;
}

std::string write_input(const std::string& name, const std::string& text) {
  const std::string path = test::temp_dir() + "/" + name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

// ---- tandem chat on stories260K ------------------------------------------------------------

TEST(ChatCli, PipedTurnsMatchTheApi) {
  const std::string model = test::model_path("stories260K.gguf");
  const std::string input = write_input("turns.txt", "Hello\nHow are you?\n/reset\nOnce upon a time\n/exit\nignored\n");
  auto r = test::run_cli("chat -m " + model + " --temp 0 -n 20 -t 1 --offload 0 < " + input);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("(new conversation)"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("loading ["), std::string::npos) << "no bar when stderr is not a terminal";

  // The same conversation through the API, on one session as the chat keeps it.
  tandem_model* m = load(model);
  ASSERT_NE(m, nullptr);
  tandem_session* s = tandem_session_create(m);
  std::vector<std::pair<std::string, std::string>> conv;
  std::string want;
  const auto turn = [&](const std::string& user) {
    conv.push_back({"user", user});
    std::vector<tandem_chat_message> msgs;
    for (auto& [role, content] : conv) msgs.push_back({role.c_str(), content.c_str()});
    const std::string prompt = take(tandem_chat_apply(m, msgs.data(), msgs.size(), true));
    collected c;
    tandem_generate_params p = greedy(&c, 20);
    tandem_result res;
    ASSERT_EQ(tandem_generate(s, prompt.c_str(), &p, &res), TANDEM_OK) << tandem_last_error();
    conv.push_back({"assistant", c.all()});
    want += c.all() + "\n";
  };
  turn("Hello");
  turn("How are you?");
  conv.clear();
  tandem_session_reset(s);
  turn("Once upon a time");
  EXPECT_EQ(r.out, want);
  EXPECT_GT(want.size(), 6u);
  tandem_session_free(s);
  tandem_model_free(m);
}

TEST(ChatCli, BadTemplateNameIsAOneLineError) {
  const std::string input = write_input("hi.txt", "Hi\n");
  auto r = test::run_cli("chat -m " + test::model_path("stories260K.gguf") +
                         " --chat-template no-such-template < " + input);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("error: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("no-such-template"), std::string::npos) << r.err;
}

// params.chat_template: a built-in name or Jinja text; a bad one fails the load with a message.
TEST(ChatTemplate, ParamsChooseTheTemplate) {
  const std::string model = test::model_path("stories260K.gguf");
  tandem_model_params p = tandem_model_params_default();
  p.offload = "0";
  p.chat_template = "llama3";
  tandem_model* m = tandem_model_load(model.c_str(), &p);
  ASSERT_NE(m, nullptr) << tandem_last_error();
  EXPECT_EQ(take(tandem_model_chat_template(m)), chat_template::builtin("llama3"));
  tandem_model_free(m);

  p.chat_template = "{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}{{ bos_token }}";
  m = tandem_model_load(model.c_str(), &p);
  ASSERT_NE(m, nullptr) << tandem_last_error();
  const tandem_chat_message msgs[] = {{"user", "Hi"}, {"assistant", "Hello"}};
  EXPECT_EQ(take(tandem_chat_apply(m, msgs, 2, false)), "[user:Hi][assistant:Hello]<s>");
  tandem_model_free(m);

  p.chat_template = "no-such-template";
  EXPECT_EQ(tandem_model_load(model.c_str(), &p), nullptr);
  EXPECT_NE(std::string(tandem_last_error()).find("no-such-template"), std::string::npos)
      << tandem_last_error();
  p.chat_template = "{% if %}";
  EXPECT_EQ(tandem_model_load(model.c_str(), &p), nullptr);
  EXPECT_NE(std::string(tandem_last_error()).find("chat template"), std::string::npos)
      << tandem_last_error();
}

// tandem_chat_apply_json keeps the client's key order (a template's tojson prints it), passes
// tools and extra variables, and refuses what is not a request.
TEST(ChatTemplate, ApplyJsonKeepsKeyOrderToolsAndExtra) {
  tandem_model_params p = tandem_model_params_default();
  p.offload = "0";
  p.chat_template =
      "{{ messages[0] | tojson }}|{{ tools | length }}|{{ flavour }}|"
      "{% if add_generation_prompt %}gen{% endif %}";
  tandem_model* m = tandem_model_load(test::model_path("stories260K.gguf").c_str(), &p);
  ASSERT_NE(m, nullptr) << tandem_last_error();
  const std::string out = take(tandem_chat_apply_json(
      m, R"({"messages": [{"role": "user", "content": "Hi", "zeta": 1, "alpha": 2}],
            "tools": [{"type": "function"}], "extra": {"flavour": "mint"}})"));
  EXPECT_EQ(out, R"({"role": "user", "content": "Hi", "zeta": 1, "alpha": 2}|1|mint|gen)");
  EXPECT_EQ(tandem_chat_apply_json(m, "not json"), nullptr);
  EXPECT_NE(std::string(tandem_last_error()).find("not JSON"), std::string::npos);
  EXPECT_EQ(tandem_chat_apply_json(m, R"({"messages": [], "tools": 3})"), nullptr);
  EXPECT_NE(std::string(tandem_last_error()).find("tools"), std::string::npos);
  tandem_model_free(m);
}

// ---- made models with real vocabularies and their templates ------------------------------

struct vocab_case {
  const char* vocab;       // in ../shared/models/vocab
  const char* tmpl;        // built-in template written into the model
  const char* end_of_turn;  // the template's end-of-turn token
  const char* user_turn;   // how the template writes a user's "Hi"
};

class MadeModel : public ::testing::TestWithParam<vocab_case> {};

TEST_P(MadeModel, ChatsAndStopsByEveryRule) {
  const vocab_case& c = GetParam();
  const std::string vocab = test::model_path(std::string("vocab/") + c.vocab);
  const std::string path = test::temp_dir() + "/tiny-" + c.tmpl + ".gguf";
  auto mk = test::run_cli("make-model --shape tiny --vocab " + vocab + " --chat-template " +
                          c.tmpl + " -o " + path);
  ASSERT_EQ(mk.status, 0) << mk.err;

  // tandem chat with the model's own template.
  auto chat = test::run_cli("chat -m " + path + " --temp 0 -n 6 -t 1 --offload 0 < " +
                            write_input(std::string("hi-") + c.tmpl, "Hi\n"));
  ASSERT_EQ(chat.status, 0) << chat.err;
  EXPECT_NE(chat.err.find("(the reply reached -n 6 tokens)"), std::string::npos) << chat.err;

  tandem_model* m = load(path);
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(take(tandem_model_chat_template(m)), chat_template::builtin(c.tmpl));
  tandem_chat_message hi = {"user", "Hi"};
  const std::string prompt = take(tandem_chat_apply(m, &hi, 1, true));
  EXPECT_NE(prompt.find(c.user_turn), std::string::npos) << prompt;

  // The end-of-turn token's spelling is one control token with parse_special only, and ends
  // generation.
  int32_t end_id = -1, ids[64];
  ASSERT_EQ(tandem_tokenize(m, c.end_of_turn, std::strlen(c.end_of_turn), &end_id, 1, false, true), 1);
  EXPECT_TRUE(tandem_token_is_eog(m, end_id));
  EXPECT_GT(tandem_tokenize(m, c.end_of_turn, std::strlen(c.end_of_turn), ids, 64, false, false), 1);
  const int32_t n_prompt = tandem_tokenize(m, prompt.data(), prompt.size(), ids, 64, false, true);
  ASSERT_GT(n_prompt, 0);
  ASSERT_LE(n_prompt, 64);
  EXPECT_NE(std::find(ids, ids + n_prompt, end_id), ids + n_prompt);
  EXPECT_EQ(take(tandem_detokenize(m, &end_id, 1, false)), "");
  EXPECT_EQ(take(tandem_detokenize(m, &end_id, 1, true)), c.end_of_turn);

  tandem_session* s = tandem_session_create(m);
  tandem_result r;
  // max_tokens
  collected six;
  tandem_generate_params p = greedy(&six, 6);
  ASSERT_EQ(tandem_generate(s, prompt.c_str(), &p, &r), TANDEM_OK) << tandem_last_error();
  EXPECT_EQ(r.finish, TANDEM_FINISH_LENGTH);
  EXPECT_EQ(r.completion_tokens, 6);
  ASSERT_FALSE(six.pieces.empty());
  // a stop string: the second piece shown (the first when there is one): the text stops before
  // its first occurrence
  const std::string stop = six.pieces.size() > 1 ? six.pieces[1] : six.pieces[0];
  const std::string before = six.all().substr(0, six.all().find(stop));
  tandem_session_reset(s);  // the same evaluation as above, so the same greedy tokens
  collected stopped;
  p = greedy(&stopped, 6);
  const char* stops[] = {stop.c_str()};
  p.stop = stops;
  p.n_stop = 1;
  ASSERT_EQ(tandem_generate(s, prompt.c_str(), &p, &r), TANDEM_OK);
  EXPECT_EQ(r.finish, TANDEM_FINISH_STOP_STRING);
  EXPECT_EQ(stopped.all(), before);
  // the callback says stop
  tandem_session_reset(s);
  p = tandem_generate_params_default();
  p.sampling.temperature = 0.0f;
  p.on_token = refuse;
  EXPECT_EQ(tandem_generate(s, prompt.c_str(), &p, &r), TANDEM_CANCELLED);
  EXPECT_EQ(r.finish, TANDEM_FINISH_CANCELLED);
  tandem_session_free(s);
  tandem_model_free(m);

  // a full context: a model whose context holds the prompt and 3 more tokens
  tandem_model* small = load(path, n_prompt + 3);
  ASSERT_NE(small, nullptr);
  s = tandem_session_create(small);
  collected full;
  p = greedy(&full, -1);
  p.add_bos = false;
  ASSERT_EQ(tandem_generate(s, prompt.c_str(), &p, &r), TANDEM_OK) << tandem_last_error();
  EXPECT_EQ(r.finish, TANDEM_FINISH_CONTEXT);
  EXPECT_EQ(r.prompt_tokens, n_prompt);
  EXPECT_EQ(r.completion_tokens, 4);
  tandem_session_free(s);
  tandem_model_free(small);

  // the end-of-turn token: a chain model with this vocabulary whose greedy continuation is
  // "Hello world" and then that token
  int32_t hw[8];
  auto v = gguf_file::open(vocab);
  gguf_writer w;
  for (auto& [k, val] : v->metadata())
    if (k.rfind("tokenizer.", 0) == 0) w.set_value(k, val);
  w.set_string("tokenizer.chat_template", chat_template::builtin(c.tmpl));
  const int n_vocab = static_cast<int>(v->find("tokenizer.ggml.tokens")->arr.size());
  tandem_model* made = load(path);  // for the ids of "Hello world" in this vocabulary
  ASSERT_NE(made, nullptr);
  const int32_t n_hw = tandem_tokenize(made, "Hello world", 11, hw, 8, false, false);
  ASSERT_EQ(n_hw, 2);
  tandem_model_free(made);
  const std::string chain_path = test::temp_dir() + "/chain-" + c.tmpl + ".gguf";
  test::write_chain_model(w, n_vocab, {hw[0], hw[1], end_id}, chain_path);
  tandem_model* chain = load(chain_path);
  ASSERT_NE(chain, nullptr);
  s = tandem_session_create(chain);
  collected eog;
  p = greedy(&eog, 10);
  ASSERT_EQ(tandem_generate_tokens(s, hw, 1, &p, &r), TANDEM_OK) << tandem_last_error();
  EXPECT_EQ(r.finish, TANDEM_FINISH_EOG);
  EXPECT_EQ(r.completion_tokens, 2);
  EXPECT_EQ(eog.all(), " world");  // the end-of-turn token is not shown
  EXPECT_STREQ(tandem_finish_reason_name(r.finish), "stop");
  tandem_session_free(s);
  tandem_model_free(chain);
}

INSTANTIATE_TEST_SUITE_P(
    Vocabularies, MadeModel,
    ::testing::Values(
        vocab_case{"ggml-vocab-qwen2.gguf", "chatml", "<|im_end|>",
                   "<|im_start|>user\nHi<|im_end|>\n"},
        vocab_case{"ggml-vocab-llama-bpe.gguf", "llama3", "<|eot_id|>",
                   "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"}),
    [](const auto& info) { return std::string(info.param.tmpl); });

}  // namespace
}  // namespace tandem
