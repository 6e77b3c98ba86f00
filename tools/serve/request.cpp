#include "tools/serve/request.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace tandem::serve {
namespace {

using json = nlohmann::ordered_json;

[[noreturn]] void bad(const std::string& param, const std::string& message) {
  throw api_error(400, message, "invalid_request_error", "invalid_value", param);
}

json parse_object(std::string_view body) {
  json j = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded())
    throw api_error(400,
                    "the request body is not valid JSON; send a JSON object with "
                    "Content-Type: application/json",
                    "invalid_request_error", "invalid_json");
  if (!j.is_object())
    throw api_error(400, "the request body must be a JSON object", "invalid_request_error",
                    "invalid_json");
  return j;
}

// The value of key, or nullptr when absent or null (OpenAI treats an explicit null as absent).
const json* field(const json& j, const char* key) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

float number_in(const json& j, const char* key, float lo, float hi, float dflt) {
  const json* v = field(j, key);
  if (!v) return dflt;
  if (!v->is_number()) bad(key, fmt::format("'{}' must be a number", key));
  double d = v->get<double>();
  if (!std::isfinite(d) || d < lo || d > hi)
    bad(key, fmt::format("'{}' must be between {} and {}; got {}", key, lo, hi, v->dump()));
  return static_cast<float>(d);
}

bool flag(const json& j, const char* key) {
  const json* v = field(j, key);
  if (!v) return false;
  if (!v->is_boolean()) bad(key, fmt::format("'{}' must be true or false", key));
  return v->get<bool>();
}

// The text of a message's content: a string, or an array of {"type": "text", "text": ...} parts.
std::string content_text(const json& content, size_t i) {
  const std::string param = fmt::format("messages[{}].content", i);
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) bad(param, fmt::format("'{}' must be a string or an array of parts", param));
  std::string text;
  for (const json& part : content) {
    if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
        !part["text"].is_string())
      bad(param, fmt::format("'{}' has a part that is not {{\"type\": \"text\", \"text\": ...}}; "
                             "this server takes text only",
                             param));
    text += part["text"].get<std::string>();
  }
  return text;
}

json checked_messages(const json& body) {
  const json* msgs = field(body, "messages");
  if (!msgs) bad("messages", "'messages' is required: an array of {\"role\", \"content\"} objects");
  if (!msgs->is_array() || msgs->empty())
    bad("messages", "'messages' must be a non-empty array of {\"role\", \"content\"} objects");
  json out = json::array();
  for (size_t i = 0; i < msgs->size(); ++i) {
    const json& m = (*msgs)[i];
    const std::string at = fmt::format("messages[{}]", i);
    if (!m.is_object()) bad(at, fmt::format("'{}' must be an object", at));
    const json* role = field(m, "role");
    static const char* roles[] = {"system", "developer", "user", "assistant", "tool"};
    if (!role || !role->is_string() ||
        std::find(std::begin(roles), std::end(roles), role->get<std::string>()) == std::end(roles))
      bad(at + ".role", fmt::format("'{}.role' must be one of system, developer, user, assistant, "
                                    "tool",
                                    at));
    json copy = m;
    const json* content = field(m, "content");
    if (content) {
      copy["content"] = content_text(*content, i);
    } else if (*role == "assistant" && m.contains("tool_calls")) {
      copy["content"] = nullptr;  // an assistant turn that only calls tools
    } else {
      bad(at + ".content", fmt::format("'{}.content' is required", at));
    }
    out.push_back(std::move(copy));
  }
  return out;
}

