// The public C API (runtime/tandem.h) on top of model_host and session. Every entry point
// catches every exception: nothing thrown crosses the C boundary; failures become NULL or a
// status, with the message in a thread-local string.
#include "runtime/tandem.h"

#include <fmt/format.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/error.h"
#include "runtime/host.h"
#include "runtime/session.h"

struct tandem_model {
  std::unique_ptr<tandem::model_host> host;
};

struct tandem_session {
  tandem_model* model = nullptr;
  std::unique_ptr<tandem::session> s;
};

namespace {

using tandem::error;

thread_local std::string t_last_error;

void set_error(std::string msg) {
  // One line: the message names the problem and the fix.
  for (char& c : msg)
    if (c == '\n' || c == '\r') c = ' ';
  t_last_error = std::move(msg);
}

// Runs f, turning any exception into fail + the thread's last error.
template <typename R, typename F>
R guarded(R fail, F&& f) noexcept {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    set_error("out of memory; use a smaller context (n_ctx), fewer sessions (n_seq_max) or a "
              "smaller model");
  } catch (const std::exception& e) {
    set_error(e.what());
  } catch (...) {
    set_error("an unknown error occurred inside tandem");
  }
  return fail;
}

void need(const void* p, const char* what, const char* fn) {
  if (!p) throw error(fmt::format("{}: {} is NULL", fn, what));
}

char* dup_string(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (!out) throw std::bad_alloc();
  std::memcpy(out, s.data(), s.size());
  out[s.size()] = '\0';
  return out;
}

tandem::sampler_params to_sampler(const tandem_sampling& s) {
  tandem::sampler_params p;
  p.temp = s.temperature;
  p.top_k = s.top_k;
  p.top_p = s.top_p;
  p.min_p = s.min_p;
  p.repeat_penalty = s.repeat_penalty;
  p.repeat_last_n = s.repeat_last_n;
  p.presence_penalty = s.presence_penalty;
  p.frequency_penalty = s.frequency_penalty;
  p.seed = s.seed;
  return p;
}

tandem_result to_c(const tandem::generate_result& r) {
  tandem_result c{};
  c.finish = static_cast<tandem_finish_reason>(r.finish);
  c.prompt_tokens = r.prompt_tokens;
  c.cached_tokens = r.cached_tokens;
  c.completion_tokens = r.completion_tokens;
  c.prompt_ms = r.prompt_ms;
  c.generation_ms = r.generation_ms;
  c.prompt_tokens_per_s = r.prompt_tokens_per_s;
  c.generation_tokens_per_s = r.generation_tokens_per_s;
  return c;
}

static_assert(static_cast<int>(tandem::finish_reason::none) == TANDEM_FINISH_NONE);
static_assert(static_cast<int>(tandem::finish_reason::eog) == TANDEM_FINISH_EOG);
static_assert(static_cast<int>(tandem::finish_reason::stop_string) == TANDEM_FINISH_STOP_STRING);
static_assert(static_cast<int>(tandem::finish_reason::length) == TANDEM_FINISH_LENGTH);
static_assert(static_cast<int>(tandem::finish_reason::context) == TANDEM_FINISH_CONTEXT);
static_assert(static_cast<int>(tandem::finish_reason::cancelled) == TANDEM_FINISH_CANCELLED);
static_assert(static_cast<int>(tandem::finish_reason::error) == TANDEM_FINISH_ERROR);

tandem_status run_generation(tandem_session* session, const std::vector<int32_t>& ids,
                             const tandem_generate_params& p, tandem_result* result) {
  tandem::generate_options opt;
  opt.sampling = to_sampler(p.sampling);
  opt.max_tokens = p.max_tokens;
  if (p.n_stop > 0) need(p.stop, "params->stop (with n_stop > 0)", "tandem_generate");
  for (size_t i = 0; i < p.n_stop; ++i) {
    need(p.stop[i], "a stop string", "tandem_generate");
    opt.stop.emplace_back(p.stop[i]);
  }
  if (p.on_token) {
    // The text is a std::string's: NUL-terminated after len bytes.
    opt.on_token = [fn = p.on_token, ud = p.user_data](std::string_view text, int32_t token) {
      return fn(text.data(), text.size(), token, ud);
    };
  }
  tandem::generate_result r;
  switch (session->s->generate(ids, opt, &r)) {
    case tandem::session::status::busy:
      set_error("the session is already generating on another thread; wait for it, cancel it, "
                "or use another session");
      if (result) *result = tandem_result{};
      return TANDEM_BUSY;
    case tandem::session::status::cancelled:
      if (result) *result = to_c(r);
      return TANDEM_CANCELLED;
    case tandem::session::status::ok: break;
  }
  if (result) *result = to_c(r);
  return TANDEM_OK;
}

