// The body of a POST /v1/chat/completions or /v1/completions request, parsed and checked into a
// plain struct. Pure functions of the body text: no model, no HTTP, so they can be tested and
// fuzzed on their own. Every problem is an api_error with the status and the OpenAI-style
// message, type, code and param that the client gets back.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::serve {

// An error the client sees as {"error": {"message", "type", "code", "param"}} with this status.
class api_error : public std::runtime_error {
 public:
  api_error(int status, const std::string& message, std::string type = "invalid_request_error",
            std::string code = "", std::string param = "")
      : std::runtime_error(message),
        status(status),
        type(std::move(type)),
        code(std::move(code)),
        param(std::move(param)) {}
  int status;
  std::string type;
  std::string code;   // "" is sent as null
  std::string param;  // the offending field ("" is sent as null)
};

// A chat or text completion request. Fields left out of the body keep OpenAI's defaults.
struct gen_request {
  bool chat = true;                 // /v1/chat/completions (else /v1/completions)
  std::string model;                // as the client named it ("" when left out)
  // Ordered: a template's tojson must print the client's keys in the client's order.
  nlohmann::ordered_json messages;  // chat: the messages, contents flattened to strings
  nlohmann::ordered_json tools;     // chat: the tool definitions (null when none)
  std::string prompt;               // completions: the prompt text
  bool stream = false;
  bool include_usage = false;       // stream_options.include_usage
  int32_t max_tokens = -1;          // max_tokens / max_completion_tokens; -1: no limit
  std::vector<std::string> stop;    // at most 4, as OpenAI allows
  float temperature = 1.0f;         // OpenAI's default
  float top_p = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  std::optional<uint32_t> seed;
};

// Parses a /v1/chat/completions body. Throws api_error (400) naming the field at fault.
gen_request parse_chat_request(std::string_view body);
// Parses a /v1/completions body. Throws api_error (400) naming the field at fault.
gen_request parse_completion_request(std::string_view body);

// The JSON that tandem_chat_apply_json takes for the request's messages and tools.
std::string template_input(const gen_request& r);

}  // namespace tandem::serve
