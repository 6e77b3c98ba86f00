// Sessions on a shared model (runtime/session.h): prefix reuse, every stop rule's finish reason,
// stop strings held back across token boundaries, whole UTF-8 characters, cancel from another
// thread (also of a generation waiting for the model), BUSY. The stop rules run on a "chain"
// model written here, whose greedy continuation is fixed by construction; prefix reuse on
// stories260K.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "runtime/backend_factory.h"
#include "runtime/gguf.h"
#include "runtime/host.h"
#include "runtime/session.h"
#include "runtime/stop.h"
#include "tests/chain_model.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

// ---- the chain model (tests/chain_model.h) -----------------------------------------------------
// Greedy decoding from BOS walks "Hello", the three bytes of "€", " wor", "ld", "!", EOS.
constexpr int k_vocab = 32;
enum : int32_t { k_unk, k_bos, k_eos, k_hello, k_e2, k_82, k_ac, k_wor, k_ld, k_bang };
const std::vector<int32_t> k_chain = {k_bos, k_hello, k_e2, k_82, k_ac, k_wor, k_ld, k_bang, k_eos};

std::string write_chain_model() {
  const std::string path = test::temp_dir() + "/chain.gguf";
  if (std::filesystem::exists(path)) return path;
  gguf_writer w;
  std::vector<std::string> toks = {"<unk>", "<s>", "</s>", "\xe2\x96\x81Hello", "<0xE2>",
                                   "<0x82>", "<0xAC>", "\xe2\x96\x81wor", "ld", "!"};
  std::vector<int32_t> types = {2, 3, 3, 1, 6, 6, 6, 1, 1, 1};
  while (static_cast<int>(toks.size()) < k_vocab) {
    toks.push_back("\xe2\x96\x81t" + std::to_string(toks.size()));
    types.push_back(1);
  }
  std::vector<float> scores(toks.size());
  for (size_t i = 0; i < scores.size(); ++i) scores[i] = -static_cast<float>(i);
  w.set_string("tokenizer.ggml.model", "llama");
  w.set_array_string("tokenizer.ggml.tokens", toks);
  w.set_array_f32("tokenizer.ggml.scores", scores);
  w.set_array_i32("tokenizer.ggml.token_type", types);
  w.set_u32("tokenizer.ggml.bos_token_id", k_bos);
  w.set_u32("tokenizer.ggml.eos_token_id", k_eos);
  test::write_chain_model(w, k_vocab, k_chain, path);
  return path;
}

host_options options(int n_seq = 2, int n_ctx = 0) {
  host_options o;
  o.engine.offload = "0";
  o.engine.n_threads = 1;
  o.engine.n_seq = n_seq;
  o.engine.n_ctx = n_ctx;
  return o;
}

struct pieces {
  std::vector<std::string> text;
  std::vector<int32_t> tokens;
  std::string all() const {
    std::string s;
    for (auto& t : text) s += t;
    return s;
  }
};

generate_options greedy(pieces* out, int max_tokens = -1, std::vector<std::string> stop = {}) {
  generate_options o;
  o.sampling.temp = 0.0f;
  o.max_tokens = max_tokens;
  o.stop = std::move(stop);
  o.on_token = [out](std::string_view text, int32_t token) {
    out->text.emplace_back(text);
    out->tokens.push_back(token);
    return true;
  };
  return o;
}

bool whole_utf8(const std::string& s) { return utf8_incomplete_tail(s) == 0; }

class ChainModel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { host_ = new model_host(write_chain_model(), options()); }
  static void TearDownTestSuite() {
    delete host_;
    host_ = nullptr;
  }
  static model_host* host_;
};
model_host* ChainModel::host_ = nullptr;

TEST_F(ChainModel, EndOfGenerationToken) {
  session s(*host_);
  pieces p;
  generate_result r;
  ASSERT_EQ(s.generate({k_bos}, greedy(&p), &r), session::status::ok);
  EXPECT_EQ(r.finish, finish_reason::eog);
  EXPECT_EQ(p.all(), "Hello\xe2\x82\xac world!");
  EXPECT_EQ(r.completion_tokens, static_cast<int>(k_chain.size()) - 1);  // the EOS counts
  EXPECT_STREQ(finish_reason_name(r.finish), "stop");
}

