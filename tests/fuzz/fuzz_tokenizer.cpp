// Fuzz target: both tokenizer families on the real vocabularies of ../shared/models/vocab.
// Input: byte 0 picks the vocabulary, byte 1 the mode (bit 0: add BOS; bit 1: parse special
// tokens; bit 2: decode instead of encode; bit 3: show special tokens), the rest is the text to encode or the ids to decode (little-endian u16 each, so that
// most land inside the vocabulary and a few just outside). Seeds: the vocabularies' .inp strings.
#include <cstring>
#include <memory>
#include <string_view>
#include <vector>

#include "runtime/error.h"
#include "runtime/gguf.h"
#include "runtime/tokenizer.h"
#include "tests/fuzz/fuzz.h"

namespace tandem::fuzz {

// Loaded once (a few seconds: 1.1 million merges and tokens in all).
const std::vector<std::unique_ptr<tandem::tokenizer>>& vocabularies() {
  static const auto v = [] {
    std::vector<std::unique_ptr<tandem::tokenizer>> r;
    for (const char* name : {"llama-spm", "phi-3", "gpt-2", "starcoder", "llama-bpe", "qwen2",
                             "deepseek-llm"}) {
      const std::string path =
          std::string(TANDEM_MODELS_DIR) + "/vocab/ggml-vocab-" + name + ".gguf";
      r.push_back(tandem::tokenizer::from_gguf(*gguf_file::open(path)));
    }
    return r;
  }();
  return v;
}

void tokenizer(const uint8_t* data, size_t size) {
  if (size < 2) return;
  const auto& vocabs = vocabularies();
  const tandem::tokenizer& tok = *vocabs[data[0] % vocabs.size()];
  const bool add_bos = data[1] & 1, special = data[1] & 2, decode = data[1] & 4,
             show = data[1] & 8;
  const int32_t n = tok.n_vocab();
  if (decode) {
    std::vector<int32_t> ids;
    for (size_t i = 2; i + 1 < size; i += 2) {
      uint16_t v;
      std::memcpy(&v, data + i, 2);
      ids.push_back(static_cast<int32_t>(v % (static_cast<uint32_t>(n) + 3)) - 1);  // -1 .. n+1
    }
    bool in_range = true;
    for (int32_t id : ids) in_range &= id >= 0 && id < n;
    try {
      tok.decode(ids, show);
      if (!in_range) broken("decode accepted an id outside the vocabulary");
    } catch (const error&) {
      if (in_range) broken("decode refused ids inside the vocabulary");
    }
    int32_t prev = -1;
    for (int32_t id : ids) {
      try {
        tok.piece(id, prev, show);
      } catch (const error&) {
      }
      prev = id;
    }
    return;
  }
  const std::string_view text(reinterpret_cast<const char*>(data + 2), size - 2);
  std::vector<int32_t> ids;
  try {
    ids = tok.encode(text, add_bos, special);
  } catch (const error&) {
    return;  // e.g. a byte the vocabulary cannot spell
  }
  for (int32_t id : ids)
    if (id < 0 || id >= n) broken("encode produced an id outside the vocabulary");
  tok.decode(ids, show);
}

}  // namespace tandem::fuzz

TANDEM_FUZZ_ENTRY(tokenizer)
TANDEM_FUZZ_INIT([] { tandem::fuzz::vocabularies(); })
