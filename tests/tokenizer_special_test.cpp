// Special tokens: parse_special on the chat formats of Llama 3, Qwen2 (ChatML), Llama 2 and
// Phi-3 (expected ids built from each vocabulary's own token table and plain-text encodings),
// SentencePiece's space prefix after special tokens, Phi-3's whitespace stripping, show_special
// decoding, and the end-of-generation tokens of each model family.
#include <gtest/gtest.h>

#include <algorithm>

#include "runtime/error.h"
#include "runtime/gguf.h"
#include "runtime/tokenizer.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

using ids = std::vector<int32_t>;

std::unique_ptr<tokenizer> vocab(const std::string& name) {
  auto f = gguf_file::open(test::model_path("vocab/ggml-vocab-" + name + ".gguf"));
  return tokenizer::from_gguf(*f);
}

// The id of a token that must exist.
int32_t id_of(const tokenizer& t, std::string_view text) {
  const int32_t id = t.find_token(text);
  EXPECT_GE(id, 0) << "no token '" << text << "'";
  return id;
}

ids cat(std::initializer_list<ids> parts) {
  ids r;
  for (const ids& p : parts) r.insert(r.end(), p.begin(), p.end());
  return r;
}

TEST(TokenizerSpecial, Llama3Chat) {
  auto t = vocab("llama-bpe");
  const std::string s =
      "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>";
  const ids want = cat({{id_of(*t, "<|begin_of_text|>"), id_of(*t, "<|start_header_id|>")},
                        t->encode("user", false),
                        {id_of(*t, "<|end_header_id|>")},
                        t->encode("\n\n", false),
                        t->encode("Hi", false),
                        {id_of(*t, "<|eot_id|>")}});
  EXPECT_EQ(t->encode(s, false, true), want);
  // The same ids as llama.cpp's llama_tokenize(add_special = false, parse_special = true).
  EXPECT_EQ(want, (ids{128000, 128006, 882, 128007, 271, 13347, 128009}));
  // add_bos puts BOS in front even when the text starts with it, as llama.cpp does.
  EXPECT_EQ(t->encode(s, true, true), cat({{128000}, want}));
  // Without parse_special the spellings are text: no control token comes out.
  const ids plain = t->encode(s, false);
  for (int32_t id : plain) EXPECT_FALSE(t->is_control(id)) << id;
  EXPECT_EQ(t->decode(plain), s);
  // Shown, the control tokens give back the text; hidden, only the message is left.
  EXPECT_EQ(t->decode(want, true), s);
  EXPECT_EQ(t->decode(want), "user\n\nHi");
  EXPECT_EQ(t->piece(128009), "");
  EXPECT_EQ(t->piece(128009, -1, true), "<|eot_id|>");
}

TEST(TokenizerSpecial, QwenChatMl) {
  auto t = vocab("qwen2");
  const std::string s = "<|im_start|>user\nHi<|im_end|>\n";
  const ids want = cat({{id_of(*t, "<|im_start|>")},
                        t->encode("user\nHi", false),
                        {id_of(*t, "<|im_end|>")},
                        t->encode("\n", false)});
  EXPECT_EQ(t->encode(s, false, true), want);
  EXPECT_EQ(want, (ids{151644, 872, 198, 13048, 151645, 198}));
  EXPECT_EQ(t->decode(want, true), s);
  EXPECT_EQ(t->decode(want), "user\nHi\n");
  EXPECT_EQ(t->decode(t->encode(s, false)), s);
  EXPECT_EQ(t->find_token("<|im_start|>"), 151644);
  EXPECT_EQ(t->find_token("<|no_such_token|>"), -1);
}

// Byte-level BPE loses nothing: text with control spellings around and inside the golden strings
// comes back byte for byte when the parsed tokens are shown, and each spelling is one token.
TEST(TokenizerSpecial, BpeRoundTripWithSpecials) {
  std::vector<std::string> texts;
  {
    const std::string inp =
        test::read_file(test::model_path("vocab/ggml-vocab-llama-bpe.gguf.inp"));
    const std::string sep = "\n__ggml_vocab_test__\n";
    for (size_t pos = 0, end; (end = inp.find(sep, pos)) != std::string::npos;
         pos = end + sep.size())
      texts.push_back(inp.substr(pos, end - pos));
  }
  for (const char* name : {"gpt-2", "starcoder", "deepseek-llm", "llama-bpe", "qwen2"}) {
    auto t = vocab(name);
    std::vector<int32_t> controls;
    for (int32_t id = 0; id < t->n_vocab() && controls.size() < 3; ++id)
      if (t->is_control(id)) controls.push_back(id);
    ASSERT_FALSE(controls.empty()) << name;
    for (size_t i = 0; i < texts.size(); ++i) {
      const std::string& a = t->token_text(controls[i % controls.size()]);
      const std::string& b = t->token_text(controls[(i + 1) % controls.size()]);
      const std::string s = a + texts[i] + b + texts[i] + b + a;
      const ids got = t->encode(s, false, true);
      EXPECT_EQ(t->decode(got, true), s) << name << " string " << i;
      EXPECT_EQ(std::count_if(got.begin(), got.end(), [&](int32_t id) { return t->is_control(id); }),
                4)
          << name << " string " << i;
      EXPECT_EQ(t->decode(got), texts[i] + texts[i]) << name << " string " << i;
    }
  }
}

