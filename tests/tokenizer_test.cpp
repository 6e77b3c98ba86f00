// Tokenizer: llama.cpp's golden tokenizations (vocab/*.inp/.out, made with the reference Hugging
// Face tokenizers), decode round trips, BOS and the leading-space rule, byte fallback, merge
// order on a hand-made vocabulary, and the errors for broken or unsupported vocabularies.
#include <gtest/gtest.h>

#include <sstream>

#include "runtime/gguf.h"
#include "runtime/tokenizer.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

struct golden {
  std::vector<std::string> texts;
  std::vector<std::vector<int32_t>> ids;
};

// The .inp file is each string followed by "\n__ggml_vocab_test__\n" (strings may be empty or
// whitespace only); the .out file has one line of ids per string.
golden read_golden(const std::string& vocab) {
  const std::string base = test::model_path("vocab/ggml-vocab-" + vocab + ".gguf");
  const std::string inp = test::read_file(base + ".inp");
  const std::string out = test::read_file(base + ".out");
  golden g;
  const std::string sep = "\n__ggml_vocab_test__\n";
  for (size_t pos = 0; pos < inp.size();) {
    const size_t end = inp.find(sep, pos);
    if (end == std::string::npos) break;
    g.texts.push_back(inp.substr(pos, end - pos));
    pos = end + sep.size();
  }
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream ids(line);
    std::vector<int32_t>& v = g.ids.emplace_back();
    for (int32_t id; ids >> id;) v.push_back(id);
  }
  return g;
}

std::unique_ptr<tokenizer> load(const std::string& rel) {
  auto f = gguf_file::open(test::model_path(rel));
  return tokenizer::from_gguf(*f);
}

std::string show(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) {
    s += ' ';
    s += std::to_string(id);
  }
  return s;
}

// llama.cpp's test-tokenizer-0 made the .out files with llama_tokenize(text, add_special = false,
// parse_special = false): no BOS, control tokens as text.
void check_golden(const std::string& vocab) {
  const golden g = read_golden(vocab);
  ASSERT_EQ(g.texts.size(), 46u) << vocab;
  ASSERT_EQ(g.ids.size(), g.texts.size()) << vocab;
  auto tok = load("vocab/ggml-vocab-" + vocab + ".gguf");
  for (size_t i = 0; i < g.texts.size(); ++i)
    EXPECT_EQ(show(tok->encode(g.texts[i], false)), show(g.ids[i]))
        << vocab << " string " << i << ": '" << g.texts[i] << "'";
}

// ---- SentencePiece (llama) ---------------------------------------------------------------

TEST(TokenizerSpm, GoldenLlamaSpm) { check_golden("llama-spm"); }
TEST(TokenizerSpm, GoldenPhi3) { check_golden("phi-3"); }

TEST(TokenizerSpm, DecodeRoundTrip) {
  const golden g = read_golden("llama-spm");
  auto tok = load("vocab/ggml-vocab-llama-spm.gguf");
  for (const std::string& s : g.texts) {
    // After BOS the prefixed space is dropped again; without BOS it shows.
    EXPECT_EQ(tok->decode(tok->encode(s, true)), s);
    EXPECT_EQ(tok->decode(tok->encode(s, false)), s.empty() ? "" : " " + s);
  }
}

