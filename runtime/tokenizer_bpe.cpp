// GPT-2-style byte-level BPE ("gpt2"): llama.cpp's llm_tokenizer_bpe and unicode_regex_split,
// step for step, because its output is what GGUF models were tested against.
//
// Encoding: split out special tokens (user-defined ones, control ones with parse_special); split
// the rest into words with the pre-tokenizer expressions of tokenizer.ggml.pre (each applied
// inside the pieces the previous one left); map every byte of a word to its GPT-2 stand-in
// character; merge adjacent symbols by lowest merge rank (tokenizer.ggml.merges order), leftmost
// first.
//
// The expressions use \p{L}, \p{N}, ... which std::regex lacks. llama.cpp hand-writes splitters
// for the GPT-2 and Llama-3 expressions and runs the others through std::regex, on a "collapsed"
// copy of the text where each non-ASCII code point is replaced by one byte naming its category
// (and \p{X} by a class of that byte), or through std::wregex when the expression uses no
// categories. libstdc++'s matcher recurses once per repeated character and overflows the stack
// on runs of some 50k characters, so here every supported expression has a hand-written
// splitter (Qwen2's is Llama-3's with single digits; DeepSeek's are character-class runs) and
// the std::regex path is kept only as the reference the tests compare them with.
// Categories come from a range table generated from Unicode 15.1 (bottom of the file).
#include <fmt/format.h>

#include <algorithm>
#include <queue>
#include <regex>

#include "runtime/error.h"
#include "runtime/tokenizer.h"

namespace tandem {

namespace {

using detail::vocab_data;

// ---- Unicode ---------------------------------------------------------------------------------

enum : uint8_t {
  cat_undefined = 0,  // unassigned (Cn)
  cat_number = 1,     // N*
  cat_letter = 2,     // L*
  cat_separator = 3,  // Z*
  cat_mark = 4,       // M*
  cat_punct = 5,      // P*
  cat_symbol = 6,     // S*
  cat_control = 7,    // Cc, Cf, Co, Cs
};
uint8_t category_of(uint32_t cpt);  // table at the bottom

// Unicode White_Space (PropList.txt), the set llama.cpp uses.
bool is_whitespace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

// llama.cpp's unicode_cpt_flags, reduced to what the splitters read. A default-constructed one
// stands for "past the end of the piece" (llama.cpp: flags.as_uint() == 0).
struct cpt_flags {
  uint8_t cat = cat_undefined;
  bool valid = false;
  bool ws = false;
  bool letter() const { return valid && cat == cat_letter; }
  bool number() const { return valid && cat == cat_number; }
};
cpt_flags flags_of(uint32_t c) { return {category_of(c), true, is_whitespace(c)}; }

constexpr uint32_t k_replacement = 0xFFFD;

// Decodes like llama.cpp's unicode_cpts_from_utf8: a malformed byte becomes U+FFFD and decoding
// resumes at the next byte. (Overlong forms and surrogates pass, as there.)
std::vector<uint32_t> cpts_from_utf8(std::string_view s) {
  std::vector<uint32_t> r;
  r.reserve(s.size());
  auto cont = [&](size_t k) { return k < s.size() && (static_cast<uint8_t>(s[k]) & 0xC0) == 0x80; };
  auto at = [&](size_t k) { return static_cast<uint32_t>(static_cast<uint8_t>(s[k])); };
  for (size_t i = 0; i < s.size();) {
    const uint32_t b = at(i);
    if (b < 0x80) {
      r.push_back(b);
      i += 1;
    } else if (!(b & 0x40)) {
      r.push_back(k_replacement);
      i += 1;
    } else if (!(b & 0x20)) {
      if (!cont(i + 1)) {
        r.push_back(k_replacement);
        i += 1;
        continue;
      }
      r.push_back(((b & 0x1F) << 6) | (at(i + 1) & 0x3F));
      i += 2;
    } else if (!(b & 0x10)) {
      if (!cont(i + 1) || !cont(i + 2)) {
        r.push_back(k_replacement);
        i += 1;
        continue;
      }
      r.push_back(((b & 0x0F) << 12) | ((at(i + 1) & 0x3F) << 6) | (at(i + 2) & 0x3F));
      i += 3;
    } else if (!(b & 0x08)) {
      if (!cont(i + 1) || !cont(i + 2) || !cont(i + 3)) {
        r.push_back(k_replacement);
        i += 1;
        continue;
      }
      const uint32_t c = ((b & 0x07) << 18) | ((at(i + 1) & 0x3F) << 12) |
                         ((at(i + 2) & 0x3F) << 6) | (at(i + 3) & 0x3F);
      // llama.cpp throws on these later; a replacement character is kinder.
      r.push_back(c <= 0x10FFFF ? c : k_replacement);
      i += 4;
    } else {
      r.push_back(k_replacement);
      i += 1;
    }
  }
  return r;
}

void append_utf8(std::string& out, uint32_t c) {
  if (c <= 0x7F) {
    out += static_cast<char>(c);
  } else if (c <= 0x7FF) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c <= 0xFFFF) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

size_t utf8_len(char c) {
  static constexpr size_t lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return lookup[static_cast<uint8_t>(c) >> 4];
}

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes for
// U+0100.. in order, so every byte string becomes printable text without spaces.
struct byte_map {
  std::string enc[256];
  int16_t dec[512];
};
const byte_map& bytes_map() {
  static const byte_map m = [] {
    byte_map r;
    std::fill(std::begin(r.dec), std::end(r.dec), static_cast<int16_t>(-1));
    auto printable = [](int b) {
      return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const uint32_t c = printable(b) ? static_cast<uint32_t>(b) : 256u + extra++;
      append_utf8(r.enc[b], c);
      r.dec[c] = static_cast<int16_t>(b);
    }
    return r;
  }();
  return m;
}

// ---- pre-tokenizer ---------------------------------------------------------------------------

// The two expressions with hand-written splitters in llama.cpp (unicode_regex_split_custom).
const std::string k_gpt2_expr =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
const std::string k_llama3_expr =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const std::string k_llama3_expr_i =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
// Qwen2's: Llama-3's with one digit per number word (llama.cpp runs it through std::regex).
const std::string k_qwen2_expr =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

constexpr uint32_t k_out_of_range = 0xFFFFFFFF;

// Helpers over one piece [ini, end) of the code points, as the custom splitters see it.
struct piece_view {
  const std::vector<uint32_t>& cpts;
  size_t ini, end;
  uint32_t cpt(size_t pos) const { return pos >= ini && pos < end ? cpts[pos] : k_out_of_range; }
  cpt_flags flags(size_t pos) const {
    return pos >= ini && pos < end ? flags_of(cpts[pos]) : cpt_flags{};
  }
};

// Records word lengths ending at successive positions.
struct word_sink {
  std::vector<size_t>& out;
  size_t prev_end;
  size_t add(size_t end) {
    const size_t len = end - prev_end;
    if (len > 0) out.push_back(len);
    prev_end = end;
    return len;
  }
};

bool is_contraction(const piece_view& p, size_t pos, bool ignore_case, size_t& len) {
  if (p.cpt(pos) != '\'' || pos + 1 >= p.end) return false;
  auto lower = [&](uint32_t c) { return ignore_case && c >= 'A' && c <= 'Z' ? c + 32 : c; };
  const uint32_t n = lower(p.cpt(pos + 1));
  if (n == 's' || n == 't' || n == 'm' || n == 'd') {
    len = 2;
    return true;
  }
  if (pos + 2 >= p.end) return false;
  const uint32_t nn = lower(p.cpt(pos + 2));
  if ((n == 'r' && nn == 'e') || (n == 'v' && nn == 'e') || (n == 'l' && nn == 'l')) {
    len = 3;
    return true;
  }
  return false;
}

// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
std::vector<size_t> split_gpt2(const std::vector<uint32_t>& cpts,
                               const std::vector<size_t>& offsets) {
  std::vector<size_t> out;
  size_t start = 0;
  for (size_t offset : offsets) {
    const piece_view p{cpts, start, start + offset};
    start += offset;
    word_sink w{out, p.ini};
    for (size_t pos = p.ini; pos < p.end;) {
      const uint32_t c = p.cpt(pos);
      const cpt_flags f = p.flags(pos);
      size_t len;
      if (is_contraction(p, pos, false, len)) {
        pos += w.add(pos + len);
        continue;
      }
      cpt_flags f2 = c == ' ' ? p.flags(pos + 1) : f;
      if (f2.letter()) {
        pos += (c == ' ');
        while (f2.letter()) f2 = p.flags(++pos);
        w.add(pos);
        continue;
      }
      if (f2.number()) {
        pos += (c == ' ');
        while (f2.number()) f2 = p.flags(++pos);
        w.add(pos);
        continue;
      }
      if (!(f2.ws || f2.letter() || f2.number()) && f2.valid) {
        pos += (c == ' ');
        while (!(f2.ws || f2.letter() || f2.number()) && f2.valid) f2 = p.flags(++pos);
        w.add(pos);
        continue;
      }
      size_t n_ws = 0;
      while (p.flags(pos + n_ws).ws) ++n_ws;
      if (n_ws > 1 && p.cpt(pos + n_ws) != k_out_of_range) {  // \s+(?!\S)
        pos += n_ws - 1;
        w.add(pos);
        continue;
      }
      if (n_ws > 0) {
        pos += n_ws;
        w.add(pos);
        continue;
      }
      w.add(++pos);
    }
  }
  return out;
}

// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
// \s*[\r\n]+|\s+(?!\S)|\s+   (max_digits 3; Qwen2's has \p{N}, max_digits 1)
std::vector<size_t> split_llama3(const std::vector<uint32_t>& cpts,
                                 const std::vector<size_t>& offsets, size_t max_digits) {
  std::vector<size_t> out;
  size_t start = 0;
  for (size_t offset : offsets) {
    const piece_view p{cpts, start, start + offset};
    start += offset;
    word_sink w{out, p.ini};
    for (size_t pos = p.ini; pos < p.end;) {
      const uint32_t c = p.cpt(pos);
      const cpt_flags f = p.flags(pos);
      size_t len;
      if (is_contraction(p, pos, true, len)) {
        pos += w.add(pos + len);
        continue;
      }
      if (!(c == '\r' || c == '\n' || f.number())) {
        if (f.letter() || p.flags(pos + 1).letter()) {
          ++pos;
          while (p.flags(pos).letter()) ++pos;
          w.add(pos);
          continue;
        }
      }
      if (f.number()) {
        size_t ini = pos;
        while (p.flags(pos).number()) {
          if (++pos - ini >= max_digits) {
            w.add(pos);
            ini = pos;
          }
        }
        w.add(pos);
        continue;
      }
      cpt_flags f2 = c == ' ' ? p.flags(pos + 1) : f;
      // llama.cpp tests the current character's flags here, not f2's; kept for identical output.
      if (!(f2.ws || f2.letter() || f2.number()) && f.valid) {
        pos += (c == ' ');
        while (!(f2.ws || f2.letter() || f2.number()) && f2.valid) f2 = p.flags(++pos);
        for (uint32_t c2 = p.cpt(pos); c2 == '\r' || c2 == '\n';) c2 = p.cpt(++pos);
        w.add(pos);
        continue;
      }
      size_t n_ws = 0, last_rn = 0;
      while (p.flags(pos + n_ws).ws) {
        const uint32_t c2 = p.cpt(pos + n_ws);
        if (c2 == '\r' || c2 == '\n') last_rn = pos + n_ws + 1;
        ++n_ws;
      }
      if (last_rn > 0) {  // \s*[\r\n]+
        pos = last_rn;
        w.add(pos);
        continue;
      }
      if (n_ws > 1 && p.cpt(pos + n_ws) != k_out_of_range) {  // \s+(?!\S)
        pos += n_ws - 1;
        w.add(pos);
        continue;
      }
      if (n_ws > 0) {
        pos += n_ws;
        w.add(pos);
        continue;
      }
      w.add(++pos);
    }
  }
  return out;
}

// The expression forms DeepSeek's pre-tokenizers use, matched directly:
//   [set]   [set]+   \s?[set]+   \p{N}   \p{N}+   \s+$
// where set is literal characters and ranges. Membership is decided as std::wregex would see the
// code point in llama.cpp (non-ASCII whitespace turned into a vertical tab), and \s is Unicode
// White_Space, which is what that substitution amounts to.
struct class_expr {
  enum { one, run, ws_run, trailing_ws } kind = one;
  bool number = false;  // \p{N} instead of a set
  std::vector<std::pair<uint32_t, uint32_t>> ranges;

