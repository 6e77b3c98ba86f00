// The JSON objects of OpenAI's API that the server sends, and server-sent-event framing: pure
// functions, tested on their own.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace tandem::serve {

// Objects keep their keys in the order OpenAI sends them (id, object, created, model, choices).
using ojson = nlohmann::ordered_json;

// The counts and speeds of one finished generation, in the units the API reports.
struct usage_info {
  int32_t prompt_tokens = 0;
  int32_t cached_tokens = 0;
  int32_t completion_tokens = 0;
  double prompt_ms = 0;             // evaluating the uncached prompt tokens
  double generation_ms = 0;
  double prompt_tokens_per_s = 0;
  double generation_tokens_per_s = 0;
};

// What every object of one response shares.
struct response_ids {
  std::string id;       // "chatcmpl-..." or "cmpl-..."
  int64_t created = 0;  // Unix seconds
  std::string model;
};

// A new id: prefix + 24 random letters and digits.
std::string new_id(const std::string& prefix);

// {"prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details": {"cached_tokens"}}
ojson usage_json(const usage_info& u);
// llama-server's non-standard "timings" object (prompt_n, prompt_ms, prompt_per_second,
// predicted_n, predicted_ms, predicted_per_second, cache_n), read by the web page.
ojson timings_json(const usage_info& u);

// A whole chat.completion (non-streaming).
ojson chat_completion(const response_ids& ids, const std::string& text,
                               const std::string& finish_reason, const usage_info& u);
// A chat.completion.chunk with one choice: delta and finish_reason (null when not given).
ojson chat_chunk(const response_ids& ids, const ojson& delta,
                          const std::optional<std::string>& finish_reason);
// A whole text_completion (non-streaming).
ojson text_completion(const response_ids& ids, const std::string& text,
                               const std::string& finish_reason, const usage_info& u);
// A streamed text_completion: one choice with text and finish_reason (null when not given).
ojson text_chunk(const response_ids& ids, const std::string& text,
                          const std::optional<std::string>& finish_reason);
// The last streamed object when stream_options.include_usage: "choices": [] and "usage".
ojson usage_chunk(const response_ids& ids, bool chat, const usage_info& u);

// {"error": {"message", "type", "param", "code"}} (empty param / code are sent as null).
ojson error_json(const std::string& message, const std::string& type,
                          const std::string& code = "", const std::string& param = "");

// One server-sent event: "data: " + the compact JSON + "\n\n".
std::string sse_event(const ojson& j);
// The end of a stream, as OpenAI sends it: "data: [DONE]\n\n".
inline const char* sse_done() { return "data: [DONE]\n\n"; }

}  // namespace tandem::serve
