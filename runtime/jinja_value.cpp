// Jinja values with Python's semantics: truthiness, ==, <, str(), repr(), json.dumps(), len(),
// iteration, and the UTF-8 / Unicode helpers they need.
#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>

#include <pthread.h>

#include "runtime/jinja.h"

namespace tandem::jinja {

stack_budget::stack_budget() {
  char here;
  base_ = &here;
  size_t left = size_t(8) << 20;
  pthread_attr_t attr;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    void* addr = nullptr;
    size_t size = 0;
    if (pthread_attr_getstack(&attr, &addr, &size) == 0 && addr && &here > static_cast<char*>(addr))
      left = std::min(left, size_t(&here - static_cast<char*>(addr)));
    pthread_attr_destroy(&attr);
  }
  constexpr size_t margin = 96 << 10;
  budget_ = left > 2 * margin ? left - margin : left / 2;
}

// ---- construction ------------------------------------------------------------------------------

value value::list(std::vector<value> items) {
  value v;
  v.k = kind::list;
  v.l = std::make_shared<std::vector<value>>(std::move(items));
  return v;
}
value value::tuple(std::vector<value> items) {
  value v = list(std::move(items));
  v.k = kind::tuple;
  return v;
}
value value::dict() {
  value v;
  v.k = kind::dict;
  v.d = std::make_shared<dict_t>();
  return v;
}
value value::ns() {
  value v = dict();
  v.k = kind::ns;
  return v;
}
value value::func(std::string name, std::function<value(std::vector<value>&, kwargs_t&)> call) {
  value v;
  v.k = kind::function;
  v.fn = std::make_shared<function_t>(function_t{std::move(name), std::move(call)});
  return v;
}

value value::from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return none_v();
    case nlohmann::ordered_json::value_t::boolean: return boolean(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return integer(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      uint64_t u = j.get<uint64_t>();
      if (u > uint64_t(INT64_MAX)) return floating(double(u));
      return integer(int64_t(u));
    }
    case nlohmann::ordered_json::value_t::number_float: return floating(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return str(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      std::vector<value> items;
      items.reserve(j.size());
      for (auto& e : j) items.push_back(from_json(e));
      return list(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      value d = dict();
      for (auto& [key, e] : j.items()) d.d->items.emplace_back(str(key), from_json(e));
      return d;
    }
    default: return none_v();
  }
}

const value* dict_t::find(const value& key) const {
  for (auto& [k, v] : items)
    if (equals(k, key)) return &v;
  return nullptr;
}
const value* dict_t::find(std::string_view key) const {
  for (auto& [k, v] : items)
    if (k.k == kind::string && k.s == key) return &v;
  return nullptr;
}
void dict_t::set(const value& key, value v) {
  for (auto& [k, old] : items)
    if (equals(k, key)) {
      old = std::move(v);
      return;
    }
  items.emplace_back(key, std::move(v));
}

void fail(std::string msg) { throw eval_error{std::move(msg)}; }

void check_size(size_t bytes) {
  if (bytes > max_value_bytes)
    fail(fmt::format("a value would exceed {} MiB; the template makes text without bound",
                     max_value_bytes >> 20));
}

// ---- UTF-8 and Unicode -------------------------------------------------------------------------

std::u32string utf8_decode(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    unsigned char c = s[i];
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    bool ok = n > 0 && i + n <= s.size();
    char32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
    for (int k = 1; ok && k < n; ++k) {
      unsigned char cc = s[i + k];
      if ((cc & 0xC0) != 0x80) ok = false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (!ok) {  // an invalid byte stands for itself, as Python's surrogateescape does
      out += char32_t(0xDC00 + c);
      ++i;
      continue;
    }
    out += cp;
    i += n;
  }
  return out;
}

std::string utf8_encode(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) {
    if (c >= 0xDC80 && c <= 0xDCFF) {
      out += char(c - 0xDC00);
    } else if (c < 0x80) {
      out += char(c);
    } else if (c < 0x800) {
      out += char(0xC0 | (c >> 6));
      out += char(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
      out += char(0xE0 | (c >> 12));
      out += char(0x80 | ((c >> 6) & 0x3F));
      out += char(0x80 | (c & 0x3F));
    } else {
      out += char(0xF0 | (c >> 18));
      out += char(0x80 | ((c >> 12) & 0x3F));
      out += char(0x80 | ((c >> 6) & 0x3F));
      out += char(0x80 | (c & 0x3F));
    }
  }
  return out;
}

bool is_ascii(std::string_view s) {
  for (char c : s)
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  return true;
}

bool is_py_space(char32_t c) {
  return c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F) || c == 0x85 ||
         c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
         c == 0x202F || c == 0x205F || c == 0x3000;
}

