// tandem: run, inspect and measure GGUF language models on the CPU and a Vulkan GPU.
#include <fmt/format.h>

#include <cstdio>
#include <map>

#include "runtime/error.h"
#include "tools/tandem/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"tandem: run GGUF language models split between the CPU and a Vulkan GPU"};
  app.require_subcommand(1);
  std::map<CLI::App*, tandem::cli::command> commands;
  auto add = [&](auto fn, const char* name, const char* desc) {
    CLI::App* sub = app.add_subcommand(name, desc);
    commands[sub] = fn(*sub);
  };
  add(tandem::cli::add_run, "run", "generate text from a prompt");
  add(tandem::cli::add_chat, "chat", "chat with a model in the terminal (its chat template)");
  add(tandem::cli::add_info, "info", "print a model's metadata, tensors and the GPU devices");
  add(tandem::cli::add_bench, "bench", "measure prompt and generation speed (like llama-bench)");
  add(tandem::cli::add_perplexity, "perplexity", "perplexity of a text, as llama-perplexity computes it");
  add(tandem::cli::add_quantize, "quantize", "re-encode a model's weights: IN.gguf OUT.gguf TYPE");
  add(tandem::cli::add_make_model, "make-model", "write a random-weight model with a real shape");
  add(tandem::cli::add_template, "template", "render a chat template for a conversation (JSON case file)");
  add(tandem::cli::add_tokenize, "tokenize", "print the token ids of a text");
  add(tandem::cli::add_serve, "serve", "OpenAI-compatible HTTP server with a web chat page");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (auto& [sub, fn] : commands)
      if (sub->parsed()) return fn();
  } catch (const tandem::error& e) {
    std::fflush(stdout);
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fflush(stdout);
    fmt::print(stderr, "error: out of memory; use a smaller context (-c) or a smaller model\n");
    return 1;
  }
  return 0;
}
