// Tokenizer from GGUF vocab metadata (tokenizer.ggml.*), matching llama.cpp token for token.
// SentencePiece-style ("llama"): merges by score, byte fallback (<0xNN>), BOS, leading-space rule.
// GPT-2-style byte-level BPE ("gpt2"): pre-tokenizer chosen by tokenizer.ggml.pre, merges by rank.
// Special tokens: user-defined tokens are always matched verbatim in the text; control (and
// unknown) tokens only with parse_special, as llama.cpp's tokenizer_st_partition does. Text from
// users is encoded with parse_special off, so "<|im_end|>" typed by a user stays plain text.
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

  // Token ids of text, with BOS first when add_bos (and the vocab has one). With parse_special
  // the spellings of control tokens in the text ("<|im_start|>", "<s>", "<unk>") become those
  // tokens, longest first; without it they are plain text. Either way user-defined tokens are
  // split out first. (llama.cpp's llama_tokenize(text, add_special, parse_special).)
  virtual std::vector<int32_t> encode(std::string_view text, bool add_bos,
                                      bool parse_special = false) const = 0;
  // The bytes token id stands for ("▁" -> " ", "<0x0A>" -> "\n"). Control and unknown tokens
  // give "" unless show_special, which gives their text ("<|im_end|>"). After BOS
  // (prev == bos()) a leading space is dropped, as SentencePiece's decoder does (only for
  // vocabularies that add a space prefix, i.e. not byte-level BPE). Throws on an id out of range.
  virtual std::string piece(int32_t id, int32_t prev = -1, bool show_special = false) const = 0;
  // Whole text of a sequence of ids (BOS/EOS and other control tokens dropped unless
  // show_special).
  std::string decode(const std::vector<int32_t>& ids, bool show_special = false) const;

  virtual int32_t n_vocab() const = 0;
  virtual int32_t bos() const = 0;   // -1 when none
  virtual int32_t eos() const = 0;   // -1 when none
  virtual bool add_bos_default() const = 0;
  // True for tokens that end generation: EOS, EOT, EOM and the end-of-turn tokens found by text
  // as llama.cpp does ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", ...).
  virtual bool is_eog(int32_t id) const = 0;
  // Every end-of-generation id, sorted.
  virtual const std::vector<int32_t>& eog_ids() const = 0;
  // True for control tokens (BOS, EOS, "<|im_start|>", ...: llama.cpp's llama_vocab_is_control).
  // piece() hides these and the unknown token unless show_special.
  virtual bool is_control(int32_t id) const = 0;
  // The id whose text is exactly text ("<|im_end|>"), or -1.
  virtual int32_t find_token(std::string_view text) const = 0;
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
  std::vector<int32_t> eog;             // sorted
  std::vector<int32_t> special_tokens;  // control, user-defined and unknown; longest first
  std::vector<uint8_t> strip;           // per token: k_lstrip | k_rstrip (llama.cpp's attributes)

  int32_t find(std::string_view s) const {
    auto it = id_of.find(s);
    return it == id_of.end() ? -1 : it->second;
  }
};

constexpr uint8_t k_lstrip = 1;  // whitespace before the token is dropped when it is parsed
constexpr uint8_t k_rstrip = 2;  // whitespace after it is dropped

// tokenizer_special.cpp: after the tokens, types and special ids are read, finds the
// end-of-generation tokens and the control-looking ones by text, the strip attributes llama.cpp
// sets per model, and the special-token list (llama.cpp's llama_vocab::impl::load, second half).
void classify_special_tokens(const gguf_file& f, vocab_data& v, int32_t eot, int32_t eom);

// A run of input text, or (token >= 0) a special token found verbatim in it.
struct fragment {
  std::string_view text;
  int32_t token = -1;
};
// Splits out special tokens, longest first: user-defined ones always, control and unknown ones
// only with parse_special (llama.cpp's tokenizer_st_partition).
std::vector<fragment> split_special(const vocab_data& v, std::string_view text,
                                    bool parse_special);

// What the two families share: everything but encoding and the text of normal tokens.
class vocab_tokenizer : public tokenizer {
 public:
  explicit vocab_tokenizer(vocab_data v) : v_(std::move(v)) {}
  std::string piece(int32_t id, int32_t prev = -1, bool show_special = false) const override;
  int32_t n_vocab() const override { return static_cast<int32_t>(v_.text.size()); }
  int32_t bos() const override { return v_.bos; }
  int32_t eos() const override { return v_.eos; }
  bool add_bos_default() const override { return v_.add_bos && v_.bos >= 0; }
  bool is_eog(int32_t id) const override;
  const std::vector<int32_t>& eog_ids() const override { return v_.eog; }
  bool is_control(int32_t id) const override;
  int32_t find_token(std::string_view text) const override { return v_.find(text); }
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
