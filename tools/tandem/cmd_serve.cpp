// `tandem serve`: the OpenAI-compatible HTTP server and its web chat page (tools/serve/).
#include <filesystem>
#include <fstream>
#include <iterator>

#include "runtime/error.h"
#include "tools/serve/server.h"
#include "tools/tandem/commands.h"

namespace tandem::cli {

command add_serve(CLI::App& app) {
  auto o = std::make_shared<serve::server_options>();
  auto tmpl = std::make_shared<std::string>();
  app.add_option("-m,--model", o->model, "GGUF model file")->required();
  app.add_option("--host", o->host, "address to listen on (0.0.0.0: every interface)")
      ->capture_default_str();
  app.add_option("--port", o->port, "port to listen on (0: any free port)")->capture_default_str();
  app.add_option("--api-key", o->api_key,
                 "require 'Authorization: Bearer KEY' on the API (not on the page or /health)");
  app.add_option("--parallel", o->parallel, "sessions: requests generating at the same time")
      ->capture_default_str();
  app.add_option("--queue", o->queue,
                 "requests that may wait for a free session before 503 (-1: 4 x --parallel)")
      ->capture_default_str();
  app.add_option("-c,--ctx-size", o->n_ctx, "context of each session in tokens (0 = the model's, "
                 "at most 4096)")->capture_default_str();
  app.add_option("--offload,--ngl,--n-gpu-layers", o->offload,
                 "layers on the GPU: N (the last N, with the output head), all, or auto")
      ->capture_default_str();
  app.add_option("-t,--threads", o->n_threads, "CPU threads (0 = number of physical cores)")
      ->capture_default_str();
  app.add_option("--chat-template", *tmpl,
                 "chat template: a built-in name (chatml, llama3, ...) or a Jinja file; default: "
                 "the model's");
  app.add_option("--timeout", o->timeout_s, "seconds a connection may stall reading or writing")
      ->capture_default_str();
  return [o, tmpl] {
    if (!tmpl->empty()) {
      o->chat_template = *tmpl;
      if (std::filesystem::is_regular_file(*tmpl)) {
        std::ifstream in(*tmpl, std::ios::binary);
        if (!in) throw error("cannot read the chat template file '" + *tmpl + "'");
        o->chat_template.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      }
    }
    return serve::run_server(*o);
  };
}

}  // namespace tandem::cli