  bool contains(uint32_t c) const {
    if (number) return flags_of(c).number();
    if (c > 0x7F && is_whitespace(c)) c = 0x0B;
    for (const auto& [lo, hi] : ranges)
      if (c >= lo && c <= hi) return true;
    return false;
  }
};

// Recognizes the forms above; false for anything else.
bool parse_class_expr(const std::string& e, class_expr& out) {
  class_expr x;
  std::string_view rest = e;
  if (rest == "\\s+$") {
    x.kind = class_expr::trailing_ws;
    out = x;
    return true;
  }
  const bool ws = rest.substr(0, 3) == "\\s?";
  if (ws) rest.remove_prefix(3);
  if (rest.substr(0, 5) == "\\p{N}") {
    x.number = true;
    rest.remove_prefix(5);
  } else {
    if (rest.empty() || rest[0] != '[') return false;
    const size_t close = rest.find(']');
    if (close == std::string_view::npos) return false;
    const std::vector<uint32_t> c = cpts_from_utf8(rest.substr(1, close - 1));
    if (c.empty() || c[0] == '^') return false;
    for (uint32_t ch : c)
      if (ch == '\\' || ch == '[') return false;  // escapes, nested classes: not this form
    for (size_t i = 0; i < c.size();) {
      if (i + 2 < c.size() && c[i + 1] == '-') {
        if (c[i + 2] < c[i]) return false;
        x.ranges.push_back({c[i], c[i + 2]});
        i += 3;
      } else {
        if (c[i] == '-') return false;
        x.ranges.push_back({c[i], c[i]});
        i += 1;
      }
    }
    rest.remove_prefix(close + 1);
  }
  if (rest == "+") {
    x.kind = ws ? class_expr::ws_run : class_expr::run;
  } else if (rest.empty() && !ws) {
    x.kind = class_expr::one;
  } else {
    return false;
  }
  out = x;
  return true;
}

// Leftmost-first matching of x over each piece, as std::regex_iterator would do it.
std::vector<size_t> split_class(const std::vector<uint32_t>& cpts, const class_expr& x,
                                const std::vector<size_t>& offsets) {
  std::vector<size_t> out;
  size_t start = 0;
  for (size_t offset : offsets) {
    const size_t ini = start, end = start + offset;
    start = end;
    word_sink w{out, ini};
    auto in = [&](size_t i) { return i < end && x.contains(cpts[i]); };
    auto ws = [&](size_t i) { return i < end && is_whitespace(cpts[i]); };
    if (x.kind == class_expr::trailing_ws) {
      size_t i = end;
      while (i > ini && is_whitespace(cpts[i - 1])) --i;
      w.add(i);
      w.add(end);
      continue;
    }
    for (size_t i = ini; i < end;) {
      size_t m_end = i;  // end of a match starting at i, if > i
      if (x.kind == class_expr::one) {
        if (in(i)) m_end = i + 1;
      } else if (x.kind == class_expr::ws_run && ws(i) && in(i + 1)) {
        for (m_end = i + 1; in(m_end);) ++m_end;
      } else if (in(i)) {
        for (m_end = i; in(m_end);) ++m_end;
      }
      if (m_end == i) {
        ++i;
        continue;
      }
      w.add(i);  // the gap before the match, if any
      w.add(m_end);
      i = m_end;
    }
    w.add(end);
  }
  return out;
}

// Runs re over each piece; the matches and the gaps between them become the new pieces.
template <typename C>
std::vector<size_t> split_stl(const std::basic_string<C>& text, const std::basic_regex<C>& re,
                              const std::vector<size_t>& offsets) {
  std::vector<size_t> out;
  size_t start = 0;
  for (size_t offset : offsets) {
    std::regex_iterator<const C*> it(text.data() + start, text.data() + start + offset, re), end;
    int64_t done = 0;
    for (; it != end; ++it) {
      const auto& m = *it;
      if (m.position() > done) out.push_back(static_cast<size_t>(m.position() - done));
      out.push_back(static_cast<size_t>(m.length()));
      done = m.position() + m.length();
    }
    if (done < static_cast<int64_t>(offset)) out.push_back(offset - static_cast<size_t>(done));
    start += offset;
  }
  return out;
}

// The byte standing for a category in collapsed text, and the ASCII members of the category
// (ASCII stays itself there), exactly as llama.cpp's k_ucat_cpt / k_ucat_map.
struct collapsed_category {
  const char* name;
  uint8_t cat;
};
constexpr collapsed_category k_categories[] = {
    {"\\p{N}", cat_number},  {"\\p{L}", cat_letter},  {"\\p{P}", cat_punct},
    {"\\p{M}", cat_mark},    {"\\p{S}", cat_symbol},  {"\\p{Lu}", cat_letter},
    {"\\p{Ll}", cat_letter}, {"\\p{Lt}", cat_letter}, {"\\p{Lm}", cat_letter},
    {"\\p{Lo}", cat_letter},
};
char collapsed_byte(uint8_t cat) {
  switch (cat) {
    case cat_number: return static_cast<char>(0xD1);
    case cat_letter: return static_cast<char>(0xD2);
    case cat_punct: return static_cast<char>(0xD3);
    case cat_mark: return static_cast<char>(0xD4);
    case cat_symbol: return static_cast<char>(0xD5);
    default: return static_cast<char>(0xD0);
  }
}
const char* ascii_members(uint8_t cat) {
  switch (cat) {
    case cat_number: return "\x30-\x39";
    case cat_letter: return "\x41-\x5A\x61-\x7A";
    case cat_punct:
      return "\x21-\x23\x25-\x2A\x2C-\x2F\x3A-\x3B\x3F-\x40\\\x5B-\\\x5D\x5F\\\x7B\\\x7D";
    case cat_symbol: return "\\\x24\\\x2B\x3C-\x3E\x5E\x60\\\x7C";
    default: return "";
  }
}

bool uses_categories(const std::string& e) {
  for (const auto& c : k_categories)
    if (e.find(c.name) != std::string::npos) return true;
  return false;
}

// Rewrites \p{X} into the collapsed-byte class, tracking [...] so no class gets nested.
std::string collapse_expr(const std::string& e) {
  for (char c : e)
    if (static_cast<uint8_t>(c) >= 0x80)
      throw error(fmt::format("pre-tokenizer expression '{}' mixes Unicode categories with "
                              "non-ASCII characters, which the std::regex path cannot express",
                              e));
  std::string r;
  bool inside = false;
  for (size_t i = 0; i < e.size(); ++i) {
    if (e[i] == '[' && (i == 0 || e[i - 1] != '\\')) {
      r += '[';
      inside = true;
      continue;
    }
    if (inside && e[i] == ']' && e[i - 1] != '\\') {
      r += ']';
      inside = false;
      continue;
    }
    if (e[i] == '\\' && i + 3 < e.size() && e[i + 1] == 'p' && e[i + 2] == '{') {
      const size_t close = e.find('}', i + 3);
      if (close != std::string::npos && close <= i + 10) {
        const std::string pat = e.substr(i, close - i + 1);
        const collapsed_category* hit = nullptr;
        for (const auto& c : k_categories)
          if (pat == c.name) hit = &c;
        if (hit) {
          if (!inside) r += '[';
          r += collapsed_byte(hit->cat);
          r += ascii_members(hit->cat);
          if (!inside) r += ']';
          i = close;
          continue;
        }
      }
    }
    r += e[i];
  }
  return r;
}

class pre_tokenizer {
 public:
  pre_tokenizer(const std::vector<std::string>& exprs, bool use_custom) {
    constexpr auto flags = std::regex_constants::optimize | std::regex_constants::nosubs;
    for (const std::string& e : exprs) {
      step s;
      try {
        if (use_custom && e == k_gpt2_expr) {
          s.kind = step::gpt2;
        } else if (use_custom && (e == k_llama3_expr || e == k_llama3_expr_i)) {
          s.kind = step::llama3;
          s.max_digits = 3;
        } else if (use_custom && e == k_qwen2_expr) {
          s.kind = step::llama3;
          s.max_digits = 1;
        } else if (use_custom && parse_class_expr(e, s.cls)) {
          s.kind = step::classes;
        } else if (uses_categories(e)) {
          s.kind = step::collapsed;
          s.narrow_re = std::regex(collapse_expr(e), flags);
          need_collapsed_ = true;
        } else {
          s.kind = step::wide;
          const std::vector<uint32_t> c = cpts_from_utf8(e);
          s.wide_re = std::wregex(std::wstring(c.begin(), c.end()), flags);
          need_wide_ = true;
        }
      } catch (const std::regex_error& ex) {
        throw error(fmt::format("pre-tokenizer expression '{}' does not compile: {}", e,
                                ex.what()));
      }
      steps_.push_back(std::move(s));
    }
  }

