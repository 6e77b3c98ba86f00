// Vocabulary loading shared by both tokenizer families, and the SentencePiece-style ("llama")
// tokenizer. The algorithm is llama.cpp's llm_tokenizer_spm, step for step, because the goldens
// (and every GGUF model's expectations) are defined by what llama.cpp produces.
#include "runtime/tokenizer.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <queue>

#include "runtime/error.h"

namespace tandem {

namespace {

using detail::token_type;
using detail::vocab_data;

constexpr const char* k_space_marker = "\xe2\x96\x81";  // U+2581 "▁", SentencePiece's space

// Ids GGUF writers use for "no such token" in a u32 field.
constexpr int64_t k_null_u32 = 0xFFFFFFFFll;

const gguf_value* find_array(const gguf_file& f, const std::string& key, bool required) {
  const gguf_value* v = f.find(key);
  if (!v) {
    if (!required) return nullptr;
    throw error(fmt::format(
        "{}: metadata '{}' is missing, so the file has no usable vocabulary; convert the model "
        "again with llama.cpp's convert_hf_to_gguf.py, which embeds it",
        f.path(), key));
  }
  if (v->type != gguf_type::array)
    throw error(fmt::format("{}: metadata '{}' should be an array, found a {}", f.path(), key,
                            gguf_type_name(v->type)));
  return v;
}

void check_length(const gguf_file& f, const std::string& key, const gguf_value& v, size_t n) {
  if (v.arr.size() != n)
    throw error(fmt::format(
        "{}: metadata '{}' has {} entries but tokenizer.ggml.tokens has {}; the vocabulary is "
        "inconsistent, convert the model again",
        f.path(), key, v.arr.size(), n));
}

// A special-token id key: absent -> def; u32 max (or -1) -> none; otherwise must be in range.
int32_t special_id(const gguf_file& f, const std::string& key, int32_t def, size_t n) {
  const gguf_value* v = f.find(key);
  if (!v) return def >= 0 && static_cast<size_t>(def) < n ? def : -1;
  if (!v->is_int())
    throw error(fmt::format("{}: metadata '{}' should be an integer token id, found a {}",
                            f.path(), key, gguf_type_name(v->type)));
  const int64_t id = v->as_int();
  if (id == -1 || id == k_null_u32) return -1;
  if (id < 0 || static_cast<uint64_t>(id) >= n)
    throw error(fmt::format("{}: metadata '{}' = {} is outside the vocabulary (0..{}); fix the "
                            "key or convert the model again",
                            f.path(), key, id, n - 1));
  return static_cast<int32_t>(id);
}

bool bool_key(const gguf_file& f, const std::string& key, bool def) {
  const gguf_value* v = f.find(key);
  if (!v) return def;
  if (!v->is_int())
    throw error(fmt::format("{}: metadata '{}' should be a bool, found a {}", f.path(), key,
                            gguf_type_name(v->type)));
  return v->as_int() != 0;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// Reads tokens, scores, types and special ids. spm selects the "llama" defaults (BOS 1, EOS 2,
// UNK 0, add BOS, add a space prefix), as llama.cpp applies them when keys are absent.
vocab_data load_vocab(const gguf_file& f, bool spm) {
  vocab_data v;
  v.path = f.path();
  const gguf_value* toks = find_array(f, "tokenizer.ggml.tokens", true);
  if (toks->elem_type != gguf_type::string)
    throw error(fmt::format("{}: metadata 'tokenizer.ggml.tokens' should hold strings, found {}",
                            f.path(), gguf_type_name(toks->elem_type)));
  const size_t n = toks->arr.size();
  if (n == 0 || n > static_cast<size_t>(INT32_MAX))
    throw error(fmt::format("{}: metadata 'tokenizer.ggml.tokens' has {} entries; a vocabulary "
                            "needs 1 to 2^31-1",
                            f.path(), n));

  const gguf_value* scores = find_array(f, "tokenizer.ggml.scores", false);
  if (scores) {
    check_length(f, "tokenizer.ggml.scores", *scores, n);
    if (scores->elem_type != gguf_type::f32 && scores->elem_type != gguf_type::i32)
      throw error(fmt::format("{}: metadata 'tokenizer.ggml.scores' should hold f32, found {}",
                              f.path(), gguf_type_name(scores->elem_type)));
  }
  const gguf_value* types = find_array(f, "tokenizer.ggml.token_type", false);
  if (types) {
    check_length(f, "tokenizer.ggml.token_type", *types, n);
    if (!types->arr.empty() && !types->arr[0].is_int())
      throw error(fmt::format("{}: metadata 'tokenizer.ggml.token_type' should hold i32, found {}",
                              f.path(), gguf_type_name(types->elem_type)));
  }

  v.text.resize(n);
  v.score.assign(n, 0.0f);
  v.type.assign(n, token_type::normal);
  v.byte_value.assign(n, 0);
  v.id_of.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    v.text[i] = toks->arr[i].str;
    if (scores) v.score[i] = static_cast<float>(scores->arr[i].as_float());
    if (types) {
      const int64_t t = types->arr[i].as_int();
      v.type[i] = t >= 0 && t <= 6 ? static_cast<token_type>(t) : token_type::undefined;
    }
    if (v.type[i] == token_type::byte) {
      const std::string& s = v.text[i];
      const bool shaped = s.size() == 6 && s.compare(0, 3, "<0x") == 0 && s[5] == '>';
      const int hi = shaped ? hex_digit(s[3]) : -1, lo = shaped ? hex_digit(s[4]) : -1;
      if (hi < 0 || lo < 0)
        throw error(fmt::format("{}: token {} ('{}') is marked a byte token in "
                                "tokenizer.ggml.token_type but is not of the form <0xNN>",
                                f.path(), i, s));
      v.byte_value[i] = static_cast<uint8_t>(hi * 16 + lo);
    }
    // An empty text could never be produced by encoding; llama.cpp renames it, we just don't
    // index it.
    if (v.text[i].empty()) continue;
    auto [it, fresh] = v.id_of.emplace(v.text[i], static_cast<int32_t>(i));
    if (!fresh)
      throw error(fmt::format("{}: tokenizer.ggml.tokens has '{}' twice (ids {} and {}); the "
                              "vocabulary is broken, convert the model again",
                              f.path(), v.text[i], it->second, i));
  }

  v.bos = special_id(f, "tokenizer.ggml.bos_token_id", spm ? 1 : -1, n);
  v.eos = special_id(f, "tokenizer.ggml.eos_token_id", spm ? 2 : -1, n);
  v.unk = special_id(f, "tokenizer.ggml.unknown_token_id", spm ? 0 : -1, n);
  const int32_t eot = special_id(f, "tokenizer.ggml.eot_token_id", -1, n);
  const int32_t eom = special_id(f, "tokenizer.ggml.eom_token_id", -1, n);
  v.add_bos = bool_key(f, "tokenizer.ggml.add_bos_token", spm);
  v.add_space_prefix = bool_key(f, "tokenizer.ggml.add_space_prefix", spm);

  detail::classify_special_tokens(f, v, eot, eom);
  return v;
}

// ---- SentencePiece-style ---------------------------------------------------------------------

class spm_tokenizer final : public detail::vocab_tokenizer {
 public:
  explicit spm_tokenizer(vocab_data v) : vocab_tokenizer(std::move(v)) {
    char name[8];
    for (int b = 0; b < 256; ++b) {
      std::snprintf(name, sizeof name, "<0x%02X>", b);
      int32_t id = v_.find(name);
      if (id < 0) id = v_.find(std::string(1, static_cast<char>(b)));  // llama.cpp's fallback
      byte_id_[b] = id;
    }
  }

