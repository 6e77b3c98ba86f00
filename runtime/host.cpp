#include "runtime/host.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>

namespace tandem {

namespace {

// A built-in name is a plain word ("chatml", "llama3"); anything with Jinja markup is a template.
bool is_jinja(const std::string& s) {
  return s.find("{{") != std::string::npos || s.find("{%") != std::string::npos;
}

}  // namespace

model_host::model_host(const std::string& path, host_options opt) {
  const auto report = [&opt](float done) {
    if (opt.progress && !opt.progress(done)) throw load_cancelled();
  };
  report(0.0f);
  model_ = model::load(path);
  tok_ = tokenizer::from_gguf(model_->file());
  std::string source = opt.chat_template;
  if (source.empty()) source = model_->file().get_string("tokenizer.chat_template", "");
  if (source.empty()) source = chat_template::builtin("chatml");
  else if (!is_jinja(source)) source = chat_template::builtin(source);
  template_ = std::make_unique<chat_template>(std::move(source));
  report(0.1f);
  // The engine's share of the load: most of it (weights uploaded, placed, repacked).
  engine_options eo = opt.engine;
  if (opt.progress) eo.progress = [&opt](float f) { return opt.progress(0.1f + 0.9f * f); };
  engine_ = std::make_unique<engine>(*model_, eo);
  seq_used_.assign(static_cast<size_t>(engine_->n_seq()), false);
}

int model_host::take_seq() {
  std::lock_guard<std::mutex> lk(seq_m_);
  for (size_t i = 0; i < seq_used_.size(); ++i)
    if (!seq_used_[i]) {
      seq_used_[i] = true;
      return static_cast<int>(i);
    }
  return -1;
}

void model_host::give_seq(int seq) {
  std::lock_guard<std::mutex> lk(seq_m_);
  if (seq >= 0 && static_cast<size_t>(seq) < seq_used_.size())
    seq_used_[static_cast<size_t>(seq)] = false;
}

int model_host::sessions() const {
  std::lock_guard<std::mutex> lk(seq_m_);
  return static_cast<int>(std::count(seq_used_.begin(), seq_used_.end(), true));
}

std::string model_host::name() const {
  std::string n = model_->file().get_string("general.name", "");
  if (!n.empty()) return n;
  return std::filesystem::path(model_->file().path()).stem().string();
}

std::string model_host::apply_chat(chat_inputs in) const {
  if (tok_->bos() >= 0) in.bos_token = tok_->token_text(tok_->bos());
  if (tok_->eos() >= 0) in.eos_token = tok_->token_text(tok_->eos());
  return template_->render(in);
}

}  // namespace tandem
