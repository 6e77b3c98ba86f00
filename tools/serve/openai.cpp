#include "tools/serve/openai.h"

#include <random>

namespace tandem::serve {

using json = ojson;

std::string new_id(const std::string& prefix) {
  static const char k_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_int_distribution<size_t> pick(0, sizeof(k_chars) - 2);
  std::string id = prefix;
  for (int i = 0; i < 24; ++i) id += k_chars[pick(rng)];
  return id;
}

json usage_json(const usage_info& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", u.cached_tokens}}}};
}

json timings_json(const usage_info& u) {
  return {{"cache_n", u.cached_tokens},
          {"prompt_n", u.prompt_tokens - u.cached_tokens},
          {"prompt_ms", u.prompt_ms},
          {"prompt_per_second", u.prompt_tokens_per_s},
          {"predicted_n", u.completion_tokens},
          {"predicted_ms", u.generation_ms},
          {"predicted_per_second", u.generation_tokens_per_s}};
}

namespace {

json head(const response_ids& ids, const char* object) {
  return {{"id", ids.id}, {"object", object}, {"created", ids.created}, {"model", ids.model}};
}

json reason(const std::optional<std::string>& r) { return r ? json(*r) : json(nullptr); }

}  // namespace

json chat_completion(const response_ids& ids, const std::string& text,
                     const std::string& finish_reason, const usage_info& u) {
  json j = head(ids, "chat.completion");
  j["choices"] = json::array({{{"index", 0},
                               {"message", {{"role", "assistant"}, {"content", text}}},
                               {"logprobs", nullptr},
                               {"finish_reason", finish_reason}}});
  j["usage"] = usage_json(u);
  j["timings"] = timings_json(u);
  return j;
}

json chat_chunk(const response_ids& ids, const json& delta,
                const std::optional<std::string>& finish_reason) {
  json j = head(ids, "chat.completion.chunk");
  j["choices"] = json::array(
      {{{"index", 0}, {"delta", delta}, {"logprobs", nullptr}, {"finish_reason", reason(finish_reason)}}});
  return j;
}

json text_completion(const response_ids& ids, const std::string& text,
                     const std::string& finish_reason, const usage_info& u) {
  json j = head(ids, "text_completion");
  j["choices"] = json::array(
      {{{"index", 0}, {"text", text}, {"logprobs", nullptr}, {"finish_reason", finish_reason}}});
  j["usage"] = usage_json(u);
  j["timings"] = timings_json(u);
  return j;
}

json text_chunk(const response_ids& ids, const std::string& text,
                const std::optional<std::string>& finish_reason) {
  json j = head(ids, "text_completion");
  j["choices"] = json::array(
      {{{"index", 0}, {"text", text}, {"logprobs", nullptr}, {"finish_reason", reason(finish_reason)}}});
  return j;
}

json usage_chunk(const response_ids& ids, bool chat, const usage_info& u) {
  json j = head(ids, chat ? "chat.completion.chunk" : "text_completion");
  j["choices"] = json::array();
  j["usage"] = usage_json(u);
  return j;
}

json error_json(const std::string& message, const std::string& type, const std::string& code,
                const std::string& param) {
  return {{"error",
           {{"message", message},
            {"type", type},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", code.empty() ? json(nullptr) : json(code)}}}};
}

std::string sse_event(const json& j) {
  // Generated text may end inside a multi-byte character only if the runtime broke its promise
  // of whole characters; replace rather than throw in the middle of a stream.
  return "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

}  // namespace tandem::serve
