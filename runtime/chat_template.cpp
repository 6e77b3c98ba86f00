// chat_template: parses once, renders many times (see runtime/chat_template.h); the built-in
// templates for models that ship none or for an explicit --chat-template NAME.
#include "runtime/chat_template.h"

#include <fmt/format.h>

#include <ctime>
#include <map>

#include "runtime/error.h"
#include "runtime/jinja.h"

namespace tandem {

namespace jinja {

// Python's datetime.strftime for a naive date-time: the C library's strftime (C locale) with
// %f = microseconds and %z / %Z empty.
std::string strftime_at(const std::string& now, const std::string& fmt_s) {
  std::tm tm{};
  long micro = 0;
  if (now.empty()) {
    std::time_t t = std::time(nullptr);
    localtime_r(&t, &tm);
  } else {
    int y, mo, d, h = 0, mi = 0, s = 0;
    char sep = 'T';
    int n = std::sscanf(now.c_str(), "%d-%d-%d%c%d:%d:%d", &y, &mo, &d, &sep, &h, &mi, &s);
    if (n != 3 && n < 6)
      fail(fmt::format("the date-time '{}' is not of the form 2026-01-15T09:30:00", now));
    size_t dot = now.find('.');
    if (dot != std::string::npos) {
      std::string frac = now.substr(dot + 1, 6);
      while (frac.size() < 6) frac += '0';
      micro = std::strtol(frac.c_str(), nullptr, 10);
    }
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;
    std::time_t t = timegm(&tm);  // fills in the weekday and the day of the year
    gmtime_r(&t, &tm);
  }
  std::string f;
  for (size_t i = 0; i < fmt_s.size(); ++i) {
    if (fmt_s[i] == '%' && i + 1 < fmt_s.size()) {
      char c = fmt_s[i + 1];
      if (c == 'f')
        f += fmt::format("{:06d}", micro);
      else if (c == 'z' || c == 'Z') {
      } else {
        f += fmt_s.substr(i, 2);
      }
      ++i;
    } else {
      f += fmt_s[i];
    }
  }
  if (f.empty()) return "";
  std::string out(f.size() * 4 + 64, '\0');
  for (;;) {
    size_t n = std::strftime(out.data(), out.size(), f.c_str(), &tm);
    if (n > 0 || out.size() > (1u << 20)) {
      out.resize(n);
      return out;
    }
    out.resize(out.size() * 4);
  }
}

}  // namespace jinja

struct chat_template::impl {
  std::string source;
  jinja::body_t program;
};

chat_template::chat_template(std::string source) : p_(std::make_unique<impl>()) {
  p_->source = std::move(source);
  p_->program = jinja::parse(jinja::lex(p_->source));
}
chat_template::~chat_template() = default;
chat_template::chat_template(chat_template&&) noexcept = default;
chat_template& chat_template::operator=(chat_template&&) noexcept = default;

const std::string& chat_template::source() const {
  return p_->source;
}

std::string chat_template::render(const chat_inputs& in) const {
  jinja::globals g;
  g.vars.emplace_back("messages", in.messages.is_null() ? jinja::value::list()
                                                        : jinja::value::from_json(in.messages));
  if (!in.tools.is_null()) g.vars.emplace_back("tools", jinja::value::from_json(in.tools));
  g.vars.emplace_back("add_generation_prompt", jinja::value::boolean(in.add_generation_prompt));
  g.vars.emplace_back("bos_token", jinja::value::str(in.bos_token));
  g.vars.emplace_back("eos_token", jinja::value::str(in.eos_token));
  if (!in.extra.is_null()) {
    if (!in.extra.is_object()) throw error("chat template: \"extra\" must be a JSON object of variables");
    for (auto& item : in.extra.items()) {  // (no structured binding: clang 14 cannot capture one)
      const std::string& k = item.key();
      std::erase_if(g.vars, [&](auto& kv) { return kv.first == k; });
      g.vars.emplace_back(k, jinja::value::from_json(item.value()));
    }
  }
  g.now = in.now;
  try {
    return jinja::render(p_->program, std::move(g));
  } catch (const std::bad_alloc&) {
    throw error("chat template: out of memory while rendering");
  } catch (const error&) {
    throw;
  } catch (const std::exception& e) {
    throw error(fmt::format("chat template: {}", e.what()));
  }
}

// ---- built-in templates ------------------------------------------------------------------------

namespace {

// The text of a message's content: a string, or the "text" parts of a list of parts.
constexpr const char* content_macro =
    "{%- macro text(content) -%}"
    "{%- if content is string -%}{{ content }}"
    "{%- elif content is iterable and content is not mapping -%}"
    "{%- for part in content if part is mapping and part.type == 'text' -%}{{ part.text }}{%- "
    "endfor -%}"
    "{%- endif -%}"
    "{%- endmacro -%}\n";

const std::map<std::string, std::string, std::less<>>& builtins() {
  static const std::map<std::string, std::string, std::less<>> m = [] {
    std::map<std::string, std::string, std::less<>> t;
    t["chatml"] =
        std::string(content_macro) +
        "{%- for message in messages -%}\n"
        "{{- '<|im_start|>' + message.role + '\\n' + text(message.content) + '<|im_end|>\\n' -}}\n"
        "{%- endfor -%}\n"
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}\n";
    t["qwen2"] = t["chatml"];
    t["llama3"] = std::string(content_macro) +
                  "{{- bos_token -}}\n"
                  "{%- for message in messages -%}\n"
                  "{{- '<|start_header_id|>' + message.role + '<|end_header_id|>\\n\\n' + "
                  "text(message.content) | trim + '<|eot_id|>' -}}\n"
                  "{%- endfor -%}\n"
                  "{%- if add_generation_prompt -%}{{- "
                  "'<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}\n";
    // Llama 2 chat: the system prompt goes inside the first [INST] in <<SYS>> markers.
    t["llama2"] = std::string(content_macro) +
                  "{%- set ns = namespace(system='') -%}\n"
                  "{%- for message in messages if message.role == 'system' -%}{%- set ns.system = "
                  "text(message.content) | trim -%}{%- endfor -%}\n"
                  "{%- set ns.first = true -%}\n"
                  "{%- for message in messages if message.role != 'system' -%}\n"
                  "{%- if message.role == 'user' -%}\n"
                  "{{- bos_token + '[INST] ' -}}\n"
                  "{%- if ns.first and ns.system -%}{{- '<<SYS>>\\n' + ns.system + "
                  "'\\n<</SYS>>\\n\\n' -}}{%- endif -%}\n"
                  "{{- text(message.content) | trim + ' [/INST]' -}}\n"
                  "{%- set ns.first = false -%}\n"
                  "{%- elif message.role == 'assistant' -%}\n"
                  "{{- ' ' + text(message.content) | trim + ' ' + eos_token -}}\n"
                  "{%- endif -%}\n"
                  "{%- endfor -%}\n";
    // Mistral Instruct (v0.1-v0.3): a system prompt is put before the last user message.
    t["mistral"] =
        std::string(content_macro) +
        "{%- set ns = namespace(system='', last_user=-1) -%}\n"
        "{%- for message in messages -%}\n"
        "{%- if message.role == 'system' -%}{%- set ns.system = text(message.content) -%}{%- endif "
        "-%}\n"
        "{%- if message.role == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}\n"
        "{%- endfor -%}\n"
        "{{- bos_token -}}\n"
        "{%- for message in messages -%}\n"
        "{%- if message.role == 'user' -%}\n"
        "{{- '[INST] ' + (ns.system + '\\n\\n' if ns.system and loop.index0 == ns.last_user else "
        "'') + text(message.content) + '[/INST]' -}}\n"
        "{%- elif message.role == 'assistant' -%}\n"
        "{{- ' ' + text(message.content) | trim + eos_token -}}\n"
        "{%- endif -%}\n"
        "{%- endfor -%}\n";
    // Gemma has no system role: the system prompt opens the first user turn.
    t["gemma"] =
        std::string(content_macro) +
        "{{- bos_token -}}\n"
        "{%- set ns = namespace(system='') -%}\n"
        "{%- for message in messages -%}\n"
        "{%- if message.role == 'system' -%}{%- set ns.system = text(message.content) | trim + "
        "'\\n\\n' -%}\n"
        "{%- else -%}\n"
        "{{- '<start_of_turn>' + ('model' if message.role == 'assistant' else message.role) + "
        "'\\n' + ns.system + text(message.content) | trim + '<end_of_turn>\\n' -}}\n"
        "{%- set ns.system = '' -%}\n"
        "{%- endif -%}\n"
        "{%- endfor -%}\n"
        "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}\n";
    t["phi3"] = std::string(content_macro) +
                "{%- for message in messages -%}\n"
                "{{- '<|' + message.role + '|>\\n' + text(message.content) + '<|end|>\\n' -}}\n"
                "{%- endfor -%}\n"
                "{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- else -%}{{- "
                "eos_token -}}{%- endif -%}\n";
    t["zephyr"] =
        std::string(content_macro) +
        "{%- for message in messages -%}\n"
        "{{- '<|' + message.role + '|>\\n' + text(message.content) + eos_token + '\\n' -}}\n"
        "{%- endfor -%}\n"
        "{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}\n";
    return t;
  }();
  return m;
}

}  // namespace

std::vector<std::string> chat_template::builtin_names() {
  std::vector<std::string> names;
  for (auto& kv : builtins()) names.push_back(kv.first);
  return names;
}

std::string chat_template::builtin(std::string_view name) {
  auto it = builtins().find(name);
  if (it != builtins().end()) return it->second;
  std::string known;
  for (auto& n : builtin_names()) known += (known.empty() ? "" : ", ") + n;
  throw error(fmt::format("unknown built-in chat template '{}'; known: {}", name, known));
}

}  // namespace tandem