  // Words of text as UTF-8 (malformed bytes already replaced), before byte encoding.
  std::vector<std::string> split(std::string_view text) const {
    const std::vector<uint32_t> cpts = cpts_from_utf8(text);
    std::string collapsed;
    if (need_collapsed_) {
      collapsed.resize(cpts.size());
      for (size_t i = 0; i < cpts.size(); ++i) {
        const uint32_t c = cpts[i];
        // std::regex's \s knows only ASCII whitespace; vertical tab stands in for the rest.
        collapsed[i] = c < 128 ? static_cast<char>(c)
                       : is_whitespace(c) ? '\x0B'
                                          : collapsed_byte(category_of(c));
      }
    }
    std::wstring wide;
    if (need_wide_) {
      wide.assign(cpts.begin(), cpts.end());
      for (auto& c : wide)
        if (c > 0x7F && is_whitespace(static_cast<uint32_t>(c))) c = 0x0B;
    }
    std::vector<size_t> offsets = {cpts.size()};
    for (const step& s : steps_) {
      switch (s.kind) {
        case step::gpt2: offsets = split_gpt2(cpts, offsets); break;
        case step::llama3: offsets = split_llama3(cpts, offsets, s.max_digits); break;
        case step::classes: offsets = split_class(cpts, s.cls, offsets); break;
        case step::collapsed: offsets = split_stl(collapsed, s.narrow_re, offsets); break;
        case step::wide: offsets = split_stl(wide, s.wide_re, offsets); break;
      }
    }
    std::vector<std::string> words;
    words.reserve(offsets.size());
    size_t start = 0;
    for (size_t len : offsets) {
      std::string& w = words.emplace_back();
      for (size_t i = start; i < start + len; ++i) append_utf8(w, cpts[i]);
      start += len;
    }
    return words;
  }

 private:
  struct step {
    enum { gpt2, llama3, classes, collapsed, wide } kind = gpt2;
    size_t max_digits = 3;
    class_expr cls;
    std::regex narrow_re;
    std::wregex wide_re;
  };
  std::vector<step> steps_;
  bool need_collapsed_ = false, need_wide_ = false;
};

// What llama.cpp does per tokenizer.ggml.pre value (llm_tokenizer_bpe and the vocab loader).
struct pre_spec {
  std::vector<std::string> exprs;
  bool ignore_merges = false;  // take a word whole when it is a token
  bool add_bos = false;        // default for tokenizer.ggml.add_bos_token
};

const std::vector<std::pair<std::vector<std::string>, pre_spec>>& pre_specs() {
  static const std::vector<std::pair<std::vector<std::string>, pre_spec>> specs = {
      {{"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0",
        "mellum", "modern-bert", "mpt", "olmo", "jais", "trillion", "granite-docling", "exaone4",
        "jina-v1-en", "jina-v2-code", "roberta-bpe"},
       {{k_gpt2_expr}}},
      {{"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b",
        "mellum2"},
       {{"\\p{N}", k_gpt2_expr}}},
      {{"deepseek-llm"},
       {{
           "[\r\n]",
           "\\s?[A-Za-z\u00B5\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u01BA\u01BC-\u01BF\u01C4-\u0293"
           "\u0295-\u02AF\u0370-\u0373\u0376\u0377\u037B-\u037D\u037F\u0386\u0388-\u038A\u038C"
           "\u038E-\u03A1\u03A3-\u03F5\u03F7-\u0481\u048A-\u052F\u0531-\u0556\u10A0-\u10C5"
           "\u13A0-\u13F5\u13F8-\u13FD\u1C90-\u1CBA\u1CBD-\u1CBF\u1D00-\u1D2B\u1D6B-\u1D77"
           "\u1D79-\u1D9A\u1E00-\u1F15\u1F18-\u1F1D\u1F20-\u1F45\u1F48-\u1F4D\u1F50-\u1F57\u1F59"
           "\u1F5B\u1F5D\u1F5F-\u1F7D\u1F80-\u1FB4\u1FB6-\u1FBC\u1FBE\u1FC2-\u1FC4\u1FC6-\u1FCC"
           "\u1FD0-\u1FD3\u1FD6-\u1FDB\u1FE0-\u1FEC\u1FF2-\u1FF4\u1FF6-\u1FFC\u2102\u2107"
           "\u210A-\u2113\u2115\u2119-\u211D\u2124\u2126\u2128\u212A-\u212D\u212F-\u2134\u2139"
           "\u213C-\u213F\u2145-\u2149\u214E\u2183\u2184\u2C00-\u2C7B\u2C7E-\u2CE4\u2CEB-\u2CEE"
           "\u2CF2\u2CF3\uA640-\uA66D\uA680-\uA69B\uA722-\uA76F\uA771-\uA787\uA78B-\uA78E"
           "\uAB70-\uABBF\uFB00-\uFB06\uFB13-\uFB17\uFF21-\uFF3A\uFF41-\uFF5A"
           "\U00010400-\U0001044F\U000104B0-\U000104D3\U000104D8-\U000104FB"
           "\U00010C80-\U00010CB2\U00010CC0-\U00010CF2\U000118A0-\U000118DF"
           "\U0001E900-\U0001E943]+",
           "\\s?[!-/:-~\uFF01-\uFF0F\uFF1A-\uFF5E\u2018-\u201F\u3000-\u3002]+",
           "\\s+$",
           "[\u4E00-\u9FA5\u0800-\u4E00\uAC00-\uD7FF]+",
           "\\p{N}+",
       }}},
      {{"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"},
       {{k_llama3_expr}, true, true}},
      {{"qwen2", "deepseek-r1-qwen", "megrez", "stablelm2"}, {{k_qwen2_expr}}},
  };
  return specs;
}

const pre_spec* find_pre(const std::string& pre) {
  for (const auto& [names, spec] : pre_specs())
    if (std::find(names.begin(), names.end(), pre) != names.end()) return &spec;
  return nullptr;
}

// ---- the tokenizer ---------------------------------------------------------------------------

class bpe_tokenizer final : public detail::vocab_tokenizer {
 public:
  bpe_tokenizer(vocab_data v, const gguf_value& merges, const pre_spec& spec)
      : vocab_tokenizer(std::move(v)), pre_(spec.exprs, true), ignore_merges_(spec.ignore_merges) {
    ranks_.reserve(merges.arr.size());
    for (size_t i = 0; i < merges.arr.size(); ++i) {
      const std::string& m = merges.arr[i].str;
      const size_t sp = m.find(' ', 1);  // position 0 may be a space belonging to the left part
      if (sp == std::string::npos) continue;  // cannot match any pair
      ranks_.emplace(m, rank{static_cast<int32_t>(i), static_cast<uint32_t>(sp)});
    }
  }

  std::vector<int32_t> encode(std::string_view text, bool add_bos,
                              bool parse_special) const override {
    std::vector<int32_t> out;
    if (add_bos && v_.bos >= 0) out.push_back(v_.bos);
    for (const detail::fragment& fr : detail::split_special(v_, text, parse_special)) {
      if (fr.token >= 0) {
        out.push_back(fr.token);
        continue;
      }
      const byte_map& bm = bytes_map();
      for (const std::string& word : pre_.split(fr.text)) {
        std::string enc;
        for (char c : word) enc += bm.enc[static_cast<uint8_t>(c)];
        merge_word(enc, out);
      }
    }
    return out;
  }

