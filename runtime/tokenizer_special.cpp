// Special tokens: which ids end generation, which tokens are control tokens whatever their
// declared type, the whitespace-strip attributes, and splitting them out of text. All of it is
// llama.cpp's (llama_vocab::impl::load after the special ids, and tokenizer_st_partition): GGUF
// files carry no per-token attributes, so llama.cpp recognizes these tokens by their text, and a
// model's prompt format is only right if Tandem recognizes the same ones.
#include <algorithm>
#include <cctype>

#include "runtime/tokenizer.h"

namespace tandem::detail {

namespace {

// End-of-turn and end-of-text spellings (llama.cpp's special_eog_ids list). Each becomes an
// end-of-generation token and a control token, whatever its declared type.
constexpr const char* k_eog_texts[] = {
    "<|eot_id|>",       "<|im_end|>",     "<|end|>",
    "<|return|>",       "<|call|>",       "<|flush|>",
    "<|calls|>",        "<end_of_turn>",  "<|endoftext|>",
    "</s>",             "<|eom_id|>",     "<EOT>",
    "_<EOT>",           "[EOT]",          "[EOS]",
    "<|end_of_text|>",  "<end_of_utterance>", "<eos>",
    "<turn|>",          "<|tool_response>", "<｜end▁of▁sentence｜>",
    "[e~[",
};

// Fill-in-the-middle spellings, looked for when the file gives no tokenizer.ggml.fim_*_token_id.
// They become control tokens; the pad, repo and file-separator ones also end generation.
constexpr const char* k_fim_pre[] = {"<|fim_prefix|>", "<fim-prefix>",    "<fim_prefix>",
                                     "<｜fim▁begin｜>", "<PRE>",           "▁<PRE>",
                                     "<|code_prefix|>", "<|prefix|>"};
constexpr const char* k_fim_suf[] = {"<|fim_suffix|>", "<fim-suffix>",    "<fim_suffix>",
                                     "<｜fim▁hole｜>", "<SUF>",           "▁<SUF>",
                                     "<|code_suffix|>", "<|suffix|>"};
constexpr const char* k_fim_mid[] = {"<|fim_middle|>", "<fim-middle>",    "<fim_middle>",
                                     "<｜fim▁end｜>",  "<MID>",           "▁<MID>",
                                     "<|code_middle|>", "<|middle|>"};
constexpr const char* k_fim_pad[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"};
constexpr const char* k_fim_rep[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>",
                                     "<reponame>"};
constexpr const char* k_fim_sep[] = {"<|file_sep|>"};

constexpr int64_t k_null_u32 = 0xFFFFFFFFll;

// An optional id key; absent, malformed or out of range reads as none (llama.cpp warns and keeps
// its default, which is none for these).
int32_t optional_id(const gguf_file& f, const std::string& key, size_t n) {
  const gguf_value* v = f.find(key);
  if (!v || !v->is_int()) return -1;
  const int64_t id = v->as_int();
  if (id < 0 || id == k_null_u32 || static_cast<uint64_t>(id) >= n) return -1;
  return static_cast<int32_t>(id);
}

std::string string_key(const gguf_file& f, const std::string& key) {
  const gguf_value* v = f.find(key);
  return v && v->type == gguf_type::string ? v->str : std::string();
}

bool contains_any(const std::string& s, std::initializer_list<const char*> parts) {
  for (const char* p : parts)
    if (s.find(p) != std::string::npos) return true;
  return false;
}

// Marks every token spelled like one of texts a control token; returns their ids, lowest first.
template <size_t N>
std::vector<int32_t> force_control(vocab_data& v, const char* const (&texts)[N]) {
  std::vector<int32_t> ids;
  for (const char* t : texts) {
    const int32_t id = v.find(t);
    if (id < 0) continue;
    v.type[id] = token_type::control;
    ids.push_back(id);
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

// A FIM token: the id a key gives (the later key wins, as in llama.cpp, which reads the
// deprecated prefix/suffix/middle keys after the fim_* ones), otherwise the tokens spelled like
// one.
template <size_t N>
std::vector<int32_t> fim_tokens(const gguf_file& f, vocab_data& v,
                                std::initializer_list<const char*> keys,
                                const char* const (&texts)[N]) {
  int32_t id = -1;
  for (const char* k : keys)
    if (const int32_t k_id = optional_id(f, std::string("tokenizer.ggml.") + k, v.text.size());
        k_id >= 0)
      id = k_id;
  if (id >= 0) return {id};
  return force_control(v, texts);
}

// llama.cpp's workarounds for vocabularies where a listed end token is not one.
void drop_false_eog(vocab_data& v) {
  auto has = [&](const char* t) {
    const int32_t id = v.find(t);
    return id >= 0 && std::binary_search(v.eog.begin(), v.eog.end(), id);
  };
  auto drop = [&](const char* t, token_type now) {
    const int32_t id = v.find(t);
    v.eog.erase(std::find(v.eog.begin(), v.eog.end(), id));
    v.type[id] = now;
  };
  // gpt-oss (o200k_harmony) and solar-open end a message with <|end|> but keep generating.
  const bool call = has("<|call|>") || has("<|calls|>");
  if (has("<|end|>") && call && (has("<|return|>") || has("<|flush|>")))
    drop("<|end|>", token_type::user_defined);
  // Gemma 4 and PaddleOCR: </s> is ordinary text there.
  if (has("<|tool_response>") && has("</s>")) drop("</s>", token_type::normal);
}

// Per-model strip attributes, as llama.cpp sets them by model, pre-tokenizer and architecture
// name (GGUF has no field for them).
void set_strip_attributes(const gguf_file& f, vocab_data& v) {
  v.strip.assign(v.text.size(), 0);
  std::string name = string_key(f, "general.name");
  std::transform(name.begin(), name.end(), name.begin(),
                 [](char c) { return static_cast<char>(std::tolower(static_cast<uint8_t>(c))); });
  const std::string pre = string_key(f, "tokenizer.ggml.pre");
  const std::string arch = string_key(f, "general.architecture");
  auto set = [&](const char* t, uint8_t bit, bool on) {
    const int32_t id = v.find(t);
    if (id < 0) return;
    v.strip[id] = on ? (v.strip[id] | bit) : (v.strip[id] & ~bit);
  };
  if (contains_any(pre, {"jina-v2-de", "jina-v2-es", "jina-v2-code"}) ||
      contains_any(arch, {"nomic-bert-moe", "jina-bert-v3"})) {
    set("<mask>", k_lstrip, true);
  } else if (contains_any(name, {"phi-3", "phi3"})) {
    // Phi-3's chat format: "<|user|>\nHi" must not keep the newline as text after the token.
    for (int32_t id : v.special_tokens) v.strip[id] |= k_rstrip;
    set("</s>", k_rstrip, true);
    for (const char* t : {"<unk>", "<s>", "<|endoftext|>"}) set(t, k_rstrip, false);
  } else if (contains_any(name, {"modern-bert"})) {
    set("[MASK]", k_lstrip, true);
  }
}

bool ascii_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

}  // namespace

void classify_special_tokens(const gguf_file& f, vocab_data& v, int32_t eot, int32_t eom) {
  const size_t n = v.text.size();
  std::vector<int32_t> eog = force_control(v, k_eog_texts);
  fim_tokens(f, v, {"fim_pre_token_id", "prefix_token_id"}, k_fim_pre);
  fim_tokens(f, v, {"fim_suf_token_id", "suffix_token_id"}, k_fim_suf);
  fim_tokens(f, v, {"fim_mid_token_id", "middle_token_id"}, k_fim_mid);
  for (int32_t id : fim_tokens(f, v, {"fim_pad_token_id"}, k_fim_pad)) eog.push_back(id);
  for (int32_t id : fim_tokens(f, v, {"fim_rep_token_id"}, k_fim_rep)) eog.push_back(id);
  for (int32_t id : fim_tokens(f, v, {"fim_sep_token_id"}, k_fim_sep)) eog.push_back(id);
  for (int32_t id : {v.eos, eot, eom})
    if (id >= 0) eog.push_back(id);
  std::sort(eog.begin(), eog.end());
  eog.erase(std::unique(eog.begin(), eog.end()), eog.end());
  v.eog = std::move(eog);

  // gpt-oss's message-structure tokens are user-defined: always split out, always shown.
  for (const char* t : {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"})
    if (const int32_t id = v.find(t); id >= 0) v.type[id] = token_type::user_defined;
  drop_false_eog(v);

  v.special_tokens.clear();
  for (size_t i = 0; i < n; ++i) {
    const token_type t = v.type[i];
    if ((t == token_type::control || t == token_type::user_defined ||
         t == token_type::unknown) &&
        !v.text[i].empty())
      v.special_tokens.push_back(static_cast<int32_t>(i));
  }
  std::stable_sort(v.special_tokens.begin(), v.special_tokens.end(), [&](int32_t a, int32_t b) {
    return v.text[a].size() > v.text[b].size();
  });
  set_strip_attributes(f, v);
}

std::vector<fragment> split_special(const vocab_data& v, std::string_view text,
                                    bool parse_special) {
  std::vector<fragment> frags;
  if (text.empty()) return frags;
  frags.push_back({text, -1});
  // Longest tokens first, each splitting every remaining run at all its occurrences: the order
  // llama.cpp's tokenizer_st_partition uses, so overlapping candidates resolve the same way.
  std::vector<fragment> next;
  for (int32_t id : v.special_tokens) {
    if (!parse_special && v.type[id] != token_type::user_defined) continue;
    const std::string& t = v.text[id];
    const uint8_t strip = v.strip.empty() ? 0 : v.strip[id];
    next.clear();
    bool changed = false;
    for (const fragment& fr : frags) {
      if (fr.token >= 0) {
        next.push_back(fr);
        continue;
      }
      std::string_view rest = fr.text;
      for (size_t pos; (pos = rest.find(t)) != std::string_view::npos;) {
        std::string_view left = rest.substr(0, pos);
        if (strip & k_lstrip)
          while (!left.empty() && ascii_space(left.back())) left.remove_suffix(1);
        if (!left.empty()) next.push_back({left, -1});
        next.push_back({{}, id});
        rest.remove_prefix(pos + t.size());
        if (strip & k_rstrip)
          while (!rest.empty() && ascii_space(rest.front())) rest.remove_prefix(1);
        changed = true;
      }
      if (!rest.empty()) next.push_back({rest, -1});
    }
    if (changed) frags.swap(next);
  }
  return frags;
}

}  // namespace tandem::detail