namespace {
// Pairs of case in the blocks where upper and lower alternate (Latin Extended-A, Cyrillic ...).
bool alternating(char32_t c, char32_t lo, char32_t hi, bool upper_even) {
  return c >= lo && c <= hi && ((c % 2 == 0) == upper_even);
}
}  // namespace

// Simple case mapping for ASCII, Latin-1, Latin Extended-A, Greek, Cyrillic, Armenian and the
// full-width forms; other characters are left as they are.
char32_t to_upper(char32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') ? c - 32 : c;
  if ((c >= 0xE0 && c <= 0xFE && c != 0xF7)) return c - 32;
  if (c == 0xFF) return 0x178;
  if (c == 0xB5) return 0x39C;
  if (alternating(c, 0x101, 0x137, false) || alternating(c, 0x14B, 0x177, false) ||
      alternating(c, 0x13A, 0x148, true) || alternating(c, 0x17A, 0x17E, true) ||
      alternating(c, 0x461, 0x481, false) || alternating(c, 0x48B, 0x4BF, false))
    return c - 1;
  if (c >= 0x3B1 && c <= 0x3C9) return c == 0x3C2 ? 0x3A3 : c - 32;
  if (c == 0x3AC) return 0x386;
  if (c >= 0x3AD && c <= 0x3AF) return c - 37;
  if (c == 0x3CC) return 0x38C;
  if (c == 0x3CD || c == 0x3CE) return c - 63;
  if (c >= 0x430 && c <= 0x44F) return c - 32;
  if (c >= 0x450 && c <= 0x45F) return c - 80;
  if (c >= 0x561 && c <= 0x586) return c - 48;
  if (c >= 0xFF41 && c <= 0xFF5A) return c - 32;
  return c;
}

char32_t to_lower(char32_t c) {
  if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
  if ((c >= 0xC0 && c <= 0xDE && c != 0xD7)) return c + 32;
  if (c == 0x178) return 0xFF;
  if (alternating(c, 0x100, 0x136, true) || alternating(c, 0x14A, 0x176, true) ||
      alternating(c, 0x139, 0x147, false) || alternating(c, 0x179, 0x17D, false) ||
      alternating(c, 0x460, 0x480, true) || alternating(c, 0x48A, 0x4BE, true))
    return c + 1;
  if (c >= 0x391 && c <= 0x3A9 && c != 0x3A2) return c + 32;
  if (c == 0x386) return 0x3AC;
  if (c >= 0x388 && c <= 0x38A) return c + 37;
  if (c == 0x38C) return 0x3CC;
  if (c == 0x38E || c == 0x38F) return c + 63;
  if (c >= 0x410 && c <= 0x42F) return c + 32;
  if (c >= 0x400 && c <= 0x40F) return c + 80;
  if (c >= 0x531 && c <= 0x556) return c + 48;
  if (c >= 0xFF21 && c <= 0xFF3A) return c + 32;
  return c;
}

bool is_alnum(char32_t c) {
  if (c < 0x80) return std::isalnum(int(c)) != 0;
  if (c < 0xC0) return c == 0xAA || c == 0xB5 || c == 0xBA;
  if (c == 0xD7 || c == 0xF7 || is_py_space(c)) return false;
  if ((c >= 0x2000 && c <= 0x2BFF) || (c >= 0x3000 && c <= 0x303F) || (c >= 0xFE00 && c <= 0xFE0F) ||
      (c >= 0xFF00 && c <= 0xFF0F) || (c >= 0x1F000 && c <= 0x1FAFF) || (c >= 0xDC80 && c <= 0xDCFF))
    return false;
  return true;
}
bool is_alpha(char32_t c) { return c < 0x80 ? std::isalpha(int(c)) != 0 : is_alnum(c); }

