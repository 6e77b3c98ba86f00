// The Jinja lexer: jinja2's Lexer.tokeniter with trim_blocks and lstrip_blocks on. Whitespace
// control is applied here, so the parser sees text tokens exactly as they will be printed.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "runtime/error.h"
#include "runtime/jinja.h"

namespace tandem::jinja {
namespace {

// jinja2 normalizes \r\n and \r to \n and drops one trailing newline (keep_trailing_newline off).
std::string normalize(std::string_view src) {
  std::string out;
  out.reserve(src.size());
  for (size_t i = 0; i < src.size(); ++i) {
    if (src[i] == '\r') {
      out += '\n';
      if (i + 1 < src.size() && src[i + 1] == '\n') ++i;
    } else {
      out += src[i];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// Length of the Python whitespace character (\s) at s[i], 0 when there is none.
size_t space_at(const std::string& s, size_t i) {
  if (i >= s.size()) return 0;
  unsigned char c = s[i];
  if (c < 0x80) return (c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f)) ? 1 : 0;
  size_t n = (c >= 0xF0) ? 4 : (c >= 0xE0) ? 3 : (c >= 0xC0) ? 2 : 1;
  if (i + n > s.size()) return 0;
  std::u32string cp = utf8_decode(std::string_view(s).substr(i, n));
  return cp.size() == 1 && is_py_space(cp[0]) ? n : 0;
}

// Python's str.rstrip() of s[0..end): the new end.
size_t rstrip_end(const std::string& s, size_t begin, size_t end) {
  while (end > begin) {
    size_t start = end - 1;
    while (start > begin && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    if (space_at(s, start) != end - start) break;
    end = start;
  }
  return end;
}

size_t skip_spaces(const std::string& s, size_t i) {
  while (size_t n = space_at(s, i)) i += n;
  return i;
}

class lexer {
 public:
  explicit lexer(std::string_view src) : s_(normalize(src)) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < s_.size(); ++i)
      if (s_[i] == '\n') line_starts_.push_back(i + 1);
  }

  std::vector<token> run() {
    while (pos_ < s_.size()) root();
    push(tok::eof, "", s_.size());
    return std::move(out_);
  }

 private:
  std::string s_;
  size_t pos_ = 0;
  bool line_starting_ = true;
  std::vector<size_t> line_starts_;
  std::vector<token> out_;
  mutable int cache_line_ = 0, cache_col_ = 1;
  mutable size_t cache_pos_ = 0;

  // Line and column (in characters) of pos; tokens come in order, so the column is counted on
  // from the last position asked for rather than from the start of the line.
  std::pair<int, int> where(size_t pos) const {
    auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), pos);
    int line = int(it - line_starts_.begin());
    size_t ls = *(it - 1);
    if (line != cache_line_ || pos < cache_pos_) {
      cache_line_ = line;
      cache_pos_ = ls;
      cache_col_ = 1;
    }
    for (size_t i = cache_pos_; i < pos && i < s_.size(); ++i)
      if ((static_cast<unsigned char>(s_[i]) & 0xC0) != 0x80) ++cache_col_;
    cache_pos_ = pos;
    return {line, cache_col_};
  }
  [[noreturn]] void error(size_t pos, const std::string& msg) const {
    auto [l, c] = where(pos);
    throw tandem::error(fmt::format("chat template line {}, column {}: {}", l, c, msg));
  }
  void push(tok t, std::string text, size_t pos) {
    auto [l, c] = where(pos);
    out_.push_back(token{t, std::move(text), l, c});
  }

  // The text before a tag, with the tag's left whitespace control applied.
  void emit_text(size_t begin, size_t end, char sign, bool lstrip_applies) {
    if (sign == '-') {
      end = rstrip_end(s_, begin, end);
    } else if (sign != '+' && lstrip_applies) {
      size_t nl = s_.rfind('\n', end == 0 ? 0 : end - 1);
      size_t l_pos = (nl == std::string::npos || nl < begin) ? begin : nl + 1;
      if ((l_pos > begin || line_starting_) && l_pos < end && skip_spaces(s_, l_pos) >= end)
        end = l_pos;
    }
    if (end > begin) push(tok::text, s_.substr(begin, end - begin), begin);
  }

  // Matches "%}" style tag ends at pos_: "+%}", "-%}\s*" or "%}\n?" (trim when trim_nl).
  bool tag_end(char c1, bool trim_nl) {
    size_t p = pos_;
    char sign = 0;
    if (p < s_.size() && (s_[p] == '+' || s_[p] == '-')) sign = s_[p++];
    if (p + 1 >= s_.size() + 0 || s_[p] != c1 || s_[p + 1] != '}') return false;
    p += 2;
    if (sign == '-') p = skip_spaces(s_, p);
    else if (!sign && trim_nl && p < s_.size() && s_[p] == '\n') ++p;
    line_starting_ = p > 0 && s_[p - 1] == '\n';
    pos_ = p;
    return true;
  }

