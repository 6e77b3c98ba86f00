// Attribute and item access as jinja2's sandbox resolves them, slicing, and the Python methods of
// str, list and dict that templates call (.strip(), .split(), .items(), .get(), ...). Methods that
// would modify a list or dict are refused, as in jinja2's ImmutableSandboxedEnvironment.
#include <fmt/format.h>

#include <algorithm>
#include <set>

#include "runtime/jinja.h"

namespace tandem::jinja {
namespace {

const std::set<std::string, std::less<>> str_methods = {
    "strip", "lstrip", "rstrip", "split", "rsplit", "splitlines", "startswith", "endswith",
    "upper", "lower", "title", "capitalize", "swapcase", "replace", "join", "find", "rfind",
    "index", "rindex", "count", "isdigit", "isalpha", "isalnum", "isspace", "isupper", "islower",
    "zfill", "center", "ljust", "rjust", "partition", "rpartition", "removeprefix", "removesuffix",
    "format", "isnumeric", "isdecimal", "istitle"};
const std::set<std::string, std::less<>> list_methods = {"index", "count", "copy"};
const std::set<std::string, std::less<>> list_unsafe = {"append", "extend", "insert", "pop",
                                                        "remove", "reverse", "sort", "clear"};
const std::set<std::string, std::less<>> dict_methods = {"items", "keys", "values", "get", "copy"};
const std::set<std::string, std::less<>> dict_unsafe = {"pop", "popitem", "setdefault", "update",
                                                        "clear"};

value no_attribute(const value& obj, const std::string& name) {
  return value::undef(fmt::format("'{}' has no attribute '{}'", object_type_repr(obj), name));
}

value bound(const value& obj, const std::string& name) {
  return value::func(name, [obj, name](std::vector<value>& args, kwargs_t& kw) {
    value out;
    call_method(obj, name, args, kw, out);
    return out;
  });
}

// Python's index normalization for one position: negative counts from the end.
int64_t norm_index(int64_t i, int64_t n) { return i < 0 ? i + n : i; }

std::u32string as_u32(const std::string& s) {
  if (is_ascii(s)) return std::u32string(s.begin(), s.end());
  return utf8_decode(s);
}

}  // namespace

value get_attr(const value& obj, const std::string& name) {
  if (obj.is_undefined()) fail(obj.s.empty() ? "undefined value has no attributes" : obj.s);
  if (!name.empty() && name[0] == '_')
    return value::undef(fmt::format("access to attribute '{}' of '{}' object is unsafe.", name, type_name(obj)));
  switch (obj.k) {
    case kind::string:
      if (str_methods.count(name)) return bound(obj, name);
      break;
    case kind::list:
    case kind::tuple:
      if (list_methods.count(name) && !(obj.k == kind::tuple && name == "copy")) return bound(obj, name);
      if (obj.k == kind::list && list_unsafe.count(name))
        return value::undef(fmt::format("access to attribute '{}' of 'list' object is unsafe.", name));
      break;
    case kind::dict: {
      if (dict_methods.count(name)) return bound(obj, name);
      if (dict_unsafe.count(name))
        return value::undef(fmt::format("access to attribute '{}' of 'dict' object is unsafe.", name));
      if (const value* v = obj.d->find(std::string_view(name))) return *v;
      break;
    }
    case kind::ns:
      if (const value* v = obj.d->find(std::string_view(name))) return *v;
      break;
    default:
      break;
  }
  return no_attribute(obj, name);
}

value get_item(const value& obj, const value& key) {
  if (obj.is_undefined()) fail(obj.s.empty() ? "undefined value has no items" : obj.s);
  switch (obj.k) {
    case kind::dict:
      if (const value* v = obj.d->find(key)) return *v;
      break;
    case kind::list:
    case kind::tuple:
      if (key.is_int()) {
        int64_t n = int64_t(obj.l->size()), i = norm_index(key.as_int(), n);
        if (i >= 0 && i < n) return (*obj.l)[size_t(i)];
        return value::undef(fmt::format("{} has no element {}", object_type_repr(obj), key.as_int()));
      }
      break;
    case kind::string:
      if (key.is_int()) {
        std::u32string cps = as_u32(obj.s);
        int64_t n = int64_t(cps.size()), i = norm_index(key.as_int(), n);
        if (i >= 0 && i < n) return value::str(utf8_encode(cps.substr(size_t(i), 1)));
        return value::undef(fmt::format("str object has no element {}", key.as_int()));
      }
      break;
    default:
      break;
  }
  if (key.k == kind::string) return get_attr(obj, key.s);
  return value::undef(fmt::format("{} has no element {}", object_type_repr(obj), repr(key)));
}

value slice(const value& obj, const value* lo, const value* hi, const value* step) {
  if (obj.is_undefined()) fail(obj.s.empty() ? "undefined value cannot be sliced" : obj.s);
  auto arg = [](const value* v, const char* what) -> std::optional<int64_t> {
    if (!v || v->is_none()) return std::nullopt;
    if (!v->is_int()) fail(fmt::format("slice {} must be an integer or none", what));
    return v->as_int();
  };
  std::optional<int64_t> a = arg(lo, "start"), b = arg(hi, "stop"), c = arg(step, "step");
  int64_t st = c.value_or(1);
  if (st == 0) fail("slice step cannot be zero");
  std::u32string cps;
  int64_t n;
  if (obj.k == kind::string) {
    cps = as_u32(obj.s);
    n = int64_t(cps.size());
  } else if (obj.is_seq()) {
    n = int64_t(obj.l->size());
  } else {
    fail(fmt::format("'{}' object is not subscriptable", type_name(obj)));
  }
  // Python's PySlice_AdjustIndices.
  auto clamp = [&](std::optional<int64_t> v, int64_t def) {
    if (!v) return def;
    int64_t x = *v;
    if (x < 0) {
      x += n;
      if (x < 0) x = st < 0 ? -1 : 0;
    } else if (x >= n) {
      x = st < 0 ? n - 1 : n;
    }
    return x;
  };
  int64_t start = clamp(a, st < 0 ? n - 1 : 0), stop = clamp(b, st < 0 ? -1 : n);
  std::vector<int64_t> idx;
  for (int64_t i = start; st > 0 ? i < stop : i > stop; i += st) idx.push_back(i);
  if (obj.k == kind::string) {
    std::u32string out;
    for (int64_t i : idx) out += cps[size_t(i)];
    return value::str(utf8_encode(out));
  }
  std::vector<value> out;
  out.reserve(idx.size());
  for (int64_t i : idx) out.push_back((*obj.l)[size_t(i)]);
  return obj.k == kind::tuple ? value::tuple(std::move(out)) : value::list(std::move(out));
}

std::string py_strip(std::string_view s, const value* chars, bool left, bool right) {
  std::u32string set;
  bool ws = !chars || chars->is_none() || chars->is_undefined();
  if (!ws) {
    if (!chars->is_string()) fail("strip arg must be None or str");
    set = as_u32(chars->s);
  }
  std::u32string cps = is_ascii(s) ? std::u32string(s.begin(), s.end()) : utf8_decode(s);
  auto strip_it = [&](char32_t c) { return ws ? is_py_space(c) : set.find(c) != std::u32string::npos; };
  size_t b = 0, e = cps.size();
  if (left)
    while (b < e && strip_it(cps[b])) ++b;
  if (right)
    while (e > b && strip_it(cps[e - 1])) --e;
  return utf8_encode(std::u32string_view(cps).substr(b, e - b));
}

namespace {

std::u32string case_map(const std::u32string& s, char32_t (*f)(char32_t)) {
  std::u32string out = s;
  for (auto& c : out) c = f(c);
  return out;
}
bool is_cased(char32_t c) { return to_upper(c) != c || to_lower(c) != c; }

std::string py_title(const std::string& s) {
  std::u32string cps = as_u32(s);
  bool prev_cased = false;
  for (auto& c : cps) {
    c = prev_cased ? to_lower(c) : to_upper(c);
    prev_cased = is_cased(c);
  }
  return utf8_encode(cps);
}

std::vector<value> py_split(const std::string& s, const value* sep, int64_t maxsplit, bool from_right) {
  std::vector<std::string> parts;
  if (!sep || sep->is_none()) {
    std::u32string cps = as_u32(s);
    std::vector<std::pair<size_t, size_t>> words;
    size_t i = 0;
    while (i < cps.size()) {
      while (i < cps.size() && is_py_space(cps[i])) ++i;
      if (i >= cps.size()) break;
      size_t j = i;
      while (j < cps.size() && !is_py_space(cps[j])) ++j;
      words.emplace_back(i, j);
      i = j;
    }
    if (maxsplit >= 0 && int64_t(words.size()) > maxsplit + 1) {
      // Python keeps the rest as it is, whitespace and all (on its far side).
      if (!from_right) {
        for (size_t w = 0; w < size_t(maxsplit); ++w)
          parts.push_back(utf8_encode(cps.substr(words[w].first, words[w].second - words[w].first)));
        parts.push_back(utf8_encode(cps.substr(words[size_t(maxsplit)].first)));
      } else {
        size_t k = words.size() - size_t(maxsplit);
        parts.push_back(utf8_encode(cps.substr(0, words[k - 1].second)));
        for (size_t w = k; w < words.size(); ++w)
          parts.push_back(utf8_encode(cps.substr(words[w].first, words[w].second - words[w].first)));
      }
    } else {
      for (auto& [a, b] : words) parts.push_back(utf8_encode(cps.substr(a, b - a)));
    }
  } else {
    if (!sep->is_string()) fail("must be str or None");
    const std::string& d = sep->s;
    if (d.empty()) fail("empty separator");
    if (!from_right) {
      size_t pos = 0;
      for (int64_t n = 0; maxsplit < 0 || n < maxsplit; ++n) {
        size_t f = s.find(d, pos);
        if (f == std::string::npos) break;
        parts.push_back(s.substr(pos, f - pos));
        pos = f + d.size();
      }
      parts.push_back(s.substr(pos));
    } else {
      size_t end = s.size();
      for (int64_t n = 0; maxsplit < 0 || n < maxsplit; ++n) {
        if (end < d.size()) break;
        size_t f = s.rfind(d, end - d.size());
        if (f == std::string::npos) break;
        parts.push_back(s.substr(f + d.size(), end - f - d.size()));
        end = f;
      }
      parts.push_back(s.substr(0, end));
      std::reverse(parts.begin(), parts.end());
    }
  }
  std::vector<value> out;
  for (auto& p : parts) out.push_back(value::str(std::move(p)));
  return out;
}

// Positional then keyword arguments, by parameter name.
struct args_view {
  std::vector<value>& pos;
  kwargs_t& kw;
  const value* get(size_t i, const char* name) const {
    if (i < pos.size()) return &pos[i];
    for (auto& [k, v] : kw)
      if (k == name) return &v;
    return nullptr;
  }
  int64_t get_int(size_t i, const char* name, int64_t def) const {
    const value* v = get(i, name);
    if (!v || v->is_none()) return def;
    if (!v->is_int()) fail(fmt::format("'{}' must be an integer", name));
    return v->as_int();
  }
  const std::string& get_str(size_t i, const char* name) const {
    const value* v = get(i, name);
    if (!v || !v->is_string()) fail(fmt::format("'{}' must be a string", name));
    return v->s;
  }
};

bool affix_match(const std::string& s, const value& what, bool prefix) {
  auto one = [&](const value& p) {
    if (!p.is_string()) fail("startswith/endswith takes a string or a tuple of strings");
    if (p.s.size() > s.size()) return false;
    return prefix ? s.compare(0, p.s.size(), p.s) == 0 : s.compare(s.size() - p.s.size(), p.s.size(), p.s) == 0;
  };
  if (what.is_seq()) {
    for (auto& p : *what.l)
      if (one(p)) return true;
    return false;
  }
  return one(what);
}

std::string pad(const std::string& s, int64_t width, const value* fill, int where) {
  std::u32string cps = as_u32(s);
  std::u32string f = U" ";
  if (fill) {
    if (!fill->is_string() || length(*fill) != 1) fail("the fill character must be exactly one character long");
    f = as_u32(fill->s);
  }
  if (width <= int64_t(cps.size())) return s;
  check_size(size_t(width) * 4);
  size_t total = size_t(width) - cps.size();
  size_t left = where < 0 ? 0 : where > 0 ? total : total / 2 + (total & size_t(width) & 1);
  std::u32string out = std::u32string(left, f[0]) + cps + std::u32string(total - left, f[0]);
  return utf8_encode(out);
}

// str.format with "{}", "{0}" and "{name}" fields (no format specs), as the sandbox allows.
std::string py_format(const std::string& fmt_s, const args_view& a) {
  std::string out;
  size_t auto_idx = 0;
  for (size_t i = 0; i < fmt_s.size(); ++i) {
    char c = fmt_s[i];
    if (c == '{' && i + 1 < fmt_s.size() && fmt_s[i + 1] == '{') { out += '{'; ++i; continue; }
    if (c == '}' && i + 1 < fmt_s.size() && fmt_s[i + 1] == '}') { out += '}'; ++i; continue; }
    if (c != '{') { out += c; continue; }
    size_t close = fmt_s.find('}', i);
    if (close == std::string::npos) fail("Single '{' encountered in format string");
    std::string field = fmt_s.substr(i + 1, close - i - 1);
    if (field.find_first_of(":!.[") != std::string::npos)
      fail("format fields with conversions, specs or lookups are not supported; use filters");
    const value* v = nullptr;
    if (field.empty()) v = auto_idx < a.pos.size() ? &a.pos[auto_idx++] : nullptr;
    else if (std::all_of(field.begin(), field.end(), ::isdigit)) {
      size_t k = std::stoul(field);
      v = k < a.pos.size() ? &a.pos[k] : nullptr;
    } else {
      for (auto& [k, x] : a.kw)
        if (k == field) v = &x;
    }
    if (!v) fail(fmt::format("format: no argument for field '{{{}}}'", field));
    out += to_str(*v);
    i = close;
  }
  return out;
}

bool str_method(const std::string& s, const std::string& name, const args_view& a, value& out) {
  auto str = [&](std::string x) { out = value::str(std::move(x)); return true; };
  auto boolean = [&](bool x) { out = value::boolean(x); return true; };
  if (name == "strip" || name == "lstrip" || name == "rstrip")
    return str(py_strip(s, a.get(0, "chars"), name != "rstrip", name != "lstrip"));
  if (name == "split" || name == "rsplit") {
    out = value::list(py_split(s, a.get(0, "sep"), a.get_int(1, "maxsplit", -1), name == "rsplit"));
    return true;
  }
  if (name == "splitlines") {
    std::vector<value> lines;
    bool keep = a.get(0, "keepends") && truthy(*a.get(0, "keepends"));
    size_t b = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '\n' || s[i] == '\r') {
        size_t e = i;
        if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
        lines.push_back(value::str(s.substr(b, (keep ? i + 1 : e) - b)));
        b = i + 1;
      }
    }
    if (b < s.size()) lines.push_back(value::str(s.substr(b)));
    out = value::list(std::move(lines));
    return true;
  }
  if (name == "startswith" || name == "endswith") {
    const value* p = a.get(0, "prefix");
    if (!p) fail(fmt::format("{}() takes at least 1 argument", name));
    return boolean(affix_match(s, *p, name == "startswith"));
  }
  if (name == "upper") return str(utf8_encode(case_map(as_u32(s), to_upper)));
  if (name == "lower") return str(utf8_encode(case_map(as_u32(s), to_lower)));
  if (name == "swapcase") {
    std::u32string c = as_u32(s);
    for (auto& x : c) x = to_upper(x) != x ? to_upper(x) : to_lower(x);
    return str(utf8_encode(c));
  }
  if (name == "title") return str(py_title(s));
  if (name == "capitalize") {
    std::u32string c = case_map(as_u32(s), to_lower);
    if (!c.empty()) c[0] = to_upper(c[0]);
    return str(utf8_encode(c));
  }
  if (name == "replace") {
    const std::string& from = a.get_str(0, "old");
    const std::string& to = a.get_str(1, "new");
    int64_t count = a.get_int(2, "count", -1);
    std::string r;
    if (from.empty()) {  // Python inserts `to` between characters
      std::u32string cps = as_u32(s);
      int64_t n = 0;
      for (size_t i = 0; i <= cps.size(); ++i) {
        if (count < 0 || n < count) { r += to; ++n; }
        if (i < cps.size()) r += utf8_encode(cps.substr(i, 1));
        check_size(r.size());
      }
      return str(std::move(r));
    }
    size_t pos = 0;
    for (int64_t n = 0; count < 0 || n < count; ++n) {
      size_t f = s.find(from, pos);
      if (f == std::string::npos) break;
      r.append(s, pos, f - pos);
      r += to;
      check_size(r.size());
      pos = f + from.size();
    }
    r.append(s, pos);
    return str(std::move(r));
  }
  if (name == "join") {
    const value* it = a.get(0, "iterable");
    if (!it) fail("join() takes exactly one argument");
    std::string r;
    bool first = true;
    for (auto& e : iterate(*it)) {
      if (!e.is_string()) fail(fmt::format("sequence item: expected str instance, {} found", type_name(e)));
      if (!first) r += s;
      first = false;
      r += e.s;
      check_size(r.size());
    }
    return str(std::move(r));
  }
  if (name == "find" || name == "rfind" || name == "index" || name == "rindex" || name == "count") {
    const std::string& sub = a.get_str(0, "sub");
    if (name == "count") {
      if (sub.empty()) { out = value::integer(length(value::str(s)) + 1); return true; }
      int64_t n = 0;
      for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
      out = value::integer(n);
      return true;
    }
    size_t f = (name[0] == 'r') ? s.rfind(sub) : s.find(sub);
    if (f == std::string::npos) {
      if (name == "index" || name == "rindex") fail("substring not found");
      out = value::integer(-1);
      return true;
    }
    out = value::integer(int64_t(is_ascii(s) ? f : utf8_decode(s.substr(0, f)).size()));
    return true;
  }
  auto all_of = [&](bool (*pred)(char32_t)) {
    std::u32string c = as_u32(s);
    return boolean(!c.empty() && std::all_of(c.begin(), c.end(), pred));
  };
  if (name == "isdigit" || name == "isnumeric" || name == "isdecimal")
    return all_of([](char32_t c) { return c >= '0' && c <= '9'; });
  if (name == "isalpha") return all_of([](char32_t c) { return is_alpha(c); });
  if (name == "isalnum") return all_of([](char32_t c) { return is_alnum(c); });
  if (name == "isspace") return all_of([](char32_t c) { return is_py_space(c); });
  if (name == "isupper" || name == "islower") {
    std::u32string c = as_u32(s);
    bool any = false, ok = true;
    for (char32_t x : c) {
      if (!is_cased(x)) continue;
      any = true;
      if (name == "isupper" ? to_upper(x) != x : to_lower(x) != x) ok = false;
    }
    return boolean(any && ok);
  }
  if (name == "istitle") return boolean(!s.empty() && py_title(s) == s && s != utf8_encode(case_map(as_u32(s), to_lower)));
  if (name == "zfill") {
    int64_t w = a.get_int(0, "width", 0);
    int64_t n = length(value::str(s));
    if (w <= n) return str(s);
    check_size(size_t(w));
    size_t sign = (!s.empty() && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
    return str(s.substr(0, sign) + std::string(size_t(w - n), '0') + s.substr(sign));
  }
  if (name == "center" || name == "ljust" || name == "rjust")
    return str(pad(s, a.get_int(0, "width", 0), a.get(1, "fillchar"), name == "ljust" ? -1 : name == "rjust" ? 1 : 0));
  if (name == "partition" || name == "rpartition") {
    const std::string& sep = a.get_str(0, "sep");
    if (sep.empty()) fail("empty separator");
    size_t f = name == "partition" ? s.find(sep) : s.rfind(sep);
    if (f == std::string::npos) {
      out = name == "partition" ? value::tuple({value::str(s), value::str(""), value::str("")})
                                : value::tuple({value::str(""), value::str(""), value::str(s)});
    } else {
      out = value::tuple({value::str(s.substr(0, f)), value::str(sep), value::str(s.substr(f + sep.size()))});
    }
    return true;
  }
  if (name == "removeprefix" || name == "removesuffix") {
    const std::string& x = a.get_str(0, "affix");
    bool pre = name == "removeprefix";
    if (x.size() <= s.size() && (pre ? s.compare(0, x.size(), x) == 0 : s.compare(s.size() - x.size(), x.size(), x) == 0))
      return str(pre ? s.substr(x.size()) : s.substr(0, s.size() - x.size()));
    return str(s);
  }
  if (name == "format") return str(py_format(s, a));
  return false;
}

}  // namespace