TEST(TokenizerSpm, BosAndSpecials) {
  auto tok = load("vocab/ggml-vocab-llama-spm.gguf");
  EXPECT_EQ(tok->n_vocab(), 32000);
  EXPECT_EQ(tok->bos(), 1);
  EXPECT_EQ(tok->eos(), 2);
  EXPECT_TRUE(tok->add_bos_default());
  EXPECT_TRUE(tok->is_eog(2));
  EXPECT_FALSE(tok->is_eog(1));
  EXPECT_FALSE(tok->is_eog(15043));
  EXPECT_EQ(tok->encode("", true), std::vector<int32_t>{1});
  EXPECT_TRUE(tok->encode("", false).empty());
  EXPECT_EQ(tok->encode("Hello world", true), (std::vector<int32_t>{1, 15043, 3186}));
  // Control tokens in the text are plain text, not the token.
  EXPECT_NE(tok->encode("<s>", false), std::vector<int32_t>{1});
  EXPECT_EQ(tok->piece(1), "");
  EXPECT_EQ(tok->piece(2), "");
  // Unknown tokens are hidden like control tokens unless shown (llama.cpp's token_to_piece).
  EXPECT_EQ(tok->piece(0), "");
  EXPECT_EQ(tok->piece(0, -1, true), "<unk>");
  EXPECT_EQ(tok->piece(13), "\n");
  EXPECT_EQ(tok->token_text(13), "<0x0A>");
  EXPECT_EQ(tok->piece(15043), " Hello");
  EXPECT_EQ(tok->piece(15043, 1), "Hello");  // after BOS
  EXPECT_EQ(tok->piece(15043, 3186), " Hello");
  EXPECT_EQ(tok->piece(29871), " ");
  EXPECT_EQ(tok->piece(29871, 1), "");
  EXPECT_EQ(tok->decode({1, 15043, 3186, 2}), "Hello world");
  EXPECT_THROW(tok->piece(32000), error);
  EXPECT_THROW(tok->piece(-1), error);
}

TEST(TokenizerSpm, ByteFallback) {
  auto tok = load("vocab/ggml-vocab-llama-spm.gguf");
  // U+1F999 is not in the vocabulary: its four UTF-8 bytes come out as <0xNN> tokens.
  const std::vector<int32_t> ids = tok->encode("\xF0\x9F\xA6\x99", false);
  EXPECT_EQ(ids, (std::vector<int32_t>{29871, 243, 162, 169, 156}));
  EXPECT_EQ(tok->token_text(243), "<0xF0>");
  EXPECT_EQ(tok->piece(243), "\xF0");
  EXPECT_EQ(tok->decode(ids), " \xF0\x9F\xA6\x99");
  // Bytes that are not UTF-8 at all survive the round trip too.
  const std::string junk = "a\xFF\x80z";
  EXPECT_EQ(tok->decode(tok->encode(junk, true)), junk);
}

TEST(TokenizerSpm, Stories260K) {
  auto tok = load("stories260K.gguf");
  EXPECT_EQ(tok->n_vocab(), 512);
  const std::vector<int32_t> ids = tok->encode("Once upon a time", true);
  EXPECT_EQ(ids, (std::vector<int32_t>{1, 403, 407, 261, 378}));
  EXPECT_EQ(tok->decode(ids), "Once upon a time");
  // A 512-token vocabulary lacks most characters: they fall back to bytes and decode back.
  const std::string s = "Zo\xC3\xAB said: \"\xE2\x82\xAC" "42!\"\n";
  EXPECT_EQ(tok->decode(tok->encode(s, true)), s);
}

// A hand-made vocabulary to pin the merge order: the highest-scoring pair merges first, and on
// equal scores the leftmost.
std::string write_vocab(const std::string& name, const std::vector<std::string>& toks,
                        const std::vector<float>& scores, const std::vector<int32_t>& types,
                        const std::string& model = "llama") {
  gguf_writer w;
  w.set_string("tokenizer.ggml.model", model);
  w.set_array_string("tokenizer.ggml.tokens", toks);
  if (!scores.empty()) w.set_array_f32("tokenizer.ggml.scores", scores);
  if (!types.empty()) w.set_array_i32("tokenizer.ggml.token_type", types);
  const std::string path = test::temp_dir() + "/" + name;
  w.write(path);
  return path;
}

std::unique_ptr<tokenizer> load_path(const std::string& path) {
  auto f = gguf_file::open(path);
  return tokenizer::from_gguf(*f);
}