  // {% raw %} ... {% endraw %}: returns true (and emits the body) when pos_ opens a raw block.
  bool raw_block(size_t text_begin, size_t tag) {
    size_t p = tag + 2;
    char sign = (p < s_.size() && (s_[p] == '-' || s_[p] == '+')) ? s_[p++] : 0;
    p = skip_spaces(s_, p);
    if (s_.compare(p, 3, "raw") != 0) return false;
    p = skip_spaces(s_, p + 3);
    size_t save = pos_;
    pos_ = p;
    if (!tag_end('%', false)) {
      pos_ = save;
      return false;
    }
    emit_text(text_begin, tag, sign, true);
    // The body runs to the first {% endraw %}.
    for (size_t q = s_.find("{%", pos_); q != std::string::npos; q = s_.find("{%", q + 2)) {
      size_t r = q + 2;
      char esign = (r < s_.size() && (s_[r] == '-' || s_[r] == '+')) ? s_[r++] : 0;
      r = skip_spaces(s_, r);
      if (s_.compare(r, 6, "endraw") != 0) continue;
      r = skip_spaces(s_, r + 6);
      size_t body = pos_;
      pos_ = r;
      if (!tag_end('%', true)) {
        pos_ = body;
        continue;
      }
      size_t after = pos_;
      bool ls = line_starting_;
      line_starting_ = false;
      emit_text(body, q, esign, true);
      line_starting_ = ls;
      pos_ = after;
      return true;
    }
    error(tag, "missing end of raw directive ({% endraw %})");
  }

  void root() {
    size_t tag = pos_;
    for (;;) {
      tag = s_.find('{', tag);
      if (tag == std::string::npos || tag + 1 >= s_.size()) {
        push(tok::text, s_.substr(pos_), pos_);
        pos_ = s_.size();
        return;
      }
      char c = s_[tag + 1];
      if (c == '{' || c == '%' || c == '#') break;
      ++tag;
    }
    char c = s_[tag + 1];
    if (c == '%' && raw_block(pos_, tag)) return;
    size_t p = tag + 2;
    char sign = (p < s_.size() && (s_[p] == '-' || s_[p] == '+')) ? s_[p] : 0;
    emit_text(pos_, tag, sign, c != '{');
    line_starting_ = false;
    pos_ = p + (sign ? 1 : 0);
    if (c == '#') return comment(tag);
    push(c == '{' ? tok::var_begin : tok::block_begin, c == '{' ? "{{" : "{%", tag);
    inside_tag(c == '{' ? '}' : '%', tag);
  }

  void comment(size_t tag) {
    for (size_t p = pos_; p < s_.size(); ++p) {
      size_t save = pos_;
      pos_ = p;
      if ((s_[p] == '+' || s_[p] == '-' || s_[p] == '#') && tag_end('#', true)) return;
      pos_ = save;
    }
    error(tag, "missing end of comment tag (#})");
  }