 protected:
  // Token text is in stand-in characters; map each back to its byte.
  std::string normal_piece(const std::string& text) const override {
    const byte_map& bm = bytes_map();
    std::string r;
    for (uint32_t c : cpts_from_utf8(text)) {
      if (c < 512 && bm.dec[c] >= 0) {
        r += static_cast<char>(bm.dec[c]);
        continue;
      }
      // Not a stand-in: llama.cpp's marker, so a broken vocabulary shows instead of vanishing.
      std::string u;
      append_utf8(u, c);
      r += "[UNK_BYTE_0x";
      for (char b : u) r += fmt::format("{:02x}", static_cast<uint8_t>(b));
      r += text + "]";
    }
    return r;
  }

 private:
  struct rank {
    int32_t id;
    uint32_t split;  // length of the left part
  };
  struct symbol {
    int prev, next;
    size_t off, n;
  };
  struct bigram {
    int left, right;
    int32_t rank;
    std::string text;
  };
  // Lowest rank first; on ties the leftmost pair.
  struct bigram_greater {
    bool operator()(const bigram& l, const bigram& r) const {
      return l.rank > r.rank || (l.rank == r.rank && l.left > r.left);
    }
  };
  using queue = std::priority_queue<bigram, std::vector<bigram>, bigram_greater>;

  int32_t find_rank(std::string_view left, std::string_view right) const {
    std::string key;
    key.reserve(left.size() + 1 + right.size());
    key.append(left).append(1, ' ').append(right);
    auto it = ranks_.find(key);
    return it != ranks_.end() && it->second.split == left.size() ? it->second.id : -1;
  }

  void try_add(const std::string& w, const std::vector<symbol>& syms, int left, int right,
               queue& q) const {
    if (left < 0 || right < 0) return;
    const std::string_view l = std::string_view(w).substr(syms[left].off, syms[left].n);
    const std::string_view r = std::string_view(w).substr(syms[right].off, syms[right].n);
    const int32_t rk = find_rank(l, r);
    if (rk < 0) return;
    q.push({left, right, rk, std::string(l).append(r)});
  }

  void merge_word(const std::string& w, std::vector<int32_t>& out) const {
    std::vector<symbol> syms;
    if (ignore_merges_ && v_.find(w) >= 0) {
      syms.push_back({-1, -1, 0, w.size()});
    } else {
      for (size_t off = 0; off < w.size();) {
        const size_t n = std::min(utf8_len(w[off]), w.size() - off);
        const int idx = static_cast<int>(syms.size());
        syms.push_back({idx - 1, off + n == w.size() ? -1 : idx + 1, off, n});
        off += n;
      }
    }
    queue q;
    for (int i = 1; i < static_cast<int>(syms.size()); ++i) try_add(w, syms, i - 1, i, q);
    while (!q.empty()) {
      const bigram b = q.top();
      q.pop();
      symbol& l = syms[b.left];
      symbol& r = syms[b.right];
      if (l.n == 0 || r.n == 0) continue;
      // Stale: one side changed since this pair was queued.
      if (l.n + r.n != b.text.size() || w.compare(l.off, l.n + r.n, b.text) != 0 ||
          r.off != l.off + l.n)
        continue;
      l.n += r.n;
      r.n = 0;
      l.next = r.next;
      if (r.next >= 0) syms[r.next].prev = b.left;
      try_add(w, syms, l.prev, b.left, q);
      try_add(w, syms, b.left, l.next, q);
    }
    for (const symbol& s : syms) {
      if (s.n == 0) continue;
      const std::string_view text = std::string_view(w).substr(s.off, s.n);
      const int32_t id = v_.find(text);
      if (id >= 0) {
        out.push_back(id);
        continue;
      }
      // No token for the merged text: llama.cpp tries each byte as a one-byte token and drops
      // the ones that are not.
      for (char c : text) {
        const int32_t bid = v_.find(std::string_view(&c, 1));
        if (bid >= 0) out.push_back(bid);
      }
    }
  }

