// Tokenizer from GGUF vocab metadata (tokenizer.ggml.*). SentencePiece-style ("llama"): merges by
// score, byte fallback (<0xNN>), BOS, leading-space rule; decode back to text.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
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
  // BOS (prev == bos()) a leading space is dropped, as SentencePiece's decoder does.
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

}  // namespace tandem