TEST_F(ChainModel, WholeUtf8CharactersOnly) {
  session s(*host_);
  pieces p;
  ASSERT_EQ(s.generate({k_bos}, greedy(&p), nullptr), session::status::ok);
  // The euro sign's three byte tokens come out as one piece, with the token that completed it.
  const std::vector<std::string> want = {"Hello", "\xe2\x82\xac", " wor", "ld", "!"};
  EXPECT_EQ(p.text, want);
  EXPECT_EQ(p.tokens, (std::vector<int32_t>{k_hello, k_ac, k_wor, k_ld, k_bang}));
  for (const auto& t : p.text) EXPECT_TRUE(whole_utf8(t)) << t;
}

TEST_F(ChainModel, StopStringAcrossTokens) {
  session s(*host_);
  pieces p;
  generate_result r;
  ASSERT_EQ(s.generate({k_bos}, greedy(&p, -1, {"world"}), &r), session::status::ok);
  EXPECT_EQ(r.finish, finish_reason::stop_string);
  EXPECT_EQ(p.all(), "Hello\xe2\x82\xac ");  // "wor" was held back, then "ld" completed it
  for (const auto& t : p.text) EXPECT_EQ(t.find("wor"), std::string::npos) << t;
  EXPECT_STREQ(finish_reason_name(r.finish), "stop");
}

TEST_F(ChainModel, HeldBackTextIsReleasedWhenNoStopStringFollows) {
  session s(*host_);
  pieces p;
  generate_result r;
  // "ld" could start "ld?": held until "!" shows it does not, then released with "!".
  ASSERT_EQ(s.generate({k_bos}, greedy(&p, -1, {"ld?", "Hello\xe2\x82\xac world!!"}), &r),
            session::status::ok);
  EXPECT_EQ(r.finish, finish_reason::eog);
  EXPECT_EQ(p.all(), "Hello\xe2\x82\xac world!");
  // The second stop string holds everything back until the EOS ends the generation.
  ASSERT_EQ(p.text.size(), 1u);
  EXPECT_EQ(p.tokens.back(), k_bang);
}

TEST_F(ChainModel, StopStringInsideAMultiByteCharacter) {
  session s(*host_);
  pieces p;
  generate_result r;
  ASSERT_EQ(s.generate({k_bos}, greedy(&p, -1, {"\xe2\x82\xac"}), &r), session::status::ok);
  EXPECT_EQ(r.finish, finish_reason::stop_string);
  EXPECT_EQ(p.all(), "Hello");
}

TEST_F(ChainModel, MaxTokens) {
  session s(*host_);
  pieces p;
  generate_result r;
  ASSERT_EQ(s.generate({k_bos}, greedy(&p, 2), &r), session::status::ok);
  EXPECT_EQ(r.finish, finish_reason::length);
  EXPECT_EQ(r.completion_tokens, 2);
  // The second token is the euro sign's first byte: held back, then put out as it is at the end.
  EXPECT_EQ(p.all(), "Hello\xe2");
  ASSERT_EQ(s.generate({k_bos}, greedy(&p, 0), &r), session::status::ok);
  EXPECT_EQ(r.finish, finish_reason::length);
  EXPECT_EQ(r.completion_tokens, 0);
  EXPECT_STREQ(finish_reason_name(r.finish), "length");
}

TEST_F(ChainModel, ContextFull) {
  model_host small(write_chain_model(), options(1, 4));
  session s(small);
  pieces p;
  generate_result r;
  ASSERT_EQ(s.generate({k_bos}, greedy(&p), &r), session::status::ok);
  EXPECT_EQ(r.finish, finish_reason::context);
  EXPECT_EQ(r.completion_tokens, 4);  // positions 1..3 evaluated, the 4th token only sampled
  EXPECT_STREQ(finish_reason_name(r.finish), "length");
  // A prompt longer than the context: an error, nothing generated.
  p = {};
  EXPECT_THROW(s.generate({k_bos, k_hello, k_e2, k_82, k_ac}, greedy(&p), &r), error);
  EXPECT_TRUE(p.text.empty());
  EXPECT_EQ(s.last_result().finish, finish_reason::context);  // the failed call changed nothing
}