  pre_tokenizer pre_;
  bool ignore_merges_;
  std::unordered_map<std::string, rank, detail::string_hash, std::equal_to<>> ranks_;
};

}  // namespace

namespace detail {

std::unique_ptr<tokenizer> make_bpe_tokenizer(const gguf_file& f, vocab_data v) {
  const gguf_value* pre_v = f.find("tokenizer.ggml.pre");
  const std::string pre = pre_v && pre_v->type == gguf_type::string ? pre_v->str : "";
  const pre_spec* spec = find_pre(pre);
  if (!spec) {
    std::string known;
    for (const auto& [names, s] : pre_specs()) known += (known.empty() ? "" : ", ") + names[0];
    throw error(fmt::format(
        "{}: tokenizer.ggml.pre '{}' is not a pre-tokenizer Tandem knows (it reads {} and their "
        "aliases); {}",
        f.path(), pre, known,
        pre.empty() ? "convert the model again with a recent llama.cpp convert_hf_to_gguf.py, "
                      "which records it"
                    : "this byte-level BPE vocabulary is not supported yet"));
  }
  const gguf_value* merges = f.find("tokenizer.ggml.merges");
  if (!merges || merges->type != gguf_type::array ||
      (!merges->arr.empty() && merges->elem_type != gguf_type::string))
    throw error(fmt::format("{}: metadata 'tokenizer.ggml.merges' is {}; a 'gpt2' vocabulary "
                            "needs its merge list, convert the model again",
                            f.path(), merges ? "not an array of strings" : "missing"));
  if (!f.find("tokenizer.ggml.add_bos_token")) v.add_bos = spec->add_bos;
  return std::make_unique<bpe_tokenizer>(std::move(v), *merges, *spec);
}

std::vector<std::string> pre_tokenize(std::string_view text, const std::vector<std::string>& exprs,
                                      bool use_custom) {
  return pre_tokenizer(exprs, use_custom).split(text);
}

std::vector<std::string> pre_tokenizer_exprs(const std::string& pre) {
  const pre_spec* s = find_pre(pre);
  return s ? s->exprs : std::vector<std::string>{};
}

}  // namespace detail

// ---- category table --------------------------------------------------------------------------

namespace {

// (first code point << 3) | category, for each run of code points with the same general
// category class, ascending. Generated with Python 3.13's unicodedata (Unicode 15.1):
//   cls = lambda c: 0 if (k := unicodedata.category(chr(c))) == 'Cn' else 'NLZMPSC'.index(k[0]) + 1
//   emit (c << 3) | cls(c) for each c in range(0x110000) where cls(c) != cls(c - 1)
constexpr uint32_t k_category_runs[] = {
    0x7, 0x103, 0x10d, 0x126, 0x12d, 0x15e, 0x165, 0x181, 0x1d5, 0x1e6, 0x1fd, 0x20a, 0x2dd, 0x2f6,
    0x2fd, 0x306, 0x30a, 0x3dd, 0x3e6, 0x3ed, 0x3f6, 0x3ff, 0x503, 0x50d, 0x516, 0x53d, 0x546,
    0x552, 0x55d, 0x566, 0x56f, 0x576, 0x591, 0x5a6, 0x5aa, 0x5b5, 0x5c6, 0x5c9, 0x5d2, 0x5dd,
    0x5e1, 0x5fd, 0x602, 0x6be, 0x6c2, 0x7be, 0x7c2, 0x1616, 0x1632, 0x1696, 0x1702, 0x172e, 0x1762,
    0x176e, 0x1772, 0x177e, 0x1804, 0x1b82, 0x1bae, 0x1bb2, 0x1bc0, 0x1bd2, 0x1bf5, 0x1bfa, 0x1c00,
    0x1c26, 0x1c32, 0x1c3d, 0x1c42, 0x1c58, 0x1c62, 0x1c68, 0x1c72, 0x1d10, 0x1d1a, 0x1fb6, 0x1fba,
    0x2416, 0x241c, 0x2452, 0x2980, 0x298a, 0x2ab8, 0x2aca, 0x2ad5, 0x2b02, 0x2c4d, 0x2c58, 0x2c6e,
    0x2c80, 0x2c8c, 0x2df5, 0x2dfc, 0x2e05, 0x2e0c, 0x2e1d, 0x2e24, 0x2e35, 0x2e3c, 0x2e40, 0x2e82,
    0x2f58, 0x2f7a, 0x2f9d, 0x2fa8, 0x3007, 0x3036, 0x304d, 0x305e, 0x3065, 0x3076, 0x3084, 0x30dd,
    0x30e7, 0x30ed, 0x3102, 0x325c, 0x3301, 0x3355, 0x3372, 0x3384, 0x338a, 0x36a5, 0x36aa, 0x36b4,
    0x36ef, 0x36f6, 0x36fc, 0x372a, 0x373c, 0x374e, 0x3754, 0x3772, 0x3781, 0x37d2, 0x37ee, 0x37fa,
    0x3805, 0x3870, 0x387f, 0x3882, 0x388c, 0x3892, 0x3984, 0x3a58, 0x3a6a, 0x3d34, 0x3d8a, 0x3d90,
    0x3e01, 0x3e52, 0x3f5c, 0x3fa2, 0x3fb6, 0x3fbd, 0x3fd2, 0x3fd8, 0x3fec, 0x3ff6, 0x4002, 0x40b4,
    0x40d2, 0x40dc, 0x4122, 0x412c, 0x4142, 0x414c, 0x4170, 0x4185, 0x41f8, 0x4202, 0x42cc, 0x42e0,
    0x42f5, 0x42f8, 0x4302, 0x4358, 0x4382, 0x4446, 0x444a, 0x4478, 0x4487, 0x4490, 0x44c4, 0x4502,
    0x4654, 0x4717, 0x471c, 0x4822, 0x49d4, 0x49ea, 0x49f4, 0x4a82, 0x4a8c, 0x4ac2, 0x4b14, 0x4b25,
    0x4b31, 0x4b85, 0x4b8a, 0x4c0c, 0x4c20, 0x4c2a, 0x4c68, 0x4c7a, 0x4c88, 0x4c9a, 0x4d48, 0x4d52,
    0x4d88, 0x4d92, 0x4d98, 0x4db2, 0x4dd0, 0x4de4, 0x4dea, 0x4df4, 0x4e28, 0x4e3c, 0x4e48, 0x4e5c,
    0x4e72, 0x4e78, 0x4ebc, 0x4ec0, 0x4ee2, 0x4ef0, 0x4efa, 0x4f14, 0x4f20, 0x4f31, 0x4f82, 0x4f96,
    0x4fa1, 0x4fd6, 0x4fe2, 0x4fed, 0x4ff4, 0x4ff8, 0x500c, 0x5020, 0x502a, 0x5058, 0x507a, 0x5088,
    0x509a, 0x5148, 0x5152, 0x5188, 0x5192, 0x51a0, 0x51aa, 0x51b8, 0x51c2, 0x51d0, 0x51e4, 0x51e8,
    0x51f4, 0x5218, 0x523c, 0x5248, 0x525c, 0x5270, 0x528c, 0x5290, 0x52ca, 0x52e8, 0x52f2, 0x52f8,
    0x5331, 0x5384, 0x5392, 0x53ac, 0x53b5, 0x53b8, 0x540c, 0x5420, 0x542a, 0x5470, 0x547a, 0x5490,
    0x549a, 0x5548, 0x5552, 0x5588, 0x5592, 0x55a0, 0x55aa, 0x55d0, 0x55e4, 0x55ea, 0x55f4, 0x5630,
    0x563c, 0x5650, 0x565c, 0x5670, 0x5682, 0x5688, 0x5702, 0x5714, 0x5720, 0x5731, 0x5785, 0x578e,
    0x5790, 0x57ca, 0x57d4, 0x5800, 0x580c, 0x5820, 0x582a, 0x5868, 0x587a, 0x5888, 0x589a, 0x5948,
    0x5952, 0x5988, 0x5992, 0x59a0, 0x59aa, 0x59d0, 0x59e4, 0x59ea, 0x59f4, 0x5a28, 0x5a3c, 0x5a48,
    0x5a5c, 0x5a70, 0x5aac, 0x5ac0, 0x5ae2, 0x5af0, 0x5afa, 0x5b14, 0x5b20, 0x5b31, 0x5b86, 0x5b8a,
    0x5b91, 0x5bc0, 0x5c14, 0x5c1a, 0x5c20, 0x5c2a, 0x5c58, 0x5c72, 0x5c88, 0x5c92, 0x5cb0, 0x5cca,
    0x5cd8, 0x5ce2, 0x5ce8, 0x5cf2, 0x5d00, 0x5d1a, 0x5d28, 0x5d42, 0x5d58, 0x5d72, 0x5dd0, 0x5df4,
    0x5e18, 0x5e34, 0x5e48, 0x5e54, 0x5e70, 0x5e82, 0x5e88, 0x5ebc, 0x5ec0, 0x5f31, 0x5f9e, 0x5fd8,
    0x6004, 0x602a, 0x6068, 0x6072, 0x6088, 0x6092, 0x6148, 0x6152, 0x61d0, 0x61e4, 0x61ea, 0x61f4,
    0x6228, 0x6234, 0x6248, 0x6254, 0x6270, 0x62ac, 0x62b8, 0x62c2, 0x62d8, 0x62ea, 0x62f0, 0x6302,
    0x6314, 0x6320, 0x6331, 0x6380, 0x63bd, 0x63c1, 0x63fe, 0x6402, 0x640c, 0x6425, 0x642a, 0x6468,
    0x6472, 0x6488, 0x6492, 0x6548, 0x6552, 0x65a0, 0x65aa, 0x65d0, 0x65e4, 0x65ea, 0x65f4, 0x6628,
    0x6634, 0x6648, 0x6654, 0x6670, 0x66ac, 0x66b8, 0x66ea, 0x66f8, 0x6702, 0x6714, 0x6720, 0x6731,
    0x6780, 0x678a, 0x679c, 0x67a0, 0x6804, 0x6822, 0x6868, 0x6872, 0x6888, 0x6892, 0x69dc, 0x69ea,
    0x69f4, 0x6a28, 0x6a34, 0x6a48, 0x6a54, 0x6a72, 0x6a7e, 0x6a80, 0x6aa2, 0x6abc, 0x6ac1, 0x6afa,
    0x6b14, 0x6b20, 0x6b31, 0x6bce, 0x6bd2, 0x6c00, 0x6c0c, 0x6c20, 0x6c2a, 0x6cb8, 0x6cd2, 0x6d90,
    0x6d9a, 0x6de0, 0x6dea, 0x6df0, 0x6e02, 0x6e38, 0x6e54, 0x6e58, 0x6e7c, 0x6ea8, 0x6eb4, 0x6eb8,
    0x6ec4, 0x6f00, 0x6f31, 0x6f80, 0x6f94, 0x6fa5, 0x6fa8, 0x700a, 0x718c, 0x7192, 0x71a4, 0x71d8,
    0x71fe, 0x7202, 0x723c, 0x727d, 0x7281, 0x72d5, 0x72e0, 0x740a, 0x7418, 0x7422, 0x7428, 0x7432,
    0x7458, 0x7462, 0x7520, 0x752a, 0x7530, 0x753a, 0x758c, 0x7592, 0x75a4, 0x75ea, 0x75f0, 0x7602,
    0x7628, 0x7632, 0x7638, 0x7644, 0x7678, 0x7681, 0x76d0, 0x76e2, 0x7700, 0x7802, 0x780e, 0x7825,
    0x789e, 0x78a5, 0x78ae, 0x78c4, 0x78d6, 0x7901, 0x79a6, 0x79ac, 0x79b6, 0x79bc, 0x79c6, 0x79cc,
    0x79d5, 0x79f4, 0x7a02, 0x7a40, 0x7a4a, 0x7b68, 0x7b8c, 0x7c2d, 0x7c34, 0x7c42, 0x7c6c, 0x7cc0,
    0x7ccc, 0x7de8, 0x7df6, 0x7e34, 0x7e3e, 0x7e68, 0x7e76, 0x7e85, 0x7eae, 0x7ecd, 0x7ed8, 0x8002,
    0x815c, 0x81fa, 0x8201, 0x8255, 0x8282, 0x82b4, 0x82d2, 0x82f4, 0x830a, 0x8314, 0x832a, 0x833c,
    0x8372, 0x838c, 0x83aa, 0x8414, 0x8472, 0x847c, 0x8481, 0x84d4, 0x84f6, 0x8502, 0x8630, 0x863a,
    0x8640, 0x866a, 0x8670, 0x8682, 0x87dd, 0x87e2, 0x9248, 0x9252, 0x9270, 0x9282, 0x92b8, 0x92c2,
    0x92c8, 0x92d2, 0x92f0, 0x9302, 0x9448, 0x9452, 0x9470, 0x9482, 0x9588, 0x9592, 0x95b0, 0x95c2,
    0x95f8, 0x9602, 0x9608, 0x9612, 0x9630, 0x9642, 0x96b8, 0x96c2, 0x9888, 0x9892, 0x98b0, 0x98c2,
    0x9ad8, 0x9aec, 0x9b05, 0x9b49, 0x9be8, 0x9c02, 0x9c86, 0x9cd0, 0x9d02, 0x9fb0, 0x9fc2, 0x9ff0,
    0xa005, 0xa00a, 0xb36e, 0xb375, 0xb37a, 0xb403, 0xb40a, 0xb4dd, 0xb4e8, 0xb502, 0xb75d, 0xb771,
    0xb78a, 0xb7c8, 0xb802, 0xb894, 0xb8b0, 0xb8fa, 0xb994, 0xb9ad, 0xb9b8, 0xba02, 0xba94, 0xbaa0,
    0xbb02, 0xbb68, 0xbb72, 0xbb88, 0xbb94, 0xbba0, 0xbc02, 0xbda4, 0xbea5, 0xbeba, 0xbec5, 0xbede,
    0xbee2, 0xbeec, 0xbef0, 0xbf01, 0xbf50, 0xbf81, 0xbfd0, 0xc005, 0xc05c, 0xc077, 0xc07c, 0xc081,
    0xc0d0, 0xc102, 0xc3c8, 0xc402, 0xc42c, 0xc43a, 0xc54c, 0xc552, 0xc558, 0xc582, 0xc7b0, 0xc802,
    0xc8f8, 0xc904, 0xc960, 0xc984, 0xc9e0, 0xca06, 0xca08, 0xca25, 0xca31, 0xca82, 0xcb70, 0xcb82,
    0xcba8, 0xcc02, 0xcd60, 0xcd82, 0xce50, 0xce81, 0xced8, 0xcef6, 0xd002, 0xd0bc, 0xd0e0, 0xd0f5,
    0xd102, 0xd2ac, 0xd2f8, 0xd304, 0xd3e8, 0xd3fc, 0xd401, 0xd450, 0xd481, 0xd4d0, 0xd505, 0xd53a,
    0xd545, 0xd570, 0xd584, 0xd678, 0xd804, 0xd82a, 0xd9a4, 0xda2a, 0xda68, 0xda81, 0xdad5, 0xdb0e,
    0xdb5c, 0xdba6, 0xdbed, 0xdbf8, 0xdc04, 0xdc1a, 0xdd0c, 0xdd72, 0xdd81, 0xddd2, 0xdf34, 0xdfa0,
    0xdfe5, 0xe002, 0xe124, 0xe1c0, 0xe1dd, 0xe201, 0xe250, 0xe26a, 0xe281, 0xe2d2, 0xe3f5, 0xe402,
    0xe448, 0xe482, 0xe5d8, 0xe5ea, 0xe605, 0xe640, 0xe684, 0xe69d, 0xe6a4, 0xe74a, 0xe76c, 0xe772,
    0xe7a4, 0xe7aa, 0xe7bc, 0xe7d2, 0xe7d8, 0xe802, 0xee04, 0xf002, 0xf8b0, 0xf8c2, 0xf8f0, 0xf902,
    0xfa30, 0xfa42, 0xfa70, 0xfa82, 0xfac0, 0xfaca, 0xfad0, 0xfada, 0xfae0, 0xfaea, 0xfaf0, 0xfafa,
    0xfbf0, 0xfc02, 0xfda8, 0xfdb2, 0xfdee, 0xfdf2, 0xfdfe, 0xfe12, 0xfe28, 0xfe32, 0xfe6e, 0xfe82,
    0xfea0, 0xfeb2, 0xfee0, 0xfeee, 0xff02, 0xff6e, 0xff80, 0xff92, 0xffa8, 0xffb2, 0xffee, 0xfff8,
    0x10003, 0x1005f, 0x10085, 0x10143, 0x10157, 0x1017b, 0x10185, 0x10226, 0x1022d, 0x10296,
    0x1029d, 0x102fb, 0x10307, 0x10328, 0x10337, 0x10381, 0x1038a, 0x10390, 0x103a1, 0x103d6,
    0x103ed, 0x103fa, 0x10401, 0x10456, 0x1046d, 0x10478, 0x10482, 0x104e8, 0x10506, 0x10608,
    0x10684, 0x10788, 0x10806, 0x10812, 0x1081e, 0x1083a, 0x10846, 0x10852, 0x108a6, 0x108aa,
    0x108b6, 0x108ca, 0x108f6, 0x10922, 0x1092e, 0x10932, 0x1093e, 0x10942, 0x1094e, 0x10952,
    0x10976, 0x1097a, 0x109d6, 0x109e2, 0x10a06, 0x10a2a, 0x10a56, 0x10a72, 0x10a7e, 0x10a81,
    0x10c1a, 0x10c29, 0x10c56, 0x10c60, 0x10c86, 0x11845, 0x11866, 0x1194d, 0x1195e, 0x12138,
    0x12206, 0x12258, 0x12301, 0x124e6, 0x12751, 0x12806, 0x13b45, 0x13bb1, 0x13ca6, 0x13e2d,
    0x13e3e, 0x13f35, 0x13f86, 0x14c1d, 0x14cce, 0x14ec5, 0x14ee6, 0x14fe5, 0x14ff6, 0x15ba0,
    0x15bb6, 0x15cb0, 0x15cbe, 0x16002, 0x1672e, 0x1675a, 0x1677c, 0x16792, 0x167a0, 0x167cd,
    0x167e9, 0x167f5, 0x16802, 0x16930, 0x1693a, 0x16940, 0x1696a, 0x16970, 0x16982, 0x16b40,
    0x16b7a, 0x16b85, 0x16b88, 0x16bfc, 0x16c02, 0x16cb8, 0x16d02, 0x16d38, 0x16d42, 0x16d78,
    0x16d82, 0x16db8, 0x16dc2, 0x16df8, 0x16e02, 0x16e38, 0x16e42, 0x16e78, 0x16e82, 0x16eb8,
    0x16ec2, 0x16ef8, 0x16f04, 0x17005, 0x1717a, 0x17185, 0x17286, 0x17295, 0x172f0, 0x17406,
    0x174d0, 0x174de, 0x177a0, 0x17806, 0x17eb0, 0x17f86, 0x18003, 0x1800d, 0x18026, 0x1802a,
    0x18039, 0x18045, 0x18096, 0x180a5, 0x18106, 0x18109, 0x18154, 0x18185, 0x1818a, 0x181b6,
    0x181c1, 0x181da, 0x181ed, 0x181f6, 0x18200, 0x1820a, 0x184b8, 0x184cc, 0x184de, 0x184ea,
    0x18505, 0x1850a, 0x187dd, 0x187e2, 0x18800, 0x1882a, 0x18980, 0x1898a, 0x18c78, 0x18c86,
    0x18c91, 0x18cb6, 0x18d02, 0x18e06, 0x18f20, 0x18f7e, 0x18f82, 0x19006, 0x190f8, 0x19101,
    0x19156, 0x19241, 0x19286, 0x19289, 0x19306, 0x19401, 0x19456, 0x19589, 0x19606, 0x1a002,
    0x26e06, 0x27002, 0x52468, 0x52486, 0x52638, 0x52682, 0x527f5, 0x52802, 0x5306d, 0x53082,
    0x53101, 0x53152, 0x53160, 0x53202, 0x5337c, 0x5339d, 0x533a4, 0x533f5, 0x533fa, 0x534f4,
    0x53502, 0x53731, 0x53784, 0x53795, 0x537c0, 0x53806, 0x538ba, 0x53906, 0x53912, 0x53c4e,
    0x53c5a, 0x53e58, 0x53e82, 0x53e90, 0x53e9a, 0x53ea0, 0x53eaa, 0x53ed0, 0x53f92, 0x54014,
    0x5401a, 0x54034, 0x5403a, 0x5405c, 0x54062, 0x5411c, 0x54146, 0x54164, 0x54168, 0x54181,
    0x541b6, 0x541d0, 0x54202, 0x543a5, 0x543c0, 0x54404, 0x54412, 0x545a4, 0x54630, 0x54675,
    0x54681, 0x546d0, 0x54704, 0x54792, 0x547c5, 0x547da, 0x547e5, 0x547ea, 0x547fc, 0x54801,
    0x54852, 0x54934, 0x54975, 0x54982, 0x54a3c, 0x54aa0, 0x54afd, 0x54b02, 0x54be8, 0x54c04,
    0x54c22, 0x54d9c, 0x54e0d, 0x54e70, 0x54e7a, 0x54e81, 0x54ed0, 0x54ef5, 0x54f02, 0x54f2c,
    0x54f32, 0x54f81, 0x54fd2, 0x54ff8, 0x55002, 0x5514c, 0x551b8, 0x55202, 0x5521c, 0x55222,
    0x55264, 0x55270, 0x55281, 0x552d0, 0x552e5, 0x55302, 0x553be, 0x553d2, 0x553dc, 0x553f2,
    0x55584, 0x5558a, 0x55594, 0x555aa, 0x555bc, 0x555ca, 0x555f4, 0x55602, 0x5560c, 0x55612,
    0x55618, 0x556da, 0x556f5, 0x55702, 0x5575c, 0x55785, 0x55792, 0x557ac, 0x557b8, 0x5580a,
    0x55838, 0x5584a, 0x55878, 0x5588a, 0x558b8, 0x55902, 0x55938, 0x55942, 0x55978, 0x55982,
    0x55ade, 0x55ae2, 0x55b56, 0x55b60, 0x55b82, 0x55f1c, 0x55f5d, 0x55f64, 0x55f70, 0x55f81,
    0x55fd0, 0x56002, 0x6bd20, 0x6bd82, 0x6be38, 0x6be5a, 0x6bfe0, 0x6c007, 0x7c802, 0x7d370,
    0x7d382, 0x7d6d0, 0x7d802, 0x7d838, 0x7d89a, 0x7d8c0, 0x7d8ea, 0x7d8f4, 0x7d8fa, 0x7d94e,
    0x7d952, 0x7d9b8, 0x7d9c2, 0x7d9e8, 0x7d9f2, 0x7d9f8, 0x7da02, 0x7da10, 0x7da1a, 0x7da28,
    0x7da32, 0x7dd96, 0x7de18, 0x7de9a, 0x7e9f5, 0x7ea06, 0x7ea82, 0x7ec80, 0x7ec92, 0x7ee40,
    0x7ee7e, 0x7ee80, 0x7ef82, 0x7efe6, 0x7f004, 0x7f085, 0x7f0d0, 0x7f104, 0x7f185, 0x7f298,
    0x7f2a5, 0x7f316, 0x7f31d, 0x7f326, 0x7f338, 0x7f345, 0x7f34e, 0x7f355, 0x7f360, 0x7f382,
    0x7f3a8, 0x7f3b2, 0x7f7e8, 0x7f7ff, 0x7f800, 0x7f80d, 0x7f826, 0x7f82d, 0x7f85e, 0x7f865,
    0x7f881, 0x7f8d5, 0x7f8e6, 0x7f8fd, 0x7f90a, 0x7f9dd, 0x7f9f6, 0x7f9fd, 0x7fa06, 0x7fa0a,
    0x7fadd, 0x7fae6, 0x7faed, 0x7faf6, 0x7fafd, 0x7fb32, 0x7fdf8, 0x7fe12, 0x7fe40, 0x7fe52,
    0x7fe80, 0x7fe92, 0x7fec0, 0x7fed2, 0x7fee8, 0x7ff06, 0x7ff38, 0x7ff46, 0x7ff78, 0x7ffcf,
    0x7ffe6, 0x7fff0, 0x80002, 0x80060, 0x8006a, 0x80138, 0x80142, 0x801d8, 0x801e2, 0x801f0,
    0x801fa, 0x80270, 0x80282, 0x802f0, 0x80402, 0x807d8, 0x80805, 0x80818, 0x80839, 0x809a0,
    0x809be, 0x80a01, 0x80bce, 0x80c51, 0x80c66, 0x80c78, 0x80c86, 0x80ce8, 0x80d06, 0x80d08,
    0x80e86, 0x80fec, 0x80ff0, 0x81402, 0x814e8, 0x81502, 0x81688, 0x81704, 0x81709, 0x817e0,
    0x81802, 0x81901, 0x81920, 0x8196a, 0x81a09, 0x81a12, 0x81a51, 0x81a58, 0x81a82, 0x81bb4,
    0x81bd8, 0x81c02, 0x81cf0, 0x81cfd, 0x81d02, 0x81e20, 0x81e42, 0x81e85, 0x81e89, 0x81eb0,
    0x82002, 0x824f0, 0x82501, 0x82550, 0x82582, 0x826a0, 0x826c2, 0x827e0, 0x82802, 0x82940,
    0x82982, 0x82b20, 0x82b7d, 0x82b82, 0x82bd8, 0x82be2, 0x82c58, 0x82c62, 0x82c98, 0x82ca2,
    0x82cb0, 0x82cba, 0x82d10, 0x82d1a, 0x82d90, 0x82d9a, 0x82dd0, 0x82dda, 0x82de8, 0x83002,
    0x839b8, 0x83a02, 0x83ab0, 0x83b02, 0x83b40, 0x83c02, 0x83c30, 0x83c3a, 0x83d88, 0x83d92,
    0x83dd8, 0x84002, 0x84030, 0x84042, 0x84048, 0x84052, 0x841b0, 0x841ba, 0x841c8, 0x841e2,
    0x841e8, 0x841fa, 0x842b0, 0x842bd, 0x842c1, 0x84302, 0x843be, 0x843c9, 0x84402, 0x844f8,
    0x84539, 0x84580, 0x84702, 0x84798, 0x847a2, 0x847b0, 0x847d9, 0x84802, 0x848b1, 0x848e0,
    0x848fd, 0x84902, 0x849d0, 0x849fd, 0x84a00, 0x84c02, 0x84dc0, 0x84de1, 0x84df2, 0x84e01,
    0x84e80, 0x84e91, 0x85002, 0x8500c, 0x85020, 0x8502c, 0x85038, 0x85064, 0x85082, 0x850a0,
    0x850aa, 0x850c0, 0x850ca, 0x851b0, 0x851c4, 0x851d8, 0x851fc, 0x85201, 0x85248, 0x85285,
    0x852c8, 0x85302, 0x853e9, 0x853fd, 0x85402, 0x854e9, 0x85500, 0x85602, 0x85646, 0x8564a,
    0x8572c, 0x85738, 0x85759, 0x85785, 0x857b8, 0x85802, 0x859b0, 0x859cd, 0x85a02, 0x85ab0,
    0x85ac1, 0x85b02, 0x85b98, 0x85bc1, 0x85c02, 0x85c90, 0x85ccd, 0x85ce8, 0x85d49, 0x85d80,
    0x86002, 0x86248, 0x86402, 0x86598, 0x86602, 0x86798, 0x867d1, 0x86802, 0x86924, 0x86940,
    0x86981, 0x869d0, 0x87301, 0x873f8, 0x87402, 0x87550, 0x8755c, 0x8756d, 0x87570, 0x87582,
    0x87590, 0x877ec, 0x87802, 0x878e9, 0x8793a, 0x87940, 0x87982, 0x87a34, 0x87a89, 0x87aad,
    0x87ad0, 0x87b82, 0x87c14, 0x87c35, 0x87c50, 0x87d82, 0x87e29, 0x87e60, 0x87f02, 0x87fb8,
    0x88004, 0x8801a, 0x881c4, 0x8823d, 0x88270, 0x88291, 0x88384, 0x8838a, 0x8839c, 0x883aa,
    0x883b0, 0x883fc, 0x8841a, 0x88584, 0x885dd, 0x885ef, 0x885f5, 0x88614, 0x88618, 0x8866f,
    0x88670, 0x88682, 0x88748, 0x88781, 0x887d0, 0x88804, 0x8881a, 0x8893c, 0x889a8, 0x889b1,
    0x88a05, 0x88a22, 0x88a2c, 0x88a3a, 0x88a40, 0x88a82, 0x88b9c, 0x88ba5, 0x88bb2, 0x88bb8,
    0x88c04, 0x88c1a, 0x88d9c, 0x88e0a, 0x88e2d, 0x88e4c, 0x88e6d, 0x88e74, 0x88e81, 0x88ed2,
    0x88edd, 0x88ee2, 0x88eed, 0x88f00, 0x88f09, 0x88fa8, 0x89002, 0x89090, 0x8909a, 0x89164,
    0x891c5, 0x891f4, 0x891fa, 0x8920c, 0x89210, 0x89402, 0x89438, 0x89442, 0x89448, 0x89452,
    0x89470, 0x8947a, 0x894f0, 0x894fa, 0x8954d, 0x89550, 0x89582, 0x896fc, 0x89758, 0x89781,
    0x897d0, 0x89804, 0x89820, 0x8982a, 0x89868, 0x8987a, 0x89888, 0x8989a, 0x89948, 0x89952,
    0x89988, 0x89992, 0x899a0, 0x899aa, 0x899d0, 0x899dc, 0x899ea, 0x899f4, 0x89a28, 0x89a3c,
    0x89a48, 0x89a5c, 0x89a70, 0x89a82, 0x89a88, 0x89abc, 0x89ac0, 0x89aea, 0x89b14, 0x89b20,
    0x89b34, 0x89b68, 0x89b84, 0x89ba8, 0x8a002, 0x8a1ac, 0x8a23a, 0x8a25d, 0x8a281, 0x8a2d5,
    0x8a2e0, 0x8a2ed, 0x8a2f4, 0x8a2fa, 0x8a310, 0x8a402, 0x8a584, 0x8a622, 0x8a635, 0x8a63a,
    0x8a640, 0x8a681, 0x8a6d0, 0x8ac02, 0x8ad7c, 0x8adb0, 0x8adc4, 0x8ae0d, 0x8aec2, 0x8aee4,
    0x8aef0, 0x8b002, 0x8b184, 0x8b20d, 0x8b222, 0x8b228, 0x8b281, 0x8b2d0, 0x8b305, 0x8b368,
    0x8b402, 0x8b55c, 0x8b5c2, 0x8b5cd, 0x8b5d0, 0x8b601, 0x8b650, 0x8b802, 0x8b8d8, 0x8b8ec,
    0x8b960, 0x8b981, 0x8b9e5, 0x8b9fe, 0x8ba02, 0x8ba38, 0x8c002, 0x8c164, 0x8c1dd, 0x8c1e0,
    0x8c502, 0x8c701, 0x8c798, 0x8c7fa, 0x8c838, 0x8c84a, 0x8c850, 0x8c862, 0x8c8a0, 0x8c8aa,
    0x8c8b8, 0x8c8c2, 0x8c984, 0x8c9b0, 0x8c9bc, 0x8c9c8, 0x8c9dc, 0x8c9fa, 0x8ca04, 0x8ca0a,
    0x8ca14, 0x8ca25, 0x8ca38, 0x8ca81, 0x8cad0, 0x8cd02, 0x8cd40, 0x8cd52, 0x8ce8c, 0x8cec0,
    0x8ced4, 0x8cf0a, 0x8cf15, 0x8cf1a, 0x8cf24, 0x8cf28, 0x8d002, 0x8d00c, 0x8d05a, 0x8d19c,
    0x8d1d2, 0x8d1dc, 0x8d1fd, 0x8d23c, 0x8d240, 0x8d282, 0x8d28c, 0x8d2e2, 0x8d454, 0x8d4d5,
    0x8d4ea, 0x8d4f5, 0x8d518, 0x8d582, 0x8d7c8, 0x8d805, 0x8d850, 0x8e002, 0x8e048, 0x8e052,
    0x8e17c, 0x8e1b8, 0x8e1c4, 0x8e202, 0x8e20d, 0x8e230, 0x8e281, 0x8e368, 0x8e385, 0x8e392,
    0x8e480, 0x8e494, 0x8e540, 0x8e54c, 0x8e5b8, 0x8e802, 0x8e838, 0x8e842, 0x8e850, 0x8e85a,
    0x8e98c, 0x8e9b8, 0x8e9d4, 0x8e9d8, 0x8e9e4, 0x8e9f0, 0x8e9fc, 0x8ea32, 0x8ea3c, 0x8ea40,
    0x8ea81, 0x8ead0, 0x8eb02, 0x8eb30, 0x8eb3a, 0x8eb48, 0x8eb52, 0x8ec54, 0x8ec78, 0x8ec84,
    0x8ec90, 0x8ec9c, 0x8ecc2, 0x8ecc8, 0x8ed01, 0x8ed50, 0x8f702, 0x8f79c, 0x8f7bd, 0x8f7c8,
    0x8f804, 0x8f812, 0x8f81c, 0x8f822, 0x8f888, 0x8f892, 0x8f9a4, 0x8f9d8, 0x8f9f4, 0x8fa1d,
    0x8fa81, 0x8fad0, 0x8fd82, 0x8fd88, 0x8fe01, 0x8feae, 0x8ff90, 0x8fffd, 0x90002, 0x91cd0,
    0x92001, 0x92378, 0x92385, 0x923a8, 0x92402, 0x92a20, 0x97c82, 0x97f8d, 0x97f98, 0x98002,
    0x9a187, 0x9a204, 0x9a20a, 0x9a23c, 0x9a2b0, 0xa2002, 0xa3238, 0xb4002, 0xb51c8, 0xb5202,
    0xb52f8, 0xb5301, 0xb5350, 0xb5375, 0xb5382, 0xb55f8, 0xb5601, 0xb5650, 0xb5682, 0xb5770,
    0xb5784, 0xb57ad, 0xb57b0, 0xb5802, 0xb5984, 0xb59bd, 0xb59e6, 0xb5a02, 0xb5a25, 0xb5a2e,
    0xb5a30, 0xb5a81, 0xb5ad0, 0xb5ad9, 0xb5b10, 0xb5b1a, 0xb5bc0, 0xb5bea, 0xb5c80, 0xb7202,
    0xb7401, 0xb74bd, 0xb74d8, 0xb7802, 0xb7a58, 0xb7a7c, 0xb7a82, 0xb7a8c, 0xb7c40, 0xb7c7c,
    0xb7c9a, 0xb7d00, 0xb7f02, 0xb7f15, 0xb7f1a, 0xb7f24, 0xb7f28, 0xb7f84, 0xb7f90, 0xb8002,
    0xc3fc0, 0xc4002, 0xc66b0, 0xc6802, 0xc6848, 0xd7f82, 0xd7fa0, 0xd7faa, 0xd7fe0, 0xd7fea,
    0xd7ff8, 0xd8002, 0xd8918, 0xd8992, 0xd8998, 0xd8a82, 0xd8a98, 0xd8aaa, 0xd8ab0, 0xd8b22,
    0xd8b40, 0xd8b82, 0xd97e0, 0xde002, 0xde358, 0xde382, 0xde3e8, 0xde402, 0xde448, 0xde482,
    0xde4d0, 0xde4e6, 0xde4ec, 0xde4fd, 0xde507, 0xde520, 0xe7804, 0xe7970, 0xe7984, 0xe7a38,
    0xe7a86, 0xe7e20, 0xe8006, 0xe87b0, 0xe8806, 0xe8938, 0xe894e, 0xe8b2c, 0xe8b56, 0xe8b6c,
    0xe8b9f, 0xe8bdc, 0xe8c1e, 0xe8c2c, 0xe8c66, 0xe8d54, 0xe8d76, 0xe8f58, 0xe9006, 0xe9214,
    0xe922e, 0xe9230, 0xe9601, 0xe96a0, 0xe9701, 0xe97a0, 0xe9806, 0xe9ab8, 0xe9b01, 0xe9bc8,
    0xea002, 0xea2a8, 0xea2b2, 0xea4e8, 0xea4f2, 0xea500, 0xea512, 0xea518, 0xea52a, 0xea538,
    0xea54a, 0xea568, 0xea572, 0xea5d0, 0xea5da, 0xea5e0, 0xea5ea, 0xea620, 0xea62a, 0xea830,
    0xea83a, 0xea858, 0xea86a, 0xea8a8, 0xea8b2, 0xea8e8, 0xea8f2, 0xea9d0, 0xea9da, 0xea9f8,
    0xeaa02, 0xeaa28, 0xeaa32, 0xeaa38, 0xeaa52, 0xeaa88, 0xeaa92, 0xeb530, 0xeb542, 0xeb60e,
    0xeb612, 0xeb6de, 0xeb6e2, 0xeb7de, 0xeb7e2, 0xeb8ae, 0xeb8b2, 0xeb9ae, 0xeb9b2, 0xeba7e,
    0xeba82, 0xebb7e, 0xebb82, 0xebc4e, 0xebc52, 0xebd4e, 0xebd52, 0xebe1e, 0xebe22, 0xebe60,
    0xebe71, 0xec006, 0xed004, 0xed1be, 0xed1dc, 0xed36e, 0xed3ac, 0xed3b6, 0xed424, 0xed42e,
    0xed43d, 0xed460, 0xed4dc, 0xed500, 0xed50c, 0xed580, 0xef802, 0xef8f8, 0xef92a, 0xef958,
    0xf0004, 0xf0038, 0xf0044, 0xf00c8, 0xf00dc, 0xf0110, 0xf011c, 0xf0128, 0xf0134, 0xf0158,
    0xf0182, 0xf0370, 0xf047c, 0xf0480, 0xf0802, 0xf0968, 0xf0984, 0xf09ba, 0xf09f0, 0xf0a01,
    0xf0a50, 0xf0a72, 0xf0a7e, 0xf0a80, 0xf1482, 0xf1574, 0xf1578, 0xf1602, 0xf1764, 0xf1781,
    0xf17d0, 0xf17fe, 0xf1800, 0xf2682, 0xf2764, 0xf2781, 0xf27d0, 0xf3f02, 0xf3f38, 0xf3f42,
    0xf3f60, 0xf3f6a, 0xf3f78, 0xf3f82, 0xf3ff8, 0xf4002, 0xf4628, 0xf4639, 0xf4684, 0xf46b8,
    0xf4802, 0xf4a24, 0xf4a5a, 0xf4a60, 0xf4a81, 0xf4ad0, 0xf4af5, 0xf4b00, 0xf6389, 0xf6566,
    0xf6569, 0xf6586, 0xf6589, 0xf65a8, 0xf6809, 0xf6976, 0xf6979, 0xf69f0, 0xf7002, 0xf7020,
    0xf702a, 0xf7100, 0xf710a, 0xf7118, 0xf7122, 0xf7128, 0xf713a, 0xf7140, 0xf714a, 0xf7198,
    0xf71a2, 0xf71c0, 0xf71ca, 0xf71d0, 0xf71da, 0xf71e0, 0xf7212, 0xf7218, 0xf723a, 0xf7240,
    0xf724a, 0xf7250, 0xf725a, 0xf7260, 0xf726a, 0xf7280, 0xf728a, 0xf7298, 0xf72a2, 0xf72a8,
    0xf72ba, 0xf72c0, 0xf72ca, 0xf72d0, 0xf72da, 0xf72e0, 0xf72ea, 0xf72f0, 0xf72fa, 0xf7300,
    0xf730a, 0xf7318, 0xf7322, 0xf7328, 0xf733a, 0xf7358, 0xf7362, 0xf7398, 0xf73a2, 0xf73c0,
    0xf73ca, 0xf73e8, 0xf73f2, 0xf73f8, 0xf7402, 0xf7450, 0xf745a, 0xf74e0, 0xf750a, 0xf7520,
    0xf752a, 0xf7550, 0xf755a, 0xf75e0, 0xf7786, 0xf7790, 0xf8006, 0xf8160, 0xf8186, 0xf84a0,
    0xf8506, 0xf8578, 0xf858e, 0xf8600, 0xf860e, 0xf8680, 0xf868e, 0xf87b0, 0xf8801, 0xf886e,
    0xf8d70, 0xf8f36, 0xf9018, 0xf9086, 0xf91e0, 0xf9206, 0xf9248, 0xf9286, 0xf9290, 0xf9306,
    0xf9330, 0xf9806, 0xfb6c0, 0xfb6e6, 0xfb768, 0xfb786, 0xfb7e8, 0xfb806, 0xfbbb8, 0xfbbde,
    0xfbed0, 0xfbf06, 0xfbf60, 0xfbf86, 0xfbf88, 0xfc006, 0xfc060, 0xfc086, 0xfc240, 0xfc286,
    0xfc2d0, 0xfc306, 0xfc440, 0xfc486, 0xfc570, 0xfc586, 0xfc590, 0xfc806, 0xfd2a0, 0xfd306,
    0xfd370, 0xfd386, 0xfd3e8, 0xfd406, 0xfd448, 0xfd486, 0xfd5f0, 0xfd5fe, 0xfd630, 0xfd676,
    0xfd6e0, 0xfd706, 0xfd748, 0xfd786, 0xfd7c8, 0xfd806, 0xfdc98, 0xfdca6, 0xfde58, 0xfdf81,
    0xfdfd0, 0x100002, 0x153700, 0x153802, 0x15b9d0, 0x15ba02, 0x15c0f0, 0x15c102, 0x167510,
    0x167582, 0x175f08, 0x175f82, 0x1772f0, 0x17c002, 0x17d0f0, 0x180002, 0x189a58, 0x189a82,
    0x191d80, 0x70000f, 0x700010, 0x700107, 0x700400, 0x700804, 0x700f80, 0x780007, 0x7ffff0,
    0x800007, 0x87fff0,
};

uint8_t category_of(uint32_t cpt) {
  if (cpt > 0x10FFFF) return cat_undefined;
  const uint32_t key = (cpt << 3) | 7;
  const uint32_t* it =
      std::upper_bound(std::begin(k_category_runs), std::end(k_category_runs), key);
  return static_cast<uint8_t>(*(it - 1) & 7);
}

}  // namespace

}  // namespace tandem