// A failed generation's result: finish ERROR.
tandem_status with_error_result(tandem_status st, tandem_result* result) {
  if (st == TANDEM_ERROR && result) {
    *result = tandem_result{};
    result->finish = TANDEM_FINISH_ERROR;
  }
  return st;
}

}  // namespace

extern "C" {

// ---- version, errors, strings -------------------------------------------------------------

const char* tandem_version(void) { return TANDEM_VERSION_STRING; }

const char* tandem_last_error(void) { return t_last_error.c_str(); }

void tandem_string_free(char* s) { std::free(s); }

// ---- models -------------------------------------------------------------------------------

tandem_model_params tandem_model_params_default(void) {
  tandem_model_params p{};
  p.offload = "auto";
  p.chat_template = nullptr;
  p.progress = nullptr;
  p.progress_user_data = nullptr;
  return p;
}

tandem_model* tandem_model_load(const char* path, const tandem_model_params* params) {
  return guarded<tandem_model*>(nullptr, [&]() -> tandem_model* {
    need(path, "path", "tandem_model_load");
    const tandem_model_params p = params ? *params : tandem_model_params_default();
    if (p.n_threads < 0) throw error(fmt::format("n_threads = {}: use 0 (all cores) or more", p.n_threads));
    if (p.n_ctx < 0) throw error(fmt::format("n_ctx = {}: use 0 (the model's) or more", p.n_ctx));
    if (p.n_batch < 0) throw error(fmt::format("n_batch = {}: use 0 (512) or more", p.n_batch));
    if (p.n_seq_max < 0) throw error(fmt::format("n_seq_max = {}: use 0 (1) or more", p.n_seq_max));
    tandem::host_options o;
    o.engine.offload = p.offload ? p.offload : "auto";
    o.engine.vram_budget = p.vram_budget;
    o.engine.mem_budget = p.mem_budget;
    o.engine.n_threads = p.n_threads;
    o.engine.n_ctx = p.n_ctx;
    o.engine.n_batch = p.n_batch > 0 ? p.n_batch : 512;
    o.engine.n_seq = p.n_seq_max > 0 ? p.n_seq_max : 1;
    if (p.chat_template) o.chat_template = p.chat_template;
    if (p.progress)
      o.progress = [fn = p.progress, ud = p.progress_user_data](float f) { return fn(f, ud); };
    auto m = std::make_unique<tandem_model>();
    m->host = std::make_unique<tandem::model_host>(path, std::move(o));
    return m.release();
  });
}

void tandem_model_free(tandem_model* model) {
  guarded<int>(0, [&] {
    if (!model) return 0;
    if (const int n = model->host->sessions(); n > 0)
      throw error(fmt::format("tandem_model_free: {} sessions of the model are still open; free "
                              "them first (the model was not freed)",
                              n));
    delete model;
    return 0;
  });
}

tandem_model_info tandem_model_get_info(const tandem_model* model) {
  return guarded<tandem_model_info>(tandem_model_info{}, [&] {
    need(model, "model", "tandem_model_get_info");
    const auto& m = model->host->get_model();
    const auto& hp = m.hp();
    tandem_model_info i{};
    i.n_vocab = hp.n_vocab;
    i.n_ctx_train = hp.n_ctx_train;
    i.n_ctx = model->host->eng().n_ctx();
    i.n_layer = hp.n_layer;
    i.n_embd = hp.n_embd;
    i.n_head = hp.n_head;
    i.n_head_kv = hp.n_head_kv;
    for (const auto& t : m.file().tensors()) i.n_params += static_cast<uint64_t>(t.n_elements());
    i.weight_bytes = m.weight_bytes();
    i.bos = model->host->tok().bos();
    i.eos = model->host->tok().eos();
    return i;
  });
}

char* tandem_model_name(const tandem_model* model) {
  return guarded<char*>(nullptr, [&] {
    need(model, "model", "tandem_model_name");
    return dup_string(model->host->name());
  });
}

char* tandem_model_arch(const tandem_model* model) {
  return guarded<char*>(nullptr, [&] {
    need(model, "model", "tandem_model_arch");
    return dup_string(model->host->get_model().hp().arch);
  });
}

tandem_placement tandem_model_placement(const tandem_model* model) {
  return guarded<tandem_placement>(tandem_placement{}, [&] {
    need(model, "model", "tandem_model_placement");
    const tandem::plan& p = model->host->eng().get_plan();
    tandem_placement out{};
    out.n_layer = static_cast<int32_t>(p.layers.size());
    for (tandem::placement l : p.layers) {
      out.cpu_layers += l == tandem::placement::cpu;
      out.gpu_resident_layers += l == tandem::placement::gpu_resident;
      out.gpu_streamed_layers += l == tandem::placement::gpu_streamed;
    }
    out.output_on_gpu = p.output != tandem::placement::cpu;
    return out;
  });
}

char* tandem_model_plan(const tandem_model* model) {
  return guarded<char*>(nullptr, [&] {
    need(model, "model", "tandem_model_plan");
    return dup_string(model->host->eng().plan_text());
  });
}

char* tandem_model_notes(const tandem_model* model) {
  return guarded<char*>(nullptr, [&] {
    need(model, "model", "tandem_model_notes");
    std::string all;
    for (const std::string& n : model->host->eng().notes()) all += (all.empty() ? "" : "\n") + n;
    return dup_string(all);
  });
}

// ---- tokens -------------------------------------------------------------------------------

int32_t tandem_tokenize(const tandem_model* model, const char* text, size_t text_len, int32_t* ids,
                        int32_t capacity, bool add_bos, bool parse_special) {
  return guarded<int32_t>(-1, [&] {
    need(model, "model", "tandem_tokenize");
    if (text_len > 0) need(text, "text", "tandem_tokenize");
    if (capacity < 0) throw error(fmt::format("tandem_tokenize: capacity {} < 0", capacity));
    if (capacity > 0) need(ids, "ids (with capacity > 0)", "tandem_tokenize");
    const auto& tok = model->host->tok();
    const std::vector<int32_t> v =
        tok.encode(std::string_view(text ? text : "", text_len), add_bos && tok.bos() >= 0,
                   parse_special);
    if (v.size() > static_cast<size_t>(INT32_MAX)) throw error("tandem_tokenize: text too long");
    std::copy_n(v.begin(), std::min<size_t>(v.size(), static_cast<size_t>(capacity)), ids);
    return static_cast<int32_t>(v.size());
  });
}

char* tandem_detokenize(const tandem_model* model, const int32_t* ids, int32_t n_ids,
                        bool show_special) {
  return guarded<char*>(nullptr, [&] {
    need(model, "model", "tandem_detokenize");
    if (n_ids < 0) throw error(fmt::format("tandem_detokenize: n_ids {} < 0", n_ids));
    if (n_ids > 0) need(ids, "ids", "tandem_detokenize");
    return dup_string(model->host->tok().decode(std::vector<int32_t>(ids, ids + n_ids), show_special));
  });
}

bool tandem_token_is_eog(const tandem_model* model, int32_t id) {
  return guarded<bool>(false, [&] {
    need(model, "model", "tandem_token_is_eog");
    return id >= 0 && id < model->host->tok().n_vocab() && model->host->tok().is_eog(id);
  });
}

// ---- chat templates -------------------------------------------------------------------------

char* tandem_chat_apply(const tandem_model* model, const tandem_chat_message* messages,
                        size_t n_messages, bool add_generation_prompt) {
  return guarded<char*>(nullptr, [&] {
    need(model, "model", "tandem_chat_apply");
    if (n_messages > 0) need(messages, "messages", "tandem_chat_apply");
    tandem::chat_inputs in;
    for (size_t i = 0; i < n_messages; ++i) {
      if (!messages[i].role)
        throw error(fmt::format("tandem_chat_apply: message {} has no role", i));
      nlohmann::ordered_json msg = {{"role", messages[i].role}};
      msg["content"] =
          messages[i].content ? nlohmann::ordered_json(messages[i].content) : nlohmann::ordered_json();
      in.messages.push_back(std::move(msg));
    }
    in.add_generation_prompt = add_generation_prompt;
    return dup_string(model->host->apply_chat(std::move(in)));
  });
}

char* tandem_chat_apply_json(const tandem_model* model, const char* request_json) {
  return guarded<char*>(nullptr, [&] {
    need(model, "model", "tandem_chat_apply_json");
    need(request_json, "request_json", "tandem_chat_apply_json");
    nlohmann::ordered_json req;  // the client's key order is part of the prompt (tojson)
    try {
      req = nlohmann::ordered_json::parse(request_json);
    } catch (const nlohmann::ordered_json::parse_error& e) {
      throw error(fmt::format("tandem_chat_apply_json: the request is not JSON ({})", e.what()));
    }
    if (!req.is_object() || !req.contains("messages") || !req["messages"].is_array())
      throw error("tandem_chat_apply_json: the request needs \"messages\": an array of messages");
    tandem::chat_inputs in;
    in.messages = req["messages"];
    if (req.contains("tools") && !req["tools"].is_null()) {
      if (!req["tools"].is_array())
        throw error("tandem_chat_apply_json: \"tools\" must be an array of tool definitions");
      in.tools = req["tools"];
    }
    if (req.contains("add_generation_prompt")) {
      if (!req["add_generation_prompt"].is_boolean())
        throw error("tandem_chat_apply_json: \"add_generation_prompt\" must be true or false");
      in.add_generation_prompt = req["add_generation_prompt"].get<bool>();
    }
    if (req.contains("extra") && !req["extra"].is_null()) {
      if (!req["extra"].is_object())
        throw error("tandem_chat_apply_json: \"extra\" must be an object of template variables");
      in.extra = req["extra"];
    }
    return dup_string(model->host->apply_chat(std::move(in)));
  });
}

char* tandem_model_chat_template(const tandem_model* model) {
  return guarded<char*>(nullptr, [&] {
    need(model, "model", "tandem_model_chat_template");
    return dup_string(model->host->tmpl().source());
  });
}

// ---- sessions and generation ----------------------------------------------------------------

tandem_session* tandem_session_create(tandem_model* model) {
  return guarded<tandem_session*>(nullptr, [&] {
    need(model, "model", "tandem_session_create");
    auto s = std::make_unique<tandem_session>();
    s->model = model;
    s->s = std::make_unique<tandem::session>(*model->host);
    return s.release();
  });
}

void tandem_session_free(tandem_session* session) {
  guarded<int>(0, [&] {
    delete session;
    return 0;
  });
}

void tandem_session_reset(tandem_session* session) {
  guarded<int>(0, [&] {
    need(session, "session", "tandem_session_reset");
    session->s->reset();
    return 0;
  });
}

void tandem_session_cancel(tandem_session* session) {
  guarded<int>(0, [&] {
    need(session, "session", "tandem_session_cancel");
    session->s->cancel();
    return 0;
  });
}

tandem_sampling tandem_sampling_default(void) {
  tandem_sampling s{};
  const tandem::sampler_params d;
  s.temperature = d.temp;
  s.top_k = d.top_k;
  s.top_p = d.top_p;
  s.min_p = d.min_p;
  s.repeat_penalty = d.repeat_penalty;
  s.repeat_last_n = d.repeat_last_n;
  s.presence_penalty = d.presence_penalty;
  s.frequency_penalty = d.frequency_penalty;
  s.seed = TANDEM_SEED_RANDOM;
  return s;
}

const char* tandem_finish_reason_name(tandem_finish_reason reason) {
  return tandem::finish_reason_name(static_cast<tandem::finish_reason>(reason));
}

tandem_generate_params tandem_generate_params_default(void) {
  tandem_generate_params p{};
  p.sampling = tandem_sampling_default();
  p.max_tokens = -1;
  p.stop = nullptr;
  p.n_stop = 0;
  p.add_bos = true;
  p.parse_special = true;
  p.on_token = nullptr;
  p.user_data = nullptr;
  return p;
}

tandem_status tandem_generate(tandem_session* session, const char* prompt,
                              const tandem_generate_params* params, tandem_result* result) {
  return with_error_result(guarded<tandem_status>(TANDEM_ERROR, [&] {
    need(session, "session", "tandem_generate");
    need(prompt, "prompt", "tandem_generate");
    const tandem_generate_params p = params ? *params : tandem_generate_params_default();
    const auto& tok = session->model->host->tok();
    const std::vector<int32_t> ids =
        tok.encode(prompt, p.add_bos && tok.add_bos_default(), p.parse_special);
    return run_generation(session, ids, p, result);
  }), result);
}

tandem_status tandem_generate_tokens(tandem_session* session, const int32_t* ids, int32_t n_ids,
                                     const tandem_generate_params* params, tandem_result* result) {
  return with_error_result(guarded<tandem_status>(TANDEM_ERROR, [&] {
    need(session, "session", "tandem_generate_tokens");
    if (n_ids < 0) throw error(fmt::format("tandem_generate_tokens: n_ids {} < 0", n_ids));
    if (n_ids > 0) need(ids, "ids", "tandem_generate_tokens");
    const tandem_generate_params p = params ? *params : tandem_generate_params_default();
    return run_generation(session, std::vector<int32_t>(ids, ids + n_ids), p, result);
  }), result);
}

tandem_result tandem_session_last_result(const tandem_session* session) {
  return guarded<tandem_result>(tandem_result{}, [&] {
    need(session, "session", "tandem_session_last_result");
    return to_c(session->s->last_result());
  });
}

}  // extern "C"
