// POST /v1/chat/completions and /v1/completions: parse, render the chat template, tokenize, wait
// for a session, generate, and answer as one JSON object or as server-sent events.
#include <fmt/format.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <optional>

#include "tools/serve/connection.h"
#include "tools/serve/openai.h"
#include "tools/serve/request.h"
#include "tools/serve/server.h"

namespace tandem::serve {
namespace {


std::string take(char* s) {
  std::string r = s ? s : "";
  tandem_string_free(s);
  return r;
}

std::vector<int32_t> tokenize(tandem_model* m, const std::string& text, bool add_bos,
                              bool parse_special) {
  std::vector<int32_t> ids(text.size() + 8);
  for (int attempt = 0; attempt < 2; ++attempt) {
    int32_t n = tandem_tokenize(m, text.data(), text.size(), ids.data(),
                                static_cast<int32_t>(ids.size()), add_bos, parse_special);
    if (n < 0)
      throw api_error(400, fmt::format("the prompt cannot be tokenized: {}", tandem_last_error()));
    bool fits = static_cast<size_t>(n) <= ids.size();
    ids.resize(static_cast<size_t>(n));
    if (fits) return ids;
  }
  throw api_error(500, "the tokenizer gave two different lengths for one text", "server_error");
}

// The prompt text of a request: the chat template applied to its messages and tools, or the
// completion prompt as it is.
std::string prompt_of(server_state& s, const gen_request& r) {
  if (!r.chat) return r.prompt;
  char* text = tandem_chat_apply_json(s.model, template_input(r).c_str());
  if (!text)
    throw api_error(400, fmt::format("the model's chat template refused the messages: {}",
                                     tandem_last_error()),
                    "invalid_request_error", "template_error", "messages");
  return take(text);
}

tandem_generate_params params_of(const gen_request& r, std::vector<const char*>& stops) {
  tandem_generate_params p = tandem_generate_params_default();
  p.sampling.temperature = r.temperature;
  p.sampling.top_p = r.top_p;
  p.sampling.top_k = 0;  // OpenAI's sampling has no top-k or min-p: off, so that top_p means
  p.sampling.min_p = 0;  // what clients expect
  p.sampling.repeat_penalty = 1;
  p.sampling.presence_penalty = r.presence_penalty;
  p.sampling.frequency_penalty = r.frequency_penalty;
  p.sampling.seed = r.seed ? *r.seed : TANDEM_SEED_RANDOM;
  p.max_tokens = r.max_tokens;
  for (const std::string& s : r.stop) stops.push_back(s.c_str());
  p.stop = stops.empty() ? nullptr : stops.data();
  p.n_stop = stops.size();
  return p;
}

// Watches a client's connection while its generation runs, for the time when no token comes
// back to check it between (a long prompt): a client that goes away cancels the session's
// generation within 50 ms. Cancelling is repeated while the client stays gone, since a cancel
// before the runtime starts the generation is forgotten.
class connection_watch {
 public:
  connection_watch(int fd, tandem_session* session, std::atomic<bool>& gone) {
    if (fd < 0) return;
    thread_ = std::thread([this, fd, session, &gone] {
      std::unique_lock lock(mu_);
      while (!done_) {
        if (peer_closed(fd)) {
          gone = true;
          tandem_session_cancel(session);
        }
        cv_.wait_for(lock, std::chrono::milliseconds(50), [this] { return done_; });
      }
    });
  }
  ~connection_watch() {
    if (!thread_.joinable()) return;
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  connection_watch(const connection_watch&) = delete;
  connection_watch& operator=(const connection_watch&) = delete;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

// One generation, from the session it holds to giving that session back (destructor).
class generation {
 public:
  generation(server_state& s, int slot, gen_request req, std::string prompt,
             std::vector<int32_t> ids, int fd)
      : s_(s), slot_(slot), req_(std::move(req)), prompt_(std::move(prompt)), ids_(std::move(ids)),
        fd_(fd) {
    ids_out_.id = new_id(req_.chat ? "chatcmpl-" : "cmpl-");
    ids_out_.created = std::chrono::duration_cast<std::chrono::seconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count();
    ids_out_.model = s.model_id;
  }
  ~generation() {
    // The session's KV cache now holds the prompt and what was generated after it (as far as
    // re-tokenizing the text tells; the runtime itself reuses the exact common prefix).
    std::vector<int32_t> cached = ids_;
    try {
      if (!text_.empty()) {
        std::vector<int32_t> more = tokenize(s_.model, text_, false, false);
        cached.insert(cached.end(), more.begin(), more.end());
      }
    } catch (const std::exception&) {
      // the prompt alone is still a correct prefix of the cache
    }
    s_.pool->release(slot_, std::move(cached));
  }
  generation(const generation&) = delete;
  generation& operator=(const generation&) = delete;

  bool stream() const { return req_.stream; }

  // Runs the generation to its end; with a sink, streams it as server-sent events. Returns false
  // when the client went away.
  bool run(httplib::DataSink* sink) {
    sink_ = sink;
    if (sink_ && !write(first_chunk())) return false;
    std::vector<const char*> stops;
    tandem_generate_params p = params_of(req_, stops);
    p.on_token = &generation::on_token;
    p.user_data = this;
    // From the text, so that the runtime applies the model's own BOS rule; ids_ (the same text
    // tokenized here) chose the session and checked the length.
    p.parse_special = req_.chat;
    {
      connection_watch watch(fd_, s_.pool->session(slot_), client_gone_);
      status_ = tandem_generate(s_.pool->session(slot_), prompt_.c_str(), &p, &result_);
    }
    if (status_ == TANDEM_ERROR) error_ = tandem_last_error();
    s_.metrics.count_generation(result_.prompt_tokens, result_.cached_tokens,
                                result_.completion_tokens, result_.prompt_tokens_per_s,
                                result_.generation_tokens_per_s, status_ == TANDEM_CANCELLED);
    if (client_gone_) return false;
    if (sink_) return finish_stream();
    return true;
  }

  // The non-streaming answer (after run).
  void answer(httplib::Response& res) const {
    if (client_gone_) {
      res.status = 499;  // nobody to answer; counted as nginx counts a client that closed
      return;
    }
    if (auto e = failure()) {
      res.status = e->status;
      res.set_content(error_json(e->what(), e->type, e->code).dump(), "application/json");
      return;
    }
    const std::string reason = tandem_finish_reason_name(result_.finish);
    ojson j = req_.chat ? chat_completion(ids_out_, text_, reason, usage())
                       : text_completion(ids_out_, text_, reason, usage());
    res.set_content(j.dump(-1, ' ', false, ojson::error_handler_t::replace), "application/json");
  }

 private:
  static bool on_token(const char* text, size_t len, int32_t, void* user_data) {
    auto* g = static_cast<generation*>(user_data);
    g->text_.append(text, len);
    if (g->s_.stopping) return false;
    if (peer_closed(g->fd_)) return g->client_gone_ = true, false;  // between tokens
    if (!g->sink_) return true;
    std::string piece(text, len);
    ojson chunk = g->req_.chat ? chat_chunk(g->ids_out_, {{"content", piece}}, std::nullopt)
                              : text_chunk(g->ids_out_, piece, std::nullopt);
    return g->write(chunk);
  }

  ojson first_chunk() const {
    return req_.chat ? chat_chunk(ids_out_, {{"role", "assistant"}, {"content", ""}}, std::nullopt)
                     : text_chunk(ids_out_, "", std::nullopt);
  }

  bool write(const ojson& chunk) { return write_raw(sse_event(chunk)); }
  bool write_raw(const std::string& data) {
    if (!sink_->write(data.data(), data.size())) client_gone_ = true;
    return !client_gone_;
  }

  std::optional<api_error> failure() const {
    if (status_ == TANDEM_ERROR)
      return api_error(500, fmt::format("generation failed: {}", error_), "server_error");
    if (status_ == TANDEM_CANCELLED && s_.stopping)
      return api_error(503, "the server is shutting down; retry on another replica or later",
                       "server_error", "shutting_down");
    return std::nullopt;
  }

  bool finish_stream() {
    if (auto e = failure()) {  // OpenAI sends an error object as an event of the stream
      write(error_json(e->what(), e->type, e->code));
      sink_->done();
      return true;
    }
    const std::string reason = tandem_finish_reason_name(result_.finish);
    ojson last = req_.chat ? chat_chunk(ids_out_, ojson::object(), reason)
                          : text_chunk(ids_out_, "", reason);
    last["timings"] = timings_json(usage());  // llama-server's extension, read by the web page
    if (!write(last)) return false;
    if (req_.include_usage && !write(usage_chunk(ids_out_, req_.chat, usage()))) return false;
    if (!write_raw(sse_done())) return false;
    sink_->done();
    return true;
  }

  usage_info usage() const {
    usage_info u;
    u.prompt_tokens = result_.prompt_tokens;
    u.cached_tokens = result_.cached_tokens;
    u.completion_tokens = result_.completion_tokens;
    u.prompt_ms = result_.prompt_ms;
    u.generation_ms = result_.generation_ms;
    u.prompt_tokens_per_s = result_.prompt_tokens_per_s;
    u.generation_tokens_per_s = result_.generation_tokens_per_s;
    return u;
  }

  server_state& s_;
  int slot_;
  gen_request req_;
  std::string prompt_;
  std::vector<int32_t> ids_;
  int fd_;
  response_ids ids_out_;
  httplib::DataSink* sink_ = nullptr;
  std::string text_;
  std::atomic<bool> client_gone_{false};
  tandem_status status_ = TANDEM_OK;
  tandem_result result_{};
  std::string error_;
};

void handle(server_state& s, const httplib::Request& req, httplib::Response& res, bool chat) {
  gen_request r = chat ? parse_chat_request(req.body) : parse_completion_request(req.body);
  const std::string prompt = prompt_of(s, r);
  // Template output carries control tokens by their spellings; a raw completion prompt is the
  // user's own text, where "<|im_start|>" is just characters.
  std::vector<int32_t> ids = tokenize(s.model, prompt, true, chat);
  if (ids.empty())
    throw api_error(400, "the prompt is empty and the model has no BOS token to start from",
                    "invalid_request_error", "empty_prompt", chat ? "messages" : "prompt");
  if (static_cast<int>(ids.size()) >= s.info.n_ctx)
    throw api_error(400,
                    fmt::format("the prompt has {} tokens but the context holds {}; shorten it, or "
                                "start the server with a larger -c",
                                ids.size(), s.info.n_ctx),
                    "invalid_request_error", "context_length_exceeded", chat ? "messages" : "prompt");

  const int fd = find_socket(req.local_addr, req.local_port, req.remote_addr, req.remote_port);
  int slot = -1;
  switch (s.pool->acquire(ids, [fd] { return peer_closed(fd); }, &slot)) {
    case session_pool::outcome::ok:
      break;
    case session_pool::outcome::queue_full:
      throw api_error(503,
                      fmt::format("all {} sessions are busy and {} requests already wait; retry "
                                  "later, or start the server with a larger --parallel or --queue",
                                  s.pool->size(), s.pool->queued()),
                      "server_error", "queue_full");
    case session_pool::outcome::abandoned:
      res.status = 499;
      return;
    case session_pool::outcome::stopping:
      throw api_error(503, "the server is shutting down; retry later", "server_error",
                      "shutting_down");
  }
  auto g = std::make_shared<generation>(s, slot, std::move(r), prompt, std::move(ids), fd);
  if (!g->stream()) {
    g->run(nullptr);
    g->answer(res);
    return;
  }
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  res.set_chunked_content_provider(
      "text/event-stream",
      [g](size_t, httplib::DataSink& sink) { return g->run(&sink); },
      [g](bool) mutable { g.reset(); });
}

}  // namespace

void add_generation_routes(httplib::Server& svr, server_state& s) {
  svr.Post("/v1/chat/completions",
           [&s](const httplib::Request& req, httplib::Response& res) { handle(s, req, res, true); });
  svr.Post("/v1/completions",
           [&s](const httplib::Request& req, httplib::Response& res) { handle(s, req, res, false); });
}

}  // namespace tandem::serve
