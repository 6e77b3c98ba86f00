// A session: one conversation on a shared model. It owns a KV sequence of the model's engine,
// the token ids whose keys and values that sequence holds, and a sampler per generation. A new
// prompt reuses the longest common prefix with those ids; generation stops at an
// end-of-generation token, a stop string, max_tokens, a full context or a cancel.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/host.h"
#include "runtime/sampler.h"

namespace tandem {

enum class finish_reason { none, eog, stop_string, length, context, cancelled, error };

struct generate_options {
  sampler_params sampling;
  int max_tokens = -1;             // -1: until an end or a full context
  std::vector<std::string> stop;   // stop strings (never shown)
  // Each piece of text ready to show (whole UTF-8 characters; see runtime/stop.h) and the token
  // that completed it. Runs on the generating thread; false stops (finish_reason::cancelled).
  std::function<bool(std::string_view text, int32_t token)> on_token;
};

struct generate_result {
  finish_reason finish = finish_reason::none;
  int prompt_tokens = 0;
  int cached_tokens = 0;      // of the prompt, reused from the KV cache
  int completion_tokens = 0;  // tokens sampled (an end-of-generation token counts)
  double prompt_ms = 0;       // evaluating the uncached prompt tokens
  double generation_ms = 0;   // from the prompt's logits to the last token
  double prompt_tokens_per_s = 0;
  double generation_tokens_per_s = 0;
};

class session {
 public:
  // Takes a free KV sequence of the model; throws tandem::error when every one is in use.
  explicit session(model_host& host);
  // Waits for a running generation to stop (cancel it first), then gives the sequence back.
  ~session();
  session(const session&) = delete;
  session& operator=(const session&) = delete;

  enum class status { ok, cancelled, busy };
  // Generates after prompt (ids). ok: ended by an end-of-generation token, a stop string,
  // max_tokens or a full context; cancelled; busy: another generation runs on this session.
  // Throws tandem::error on bad input (an empty prompt, one longer than the context, an id out
  // of the vocabulary) before anything is generated, or on an engine failure (the session's
  // cache is then forgotten).
  status generate(const std::vector<int32_t>& prompt, const generate_options& opt,
                  generate_result* result);

  // Forgets the cached ids (at the end of a running generation, when one runs).
  void reset();
  // Stops a running generation at the next token, or its wait for the model; nothing when none
  // runs. Any thread.
  void cancel();
  generate_result last_result() const;
  // The ids whose keys and values the session's KV sequence holds (the prompt and the
  // generated tokens that were evaluated).
  std::vector<int32_t> cached() const;
  int seq() const { return seq_; }
  // Whether a generation runs on the session now.
  bool running() const { return running_; }

 private:
  struct run;
  finish_reason decode(run& r, const generate_options& opt, std::vector<float>& logits);
  bool eval(const int32_t* ids, int n, std::vector<float>* logits);
  void produce(const std::vector<int32_t>& prompt, const generate_options& opt,
              generate_result& res);

  model_host& host_;
  int seq_ = -1;
  std::mutex run_m_;                 // held by the running generation
  std::atomic<bool> running_{false};
  std::atomic<bool> cancel_{false};
  std::atomic<bool> reset_pending_{false};
  mutable std::mutex state_m_;       // cached_ and last_ for readers on other threads
  std::vector<int32_t> cached_;
  generate_result last_;
};

const char* finish_reason_name(finish_reason r);  // OpenAI's: "stop", "length", ...

}  // namespace tandem