bool call_method(const value& obj, const std::string& name, std::vector<value>& args, kwargs_t& kwargs,
                 value& out) {
  args_view a{args, kwargs};
  if (obj.k == kind::string) return str_method(obj.s, name, a, out);
  if (obj.is_seq()) {
    if (name == "copy") { out = value::list(*obj.l); return true; }
    const value* x = a.get(0, "value");
    if (!x) fail(fmt::format("{}() takes exactly one argument", name));
    if (name == "count") {
      out = value::integer(std::count_if(obj.l->begin(), obj.l->end(), [&](const value& e) { return equals(e, *x); }));
      return true;
    }
    if (name == "index") {
      for (size_t i = 0; i < obj.l->size(); ++i)
        if (equals((*obj.l)[i], *x)) { out = value::integer(int64_t(i)); return true; }
      fail(fmt::format("{} is not in list", repr(*x)));
    }
    return false;
  }
  if (obj.k == kind::dict) {
    if (name == "items") {
      std::vector<value> items;
      for (auto& [k, v] : obj.d->items) items.push_back(value::tuple({k, v}));
      out = value::list(std::move(items));
      return true;
    }
    if (name == "keys" || name == "values") {
      std::vector<value> items;
      for (auto& [k, v] : obj.d->items) items.push_back(name == "keys" ? k : v);
      out = value::list(std::move(items));
      return true;
    }
    if (name == "get") {
      const value* key = a.get(0, "key");
      if (!key) fail("get expected at least 1 argument, got 0");
      const value* found = obj.d->find(*key);
      const value* def = a.get(1, "default");
      out = found ? *found : def ? *def : value::none_v();
      return true;
    }
    if (name == "copy") {
      out = value::dict();
      out.d->items = obj.d->items;
      return true;
    }
  }
  return false;
}

}  // namespace tandem::jinja
