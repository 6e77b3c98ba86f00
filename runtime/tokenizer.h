// Tokenizer from GGUF vocab metadata (tokenizer.ggml.*), matching llama.cpp token for token.
// SentencePiece-style ("llama"): merges by score, byte fallback (<0xNN>), BOS, leading-space rule.
// GPT-2-style byte-level BPE ("gpt2"): pre-tokenizer chosen by tokenizer.ggml.pre, merges by rank.
// Text is never parsed for control tokens ("<s>" in a prompt is plain text); user-defined tokens
// are matched verbatim, as llama.cpp does with parse_special off.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "runtime/gguf.h"

namespace tandem {

class tokenizer {
 public:
  // Builds the tokenizer from a model's or vocab-only GGUF. Throws tandem::error naming the
  // missing or malformed key, or an unsupported tokenizer.ggml.model.
  static std::unique_ptr<tokenizer> from_gguf(const gguf_file& f);
  virtual ~tokenizer() = default;

  // Token ids of text, with BOS first when add_bos (and the vocab has one).
  virtual std::vector<int32_t> encode(std::string_view text, bool add_bos) const = 0;
  // The bytes token id stands for ("▁" -> " ", "<0x0A>" -> "\n", control tokens -> ""). After
  // BOS (prev == bos()) a leading space is dropped, as SentencePiece's decoder does (only for
  // vocabularies that add a space prefix, i.e. not byte-level BPE). Throws on an id out of range.
  virtual std::string piece(int32_t id, int32_t prev = -1) const = 0;
  // Whole text of a sequence of ids (BOS/EOS and other control tokens dropped).
  std::string decode(const std::vector<int32_t>& ids) const;

  virtual int32_t n_vocab() const = 0;
  virtual int32_t bos() const = 0;   // -1 when none
  virtual int32_t eos() const = 0;   // -1 when none
  virtual bool add_bos_default() const = 0;
  // True for tokens that end generation (EOS, EOT).
  virtual bool is_eog(int32_t id) const = 0;
  virtual const std::string& token_text(int32_t id) const = 0;
};

// ---- internals shared by tokenizer.cpp and tokenizer_bpe.cpp; not part of the API ------------
namespace detail {

// tokenizer.ggml.token_type values.
enum class token_type : int32_t {
  undefined = 0, normal = 1, unknown = 2, control = 3, user_defined = 4, unused = 5, byte = 6,
};

struct string_hash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

// The tokenizer.ggml.* keys both families read, validated.
struct vocab_data {
  std::string path;  // the GGUF file, for messages
  std::vector<std::string> text;
  std::vector<float> score;
  std::vector<token_type> type;
  std::vector<uint8_t> byte_value;  // of byte tokens ("<0x0A>" -> 10)
  std::unordered_map<std::string, int32_t, string_hash, std::equal_to<>> id_of;
  int32_t bos = -1, eos = -1, unk = -1;
  bool add_bos = false;
  bool add_space_prefix = false;
  std::vector<int32_t> eog;           // sorted
  std::vector<int32_t> split_tokens;  // user-defined tokens, longest first

  int32_t find(std::string_view s) const {
    auto it = id_of.find(s);
    return it == id_of.end() ? -1 : it->second;
  }
};

// A run of input text, or (token >= 0) a user-defined token found verbatim in it.
struct fragment {
  std::string_view text;
  int32_t token = -1;
};
std::vector<fragment> split_user_defined(const vocab_data& v, std::string_view text);

// What the two families share: everything but encoding and the text of normal tokens.
class vocab_tokenizer : public tokenizer {
 public:
  explicit vocab_tokenizer(vocab_data v) : v_(std::move(v)) {}
  std::string piece(int32_t id, int32_t prev = -1) const override;
  int32_t n_vocab() const override { return static_cast<int32_t>(v_.text.size()); }
  int32_t bos() const override { return v_.bos; }
  int32_t eos() const override { return v_.eos; }
  bool add_bos_default() const override { return v_.add_bos && v_.bos >= 0; }
  bool is_eog(int32_t id) const override;
  const std::string& token_text(int32_t id) const override;

 protected:
  virtual std::string normal_piece(const std::string& text) const = 0;
  void check_id(int32_t id) const;
  vocab_data v_;
};

// tokenizer_bpe.cpp: the "gpt2" family.
std::unique_ptr<tokenizer> make_bpe_tokenizer(const gguf_file& f, vocab_data v);
// The pre-tokenizer alone (words before byte encoding), for tests; use_custom = false forces the
// std::regex path even where llama.cpp has a hand-written splitter for the expression.
std::vector<std::string> pre_tokenize(std::string_view text, const std::vector<std::string>& exprs,
                                      bool use_custom = true);
// The expressions llama.cpp uses for a tokenizer.ggml.pre value (empty when unsupported).
std::vector<std::string> pre_tokenizer_exprs(const std::string& pre);

}  // namespace detail

}  // namespace tandem