TEST_F(ChainModel, CallbackStopsTheGeneration) {
  session s(*host_);
  int calls = 0;
  generate_options o;
  o.sampling.temp = 0.0f;
  o.on_token = [&](std::string_view, int32_t) { return ++calls < 2; };
  generate_result r;
  EXPECT_EQ(s.generate({k_bos}, o, &r), session::status::cancelled);
  EXPECT_EQ(r.finish, finish_reason::cancelled);
  EXPECT_EQ(calls, 2);
}

TEST_F(ChainModel, CancelAndBusyFromAnotherThread) {
  session s(*host_);
  std::atomic<int> shown{0};
  std::atomic<bool> acted{false};
  session::status busy = session::status::ok;
  std::thread other([&] {
    while (shown == 0) std::this_thread::yield();
    pieces ignored;
    busy = s.generate({k_bos}, greedy(&ignored), nullptr);
    s.cancel();
    acted = true;
  });
  generate_options o;
  o.sampling.temp = 0.0f;
  o.on_token = [&](std::string_view, int32_t) {
    if (shown++ == 0)
      while (!acted) std::this_thread::yield();
    return true;
  };
  generate_result r;
  const session::status st = s.generate({k_bos}, o, &r);
  other.join();
  EXPECT_EQ(busy, session::status::busy);
  EXPECT_EQ(st, session::status::cancelled);
  EXPECT_EQ(r.finish, finish_reason::cancelled);
  EXPECT_EQ(r.completion_tokens, 1);
  // A cancel while nothing runs does not touch the next generation.
  s.cancel();
  pieces p;
  EXPECT_EQ(s.generate({k_bos}, greedy(&p), &r), session::status::ok);
  EXPECT_EQ(r.finish, finish_reason::eog);
}

TEST_F(ChainModel, CancelStopsAGenerationWaitingForTheModel) {
  session s(*host_);
  std::atomic<bool> never{false};
  ASSERT_TRUE(host_->lock().acquire(never));  // another evaluation holds the model
  generate_result r;
  session::status st = session::status::ok;
  pieces p;
  std::thread t([&] { st = s.generate({k_bos}, greedy(&p), &r); });
  while (!s.running()) std::this_thread::yield();
  s.cancel();
  t.join();
  host_->lock().release();
  EXPECT_EQ(st, session::status::cancelled);
  EXPECT_EQ(r.completion_tokens, 0);
  EXPECT_TRUE(p.text.empty());
}

TEST_F(ChainModel, SessionsAreLimitedToTheSequences) {
  session a(*host_), b(*host_);
  EXPECT_THROW(session c(*host_), error);
}

// ---- prefix reuse on a trained model ----------------------------------------------------------

TEST(Sessions, PrefixReuseGivesTheSameTokensAsAFreshSession) {
  model_host host(test::model_path("stories260K.gguf"), options(2));
  const std::vector<int32_t> prompt = host.tok().encode("Once upon a time", true);
  session s(host);
  pieces first;
  generate_result r;
  ASSERT_EQ(s.generate(prompt, greedy(&first, 20), &r), session::status::ok);
  EXPECT_EQ(r.cached_tokens, 0);
  // The session holds the prompt and the 19 generated tokens that were evaluated (the 20th was
  // only sampled).
  const std::vector<int32_t> cached = s.cached();
  ASSERT_EQ(cached.size(), prompt.size() + 19);
  EXPECT_TRUE(std::equal(prompt.begin(), prompt.end(), cached.begin()));

  // A longer prompt: the old one, the whole completion and more text.
  std::vector<int32_t> longer = cached;
  longer.push_back(first.tokens.back());
  for (int32_t id : host.tok().encode(" The sun was", false)) longer.push_back(id);
  pieces reused, fresh;
  ASSERT_EQ(s.generate(longer, greedy(&reused, 30), &r), session::status::ok);
  EXPECT_EQ(r.cached_tokens, static_cast<int>(cached.size()));
  EXPECT_EQ(r.prompt_tokens, static_cast<int>(longer.size()));
  session other(host);
  generate_result r2;
  ASSERT_EQ(other.generate(longer, greedy(&fresh, 30), &r2), session::status::ok);
  EXPECT_EQ(r2.cached_tokens, 0);
  EXPECT_EQ(reused.all(), fresh.all());
  EXPECT_EQ(reused.tokens, fresh.tokens);

  // A prompt that departs early keeps only the common part.
  pieces third;
  std::vector<int32_t> other_prompt = host.tok().encode("Once upon a cat", true);
  ASSERT_EQ(s.generate(other_prompt, greedy(&third, 5), &r), session::status::ok);
  size_t common = 0;
  while (common < other_prompt.size() && other_prompt[common] == longer[common]) ++common;
  EXPECT_EQ(r.cached_tokens, static_cast<int>(common));

  // reset forgets everything.
  s.reset();
  ASSERT_EQ(s.generate(prompt, greedy(&third, 2), &r), session::status::ok);
  EXPECT_EQ(r.cached_tokens, 0);
}

