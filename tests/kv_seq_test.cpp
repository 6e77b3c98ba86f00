// KV sequences: one engine, several KV caches sharing the weights. Two sequences evaluated in
// turns must give exactly the logits each gives alone, on the CPU and on the Vulkan path
// (lavapipe, asked for with offload "all"); set_n_past keeps a prefix.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "runtime/backend_factory.h"
#include "runtime/engine.h"
#include "runtime/error.h"
#include "runtime/model.h"
#include "runtime/scheduler.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

int32_t argmax(const std::vector<float>& v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

// The logits after the prompt and after each of n greedy tokens, evaluated one call at a time.
struct run_log {
  std::vector<std::vector<float>> logits;
};

// Steps a prompt + greedy decode; step() does one eval (the prompt first, then one token).
struct stepper {
  stepper(std::vector<int32_t> p, int steps) : prompt(std::move(p)), steps_left(steps) {}
  std::vector<int32_t> prompt;
  int steps_left = 0;
  int32_t next = -1;
  run_log log;
  void step(engine& e) {
    const std::vector<float>& l = next < 0 ? e.eval(prompt) : e.eval({next});
    log.logits.push_back(l);
    next = argmax(l);
    --steps_left;
  }
};

run_log alone(const model& m, engine_options opt, const std::vector<int32_t>& prompt, int n) {
  opt.n_seq = 1;
  engine e(m, opt);
  stepper s(prompt, n + 1);
  while (s.steps_left > 0) s.step(e);
  return s.log;
}

void check_interleaved(const model& m, const engine_options& base) {
  const std::vector<int32_t> a = {1, 403, 407, 261, 378};  // "Once upon a time"
  const std::vector<int32_t> b = {1, 300, 35, 41, 90, 200, 17, 255, 99};
  const int n = 12;
  const run_log want_a = alone(m, base, a, n), want_b = alone(m, base, b, n);

  engine_options opt = base;
  opt.n_seq = 2;
  engine e(m, opt);
  stepper sa(a, n + 1), sb(b, n + 1);
  // B starts first and they alternate, with uneven runs, so that each sequence resumes after
  // the other wrote its own cache at the same positions.
  int turn = 0;
  while (sa.steps_left > 0 || sb.steps_left > 0) {
    const bool do_b = sb.steps_left > 0 && (sa.steps_left == 0 || turn % 3 != 1);
    e.select_seq(do_b ? 1 : 0);
    (do_b ? sb : sa).step(e);
    ++turn;
  }
  ASSERT_EQ(sa.log.logits.size(), want_a.logits.size());
  for (size_t i = 0; i < want_a.logits.size(); ++i)
    EXPECT_EQ(sa.log.logits[i], want_a.logits[i]) << "sequence A, step " << i;
  for (size_t i = 0; i < want_b.logits.size(); ++i)
    EXPECT_EQ(sb.log.logits[i], want_b.logits[i]) << "sequence B, step " << i;
  e.select_seq(0);
  EXPECT_EQ(e.n_past(), static_cast<int>(a.size()) + n);
  e.select_seq(1);
  EXPECT_EQ(e.n_past(), static_cast<int>(b.size()) + n);

  // set_n_past keeps a prefix: B's sequence (prompt + 12 tokens) cut back to its first token
  // (BOS, which A's prompt starts with too), then the rest of A's prompt, gives what a fresh
  // run of B's prompt cut back the same way gives (the same batches, so the same rounding on
  // every device).
  const std::vector<int32_t> rest(a.begin() + 1, a.end());
  e.set_n_past(1);
  const std::vector<float> got = e.eval(rest);
  e.select_seq(0);
  e.reset();
  e.eval(b);
  e.set_n_past(1);
  EXPECT_EQ(e.eval(rest), got);
  EXPECT_EQ(argmax(got), argmax(want_a.logits[0]));
  EXPECT_THROW(e.set_n_past(e.n_past() + 1), error);
  EXPECT_THROW(e.select_seq(2), error);
}

TEST(KvSequences, InterleavedEqualsAloneOnCpu) {
  auto m = model::load(test::model_path("stories260K.gguf"));
  engine_options opt;
  opt.n_threads = 2;
  check_interleaved(*m, opt);
}

TEST(KvSequences, InterleavedEqualsAloneOnVulkan) {
  std::string why;
  if (!select_gpu_device(true, &why)) {
    if (std::getenv("CI")) FAIL() << "CI has lavapipe, but no Vulkan device: " << why;
    GTEST_SKIP() << "no Vulkan device: " << why;
  }
  auto m = model::load(test::model_path("stories260K.gguf"));
  engine_options opt;
  opt.offload = "all";
  opt.n_ctx = 256;
  check_interleaved(*m, opt);
  // and split: the last two layers and the output on the GPU, the rest on the CPU
  opt.offload = "2";
  check_interleaved(*m, opt);
}

TEST(KvSequences, SchedulerCountsEverySequencesCache) {
  auto m = model::load(test::model_path("stories260K.gguf"));
  plan_request one{"0", 512, 64, 0, 1}, four{"0", 512, 64, 0, 4};
  const plan p1 = make_plan(*m, one, nullptr), p4 = make_plan(*m, four, nullptr);
  EXPECT_GT(p1.kv_bytes_per_layer, 0u);
  EXPECT_EQ(p4.kv_bytes_per_layer, 4 * p1.kv_bytes_per_layer);
}

}  // namespace
}  // namespace tandem
