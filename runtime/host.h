// A loaded model as the public API serves it: the file, its tokenizer, one engine whose KV
// sequences the sessions share out (the weights loaded once), the chat template, and the turn
// lock that sessions take around each evaluation.
#pragma once
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/chat_template.h"
#include "runtime/engine.h"
#include "runtime/model.h"
#include "runtime/tokenizer.h"
#include "runtime/turn_lock.h"

namespace tandem {

struct host_options {
  engine_options engine;      // engine.n_seq: the sessions that may exist at once
  // "": the model's tokenizer.chat_template (ChatML when it has none); else a built-in name
  // (chat_template::builtin) or the Jinja text of a template.
  std::string chat_template;
  // Load progress in [0, 1]; returning false cancels the load (load_cancelled is thrown).
  std::function<bool(float)> progress;
};

class model_host {
 public:
  // Loads the model and builds the engine. Throws tandem::error (load_cancelled when the
  // progress callback said stop).
  model_host(const std::string& path, host_options opt);

  const model& get_model() const { return *model_; }
  const tokenizer& tok() const { return *tok_; }
  // Evaluation only under lock(): select_seq + eval.
  engine& eng() { return *engine_; }
  const engine& eng() const { return *engine_; }
  turn_lock& lock() { return lock_; }

  // A free KV sequence for a new session, or -1 when all are taken; give_seq returns it.
  int take_seq();
  void give_seq(int seq);
  int sessions() const;

  // general.name, or the file's name without .gguf.
  std::string name() const;
  const chat_template& tmpl() const { return *template_; }
  // Renders with the template, bos_token / eos_token from the vocabulary.
  std::string apply_chat(chat_inputs in) const;

 private:
  std::unique_ptr<model> model_;
  std::unique_ptr<tokenizer> tok_;
  std::unique_ptr<chat_template> template_;
  std::unique_ptr<engine> engine_;
  turn_lock lock_;
  mutable std::mutex seq_m_;
  std::vector<bool> seq_used_;
};

}  // namespace tandem