// SentencePiece: the text between special tokens is encoded as if it were a whole text (with its
// own space prefix), over every golden string.
TEST(TokenizerSpecial, SpmFragmentsEncodeAlone) {
  auto t = vocab("llama-spm");
  const std::string inp = test::read_file(test::model_path("vocab/ggml-vocab-llama-spm.gguf.inp"));
  const std::string sep = "\n__ggml_vocab_test__\n";
  for (size_t pos = 0, end; (end = inp.find(sep, pos)) != std::string::npos;
       pos = end + sep.size()) {
    const std::string s = inp.substr(pos, end - pos);
    if (s.empty()) continue;
    EXPECT_EQ(t->encode("<s>" + s + "</s>" + s, true, true),
              cat({{1, 1}, t->encode(s, false), {2}, t->encode(s, false)}))
        << "'" << s << "'";
    EXPECT_EQ(t->encode(s + "</s>", false, true), cat({t->encode(s, false), {2}}));
  }
}

// DeepSeek's user-defined tokens are split out with or without parse_special; its control
// tokens only with it.
TEST(TokenizerSpecial, UserDefinedAndControl) {
  auto t = vocab("deepseek-llm");
  const int32_t bos = id_of(*t, "<｜begin▁of▁sentence｜>");
  const int32_t u = id_of(*t, "\xC3\xBC");  // "ü", user-defined there
  EXPECT_EQ(t->encode("<｜begin▁of▁sentence｜>\xC3\xBC", false, true), (ids{bos, u}));
  const ids plain = t->encode("<｜begin▁of▁sentence｜>\xC3\xBC", false);
  EXPECT_EQ(plain.back(), u);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), bos), 0);
  EXPECT_EQ(t->piece(u), "\xC3\xBC");  // user-defined tokens always show
}

// Longest match first: "<|reserved_special_token_10|>" is one token, not token 1 and text.
TEST(TokenizerSpecial, LongestFirst) {
  auto t = vocab("llama-bpe");
  const int32_t t10 = id_of(*t, "<|reserved_special_token_10|>");
  ASSERT_GE(id_of(*t, "<|reserved_special_token_1|>"), 0);
  EXPECT_EQ(t->encode("<|reserved_special_token_10|>", false, true), ids{t10});
}

TEST(TokenizerSpecial, SpmBosAndSpacePrefix) {
  auto t = vocab("llama-spm");
  EXPECT_EQ(t->encode("<s>", false, true), ids{1});
  EXPECT_EQ(t->encode("<s>", true, true), (ids{1, 1}));
  EXPECT_EQ(t->encode("<unk>", false, true), ids{0});  // unknown tokens parse too
  EXPECT_TRUE(t->is_control(1));
  EXPECT_FALSE(t->is_control(0));  // unknown, not control; hidden all the same
  EXPECT_EQ(t->piece(0), "");
  EXPECT_FALSE(t->is_control(15043));
  // Without parse_special "<s>" is the text "▁<s>".
  EXPECT_EQ(t->encode("<s>", false), (ids{529, 29879, 29958}));
  EXPECT_EQ(t->decode(t->encode("<s>", false)), " <s>");
  // The space prefix goes on the text at the start and right after each special token, never
  // elsewhere: each fragment is encoded as if it were a whole text.
  EXPECT_EQ(t->encode("Hello<s>world <s> Hi", false, true),
            cat({t->encode("Hello", false), {1}, t->encode("world ", false), {1},
                 t->encode(" Hi", false)}));
  EXPECT_EQ(t->encode("Hello<s>world <s> Hi", false, true),
            (ids{15043, 1, 3186, 29871, 1, 29871, 6324}));
  EXPECT_EQ(t->encode("[INST] Hi [/INST]</s>", true, true),
            cat({{1}, t->encode("[INST] Hi [/INST]", false), {2}}));
  // No strip attributes on Llama 2: whitespace after a token stays text.
  EXPECT_EQ(t->encode("</s>\nx", false, true), cat({{2}, t->encode("\nx", false)}));
  EXPECT_EQ(t->decode({1, 15043, 2}, true), "<s>Hello</s>");
  EXPECT_EQ(t->decode({1, 15043, 2}), "Hello");
}