TEST(TokenizerSpm, MergeOrder) {
  // ids:                   0        1      2       3    4    5    6     7     8      9
  const std::vector<std::string> toks = {"<unk>", "<s>", "</s>", "▁",  "a",
                                         "b",     "ab",  "ba",   "▁a", "aba"};
  const std::vector<int32_t> types = {2, 3, 3, 1, 1, 1, 1, 1, 1, 1};
  {
    // "▁aba": ▁a (-1) beats ab (-2) and ba (-3); then "aba" needs "a"+"ba" which never forms.
    auto tok =
        load_path(write_vocab("m1.gguf", toks, {0, 0, 0, -5, -5, -5, -2, -3, -1, -4}, types));
    EXPECT_EQ(tok->encode("aba", false), (std::vector<int32_t>{8, 7}));
  }
  {
    // ab (-1) first: "▁" "ab" "a" -> ab+a = aba (-4).
    auto tok =
        load_path(write_vocab("m2.gguf", toks, {0, 0, 0, -5, -5, -5, -1, -3, -2, -4}, types));
    EXPECT_EQ(tok->encode("aba", false), (std::vector<int32_t>{3, 9}));
  }
  {
    // ab and ba tie (and no "aba"): the leftmost pair (a,b) wins, leaving "▁" "ab" "a"; had
    // (b,a) won, "▁" "a" "ba" -> "▁a" "ba".
    std::vector<std::string> t3 = toks;
    t3[9] = "zzz";
    auto tok =
        load_path(write_vocab("m3.gguf", t3, {0, 0, 0, -5, -5, -5, -2, -2, -9, -4}, types));
    EXPECT_EQ(tok->encode("aba", false), (std::vector<int32_t>{3, 6, 4}));
  }
  {
    // No byte tokens and a character outside the vocabulary: the unknown token.
    auto tok =
        load_path(write_vocab("m4.gguf", toks, {0, 0, 0, -5, -5, -5, -2, -3, -1, -4}, types));
    EXPECT_EQ(tok->encode("ac", false), (std::vector<int32_t>{8, 0}));
  }
}

std::string error_of(const std::string& path) {
  try {
    load_path(path);
  } catch (const error& e) {
    return e.what();
  }
  return "";
}

TEST(TokenizerSpm, Errors) {
  const std::vector<std::string> toks = {"<unk>", "<s>", "</s>", "a"};
  std::string e = error_of(write_vocab("e1.gguf", toks, {0, 0, 0}, {2, 3, 3, 1}));
  EXPECT_NE(e.find("tokenizer.ggml.scores"), std::string::npos) << e;
  EXPECT_NE(e.find("e1.gguf"), std::string::npos) << e;
  e = error_of(write_vocab("e2.gguf", toks, {0, 0, 0, 0}, {2, 3, 3}));
  EXPECT_NE(e.find("tokenizer.ggml.token_type"), std::string::npos) << e;
  e = error_of(write_vocab("e3.gguf", toks, {0, 0, 0, 0}, {2, 3, 3, 1}, "bert"));
  EXPECT_NE(e.find("'bert'"), std::string::npos) << e;
  e = error_of(write_vocab("e4.gguf", toks, {0, 0, 0, 0}, {2, 3, 3, 6}));
  EXPECT_NE(e.find("<0xNN>"), std::string::npos) << e;
  e = error_of(write_vocab("e5.gguf", {"<unk>", "a", "a"}, {}, {}));
  EXPECT_NE(e.find("twice"), std::string::npos) << e;
  {
    gguf_writer w;
    w.set_string("tokenizer.ggml.model", "llama");
    w.set_array_string("tokenizer.ggml.tokens", toks);
    w.set_u32("tokenizer.ggml.bos_token_id", 7);
    const std::string path = test::temp_dir() + "/e6.gguf";
    w.write(path);
    e = error_of(path);
    EXPECT_NE(e.find("tokenizer.ggml.bos_token_id"), std::string::npos) << e;
  }
  {
    gguf_writer w;
    w.set_string("general.architecture", "llama");
    const std::string path = test::temp_dir() + "/e7.gguf";
    w.write(path);
    e = error_of(path);
    EXPECT_NE(e.find("tokenizer.ggml.model"), std::string::npos) << e;
  }
}

