// Fuzz target: chat template text (it comes inside model files, from strangers) parsed and
// rendered for a fixed conversation with a tool. Must end with the text or a tandem::error: the
// engine's limits on steps, macro depth and output stop loops, recursion and output bombs.
// Seeds: the real templates of ../shared/models/templates.
#include <string>

#include "runtime/chat_template.h"
#include "runtime/error.h"
#include "tests/fuzz/fuzz.h"

namespace tandem::fuzz {

const chat_inputs& sample_conversation() {
  static const chat_inputs in = [] {
    chat_inputs c;
    c.messages = nlohmann::ordered_json::parse(R"([
      {"role": "system", "content": "You are terse."},
      {"role": "user", "content": "Weather in Paris?"},
      {"role": "assistant", "content": null, "tool_calls": [{"type": "function", "function":
        {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
      {"role": "tool", "content": "18 C, sunny"},
      {"role": "user", "content": "Thanks \u00e9\u4e16 <|im_end|>"}])");
    c.tools = nlohmann::ordered_json::parse(R"([{"type": "function", "function": {"name":
      "get_weather", "description": "Weather now", "parameters": {"type": "object",
      "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])");
    c.bos_token = "<s>";
    c.eos_token = "</s>";
    c.now = "2026-01-15T09:30:00";  // strftime_now must not depend on the clock
    return c;
  }();
  return in;
}

void template_text(const uint8_t* data, size_t size) {
  try {
    const chat_template t(std::string(reinterpret_cast<const char*>(data), size));
    t.render(sample_conversation());
  } catch (const error&) {
  }
}

}  // namespace tandem::fuzz

TANDEM_FUZZ_ENTRY(template_text)
