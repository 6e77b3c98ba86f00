// `tandem chat`: a conversation in the terminal, through the public C API only (tandem.h): the
// model's chat template, its end-of-turn tokens, one session whose cache keeps the conversation
// (each turn evaluates only the new text). Lines from stdin; /reset, /exit; EOF ends.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "runtime/tandem.h"
#include "tools/tandem/commands.h"

namespace tandem::cli {
namespace {

struct chat_opts {
  std::string model;
  int n_ctx = 0;
  int n_threads = 0;
  std::string offload = "auto";
  float temp = 0.8f;
  int top_k = 40;
  float top_p = 0.95f;
  uint32_t seed = TANDEM_SEED_RANDOM;
  int n_predict = -1;
  std::string system;
  std::string chat_template;  // a built-in name or a file
};

// Prints to stderr and returns the CLI's failure status.
int fail(const std::string& what) {
  std::fflush(stdout);
  std::fprintf(stderr, "error: %s\n", what.c_str());
  return 1;
}

struct owned {
  tandem_model* model = nullptr;
  tandem_session* session = nullptr;
  ~owned() {
    tandem_session_free(session);
    tandem_model_free(model);
  }
};

struct message {
  std::string role, content;
};

bool on_progress(float done, void*) { return draw_load_progress(done); }

// Streams a reply to stdout and keeps its text.
bool on_piece(const char* text, size_t len, int32_t, void* user_data) {
  static_cast<std::string*>(user_data)->append(text, len);
  std::fwrite(text, 1, len, stdout);
  std::fflush(stdout);
  return true;
}

// --chat-template: an existing file's text, else a built-in name (the library checks it).
std::string template_arg(const std::string& arg) {
  if (arg.empty() || !std::filesystem::is_regular_file(arg)) return arg;
  std::ifstream in(arg, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string take(char* s) {
  std::string out = s ? s : "";
  tandem_string_free(s);
  return out;
}

// One turn: the conversation through the template, the reply streamed. False on an error
// (printed); the failed user message is then dropped by the caller.
bool reply(const chat_opts& o, owned& h, std::vector<message>& conv, const std::string& bos_text) {
  std::vector<tandem_chat_message> msgs;
  for (const message& m : conv) msgs.push_back({m.role.c_str(), m.content.c_str()});
  char* rendered = tandem_chat_apply(h.model, msgs.data(), msgs.size(), true);
  if (!rendered) {
    fail(tandem_last_error());
    return false;
  }
  const std::string prompt = take(rendered);
  tandem_generate_params p = tandem_generate_params_default();
  p.sampling.temperature = o.temp;
  p.sampling.top_k = o.top_k;
  p.sampling.top_p = o.top_p;
  p.sampling.seed = o.seed;
  p.max_tokens = o.n_predict;
  // Templates that write the BOS token themselves get no second one.
  p.add_bos = bos_text.empty() || prompt.compare(0, bos_text.size(), bos_text) != 0;
  std::string text;
  p.on_token = on_piece;
  p.user_data = &text;
  tandem_result r;
  const tandem_status st = tandem_generate(h.session, prompt.c_str(), &p, &r);
  std::fputc('\n', stdout);
  std::fflush(stdout);
  if (st == TANDEM_ERROR) {
    fail(tandem_last_error());
    return false;
  }
  if (r.finish == TANDEM_FINISH_LENGTH)
    std::fprintf(stderr, "(the reply reached -n %d tokens)\n", o.n_predict);
  if (r.finish == TANDEM_FINISH_CONTEXT)
    std::fprintf(stderr, "(the context is full: /reset to start again, or raise -c)\n");
  conv.push_back({"assistant", text});
  return true;
}

int run_chat(const chat_opts& o) {
  tandem_model_params mp = tandem_model_params_default();
  mp.offload = o.offload.c_str();
  mp.n_ctx = o.n_ctx;
  mp.n_threads = o.n_threads;
  const std::string tmpl = template_arg(o.chat_template);
  if (!tmpl.empty()) mp.chat_template = tmpl.c_str();
  if (stderr_is_terminal()) mp.progress = on_progress;
  owned h;
  h.model = tandem_model_load(o.model.c_str(), &mp);
  if (!h.model) return fail(tandem_last_error());
  const std::string notes = take(tandem_model_notes(h.model));
  if (!notes.empty()) std::fprintf(stderr, "tandem: %s\n", notes.c_str());
  h.session = tandem_session_create(h.model);
  if (!h.session) return fail(tandem_last_error());
  const tandem_model_info info = tandem_model_get_info(h.model);
  const std::string bos_text = info.bos >= 0 ? take(tandem_detokenize(h.model, &info.bos, 1, true)) : "";

  const bool interactive = isatty(fileno(stdin)) != 0;
  if (interactive)
    std::fprintf(stderr, "%s: /reset starts a new conversation, /exit (or Ctrl-D) ends\n",
                 take(tandem_model_name(h.model)).c_str());
  std::vector<message> conv;
  const auto restart = [&] {
    conv.clear();
    if (!o.system.empty()) conv.push_back({"system", o.system});
  };
  restart();
  for (std::string line;;) {
    if (interactive) {
      std::fputs("> ", stdout);
      std::fflush(stdout);
    }
    if (!std::getline(std::cin, line) || line == "/exit") break;
    if (line == "/reset") {
      restart();
      tandem_session_reset(h.session);
      std::fprintf(stderr, "(new conversation)\n");
      continue;
    }
    if (line.empty()) continue;
    conv.push_back({"user", line});
    if (!reply(o, h, conv, bos_text)) conv.pop_back();
  }
  return 0;
}

}  // namespace

command add_chat(CLI::App& app) {
  auto o = std::make_shared<chat_opts>();
  app.add_option("-m,--model", o->model, "GGUF model file")->required();
  app.add_option("-c,--ctx-size", o->n_ctx, "context size in tokens (0 = the model's, at most 4096)")
      ->capture_default_str();
  app.add_option("-t,--threads", o->n_threads, "CPU threads (0 = number of physical cores)")
      ->capture_default_str();
  app.add_option("--offload,--ngl,--n-gpu-layers", o->offload,
                 "layers on the GPU: N (the last N, with the output head), all, or auto")
      ->capture_default_str();
  app.add_option("--temp", o->temp, "temperature; 0 = greedy")->capture_default_str();
  app.add_option("--top-k", o->top_k, "keep the K most likely tokens (0 = off)")->capture_default_str();
  app.add_option("--top-p", o->top_p, "keep the smallest set with probability >= P (1 = off)")
      ->capture_default_str();
  app.add_option("-s,--seed", o->seed, "random seed for sampling (same seed, same replies)");
  app.add_option("-n,--n-predict", o->n_predict,
                 "most tokens per reply (-1: until the end of the turn or a full context)")
      ->capture_default_str();
  app.add_option("--system", o->system, "a system prompt that starts the conversation");
  app.add_option("--chat-template", o->chat_template,
                 "chat template: a built-in name (chatml, llama3, ...) or a Jinja file (default: "
                 "the model's, or ChatML when it has none)");
  return [o] { return run_chat(*o); };
}

}  // namespace tandem::cli