// llama.cpp strips the whitespace after Phi-3's special tokens (all but <s>, <unk> and
// <|endoftext|>), recognising the model by its name.
TEST(TokenizerSpecial, Phi3StripsAfterSpecials) {
  auto t = vocab("phi-3");
  const int32_t user = id_of(*t, "<|user|>"), end = id_of(*t, "<|end|>");
  const int32_t assistant = id_of(*t, "<|assistant|>");
  EXPECT_EQ(t->encode("<|user|>\nHi<|end|>\n<|assistant|>", false, true),
            cat({{user}, t->encode("Hi", false), {end, assistant}}));
  EXPECT_EQ(t->encode("<|user|>\nHi<|end|>\n<|assistant|>", false, true),
            (ids{32010, 6324, 32007, 32001}));
  EXPECT_EQ(t->encode("<s> Hi</s> x", false, true),
            cat({{1}, t->encode(" Hi", false), {2}, t->encode("x", false)}));
  EXPECT_EQ(t->encode("<|endoftext|> x", false, true), cat({{32000}, t->encode(" x", false)}));
}

TEST(TokenizerSpecial, EogPerFamily) {
  // Llama 3 (3.0's vocabulary has no <|eom_id|>).
  auto l3 = vocab("llama-bpe");
  EXPECT_EQ(l3->eog_ids(), (ids{id_of(*l3, "<|end_of_text|>"), id_of(*l3, "<|eot_id|>")}));
  EXPECT_FALSE(l3->is_eog(id_of(*l3, "<|begin_of_text|>")));
  EXPECT_FALSE(l3->is_eog(id_of(*l3, "<|start_header_id|>")));
  EXPECT_FALSE(l3->is_eog(-1));
  // Qwen2 / ChatML; its vocabulary also spells "</s>" (a normal token there), which llama.cpp
  // lists as an end token too.
  auto qw = vocab("qwen2");
  EXPECT_TRUE(qw->is_eog(id_of(*qw, "<|im_end|>")));
  EXPECT_TRUE(qw->is_eog(id_of(*qw, "<|endoftext|>")));
  EXPECT_FALSE(qw->is_eog(id_of(*qw, "<|im_start|>")));
  EXPECT_EQ(qw->eog_ids(), (ids{id_of(*qw, "</s>"), 151643, 151645}));
  // Phi-3.
  auto phi = vocab("phi-3");
  EXPECT_EQ(phi->eog_ids(), (ids{2, id_of(*phi, "<|endoftext|>"), id_of(*phi, "<|end|>")}));
  EXPECT_FALSE(phi->is_eog(id_of(*phi, "<|user|>")));
  EXPECT_FALSE(phi->is_eog(id_of(*phi, "<|assistant|>")));
  // Llama 2 / Mistral: </s>.
  EXPECT_EQ(vocab("llama-spm")->eog_ids(), ids{2});
  // DeepSeek.
  auto ds = vocab("deepseek-llm");
  EXPECT_EQ(ds->eog_ids(), ids{id_of(*ds, "<｜end▁of▁sentence｜>")});
  EXPECT_FALSE(ds->is_eog(ds->bos()));
  EXPECT_EQ(vocab("gpt-2")->eog_ids(), ids{50256});
  // StarCoder 2: <|endoftext|> and the FIM padding token.
  auto sc = vocab("starcoder");
  EXPECT_EQ(sc->eog_ids(), (ids{0, id_of(*sc, "<fim_pad>")}));
  EXPECT_FALSE(sc->is_eog(id_of(*sc, "<fim_prefix>")));
}

// A small SentencePiece vocabulary; types per token, extra keys through fn.
std::unique_ptr<tokenizer> made(const std::string& name, const std::vector<std::string>& toks,
                                const std::vector<int32_t>& types,
                                const std::function<void(gguf_writer&)>& fn = {}) {
  gguf_writer w;
  w.set_string("tokenizer.ggml.model", "llama");
  w.set_array_string("tokenizer.ggml.tokens", toks);
  w.set_array_f32("tokenizer.ggml.scores", std::vector<float>(toks.size(), 0.0f));
  w.set_array_i32("tokenizer.ggml.token_type", types);
  if (fn) fn(w);
  const std::string path = test::temp_dir() + "/" + name;
  w.write(path);
  auto f = gguf_file::open(path);
  return tokenizer::from_gguf(*f);
}