void parse_common(const json& body, gen_request& r) {
  if (const json* m = field(body, "model")) {
    if (!m->is_string()) bad("model", "'model' must be a string");
    r.model = m->get<std::string>();
  }
  if (const json* n = field(body, "n")) {
    if (!n->is_number_integer() || n->get<int64_t>() != 1)
      bad("n", "'n' must be 1: this server returns one choice per request");
  }
  r.stream = flag(body, "stream");
  if (const json* so = field(body, "stream_options")) {
    if (!r.stream) bad("stream_options", "'stream_options' is only allowed with \"stream\": true");
    if (!so->is_object()) bad("stream_options", "'stream_options' must be an object");
    r.include_usage = flag(*so, "include_usage");
  }
  const json* mt = field(body, "max_completion_tokens");
  const char* mt_name = "max_completion_tokens";
  if (!mt) mt = field(body, "max_tokens"), mt_name = "max_tokens";
  if (mt) {
    if (!mt->is_number_integer() || mt->get<int64_t>() < 1 ||
        mt->get<int64_t>() > std::numeric_limits<int32_t>::max())
      bad(mt_name, fmt::format("'{}' must be a positive integer", mt_name));
    r.max_tokens = static_cast<int32_t>(mt->get<int64_t>());
  }
  if (const json* stop = field(body, "stop")) {
    if (stop->is_string()) {
      r.stop.push_back(stop->get<std::string>());
    } else if (stop->is_array() && stop->size() <= 4) {
      for (const json& s : *stop) {
        if (!s.is_string()) bad("stop", "'stop' must be a string or an array of up to 4 strings");
        r.stop.push_back(s.get<std::string>());
      }
    } else {
      bad("stop", "'stop' must be a string or an array of up to 4 strings");
    }
    std::erase(r.stop, std::string());
  }
  r.temperature = number_in(body, "temperature", 0, 2, 1);
  r.top_p = number_in(body, "top_p", 0, 1, 1);
  r.presence_penalty = number_in(body, "presence_penalty", -2, 2, 0);
  r.frequency_penalty = number_in(body, "frequency_penalty", -2, 2, 0);
  if (const json* seed = field(body, "seed")) {
    if (!seed->is_number_integer()) bad("seed", "'seed' must be an integer");
    // Any 64-bit seed is accepted; the runtime takes 32 bits, and all-ones means "random" there.
    auto s = static_cast<uint32_t>(seed->is_number_unsigned() ? seed->get<uint64_t>()
                                                              : static_cast<uint64_t>(seed->get<int64_t>()));
    r.seed = s == 0xFFFFFFFFu ? 0xFFFFFFFEu : s;
  }
  if (flag(body, "logprobs") || field(body, "top_logprobs"))
    bad("logprobs", "'logprobs' is not supported by this server; leave it out");
  if (const json* rf = field(body, "response_format")) {
    if (!rf->is_object() || rf->value("type", "text") != "text")
      bad("response_format", "only \"response_format\": {\"type\": \"text\"} is supported");
  }
}

}  // namespace

gen_request parse_chat_request(std::string_view body) {
  json j = parse_object(body);
  gen_request r;
  r.chat = true;
  parse_common(j, r);
  r.messages = checked_messages(j);
  if (const json* tools = field(j, "tools")) {
    if (!tools->is_array()) bad("tools", "'tools' must be an array of tool definitions");
    for (const json& t : *tools)
      if (!t.is_object()) bad("tools", "'tools' must be an array of tool definitions (objects)");
    if (!tools->empty()) r.tools = *tools;
  }
  return r;
}

gen_request parse_completion_request(std::string_view body) {
  json j = parse_object(body);
  gen_request r;
  r.chat = false;
  parse_common(j, r);
  const json* p = field(j, "prompt");
  if (!p) bad("prompt", "'prompt' is required: a string");
  if (p->is_array() && p->size() == 1 && (*p)[0].is_string()) p = &(*p)[0];
  if (!p->is_string())
    bad("prompt", "'prompt' must be a string (or an array of one string): one prompt per request");
  r.prompt = p->get<std::string>();
  if (flag(j, "echo")) bad("echo", "'echo' is not supported by this server; leave it out");
  if (const json* suffix = field(j, "suffix"); suffix && !(suffix->is_string() && suffix->get<std::string>().empty()))
    bad("suffix", "'suffix' is not supported by this server; leave it out");
  if (const json* best = field(j, "best_of"); best && !(best->is_number_integer() && best->get<int64_t>() == 1))
    bad("best_of", "'best_of' must be 1");
  return r;
}

std::string template_input(const gen_request& r) {
  json in = {{"messages", r.messages}, {"add_generation_prompt", true}};
  if (!r.tools.is_null()) in["tools"] = r.tools;
  return in.dump();
}

}  // namespace tandem::serve