  std::vector<int32_t> encode(std::string_view text, bool add_bos,
                              bool parse_special) const override {
    std::vector<int32_t> out;
    if (add_bos && v_.bos >= 0) out.push_back(v_.bos);
    // The space prefix goes at the start of the text and after every special token (control or
    // user-defined) split out of it, never after ordinary text: llama.cpp's is_prev_special. So
    // "<s>Hi" with parse_special is <s> "▁Hi", and "a<s>" is "▁a" <s>.
    bool prev_special = true;
    std::string s;
    for (const detail::fragment& fr : detail::split_special(v_, text, parse_special)) {
      if (fr.token >= 0) {
        out.push_back(fr.token);
        prev_special = true;
        continue;
      }
      s.clear();
      if (v_.add_space_prefix && prev_special) s += k_space_marker;
      for (char c : fr.text) {
        if (c == ' ')
          s += k_space_marker;
        else
          s += c;
      }
      tokenize_run(s, out);
      prev_special = false;
    }
    return out;
  }

 protected:
  std::string normal_piece(const std::string& text) const override {
    std::string r;
    r.reserve(text.size());
    for (size_t i = 0; i < text.size();) {
      if (text.compare(i, 3, k_space_marker) == 0) {
        r += ' ';
        i += 3;
      } else {
        r += text[i++];
      }
    }
    return r;
  }

 private:
  struct symbol {
    int prev, next;
    size_t off, n;
  };
  struct bigram {
    int left, right;
    float score;
    size_t size;
  };
  // Highest score first; on ties the leftmost pair.
  struct bigram_less {
    bool operator()(const bigram& l, const bigram& r) const {
      return l.score < r.score || (l.score == r.score && l.left > r.left);
    }
  };
  using queue = std::priority_queue<bigram, std::vector<bigram>, bigram_less>;

  static size_t utf8_len(char c) {
    static constexpr size_t lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lookup[static_cast<uint8_t>(c) >> 4];
  }

  void try_add(const std::string& s, const std::vector<symbol>& syms, int left, int right,
               queue& q) const {
    if (left < 0 || right < 0) return;
    const size_t size = syms[left].n + syms[right].n;
    const int32_t id = v_.find(std::string_view(s).substr(syms[left].off, size));
    if (id < 0) return;
    q.push({left, right, v_.score[id], size});
  }