  void inside_tag(char end_char, size_t tag) {
    std::vector<char> balance;
    for (;;) {
      if (pos_ >= s_.size())
        error(tag, end_char == '}' ? "unexpected end of template: '{{' without '}}'"
                                   : "unexpected end of template: '{%' without '%}'");
      size_t at = pos_;
      if (balance.empty() && tag_end(end_char, end_char == '%')) {
        push(end_char == '}' ? tok::var_end : tok::block_end, "", at);
        return;
      }
      if (size_t n = space_at(s_, pos_)) {
        pos_ = skip_spaces(s_, pos_ + n);
        continue;
      }
      size_t start = pos_;
      char ch = s_[pos_];
      if (std::isdigit(static_cast<unsigned char>(ch))) {
        number(start);
      } else if (std::isalpha(static_cast<unsigned char>(ch)) || ch == '_') {
        while (pos_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[pos_])) || s_[pos_] == '_')) ++pos_;
        push(tok::name, s_.substr(start, pos_ - start), start);
      } else if (ch == '\'' || ch == '"') {
        string_literal(start);
      } else {
        op(start, balance);
      }
    }
  }

  void number(size_t start) {
    auto digits = [&](size_t p) {  // (\d+_)*\d+ : returns the end, or p when none
      size_t q = p;
      while (q < s_.size() && std::isdigit(static_cast<unsigned char>(s_[q]))) {
        ++q;
        if (q + 1 < s_.size() && s_[q] == '_' && std::isdigit(static_cast<unsigned char>(s_[q + 1]))) ++q;
      }
      return q;
    };
    size_t p = digits(start);
    bool is_float = false;
    // No float right after a '.' (jinja2's (?<!\.)): x.0.1 is x[0][1].
    bool after_dot = start > 0 && s_[start - 1] == '.';
    if (!after_dot && p + 1 < s_.size() && s_[p] == '.' && std::isdigit(static_cast<unsigned char>(s_[p + 1]))) {
      p = digits(p + 1);
      is_float = true;
    }
    if (!after_dot && p < s_.size() && (s_[p] == 'e' || s_[p] == 'E')) {
      size_t q = p + 1;
      if (q < s_.size() && (s_[q] == '+' || s_[q] == '-')) ++q;
      size_t r = digits(q);
      if (r > q) {
        p = r;
        is_float = true;
      }
    }
    if (!is_float && s_[start] == '0' && p > start + 1) {
      // 0b / 0o / 0x literals and "00"; a leading zero otherwise ends the number.
      p = start + 1;
      while (p < s_.size() && (s_[p] == '0' || s_[p] == '_')) ++p;
    }
    if (!is_float && s_[start] == '0' && p < s_.size() && std::strchr("bBoOxX", s_[p]) && p == start + 1) {
      int base = (s_[p] == 'b' || s_[p] == 'B') ? 2 : (s_[p] == 'o' || s_[p] == 'O') ? 8 : 16;
      size_t q = p + 1;
      std::string d;
      while (q < s_.size() && (std::isxdigit(static_cast<unsigned char>(s_[q])) || s_[q] == '_')) {
        if (s_[q] != '_') d += s_[q];
        ++q;
      }
      pos_ = q;
      try {
        push(tok::integer, std::to_string(std::stoll(d, nullptr, base)), start);
      } catch (const std::exception&) {
        error(start, "invalid integer literal");
      }
      return;
    }
    std::string text;
    for (size_t i = start; i < p; ++i)
      if (s_[i] != '_') text += s_[i];
    pos_ = p;
    push(is_float ? tok::floating : tok::integer, text, start);
  }

  void string_literal(size_t start) {
    char q = s_[start];
    std::string v;
    size_t p = start + 1;
    for (;;) {
      if (p >= s_.size()) error(start, "unexpected end of string literal");
      char c = s_[p];
      if (c == q) break;
      if (c != '\\') {
        v += c;
        ++p;
        continue;
      }
      if (p + 1 >= s_.size()) error(start, "unexpected end of string literal");
      p = unescape(p, v);
    }
    pos_ = p + 1;
    push(tok::string, std::move(v), start);
  }

  // Python's "unicode-escape" decoding of the escape at s_[p] (a backslash); returns the position
  // after it.
  size_t unescape(size_t p, std::string& v) {
    char e = s_[p + 1];
    auto hex = [&](size_t from, int n) -> size_t {
      if (from + n > s_.size()) error(p, "truncated \\x, \\u or \\U escape in a string");
      uint32_t cp = 0;
      for (int k = 0; k < n; ++k) {
        char h = s_[from + k];
        if (!std::isxdigit(static_cast<unsigned char>(h))) error(p, "truncated \\x, \\u or \\U escape in a string");
        cp = cp * 16 + uint32_t(std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (std::tolower(h) - 'a' + 10));
      }
      if (cp > 0x10FFFF) error(p, "illegal Unicode character in an escape");
      v += utf8_encode(std::u32string(1, char32_t(cp)));
      return from + n;
    };
    switch (e) {
      case '\n': return p + 2;
      case '\\': v += '\\'; return p + 2;
      case '\'': v += '\''; return p + 2;
      case '"': v += '"'; return p + 2;
      case 'a': v += '\a'; return p + 2;
      case 'b': v += '\b'; return p + 2;
      case 'f': v += '\f'; return p + 2;
      case 'n': v += '\n'; return p + 2;
      case 'r': v += '\r'; return p + 2;
      case 't': v += '\t'; return p + 2;
      case 'v': v += '\v'; return p + 2;
      case 'x': return hex(p + 2, 2);
      case 'u': return hex(p + 2, 4);
      case 'U': return hex(p + 2, 8);
      case 'N': error(p, "\\N{...} escapes are not supported; write the character itself");
      default: break;
    }
    if (e >= '0' && e <= '7') {
      uint32_t cp = 0;
      size_t q = p + 1;
      for (int k = 0; k < 3 && q < s_.size() && s_[q] >= '0' && s_[q] <= '7'; ++k, ++q) cp = cp * 8 + uint32_t(s_[q] - '0');
      v += utf8_encode(std::u32string(1, char32_t(cp)));
      return q;
    }
    v += '\\';  // unknown escapes stay as they are
    return p + 1;
  }

  void op(size_t start, std::vector<char>& balance) {
    static const char* two[] = {"**", "//", "==", "!=", ">=", "<="};
    for (const char* t : two)
      if (s_.compare(start, 2, t) == 0) {
        pos_ = start + 2;
        push(tok::op, t, start);
        return;
      }
    char c = s_[start];
    if (!std::strchr("+-/*%~[](){}><=.:|,;", c)) {
      if (c == '!') error(start, "unexpected char '!' (write 'not' or '!=')");
      error(start, fmt::format("unexpected char '{}'", std::string(1, c)));
    }
    if (c == '(' || c == '[' || c == '{') balance.push_back(c == '(' ? ')' : c == '[' ? ']' : '}');
    if (c == ')' || c == ']' || c == '}') {
      if (balance.empty()) error(start, fmt::format("unexpected '{}'", c));
      if (balance.back() != c) error(start, fmt::format("unexpected '{}', expected '{}'", c, balance.back()));
      balance.pop_back();
    }
    pos_ = start + 1;
    push(tok::op, std::string(1, c), start);
  }
};

}  // namespace

std::vector<token> lex(std::string_view source) { return lexer(source).run(); }

}  // namespace tandem::jinja
