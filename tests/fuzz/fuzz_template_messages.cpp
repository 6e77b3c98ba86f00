// Fuzz target: the messages a client sends (JSON), rendered by the real chat templates of
// ../shared/models/templates. Input: byte 0 picks the template, the rest is JSON: an object like
// the template cases ({"messages": [...], "tools": [...], "add_generation_prompt": ...}) or a bare
// array of messages. Must end with the text or a tandem::error (templates may refuse a
// conversation with raise_exception). Seeds: the template cases.
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "runtime/chat_template.h"
#include "runtime/error.h"
#include "tests/fuzz/fuzz.h"

namespace tandem::fuzz {

const std::vector<chat_template>& real_templates() {
  static const std::vector<chat_template> t = [] {
    std::vector<std::string> paths;
    for (const auto& e : std::filesystem::directory_iterator(std::string(TANDEM_MODELS_DIR) +
                                                             "/templates"))
      if (e.path().extension() == ".jinja") paths.push_back(e.path().string());
    std::sort(paths.begin(), paths.end());
    std::vector<chat_template> r;
    for (const auto& p : paths) {
      std::ifstream in(p, std::ios::binary);
      r.emplace_back(std::string(std::istreambuf_iterator<char>(in), {}));
    }
    if (r.empty()) broken("no templates in " + std::string(TANDEM_MODELS_DIR) + "/templates");
    return r;
  }();
  return t;
}

void template_messages(const uint8_t* data, size_t size) {
  if (size < 1) return;
  const auto& templates = real_templates();
  const chat_template& t = templates[data[0] % templates.size()];
  const auto j = nlohmann::ordered_json::parse(data + 1, data + size, nullptr, false);
  if (j.is_discarded()) return;
  chat_inputs in;
  in.bos_token = "<s>";
  in.eos_token = "</s>";
  in.now = "2026-01-15T09:30:00";
  if (j.is_array()) {
    in.messages = j;
  } else if (j.is_object()) {
    if (j.contains("messages")) in.messages = j["messages"];
    if (j.contains("tools")) in.tools = j["tools"];
    if (j.contains("add_generation_prompt") && j["add_generation_prompt"].is_boolean())
      in.add_generation_prompt = j["add_generation_prompt"].get<bool>();
  } else {
    return;
  }
  try {
    t.render(in);
  } catch (const error&) {
  }
}

}  // namespace tandem::fuzz

TANDEM_FUZZ_ENTRY(template_messages)
TANDEM_FUZZ_INIT([] { tandem::fuzz::real_templates(); })
