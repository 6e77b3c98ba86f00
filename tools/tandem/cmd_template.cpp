// `tandem template`: renders a chat template for a conversation given as a case file (the format
// of ../shared/models/templates/cases: messages, add_generation_prompt, tools, and optionally
// bos_token, eos_token, now, extra), printing exactly the rendered text.
#include <fmt/format.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <optional>

#include "runtime/chat_template.h"
#include "runtime/error.h"
#include "runtime/gguf.h"
#include "runtime/tokenizer.h"
#include "tools/tandem/commands.h"

namespace tandem::cli {
namespace {

struct template_opts {
  std::string model, template_file, case_file, chat_template;
  bool print_template = false;
};

std::string read_text(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw error(fmt::format("cannot read the {} '{}'", what, path));
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// --chat-template: a built-in name or a Jinja file.
std::string named_template(const std::string& arg) {
  for (auto& n : chat_template::builtin_names())
    if (n == arg) return chat_template::builtin(n);
  if (std::filesystem::is_regular_file(arg)) return read_text(arg, "chat template");
  std::string known;
  for (auto& n : chat_template::builtin_names()) known += (known.empty() ? "" : ", ") + n;
  throw error(fmt::format("--chat-template '{}' is neither a built-in template ({}) nor a file", arg, known));
}

struct case_file {
  chat_inputs in;
  std::optional<std::string> bos, eos;  // when the case names them
};

case_file read_case(const std::string& path) {
  nlohmann::ordered_json c;
  try {
    c = nlohmann::ordered_json::parse(read_text(path, "case file"));
  } catch (const nlohmann::ordered_json::exception& e) {
    throw error(fmt::format("the case file '{}' is not valid JSON: {}", path, e.what()));
  }
  auto bad = [&](const char* key, const char* what) {
    return error(fmt::format("the case file '{}': \"{}\" must be {}", path, key, what));
  };
  if (!c.is_object() || !c.contains("messages") || !c["messages"].is_array())
    throw bad("messages", "an array of messages");
  case_file cf;
  chat_inputs& in = cf.in;
  in.messages = c["messages"];
  in.add_generation_prompt = false;  // the reference renderer's default
  if (c.contains("add_generation_prompt")) {
    if (!c["add_generation_prompt"].is_boolean()) throw bad("add_generation_prompt", "true or false");
    in.add_generation_prompt = c["add_generation_prompt"].get<bool>();
  }
  if (c.contains("tools")) in.tools = c["tools"];
  if (c.contains("extra")) {
    if (!c["extra"].is_object() && !c["extra"].is_null()) throw bad("extra", "an object of variables");
    in.extra = c["extra"];
  }
  // The reference renderer's clock, so that templates which print the date render the same.
  in.now = "2026-01-15T09:30:00";
  for (const char* key : {"now", "bos_token", "eos_token"}) {
    if (!c.contains(key)) continue;
    if (!c[key].is_string()) throw bad(key, "a string");
    std::string v = c[key].get<std::string>();
    if (key[0] == 'n') in.now = v;
    else (key[0] == 'b' ? cf.bos : cf.eos) = v;
  }
  return cf;
}

}  // namespace

command add_template(CLI::App& app) {
  auto o = std::make_shared<template_opts>();
  app.add_option("-m,--model", o->model, "GGUF model whose tokenizer.chat_template is rendered");
  app.add_option("--template", o->template_file, "a Jinja chat template file to render");
  app.add_option("case", o->case_file, "conversation JSON: messages, add_generation_prompt, tools, "
                                       "bos_token, eos_token, now, extra");
  app.add_option("--chat-template", o->chat_template,
                 "render this built-in template (chatml, llama3, ...) or Jinja file instead");
  app.add_flag("--print-template", o->print_template,
               "print the template's Jinja source instead of rendering (no case file needed)");
  return [o] {
    if (o->model.empty() == o->template_file.empty() && o->chat_template.empty())
      throw error("give a model (-m MODEL.gguf), a template (--template FILE.jinja) or "
                  "--chat-template NAME, and not both -m and --template");
    if (o->case_file.empty() && !o->print_template)
      throw error("give the conversation to render: a case file (JSON with \"messages\")");
    case_file cf = o->case_file.empty() ? case_file{} : read_case(o->case_file);
    chat_inputs& in = cf.in;
    std::string source;
    if (!o->model.empty()) {
      auto f = gguf_file::open(o->model);
      source = f->get_string("tokenizer.chat_template", "");
      auto tok = tokenizer::from_gguf(*f);
      if (tok->bos() >= 0) in.bos_token = tok->token_text(tok->bos());
      if (tok->eos() >= 0) in.eos_token = tok->token_text(tok->eos());
      if (source.empty() && o->chat_template.empty()) {
        fmt::print(stderr, "{} has no tokenizer.chat_template; using the built-in ChatML template\n", o->model);
        source = chat_template::builtin("chatml");
      }
    } else if (!o->template_file.empty()) {
      source = read_text(o->template_file, "chat template");
    }
    if (!o->chat_template.empty()) source = named_template(o->chat_template);
    chat_template tmpl(source);  // parsed even when only printed: a broken template says so
    if (o->print_template) {
      std::fwrite(source.data(), 1, source.size(), stdout);
      return 0;
    }
    if (cf.bos) in.bos_token = *cf.bos;
    if (cf.eos) in.eos_token = *cf.eos;
    std::string out = tmpl.render(in);
    std::fwrite(out.data(), 1, out.size(), stdout);
    return 0;
  };
}

}  // namespace tandem::cli