  // One run of escaped text (spaces already "▁"): start from UTF-8 characters and keep merging
  // the best adjacent pair that forms a vocabulary token.
  void tokenize_run(const std::string& s, std::vector<int32_t>& out) const {
    std::vector<symbol> syms;
    for (size_t off = 0; off < s.size();) {
      const size_t n = std::min(utf8_len(s[off]), s.size() - off);
      const int idx = static_cast<int>(syms.size());
      syms.push_back({idx - 1, off + n == s.size() ? -1 : idx + 1, off, n});
      off += n;
    }
    queue q;
    for (int i = 1; i < static_cast<int>(syms.size()); ++i) try_add(s, syms, i - 1, i, q);
    while (!q.empty()) {
      const bigram b = q.top();
      q.pop();
      symbol& l = syms[b.left];
      symbol& r = syms[b.right];
      // Stale: one side was merged away or grew since this pair was queued.
      if (l.n == 0 || r.n == 0 || l.n + r.n != b.size) continue;
      l.n += r.n;
      r.n = 0;
      l.next = r.next;
      if (r.next >= 0) syms[r.next].prev = b.left;
      try_add(s, syms, l.prev, b.left, q);
      try_add(s, syms, b.left, l.next, q);
    }
    // Every merged symbol is a vocabulary token (merges only happen into one), so llama.cpp's
    // re-segmentation of unknown merges never triggers; only single characters can be missing.
    for (int i = syms.empty() ? -1 : 0; i != -1; i = syms[i].next) {
      const symbol& sym = syms[i];
      const int32_t id = v_.find(std::string_view(s).substr(sym.off, sym.n));
      if (id >= 0) {
        out.push_back(id);
        continue;
      }
      for (size_t j = 0; j < sym.n; ++j)
        out.push_back(byte_token(static_cast<uint8_t>(s[sym.off + j])));
    }
  }

  int32_t byte_token(uint8_t b) const {
    if (byte_id_[b] >= 0) return byte_id_[b];
    if (v_.unk >= 0) return v_.unk;
    throw error(fmt::format("{}: the text needs byte 0x{:02X}, but the vocabulary has neither a "
                            "<0x{:02X}> token nor an unknown token",
                            v_.path, b, b));
  }

  int32_t byte_id_[256];
};

}  // namespace

namespace detail {

void vocab_tokenizer::check_id(int32_t id) const {
  if (id < 0 || id >= n_vocab())
    throw error(fmt::format("{}: token id {} is outside the vocabulary (0..{})", v_.path, id,
                            n_vocab() - 1));
}

const std::string& vocab_tokenizer::token_text(int32_t id) const {
  check_id(id);
  return v_.text[id];
}

bool vocab_tokenizer::is_eog(int32_t id) const {
  return std::binary_search(v_.eog.begin(), v_.eog.end(), id);
}

bool vocab_tokenizer::is_control(int32_t id) const {
  check_id(id);
  return v_.type[id] == token_type::control;
}

std::string vocab_tokenizer::piece(int32_t id, int32_t prev, bool show_special) const {
  check_id(id);
  std::string s;
  switch (v_.type[id]) {
    case token_type::normal: s = normal_piece(v_.text[id]); break;
    case token_type::control:
    case token_type::unknown:
      if (show_special) s = v_.text[id];
      return s;  // llama.cpp's token_to_piece(special = show_special)
    case token_type::user_defined: s = v_.text[id]; break;
    case token_type::byte: s.assign(1, static_cast<char>(v_.byte_value[id])); break;
    default: return s;  // unused, undefined: llama.cpp renders nothing, even with special
  }
  // SentencePiece drops the space it prefixed to the text, i.e. the one right after BOS.
  if (v_.add_space_prefix && v_.bos >= 0 && prev == v_.bos && !s.empty() && s[0] == ' ')
    s.erase(0, 1);
  return s;
}

}  // namespace detail

std::unique_ptr<tokenizer> tokenizer::from_gguf(const gguf_file& f) {
  const gguf_value* model = f.find("tokenizer.ggml.model");
  if (!model)
    throw error(fmt::format("{}: metadata 'tokenizer.ggml.model' is missing, so the file has no "
                            "vocabulary; convert the model again with llama.cpp's "
                            "convert_hf_to_gguf.py",
                            f.path()));
  if (model->type != gguf_type::string)
    throw error(fmt::format("{}: metadata 'tokenizer.ggml.model' should be a string, found a {}",
                            f.path(), gguf_type_name(model->type)));
  if (model->str == "llama") return std::make_unique<spm_tokenizer>(load_vocab(f, true));
  if (model->str == "gpt2") return detail::make_bpe_tokenizer(f, load_vocab(f, false));
  throw error(fmt::format("{}: tokenizer.ggml.model '{}' is not supported; Tandem reads 'llama' "
                          "(SentencePiece) and 'gpt2' (byte-level BPE) vocabularies",
                          f.path(), model->str));
}

std::string tokenizer::decode(const std::vector<int32_t>& ids, bool show_special) const {
  std::string out;
  int32_t prev = -1;
  for (int32_t id : ids) {
    out += piece(id, prev, show_special);
    prev = id;
  }
  return out;
}

}  // namespace tandem