// ---- byte-level BPE (gpt2) ---------------------------------------------------------------

TEST(TokenizerBpe, GoldenGpt2) { check_golden("gpt-2"); }
TEST(TokenizerBpe, GoldenStarcoder) { check_golden("starcoder"); }
TEST(TokenizerBpe, GoldenDeepseekLlm) { check_golden("deepseek-llm"); }
TEST(TokenizerBpe, GoldenLlamaBpe) { check_golden("llama-bpe"); }
TEST(TokenizerBpe, GoldenQwen2) { check_golden("qwen2"); }

TEST(TokenizerBpe, DecodeRoundTrip) {
  const golden g = read_golden("gpt-2");
  for (const char* vocab : {"gpt-2", "starcoder", "deepseek-llm"}) {
    auto tok = load(std::string("vocab/ggml-vocab-") + vocab + ".gguf");
    for (const std::string& s : g.texts) {
      EXPECT_EQ(tok->decode(tok->encode(s, false)), s) << vocab;
      EXPECT_EQ(tok->decode(tok->encode(s, true)), s) << vocab;  // BOS is a control token
    }
  }
}

TEST(TokenizerBpe, Specials) {
  auto gpt2 = load("vocab/ggml-vocab-gpt-2.gguf");
  EXPECT_EQ(gpt2->bos(), 50256);
  EXPECT_FALSE(gpt2->add_bos_default());
  EXPECT_TRUE(gpt2->is_eog(50256));
  EXPECT_EQ(gpt2->piece(50256), "");
  EXPECT_EQ(gpt2->encode("Hello", true), (std::vector<int32_t>{50256, 15496}));
  EXPECT_EQ(gpt2->piece(995), " world");  // "Ġworld"
  EXPECT_EQ(gpt2->piece(995, 50256), " world");  // no space rule in byte-level BPE
  auto ds = load("vocab/ggml-vocab-deepseek-llm.gguf");
  EXPECT_TRUE(ds->add_bos_default());
  EXPECT_EQ(ds->bos(), 100000);
  EXPECT_TRUE(ds->is_eog(100001));
  // "ü" is a user-defined token there: split out before the pre-tokenizer, rendered verbatim.
  EXPECT_EQ(ds->encode("\xC3\xBC", false), std::vector<int32_t>{100014});
  EXPECT_EQ(ds->piece(100014), "\xC3\xBC");
}

// Every pre-tokenizer runs on hand-written splitters; each must agree with its expressions run
// through the generic std::regex path (llama.cpp's reference), and lose no text.
TEST(TokenizerBpe, SplittersMatchRegex) {
  std::vector<std::string> texts = read_golden("gpt-2").texts;
  for (const char* extra :
       {"I'M 'S 'Re don'T", "1234567 x12 ab3 \xD9\xA3\xD9\xA4", "a\r\n\r\n b  \n\tc ",
        "\xC2\xA0\xC2\xA0x\xE3\x80\x80y\xE3\x80\x80", "!!\n\n?? ", "\xCC\x81\xCC\x81 x",
        "\xEF\xBC\x81\xEF\xBC\xA1\xE2\x80\x9Chi\xE2\x80\x9D\xE3\x80\x82 \xCE\xA9\xE2\x84\xA6 "
        "\xE1\xBE\xBE\xE1\xBD\xBD \xEA\xB0\x80\xED\x9E\xA3 \xE0\xA0\x80   ",
        "tab\t\x0B\x0C\x1C end\xC2\x85", "\xFF\xFE bad \xC3 utf8 \xE2\x82"})
    texts.push_back(extra);
  for (const char* pre : {"gpt-2", "starcoder", "deepseek-llm", "llama-bpe", "qwen2"}) {
    const std::vector<std::string> exprs = detail::pre_tokenizer_exprs(pre);
    ASSERT_FALSE(exprs.empty()) << pre;
    for (const std::string& s : texts) {
      const auto custom = detail::pre_tokenize(s, exprs, true);
      EXPECT_EQ(custom, detail::pre_tokenize(s, exprs, false)) << pre << ": '" << s << "'";
      if (s.find('\xFF') != std::string::npos) continue;  // malformed UTF-8 becomes U+FFFD
      std::string joined;
      for (const auto& w : custom) joined += w;
      EXPECT_EQ(joined, s) << pre;
    }
  }
}