// Two sessions on the Vulkan path (lavapipe, asked for explicitly), generating on two threads at
// once: each gives the golden text.
TEST(Sessions, TwoThreadsOnVulkanGiveTheGoldenText) {
  std::string why;
  if (!select_gpu_device(true, &why)) {
    if (std::getenv("CI")) FAIL() << "CI has lavapipe, but no Vulkan device: " << why;
    GTEST_SKIP() << "no Vulkan device: " << why;
  }
  host_options o = options(2, 128);
  o.engine.offload = "all";
  model_host host(test::model_path("stories260K.gguf"), o);
  ASSERT_EQ(host.eng().get_plan().n_gpu_layers(), 5);
  const std::vector<int32_t> prompt = host.tok().encode("Once upon a time", true);
  const std::string golden = test::read_file(test::model_path("golden/stories260K_t0_n64_once.txt"));
  session a(host), b(host);
  pieces pa, pb;
  std::thread ta([&] { a.generate(prompt, greedy(&pa, 60), nullptr); });
  std::thread tb([&] { b.generate(prompt, greedy(&pb, 60), nullptr); });
  ta.join();
  tb.join();
  EXPECT_EQ("Once upon a time" + pa.all() + "\n", golden);
  EXPECT_EQ("Once upon a time" + pb.all() + "\n", golden);
}

// ---- the text stream on its own -----------------------------------------------------------------

TEST(StopStream, HoldsBackPossibleStartsAndReleasesThem) {
  stop_stream s({"</end>"});
  EXPECT_EQ(s.push("abc<"), "abc");
  EXPECT_EQ(s.push("/e"), "");
  EXPECT_EQ(s.push("x"), "</ex");
  EXPECT_EQ(s.push("</en"), "");
  EXPECT_EQ(s.push("d> tail"), "");
  EXPECT_TRUE(s.stopped());
  EXPECT_EQ(s.matched(), "</end>");
  EXPECT_EQ(s.push("more"), "");
}

TEST(StopStream, EarliestStopWinsAndFlushGivesTheRest) {
  stop_stream s({"cd", "b"});
  EXPECT_EQ(s.push("abcd"), "a");
  EXPECT_EQ(s.matched(), "b");
  stop_stream t({"xyz"});
  EXPECT_EQ(t.push("axy"), "a");
  EXPECT_EQ(t.flush(), "xy");
}

TEST(StopStream, Utf8TailIsHeld) {
  stop_stream s;
  EXPECT_EQ(s.push("a\xf0\x9f"), "a");
  EXPECT_EQ(s.push("\x98"), "");
  EXPECT_EQ(s.push("\x80!"), "\xf0\x9f\x98\x80!");
  EXPECT_EQ(utf8_incomplete_tail("\xc3"), 1u);
  EXPECT_EQ(utf8_incomplete_tail("\xc3\xa9"), 0u);
  EXPECT_EQ(utf8_incomplete_tail("\x80\x80"), 0u);  // not UTF-8: nothing to wait for
}

}  // namespace
}  // namespace tandem