// ---- truth, equality, order ----------------------------------------------------------------------

bool truthy(const value& v) {
  switch (v.k) {
    case kind::undefined:
    case kind::none: return false;
    case kind::boolean: return v.b;
    case kind::integer: return v.i != 0;
    case kind::floating: return v.f != 0;
    case kind::string: return !v.s.empty();
    case kind::list:
    case kind::tuple: return !v.l->empty();
    case kind::dict: return !v.d->items.empty();
    default: return true;
  }
}

bool equals(const value& a, const value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.k == kind::floating || b.k == kind::floating) return a.as_double() == b.as_double();
    return a.as_int() == b.as_int();
  }
  if (a.k != b.k) return false;
  switch (a.k) {
    case kind::undefined:
    case kind::none: return true;
    case kind::string: return a.s == b.s;
    case kind::list:
    case kind::tuple:
      if (a.l->size() != b.l->size()) return false;
      for (size_t i = 0; i < a.l->size(); ++i)
        if (!equals((*a.l)[i], (*b.l)[i])) return false;
      return true;
    case kind::dict: {
      if (a.d->items.size() != b.d->items.size()) return false;
      for (auto& [k, v] : a.d->items) {
        const value* o = b.d->find(k);
        if (!o || !equals(v, *o)) return false;
      }
      return true;
    }
    case kind::ns: return a.d == b.d;
    case kind::function: return a.fn == b.fn;
    default: return false;
  }
}

bool less(const value& a, const value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.k == kind::floating || b.k == kind::floating) return a.as_double() < b.as_double();
    return a.as_int() < b.as_int();
  }
  if (a.k == kind::string && b.k == kind::string) return a.s < b.s;  // UTF-8 order = code points
  if (a.is_seq() && a.k == b.k) {
    size_t n = std::min(a.l->size(), b.l->size());
    for (size_t i = 0; i < n; ++i) {
      if (!equals((*a.l)[i], (*b.l)[i])) return less((*a.l)[i], (*b.l)[i]);
    }
    return a.l->size() < b.l->size();
  }
  fail(fmt::format("'<' not supported between instances of '{}' and '{}'", type_name(a), type_name(b)));
}

std::string type_name(const value& v) {
  switch (v.k) {
    case kind::undefined: return "Undefined";
    case kind::none: return "NoneType";
    case kind::boolean: return "bool";
    case kind::integer: return "int";
    case kind::floating: return "float";
    case kind::string: return "str";
    case kind::list: return "list";
    case kind::tuple: return "tuple";
    case kind::dict: return "dict";
    case kind::ns: return "Namespace";
    case kind::function: return "function";
  }
  return "object";
}

std::string object_type_repr(const value& v) {
  if (v.k == kind::none) return "None";
  return type_name(v) + " object";
}

// ---- str() and repr() ------------------------------------------------------------------------------

std::string float_repr(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x < 0 ? "-inf" : "inf";
  if (x == 0) return std::signbit(x) ? "-0.0" : "0.0";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::scientific);
  std::string sci(buf, r.ptr);
  std::string sign;
  if (sci[0] == '-') {
    sign = "-";
    sci.erase(0, 1);
  }
  size_t e = sci.find('e');
  std::string digits = sci.substr(0, 1) + (e > 2 ? sci.substr(2, e - 2) : "");
  int exp10 = std::stoi(sci.substr(e + 1));
  int decpt = exp10 + 1;  // x = 0.DIGITS * 10^decpt
  int nd = int(digits.size());
  if (decpt < -3 || decpt > 16) {
    std::string m = digits.substr(0, 1) + (nd > 1 ? "." + digits.substr(1) : "");
    int ex = decpt - 1;
    return sign + m + fmt::format("e{}{:02d}", ex < 0 ? '-' : '+', std::abs(ex));
  }
  if (decpt <= 0) return sign + "0." + std::string(size_t(-decpt), '0') + digits;
  if (decpt >= nd) return sign + digits + std::string(size_t(decpt - nd), '0') + ".0";
  return sign + digits.substr(0, size_t(decpt)) + "." + digits.substr(size_t(decpt));
}