TEST(TokenizerSpecial, GemmaEndOfTurn) {
  // Gemma: <eos> is EOS (id 1) and <end_of_turn> ends a turn; both end generation.
  auto t = made("gemma.gguf",
                {"<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "▁",
                 "a", "▁a"},
                {3, 3, 3, 2, 3, 3, 1, 1, 1}, [](gguf_writer& w) {
                  w.set_u32("tokenizer.ggml.bos_token_id", 2);
                  w.set_u32("tokenizer.ggml.eos_token_id", 1);
                  w.set_u32("tokenizer.ggml.unknown_token_id", 3);
                });
  EXPECT_EQ(t->eog_ids(), (ids{1, 5}));
  EXPECT_EQ(t->encode("<start_of_turn>a<end_of_turn>", false, true), (ids{4, 8, 5}));
  EXPECT_EQ(t->decode({2, 4, 8, 5}, true), "<bos><start_of_turn> a<end_of_turn>");
  EXPECT_EQ(t->decode({2, 4, 8, 5}), " a");
}

TEST(TokenizerSpecial, EndTokensByTextAndKey) {
  // "<|im_end|>" declared normal, and FIM padding found by text, become control end tokens;
  // tokenizer.ggml.eot_token_id / eom_token_id add theirs.
  auto t = made("bytext.gguf",
                {"<unk>", "<s>", "</x>", "<|im_end|>", "<|fim_pad|>", "<T>", "<M>", "a"},
                {2, 3, 3, 1, 1, 3, 3, 1}, [](gguf_writer& w) {
                  w.set_u32("tokenizer.ggml.eos_token_id", 2);
                  w.set_u32("tokenizer.ggml.eot_token_id", 5);
                  w.set_u32("tokenizer.ggml.eom_token_id", 6);
                });
  EXPECT_EQ(t->eog_ids(), (ids{2, 3, 4, 5, 6}));
  EXPECT_TRUE(t->is_control(3));
  EXPECT_EQ(t->piece(3), "");
  EXPECT_EQ(t->piece(3, -1, true), "<|im_end|>");
  EXPECT_FALSE(t->is_control(7));
  // Hidden or parsed, a control token is never matched in text without parse_special.
  EXPECT_NE(t->encode("<|im_end|>", false), ids{3});
  EXPECT_EQ(t->encode("<|im_end|>", false, true), ids{3});
}

TEST(TokenizerSpecial, FimKeyWinsOverText) {
  // With tokenizer.ggml.fim_pad_token_id given, that token ends generation and the one spelled
  // "<|fim_pad|>" is left as the file declares it.
  auto t = made("fimkey.gguf", {"<unk>", "<s>", "</x>", "<|fim_pad|>", "<pad>", "a"},
                {2, 3, 3, 1, 3, 1}, [](gguf_writer& w) {
                  w.set_u32("tokenizer.ggml.eos_token_id", 2);
                  w.set_u32("tokenizer.ggml.fim_pad_token_id", 4);
                });
  EXPECT_EQ(t->eog_ids(), (ids{2, 4}));
  EXPECT_FALSE(t->is_control(3));
}

TEST(TokenizerSpecial, HarmonyEndIsNotEog) {
  // gpt-oss: <|end|> closes a message but not the generation when <|return|> and <|call|> exist;
  // it and the message-structure tokens are shown as text.
  auto t = made("harmony.gguf",
                {"<unk>", "<|startoftext|>", "<|return|>", "<|call|>", "<|end|>", "<|channel|>",
                 "a"},
                {2, 3, 3, 3, 3, 3, 1}, [](gguf_writer& w) {
                  w.set_u32("tokenizer.ggml.bos_token_id", 1);
                  w.set_u32("tokenizer.ggml.eos_token_id", 2);
                });
  EXPECT_EQ(t->eog_ids(), (ids{2, 3}));
  EXPECT_EQ(t->piece(4), "<|end|>");
  EXPECT_EQ(t->piece(5), "<|channel|>");
  // User-defined now: split out even without parse_special.
  EXPECT_EQ(t->encode("<|channel|>", false), ids{5});
}

}  // namespace
}  // namespace tandem