// std::regex recurses per repeated character and overflows the stack on long runs; the
// hand-written splitters must not.
TEST(TokenizerBpe, LongRuns) {
  const std::vector<std::string> runs = {std::string(100000, 'a'), std::string(100000, '7'),
                                         std::string(100000, ' '), std::string(100000, '!')};
  for (const char* pre : {"gpt-2", "starcoder", "deepseek-llm", "llama-bpe", "qwen2"})
    for (const std::string& s : runs) {
      size_t total = 0;
      for (const auto& w : detail::pre_tokenize(s, detail::pre_tokenizer_exprs(pre)))
        total += w.size();
      EXPECT_EQ(total, s.size()) << pre;
    }
  auto ds = load("vocab/ggml-vocab-deepseek-llm.gguf");
  for (const std::string& s : runs) EXPECT_EQ(ds->decode(ds->encode(s, false)), s);
}

TEST(TokenizerBpe, Errors) {
  gguf_writer w;
  w.set_string("tokenizer.ggml.model", "gpt2");
  w.set_string("tokenizer.ggml.pre", "no-such-pre");
  w.set_array_string("tokenizer.ggml.tokens", {"a", "b", "ab"});
  w.set_array_string("tokenizer.ggml.merges", {"a b"});
  std::string path = test::temp_dir() + "/b1.gguf";
  w.write(path);
  std::string e = error_of(path);
  EXPECT_NE(e.find("'no-such-pre'"), std::string::npos) << e;
  EXPECT_NE(e.find("tokenizer.ggml.pre"), std::string::npos) << e;

  gguf_writer w2;
  w2.set_string("tokenizer.ggml.model", "gpt2");
  w2.set_string("tokenizer.ggml.pre", "gpt-2");
  w2.set_array_string("tokenizer.ggml.tokens", {"a", "b", "ab"});
  path = test::temp_dir() + "/b2.gguf";
  w2.write(path);
  e = error_of(path);
  EXPECT_NE(e.find("tokenizer.ggml.merges"), std::string::npos) << e;
}

TEST(TokenizerBpe, TinyMerges) {
  gguf_writer w;
  w.set_string("tokenizer.ggml.model", "gpt2");
  w.set_string("tokenizer.ggml.pre", "gpt-2");
  // "Ġ" stands for the space byte. Ranks: (Ġ,a) before (a,b) before (Ġa,b).
  w.set_array_string("tokenizer.ggml.tokens",
                     {"a", "b", "Ġ", "Ġa", "ab", "Ġab", "<|endoftext|>"});
  w.set_array_i32("tokenizer.ggml.token_type", {1, 1, 1, 1, 1, 1, 3});
  w.set_array_string("tokenizer.ggml.merges", {"Ġ a", "a b", "Ġa b"});
  const std::string path = test::temp_dir() + "/b3.gguf";
  w.write(path);
  auto tok = load_path(path);
  EXPECT_EQ(tok->encode("ab ab", false), (std::vector<int32_t>{4, 5}));
  EXPECT_EQ(tok->decode({4, 5}), "ab ab");
  EXPECT_TRUE(tok->is_eog(6));
  // "c" has no token and no single-byte token: dropped, as llama.cpp does.
  EXPECT_EQ(tok->encode("abc", false), (std::vector<int32_t>{4}));
}

}  // namespace
}  // namespace tandem