namespace {
bool printable(char32_t c) {
  if (c < 0x20 || (c >= 0x7F && c <= 0xA0) || c == 0xAD) return false;
  if (c == 0x1680 || (c >= 0x2000 && c <= 0x200F) || (c >= 0x2028 && c <= 0x202F) ||
      (c >= 0x205F && c <= 0x206F) || c == 0x3000 || c == 0xFEFF || (c >= 0xD800 && c <= 0xDFFF) ||
      (c >= 0xE000 && c <= 0xF8FF) || (c >= 0xFFF9 && c <= 0xFFFB) || c > 0x10FFFF)
    return false;
  return true;
}
}  // namespace

std::string py_string_repr(std::string_view s) {
  char q = '\'';
  if (s.find('\'') != std::string_view::npos && s.find('"') == std::string_view::npos) q = '"';
  std::string out(1, q);
  for (char32_t c : utf8_decode(s)) {
    if (c == char32_t(q) || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c >= 0xDC80 && c <= 0xDCFF) {
      out += fmt::format("\\udc{:02x}", unsigned(c - 0xDC00));
    } else if (!printable(c)) {
      if (c < 0x100) out += fmt::format("\\x{:02x}", unsigned(c));
      else if (c < 0x10000) out += fmt::format("\\u{:04x}", unsigned(c));
      else out += fmt::format("\\U{:08x}", unsigned(c));
    } else {
      out += utf8_encode(std::u32string(1, c));
    }
  }
  out += q;
  return out;
}

namespace {
std::string seq_str(const value& v) {
  bool tuple = v.k == kind::tuple;
  std::string out = tuple ? "(" : "[";
  for (size_t i = 0; i < v.l->size(); ++i) {
    if (i) out += ", ";
    out += repr((*v.l)[i]);
    check_size(out.size());
  }
  if (tuple && v.l->size() == 1) out += ",";
  out += tuple ? ")" : "]";
  return out;
}
std::string dict_str(const value& v) {
  std::string out = "{";
  bool first = true;
  for (auto& [k, e] : v.d->items) {
    if (!first) out += ", ";
    first = false;
    out += repr(k) + ": " + repr(e);
    check_size(out.size());
  }
  return out + "}";
}
}  // namespace

std::string to_str(const value& v) {
  switch (v.k) {
    case kind::undefined: return "";
    case kind::none: return "None";
    case kind::boolean: return v.b ? "True" : "False";
    case kind::integer: return std::to_string(v.i);
    case kind::floating: return float_repr(v.f);
    case kind::string: return v.s;
    case kind::list:
    case kind::tuple: return seq_str(v);
    case kind::dict: return dict_str(v);
    case kind::ns: return "<Namespace " + dict_str(v) + ">";
    case kind::function: return "<function " + v.fn->name + ">";
  }
  return "";
}

std::string repr(const value& v) {
  if (v.k == kind::string) return py_string_repr(v.s);
  if (v.k == kind::undefined) return "Undefined";
  return to_str(v);
}

// ---- json.dumps ---------------------------------------------------------------------------------

namespace {
void json_string(std::string& out, std::string_view s, bool ascii) {
  out += '"';
  auto escape_cp = [&](char32_t c) {
    if (c >= 0x10000) {
      c -= 0x10000;
      out += fmt::format("\\u{:04x}\\u{:04x}", unsigned(0xD800 + (c >> 10)), unsigned(0xDC00 + (c & 0x3FF)));
    } else {
      out += fmt::format("\\u{:04x}", unsigned(c));
    }
  };
  // Bytes pass through (UTF-8 stays UTF-8) unless ensure_ascii asks for escapes of characters.
  std::u32string cps = ascii ? utf8_decode(s) : std::u32string();
  size_t n = ascii ? cps.size() : s.size();
  for (size_t i = 0; i < n; ++i) {
    char32_t c = ascii ? cps[i] : char32_t(static_cast<unsigned char>(s[i]));
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20 || (ascii && c >= 0x7F)) escape_cp(c);
        else out += ascii ? utf8_encode(std::u32string(1, c)) : std::string(1, char(c));
    }
  }
  out += '"';
}

