#include "runtime/session.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>

#include "runtime/error.h"
#include "runtime/stop.h"

namespace tandem {

namespace {

using clock = std::chrono::steady_clock;
double ms_between(clock::time_point a, clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// Prompt tokens evaluated per turn of the model's lock: another session's next token waits for
// at most this many.
constexpr int k_prompt_turn = 512;

}  // namespace

const char* finish_reason_name(finish_reason r) {
  switch (r) {
    case finish_reason::eog:
    case finish_reason::stop_string: return "stop";
    case finish_reason::length:
    case finish_reason::context: return "length";
    case finish_reason::cancelled: return "cancelled";
    case finish_reason::error: return "error";
    case finish_reason::none: break;
  }
  return "none";
}

struct session::run {
  explicit run(const generate_options& opt) : smp(opt.sampling), stops(opt.stop) {}
  sampler smp;
  stop_stream stops;
  int32_t prev = -1;  // the last token, for the piece after it
  int generated = 0;
  bool refused = false;  // on_token returned false: it is not called again
};

session::session(model_host& host) : host_(host), seq_(host.take_seq()) {
  if (seq_ < 0)
    throw error(fmt::format("all {} sessions of the model are in use; free one, or load the "
                            "model with a larger n_seq_max",
                            host.eng().n_seq()));
}

session::~session() {
  cancel_ = true;
  host_.lock().wake();
  std::lock_guard<std::mutex> lk(run_m_);
  host_.give_seq(seq_);
}

void session::cancel() {
  if (!running_) return;
  cancel_ = true;
  host_.lock().wake();
}

void session::reset() {
  std::unique_lock<std::mutex> lk(run_m_, std::try_to_lock);
  if (!lk.owns_lock()) {  // a generation runs: it forgets the ids when it ends
    reset_pending_ = true;
    return;
  }
  std::lock_guard<std::mutex> st(state_m_);
  cached_.clear();
}

generate_result session::last_result() const {
  std::lock_guard<std::mutex> st(state_m_);
  return last_;
}

std::vector<int32_t> session::cached() const {
  std::lock_guard<std::mutex> st(state_m_);
  return cached_;
}

// Evaluates ids after the cached ones in the session's KV sequence, under the model's lock;
// false when cancelled while waiting for it.
bool session::eval(const int32_t* ids, int n, std::vector<float>* logits) {
  turn_guard turn(host_.lock(), cancel_);
  if (!turn.owns()) return false;
  engine& e = host_.eng();
  try {
    e.select_seq(seq_);
    e.set_n_past(static_cast<int>(cached_.size()));
    const std::vector<float>& l = e.eval(std::vector<int32_t>(ids, ids + n));
    if (logits) logits->assign(l.begin(), l.end());  // the engine's buffer is shared
  } catch (...) {
    std::lock_guard<std::mutex> st(state_m_);  // the sequence's contents are unknown now
    cached_.clear();
    throw;
  }
  std::lock_guard<std::mutex> st(state_m_);
  cached_.insert(cached_.end(), ids, ids + n);
  return true;
}

finish_reason session::decode(run& r, const generate_options& opt, std::vector<float>& logits) {
  const tokenizer& tok = host_.tok();
  const int n_ctx = host_.eng().n_ctx();
  const int n_vocab = host_.get_model().hp().n_vocab;
  const auto at_limit = [&] { return opt.max_tokens >= 0 && r.generated >= opt.max_tokens; };
  for (;;) {
    if (cancel_) return finish_reason::cancelled;
    if (at_limit()) return finish_reason::length;
    const int32_t next = r.smp.sample(logits.data(), n_vocab);
    ++r.generated;
    if (tok.is_eog(next)) return finish_reason::eog;
    const std::string text = r.stops.push(tok.piece(next, r.prev));
    r.prev = next;
    if (!text.empty() && opt.on_token && !opt.on_token(text, next)) {
      r.refused = true;
      return finish_reason::cancelled;
    }
    if (r.stops.stopped()) return finish_reason::stop_string;
    if (at_limit()) return finish_reason::length;
    if (static_cast<int>(cached_.size()) >= n_ctx) return finish_reason::context;
    if (!eval(&next, 1, &logits)) return finish_reason::cancelled;
  }
}

// Prompt (after res.cached_tokens), then tokens until a stop rule; fills res.
void session::produce(const std::vector<int32_t>& prompt, const generate_options& opt,
                     generate_result& res) {
  const size_t keep = static_cast<size_t>(res.cached_tokens);
  run r(opt);
  for (int32_t id : prompt) r.smp.accept(id);
  r.prev = prompt.back();
  std::vector<float> logits;
  const auto t0 = clock::now();
  bool cancelled = false;
  for (size_t at = keep; at < prompt.size() && !cancelled; at += k_prompt_turn) {
    const int n = static_cast<int>(std::min<size_t>(k_prompt_turn, prompt.size() - at));
    cancelled = cancel_ || !eval(prompt.data() + at, n, &logits);
  }
  const auto t1 = clock::now();
  res.finish = cancelled ? finish_reason::cancelled : decode(r, opt, logits);
  const auto t2 = clock::now();
  if (res.finish != finish_reason::stop_string && !r.refused && opt.on_token) {
    const std::string rest = r.stops.flush();
    if (!rest.empty()) opt.on_token(rest, r.prev);
  }
  res.completion_tokens = r.generated;
  res.prompt_ms = ms_between(t0, t1);
  res.generation_ms = ms_between(t1, t2);
  const int evaluated = res.prompt_tokens - res.cached_tokens;
  if (res.prompt_ms > 0) res.prompt_tokens_per_s = evaluated * 1000.0 / res.prompt_ms;
  if (res.generation_ms > 0) res.generation_tokens_per_s = r.generated * 1000.0 / res.generation_ms;
}

session::status session::generate(const std::vector<int32_t>& prompt, const generate_options& opt,
                                  generate_result* result) {
  std::unique_lock<std::mutex> lk(run_m_, std::try_to_lock);
  if (!lk.owns_lock()) return status::busy;
  cancel_ = false;
  running_ = true;
  struct end_run {
    session& s;
    ~end_run() {
      s.running_ = false;
      if (s.reset_pending_.exchange(false)) {
        std::lock_guard<std::mutex> st(s.state_m_);
        s.cached_.clear();
      }
    }
  } end{*this};

  const int n_ctx = host_.eng().n_ctx();
  const int n_vocab = host_.get_model().hp().n_vocab;
  if (prompt.empty()) throw error("the prompt has no tokens; give some text (or add BOS)");
  if (static_cast<int>(prompt.size()) > n_ctx)
    throw error(fmt::format("the prompt has {} tokens but the context holds {}; shorten it or "
                            "load the model with a larger n_ctx",
                            prompt.size(), n_ctx));
  for (int32_t id : prompt)
    if (id < 0 || id >= n_vocab)
      throw error(fmt::format("token id {} is outside the vocabulary (0 .. {})", id, n_vocab - 1));
  if (reset_pending_.exchange(false)) {
    std::lock_guard<std::mutex> st(state_m_);
    cached_.clear();
  }

  // The longest common prefix with the cached ids stays; at least one token is evaluated, for
  // its logits.
  size_t keep = 0;
  while (keep < cached_.size() && keep + 1 < prompt.size() && cached_[keep] == prompt[keep]) ++keep;
  {
    std::lock_guard<std::mutex> st(state_m_);
    cached_.resize(keep);
  }
  generate_result res;
  res.prompt_tokens = static_cast<int>(prompt.size());
  res.cached_tokens = static_cast<int>(keep);

  try {
    produce(prompt, opt, res);
  } catch (...) {
    res.finish = finish_reason::error;
    std::lock_guard<std::mutex> st(state_m_);
    last_ = res;
    throw;
  }
  {
    std::lock_guard<std::mutex> st(state_m_);
    last_ = res;
  }
  if (result) *result = res;
  return res.finish == finish_reason::cancelled ? status::cancelled : status::ok;
}

}  // namespace tandem
