// Chat templates: the Jinja text a model ships as tokenizer.chat_template, rendered the way the
// Hugging Face `transformers` library renders it (Python's jinja2 in its immutable sandbox, with
// trim_blocks, lstrip_blocks, loop controls, raise_exception, strftime_now and a tojson that keeps
// non-ASCII characters). The interpreter is our own (runtime/jinja*.cpp); it is tested byte for
// byte against renderings made by jinja2 itself.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace tandem {

// Key order is part of the prompt: a template's tojson prints a tool's schema keys in the order
// the client sent them, as Python's dicts keep them. chat_json is an nlohmann::ordered_json that
// also takes a plain nlohmann::json (assigned or push_back'ed; its keys come sorted, since
// nlohmann::json sorts them when it parses): parse requests with nlohmann::ordered_json::parse to
// keep the client's order.
struct chat_json : nlohmann::ordered_json {
  using nlohmann::ordered_json::ordered_json;
  chat_json() = default;
  chat_json(const nlohmann::ordered_json& j) : nlohmann::ordered_json(j) {}
  chat_json(const nlohmann::json& j) : nlohmann::ordered_json(j) {}
  using nlohmann::ordered_json::push_back;
  void push_back(const nlohmann::json& j) {
    nlohmann::ordered_json::push_back(nlohmann::ordered_json(j));
  }
};

struct chat_inputs {
  chat_json messages = nlohmann::ordered_json::array();  // OpenAI-style messages (content may be
                                                         // a string, null, or a list of parts)
  chat_json tools;                                       // null when none
  bool add_generation_prompt = true;
  std::string bos_token, eos_token;
  std::string now;  // "2026-01-15T09:30:00" for strftime_now; empty: local time now
  chat_json extra;  // object of more variables (e.g. enable_thinking), or null
};

class chat_template {
 public:
  // Parses; throws tandem::error("chat template line L, column C: ...") on a syntax error or
  // an unsupported construct.
  explicit chat_template(std::string source);
  ~chat_template();
  chat_template(chat_template&&) noexcept;
  chat_template& operator=(chat_template&&) noexcept;

  // Renders; throws tandem::error with the template's raise_exception message (exactly its text)
  // or a runtime error naming line/column. Hostile templates stop with a one-line error: at most
  // 2 million evaluation steps, 200 nested macro calls and 32 MiB of output or of any one value.
  // Safe to call from several threads at once.
  std::string render(const chat_inputs& in) const;
  const std::string& source() const;

  // Built-in templates by name ("chatml", "llama3", "llama2", "mistral", "gemma", "phi3",
  // "qwen2" = chatml, ...), written for this project. Throws tandem::error listing the names.
  static std::string builtin(std::string_view name);
  static std::vector<std::string> builtin_names();

 private:
  struct impl;
  std::unique_ptr<impl> p_;
};

}  // namespace tandem
