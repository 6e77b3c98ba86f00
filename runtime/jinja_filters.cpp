// jinja2's built-in filters and tests (jinja2/filters.py, jinja2/tests.py) that chat templates
// use, plus the tojson that transformers installs (json.dumps with ensure_ascii=False).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <set>

#include "runtime/jinja.h"

namespace tandem::jinja {
namespace {

const std::set<std::string, std::less<>> filter_names = {
    "abs", "attr", "batch", "capitalize", "center", "count", "d", "default", "dictsort", "e",
    "escape", "first", "float", "forceescape", "format", "indent", "int", "items", "join", "last",
    "length", "list", "lower", "map", "max", "min", "pprint", "reject", "rejectattr", "replace",
    "reverse", "round", "safe", "select", "selectattr", "sort", "string", "sum", "title", "tojson",
    "trim", "unique", "upper", "wordcount"};
const std::set<std::string, std::less<>> test_names = {
    "defined", "undefined", "none", "boolean", "false", "true", "integer", "float", "number",
    "string", "mapping", "iterable", "sequence", "callable", "sameas", "escaped", "in", "even",
    "odd", "divisibleby", "eq", "equalto", "==", "ne", "!=", "lt", "lessthan", "<", "le", "<=",
    "gt", "greaterthan", ">", "ge", ">=", "lower", "upper", "filter", "test"};

struct params {
  std::vector<value>& pos;  // pos[0] is the filtered value
  kwargs_t& kw;
  const value* get(size_t i, const char* name) const {
    if (i < pos.size()) return &pos[i];
    for (auto& [k, v] : kw)
      if (k == name) return &v;
    return nullptr;
  }
  bool flag(size_t i, const char* name, bool def) const {
    const value* v = get(i, name);
    return v ? truthy(*v) : def;
  }
  int64_t integer(size_t i, const char* name, int64_t def) const {
    const value* v = get(i, name);
    if (!v || v->is_none()) return def;
    if (!v->is_number()) fail(fmt::format("'{}' must be a number", name));
    return v->k == kind::floating ? int64_t(v->f) : v->as_int();
  }
  std::string string(size_t i, const char* name, const std::string& def) const {
    const value* v = get(i, name);
    return v ? to_str(*v) : def;
  }
};

// environment.getitem along a dotted attribute path ("a.b", "items.0").
value get_path(const value& v, const std::string& path) {
  value cur = v;
  size_t b = 0;
  for (;;) {
    size_t e = path.find('.', b);
    std::string part = path.substr(b, e == std::string::npos ? std::string::npos : e - b);
    bool digits = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
    cur = get_item(cur, digits ? value::integer(std::stoll(part)) : value::str(part));
    if (e == std::string::npos) return cur;
    b = e + 1;
  }
}

value lower_if_str(const value& v, bool case_sensitive) {
  if (case_sensitive || !v.is_string()) return v;
  std::vector<value> a{v};
  kwargs_t kw;
  return apply_filter("lower", a, kw);
}

// The key a sort/min/max/unique compares: an attribute of the item and/or its lower case.
std::function<value(const value&)> key_fn(const params& p, size_t cs_index, size_t attr_index) {
  bool cs = p.flag(cs_index, "case_sensitive", false);
  const value* attr = p.get(attr_index, "attribute");
  std::string path = attr && !attr->is_none() ? to_str(*attr) : "";
  return [cs, path](const value& v) { return lower_if_str(path.empty() ? v : get_path(v, path), cs); };
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

value to_int(const value& v, const value& def, int base) {
  if (v.is_int()) return value::integer(v.as_int());
  if (v.k == kind::floating) {
    if (!std::isfinite(v.f)) return def;
    return value::integer(int64_t(v.f));
  }
  if (v.is_string()) {
    std::string s = py_strip(v.s, nullptr, true, true);
    std::string clean;
    for (char c : s)
      if (c != '_') clean += c;
    errno = 0;
    char* end = nullptr;
    long long x = std::strtoll(clean.c_str(), &end, base);
    if (!clean.empty() && end && *end == 0 && errno == 0) return value::integer(x);
    double d = std::strtod(clean.c_str(), &end);
    if (!clean.empty() && end && *end == 0 && std::isfinite(d)) return value::integer(int64_t(d));
  }
  return def;
}

value to_float(const value& v, const value& def) {
  if (v.is_number()) return value::floating(v.as_double());
  if (v.is_string()) {
    std::string s = py_strip(v.s, nullptr, true, true);
    char* end = nullptr;
    double d = std::strtod(s.c_str(), &end);
    if (!s.empty() && end && *end == 0) return value::floating(d);
  }
  return def;
}

// Python's round(x, n): correctly rounded, halves to even (printf rounds the exact binary value).
double py_round(double x, int64_t n) {
  if (!std::isfinite(x) || n > 300) return x;
  if (n < -300) return 0.0 * x;
  if (n >= 0) {
    std::string s = fmt::format("{:.{}f}", x, int(n));
    return std::strtod(s.c_str(), nullptr);
  }
  double p = std::pow(10.0, double(-n));
  return std::nearbyint(x / p) * p;
}

value do_round(const params& p) {
  const value& v = p.pos[0];
  int64_t prec = p.integer(1, "precision", 0);
  std::string method = p.string(2, "method", "common");
  if (!v.is_number()) fail(fmt::format("type {} doesn't define __round__ method", type_name(v)));
  if (method == "common") {
    if (v.is_int()) return value::integer(v.as_int());  // round(int, n) stays an int
    return value::floating(py_round(v.f, prec));
  }
  if (method != "ceil" && method != "floor") fail("method must be common, ceil or floor");
  double m = std::pow(10.0, double(prec));
  double x = v.as_double() * m;
  return value::floating((method == "ceil" ? std::ceil(x) : std::floor(x)) / m);
}

value do_indent(const params& p) {
  std::string s = to_str(p.pos[0]);
  const value* w = p.get(1, "width");
  std::string ind = w && w->is_string() ? w->s : std::string(size_t(p.integer(1, "width", 4)), ' ');
  bool first = p.flag(2, "first", false), blank = p.flag(3, "blank", false);
  s += "\n";
  std::vector<value> none;
  kwargs_t kw;
  value lines_v;
  call_method(value::str(s), "splitlines", none, kw, lines_v);
  auto& lines = *lines_v.l;
  std::string rv;
  if (blank) {
    for (size_t i = 0; i < lines.size(); ++i) rv += (i ? "\n" + ind : "") + lines[i].s;
  } else {
    rv = lines.empty() ? "" : lines[0].s;
    for (size_t i = 1; i < lines.size(); ++i) rv += "\n" + (lines[i].s.empty() ? "" : ind + lines[i].s);
  }
  if (first) rv = ind + rv;
  check_size(rv.size());
  return value::str(rv);
}

value do_tojson(const params& p) {
  json_style st;
  const value* indent = p.get(2, "indent");
  if (indent && !indent->is_none()) {
    if (indent->is_string()) st.indent_str = indent->s, st.indent = 0;
    else st.indent = int(std::max<int64_t>(0, p.integer(2, "indent", 0)));
    st.item_sep = ",";
  }
  st.ensure_ascii = p.flag(1, "ensure_ascii", false);
  const value* sep = p.get(3, "separators");
  if (sep && !sep->is_none()) {
    if (!sep->is_seq() || sep->l->size() != 2 || !(*sep->l)[0].is_string() || !(*sep->l)[1].is_string())
      fail("tojson separators must be a pair of strings");
    st.item_sep = (*sep->l)[0].s;
    st.key_sep = (*sep->l)[1].s;
  }
  st.sort_keys = p.flag(4, "sort_keys", false);
  return value::str(to_json(p.pos[0], st));
}

// printf-style "%s" formatting (the format filter).
value do_format(const params& p) {
  if (!p.pos[0].is_string()) fail("the format filter needs a string");
  const std::string& f = p.pos[0].s;
  std::string out;
  size_t arg = 1;
  for (size_t i = 0; i < f.size(); ++i) {
    if (f[i] != '%') { out += f[i]; continue; }
    if (++i >= f.size()) fail("incomplete format");
    if (f[i] == '%') { out += '%'; continue; }
    std::string spec = "%";
    while (i < f.size() && std::strchr("-+ #0123456789.", f[i])) spec += f[i++];
    if (i >= f.size()) fail("incomplete format");
    char conv = f[i];
    if (arg >= p.pos.size()) fail("not enough arguments for format string");
    const value& v = p.pos[arg++];
    char buf[512];
    if (conv == 's' || conv == 'r') {
      std::string s = conv == 's' ? to_str(v) : repr(v);
      std::snprintf(buf, sizeof buf, (spec + "s").c_str(), s.c_str());
      out += spec == "%" ? s : std::string(buf);
    } else if (std::strchr("dioxX", conv)) {
      if (!v.is_number()) fail(fmt::format("%{} format: a real number is required, not {}", conv, type_name(v)));
      std::snprintf(buf, sizeof buf, (spec + "ll" + (conv == 'i' ? 'd' : conv)).c_str(),
                    (long long)(v.k == kind::floating ? int64_t(v.f) : v.as_int()));
      out += buf;
    } else if (std::strchr("feEgG", conv)) {
      if (!v.is_number()) fail(fmt::format("must be real number, not {}", type_name(v)));
      std::snprintf(buf, sizeof buf, (spec + conv).c_str(), v.as_double());
      out += buf;
    } else {
      fail(fmt::format("unsupported format character '{}'", conv));
    }
    check_size(out.size());
  }
  if (arg < p.pos.size()) fail("not all arguments converted during string formatting");
  return value::str(out);
}

value do_sum(const params& p) {
  const value* attr = p.get(1, "attribute");
  const value* start = p.get(2, "start");
  value acc = start ? *start : value::integer(0);
  for (auto& e : iterate(p.pos[0])) {
    value x = attr && !attr->is_none() ? get_path(e, to_str(*attr)) : e;
    if (!acc.is_number() || !x.is_number())
      fail(fmt::format("unsupported operand type(s) for +: '{}' and '{}'", type_name(acc), type_name(x)));
    if (acc.k == kind::floating || x.k == kind::floating) acc = value::floating(acc.as_double() + x.as_double());
    else {
      int64_t r;
      if (__builtin_add_overflow(acc.as_int(), x.as_int(), &r)) fail("integer overflow in sum");
      acc = value::integer(r);
    }
  }
  return acc;
}

// select / reject / selectattr / rejectattr.
value do_select(const std::string& name, params& p) {
  bool attr_mode = name.size() > 6 && name.substr(name.size() - 4) == "attr";
  bool keep = name.rfind("select", 0) == 0;
  size_t next = 1;
  std::string attr;
  if (attr_mode) {
    if (p.pos.size() < 2) fail(fmt::format("{} needs an attribute name", name));
    attr = to_str(p.pos[1]);
    next = 2;
  }
  std::string test;
  std::vector<value> extra;
  if (p.pos.size() > next) {
    test = to_str(p.pos[next]);
    if (!known_test(test)) fail(fmt::format("no test named '{}'", test));
    extra.assign(p.pos.begin() + long(next) + 1, p.pos.end());
  }
  std::vector<value> out;
  for (auto& e : iterate(p.pos[0])) {
    value x = attr_mode ? get_path(e, attr) : e;
    bool r;
    if (test.empty()) {
      r = truthy(x);
    } else {
      std::vector<value> targs{x};
      targs.insert(targs.end(), extra.begin(), extra.end());
      r = apply_test(test, targs, p.kw);
    }
    if (r == keep) out.push_back(e);
  }
  return value::list(std::move(out));
}

value do_map(params& p) {
  std::vector<value> out;
  const value* attr = nullptr;
  for (auto& [k, v] : p.kw)
    if (k == "attribute") attr = &v;
  if (attr) {
    const value* def = nullptr;
    for (auto& [k, v] : p.kw)
      if (k == "default") def = &v;
    for (auto& e : iterate(p.pos[0])) {
      value x = get_path(e, to_str(*attr));
      out.push_back(x.is_undefined() && def ? *def : x);
    }
    return value::list(std::move(out));
  }
  if (p.pos.size() < 2) fail("map needs a filter name or attribute=");
  std::string f = to_str(p.pos[1]);
  if (!known_filter(f)) fail(fmt::format("no filter named '{}'", f));
  for (auto& e : iterate(p.pos[0])) {
    std::vector<value> fargs{e};
    fargs.insert(fargs.end(), p.pos.begin() + 2, p.pos.end());
    out.push_back(apply_filter(f, fargs, p.kw));
  }
  return value::list(std::move(out));
}

value do_minmax(const params& p, bool is_max) {
  auto key = key_fn(p, 1, 2);
  std::vector<value> items = iterate(p.pos[0]);
  if (items.empty()) return value::undef(fmt::format("No aggregated item, sequence was empty."));
  size_t best = 0;
  for (size_t i = 1; i < items.size(); ++i) {
    value a = key(items[i]), b = key(items[best]);
    if (is_max ? less(b, a) : less(a, b)) best = i;
  }
  return items[best];
}

value do_sort(const params& p) {
  bool reverse = p.flag(1, "reverse", false);
  auto key = key_fn(p, 2, 3);
  std::vector<value> items = iterate(p.pos[0]);
  std::vector<std::pair<value, value>> keyed;
  for (auto& e : items) keyed.emplace_back(key(e), e);
  std::stable_sort(keyed.begin(), keyed.end(), [&](auto& a, auto& b) {
    return reverse ? less(b.first, a.first) : less(a.first, b.first);
  });
  std::vector<value> out;
  for (auto& kv : keyed) out.push_back(kv.second);
  return value::list(std::move(out));
}

value do_dictsort(const params& p) {
  if (!p.pos[0].is_mapping()) fail("dictsort needs a mapping");
  bool cs = p.flag(1, "case_sensitive", false);
  std::string by = p.string(2, "by", "key");
  bool reverse = p.flag(3, "reverse", false);
  if (by != "key" && by != "value") fail("You can only sort by either 'key' or 'value'");
  std::vector<value> items;
  for (auto& [k, v] : p.pos[0].d->items) items.push_back(value::tuple({k, v}));
  size_t idx = by == "key" ? 0 : 1;
  std::stable_sort(items.begin(), items.end(), [&](const value& a, const value& b) {
    value ka = lower_if_str((*a.l)[idx], cs), kb = lower_if_str((*b.l)[idx], cs);
    return reverse ? less(kb, ka) : less(ka, kb);
  });
  return value::list(std::move(items));
}

value do_unique(const params& p) {
  auto key = key_fn(p, 1, 2);
  std::vector<value> seen, out;
  for (auto& e : iterate(p.pos[0])) {
    value k = key(e);
    if (std::any_of(seen.begin(), seen.end(), [&](const value& s) { return equals(s, k); })) continue;
    seen.push_back(k);
    out.push_back(e);
  }
  return value::list(std::move(out));
}

value do_batch(const params& p) {
  int64_t n = p.integer(1, "linecount", 0);
  if (n <= 0) fail("batch size must be positive");
  const value* fill = p.get(2, "fill_with");
  std::vector<value> out, cur;
  for (auto& e : iterate(p.pos[0])) {
    cur.push_back(e);
    if (int64_t(cur.size()) == n) {
      out.push_back(value::list(std::move(cur)));
      cur.clear();
    }
  }
  if (!cur.empty()) {
    if (fill && !fill->is_none())
      while (int64_t(cur.size()) < n) cur.push_back(*fill);
    out.push_back(value::list(std::move(cur)));
  }
  return value::list(std::move(out));
}

value string_filter(const std::string& name, const params& p) {
  std::string s = to_str(p.pos[0]);
  std::vector<value> none;
  kwargs_t kw;
  value out;
  if (name == "upper" || name == "lower" || name == "capitalize") {
    call_method(value::str(s), name, none, kw, out);
    return out;
  }
  if (name == "title") {  // jinja2's own: capitalizes after -, space, ( { [ <
    std::u32string c = utf8_decode(s);
    bool start = true;
    for (auto& x : c) {
      bool sep = x == '-' || x == '(' || x == '{' || x == '[' || x == '<' || is_py_space(x);
      if (sep) { start = true; continue; }
      x = start ? to_upper(x) : to_lower(x);
      start = false;
    }
    return value::str(utf8_encode(c));
  }
  if (name == "trim") return value::str(py_strip(s, p.get(1, "chars"), true, true));
  if (name == "replace") {
    std::vector<value> a{p.pos.size() > 1 ? p.pos[1] : value::str(""), p.pos.size() > 2 ? p.pos[2] : value::str("")};
    if (const value* c = p.get(3, "count"); c && !c->is_none()) a.push_back(*c);
    kwargs_t none_kw;
    call_method(value::str(s), "replace", a, none_kw, out);
    return out;
  }
  if (name == "wordcount") {
    int64_t n = 0;
    bool in_word = false;
    for (char32_t c : utf8_decode(s)) {
      bool w = is_alnum(c) || c == '_';
      if (w && !in_word) ++n;
      in_word = w;
    }
    return value::integer(n);
  }
  if (name == "center") {
    std::vector<value> a{value::integer(p.integer(1, "width", 80))};
    call_method(value::str(s), "center", a, kw, out);
    return out;
  }
  return value::str(html_escape(s));  // e, escape, forceescape
}

}  // namespace

bool known_filter(const std::string& name) { return filter_names.count(name) > 0; }
bool known_test(const std::string& name) { return test_names.count(name) > 0; }

value apply_filter(const std::string& name, std::vector<value>& args, kwargs_t& kwargs) {
  params p{args, kwargs};
  const value& v = args[0];
  if (name == "default" || name == "d") {
    bool boolean = p.flag(2, "boolean", false);
    if (v.is_undefined() || (boolean && !truthy(v))) {
      const value* d = p.get(1, "default_value");
      return d ? *d : value::str("");
    }
    return v;
  }
  if (name == "length" || name == "count") return value::integer(length(v));
  if (name == "string") return value::str(to_str(v));
  if (name == "safe") return v.is_string() ? v : value::str(to_str(v));
  if (name == "list") return value::list(iterate(v));
  if (name == "tojson") return do_tojson(p);
  if (name == "pprint") return value::str(repr(v));
  if (name == "items") {
    if (v.is_undefined()) return value::list();
    if (!v.is_mapping()) fail("Can only get item pairs from a mapping.");
    std::vector<value> none;
    value out;
    call_method(v, "items", none, kwargs, out);
    return out;
  }
  if (name == "int") {
    const value* def = p.get(1, "default");
    return to_int(v, def ? *def : value::integer(0), int(p.integer(2, "base", 10)));
  }
  if (name == "float") {
    const value* def = p.get(1, "default");
    return to_float(v, def ? *def : value::floating(0.0));
  }
  if (name == "abs") {
    if (v.k == kind::floating) return value::floating(std::fabs(v.f));
    if (!v.is_int()) fail(fmt::format("bad operand type for abs(): '{}'", type_name(v)));
    if (v.as_int() == INT64_MIN) fail("integer overflow in abs");
    return value::integer(std::llabs(v.as_int()));
  }
  if (name == "round") return do_round(p);
  if (name == "first" || name == "last") {
    std::vector<value> items = iterate(v);
    if (items.empty()) return value::undef(fmt::format("{} has no {} item", object_type_repr(v), name));
    return name == "first" ? items.front() : items.back();
  }
  if (name == "reverse") {
    if (v.is_string()) {
      std::u32string c = utf8_decode(v.s);
      std::reverse(c.begin(), c.end());
      return value::str(utf8_encode(c));
    }
    std::vector<value> items = iterate(v);
    std::reverse(items.begin(), items.end());
    return value::list(std::move(items));
  }
  if (name == "join") {
    std::string sep = p.string(1, "d", "");
    const value* attr = p.get(2, "attribute");
    std::string out;
    bool first = true;
    for (auto& e : iterate(v)) {
      if (!first) out += sep;
      first = false;
      out += to_str(attr && !attr->is_none() ? get_path(e, to_str(*attr)) : e);
      check_size(out.size());
    }
    return value::str(out);
  }
  if (name == "attr") return get_attr(v, p.string(1, "name", ""));
  if (name == "map") return do_map(p);
  if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") return do_select(name, p);
  if (name == "min" || name == "max") return do_minmax(p, name == "max");
  if (name == "sort") return do_sort(p);
  if (name == "dictsort") return do_dictsort(p);
  if (name == "unique") return do_unique(p);
  if (name == "sum") return do_sum(p);
  if (name == "batch") return do_batch(p);
  if (name == "indent") return do_indent(p);
  if (name == "format") return do_format(p);
  return string_filter(name, p);
}

bool apply_test(const std::string& name, std::vector<value>& args, kwargs_t& kwargs) {
  const value& v = args[0];
  params p{args, kwargs};
  auto arg = [&]() -> const value& {
    if (args.size() < 2) fail(fmt::format("the test '{}' needs an argument", name));
    return args[1];
  };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "boolean") return v.k == kind::boolean;
  if (name == "false") return v.k == kind::boolean && !v.b;
  if (name == "true") return v.k == kind::boolean && v.b;
  if (name == "integer") return v.k == kind::integer;
  if (name == "float") return v.k == kind::floating;
  if (name == "number") return v.is_number();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_mapping();
  if (name == "iterable" || name == "sequence")
    return v.is_undefined() || v.is_string() || v.is_seq() || v.is_mapping();
  if (name == "callable") return v.k == kind::function;
  if (name == "escaped") return false;
  if (name == "sameas") {
    const value& o = arg();
    if (v.k != o.k) return false;
    if (v.l || v.d || v.fn) return v.l == o.l && v.d == o.d && v.fn == o.fn;
    return equals(v, o);
  }
  if (name == "in") {
    const value& seq = arg();
    if (seq.is_string()) {
      if (!v.is_string()) fail("'in <string>' requires string as left operand");
      return seq.s.find(v.s) != std::string::npos;
    }
    if (seq.is_mapping()) return seq.d->find(v) != nullptr;
    for (auto& e : iterate(seq))
      if (equals(e, v)) return true;
    return false;
  }
  if (name == "even" || name == "odd" || name == "divisibleby") {
    int64_t d = name == "divisibleby" ? p.integer(1, "num", 1) : 2;
    if (!v.is_number()) fail(fmt::format("unsupported operand type(s) for %: '{}' and 'int'", type_name(v)));
    if (d == 0) fail("integer division or modulo by zero");
    if (v.k == kind::floating) {
      double r = std::fmod(v.f, double(d));
      return name == "odd" ? r != 0 : r == 0;
    }
    int64_t r = v.as_int() % d;
    return name == "odd" ? r != 0 : r == 0;
  }
  if (name == "eq" || name == "equalto" || name == "==") return equals(v, arg());
  if (name == "ne" || name == "!=") return !equals(v, arg());
  if (name == "lt" || name == "lessthan" || name == "<") return less(v, arg());
  if (name == "le" || name == "<=") return !less(arg(), v);
  if (name == "gt" || name == "greaterthan" || name == ">") return less(arg(), v);
  if (name == "ge" || name == ">=") return !less(v, arg());
  if (name == "lower" || name == "upper") {
    std::vector<value> none;
    kwargs_t kw;
    value out;
    call_method(value::str(to_str(v)), name == "lower" ? "islower" : "isupper", none, kw, out);
    return out.b;
  }
  if (name == "filter") return v.is_string() && known_filter(v.s);
  if (name == "test") return v.is_string() && known_test(v.s);
  fail(fmt::format("no test named '{}'", name));
}

}  // namespace tandem::jinja