std::string json_key(const value& k) {
  switch (k.k) {
    case kind::string: return k.s;
    case kind::boolean: return k.b ? "true" : "false";
    case kind::none: return "null";
    case kind::integer: return std::to_string(k.i);
    case kind::floating: return float_repr(k.f);
    default: fail(fmt::format("keys must be str, int, float, bool or None, not {}", type_name(k)));
  }
}

void json_value(std::string& out, const value& v, const json_style& st, int level) {
  check_size(out.size());
  std::string nl;
  if (st.indent >= 0 || !st.indent_str.empty()) {
    std::string unit = st.indent_str.empty() ? std::string(size_t(st.indent), ' ') : st.indent_str;
    nl = "\n";
    for (int i = 0; i <= level; ++i) nl += unit;
  }
  auto close_nl = [&] {
    if (nl.empty()) return std::string();
    std::string unit = st.indent_str.empty() ? std::string(size_t(st.indent), ' ') : st.indent_str;
    std::string c = "\n";
    for (int i = 0; i < level; ++i) c += unit;
    return c;
  };
  switch (v.k) {
    case kind::none: out += "null"; return;
    case kind::boolean: out += v.b ? "true" : "false"; return;
    case kind::integer: out += std::to_string(v.i); return;
    case kind::floating:
      if (std::isnan(v.f)) out += "NaN";
      else if (std::isinf(v.f)) out += v.f < 0 ? "-Infinity" : "Infinity";
      else out += float_repr(v.f);
      return;
    case kind::string: json_string(out, v.s, st.ensure_ascii); return;
    case kind::list:
    case kind::tuple: {
      if (v.l->empty()) {
        out += "[]";
        return;
      }
      out += "[";
      for (size_t i = 0; i < v.l->size(); ++i) {
        if (i) out += st.item_sep;
        out += nl;
        json_value(out, (*v.l)[i], st, level + 1);
      }
      out += close_nl() + "]";
      return;
    }
    case kind::dict: {
      if (v.d->items.empty()) {
        out += "{}";
        return;
      }
      std::vector<std::pair<std::string, const value*>> items;
      for (auto& [k, e] : v.d->items) items.emplace_back(json_key(k), &e);
      if (st.sort_keys)
        std::stable_sort(items.begin(), items.end(), [](auto& x, auto& y) { return x.first < y.first; });
      out += "{";
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += st.item_sep;
        out += nl;
        json_string(out, items[i].first, st.ensure_ascii);
        out += st.key_sep;
        json_value(out, *items[i].second, st, level + 1);
      }
      out += close_nl() + "}";
      return;
    }
    default:
      fail(fmt::format("Object of type {} is not JSON serializable", type_name(v)));
  }
}
}  // namespace

std::string to_json(const value& v, const json_style& style) {
  std::string out;
  json_value(out, v, style, 0);
  check_size(out.size());
  return out;
}

// ---- iteration and length ------------------------------------------------------------------------

std::vector<value> iterate(const value& v) {
  switch (v.k) {
    case kind::undefined: return {};
    case kind::list:
    case kind::tuple: return *v.l;
    case kind::dict: {
      std::vector<value> keys;
      keys.reserve(v.d->items.size());
      for (auto& kv : v.d->items) keys.push_back(kv.first);
      return keys;
    }
    case kind::string: {
      std::vector<value> chars;
      if (is_ascii(v.s)) {
        for (char c : v.s) chars.push_back(value::str(std::string(1, c)));
      } else {
        for (char32_t c : utf8_decode(v.s)) chars.push_back(value::str(utf8_encode(std::u32string(1, c))));
      }
      return chars;
    }
    default: fail(fmt::format("'{}' object is not iterable", type_name(v)));
  }
}

int64_t length(const value& v) {
  switch (v.k) {
    case kind::undefined: return 0;
    case kind::string: return is_ascii(v.s) ? int64_t(v.s.size()) : int64_t(utf8_decode(v.s).size());
    case kind::list:
    case kind::tuple: return int64_t(v.l->size());
    case kind::dict: return int64_t(v.d->items.size());
    default: fail(fmt::format("object of type '{}' has no len()", type_name(v)));
  }
}

}  // namespace tandem::jinja
