// The Jinja evaluator: walks the syntax tree with jinja2's scoping (a for loop's body gets a fresh
// scope each iteration; if does not scope; macros see the scope they were defined in), Python's
// operators, and the limits that stop hostile templates (steps, call depth, output size).
#include <fmt/format.h>

#include <cmath>

#include "runtime/error.h"
#include "runtime/jinja.h"

namespace tandem::jinja {
namespace {

struct frame;
using frame_ptr = std::shared_ptr<frame>;

struct frame {
  std::unordered_map<std::string, value> vars;
  frame_ptr parent;
  const value* lookup(const std::string& name) const {
    for (const frame* f = this; f; f = f->parent.get()) {
      auto it = f->vars.find(name);
      if (it != f->vars.end()) return &it->second;
    }
    return nullptr;
  }
};

enum class flow { normal, brk, cont };

template <class F>
int64_t checked(F op, int64_t x, int64_t y) {
  int64_t r;
  if (op(x, y, &r)) fail("integer overflow (the result does not fit in 64 bits)");
  return r;
}
bool add_ov(int64_t x, int64_t y, int64_t* r) { return __builtin_add_overflow(x, y, r); }
bool sub_ov(int64_t x, int64_t y, int64_t* r) { return __builtin_sub_overflow(x, y, r); }
bool mul_ov(int64_t x, int64_t y, int64_t* r) { return __builtin_mul_overflow(x, y, r); }

double py_fmod(double a, double b) {
  double m = std::fmod(a, b);
  if (m != 0 && ((m < 0) != (b < 0))) m += b;
  return m;
}

value arith(const std::string& op, const value& a, const value& b) {
  if (a.is_undefined()) fail(a.s.empty() ? "undefined value in arithmetic" : a.s);
  if (b.is_undefined()) fail(b.s.empty() ? "undefined value in arithmetic" : b.s);
  auto unsupported = [&]() -> value {
    fail(fmt::format("unsupported operand type(s) for {}: '{}' and '{}'", op, type_name(a), type_name(b)));
  };
  if (a.is_number() && b.is_number()) {
    bool fl = a.k == kind::floating || b.k == kind::floating;
    if (op == "/") {
      if (b.as_double() == 0) fail("division by zero");
      return value::floating(a.as_double() / b.as_double());
    }
    if (fl) {
      double x = a.as_double(), y = b.as_double();
      if (op == "+") return value::floating(x + y);
      if (op == "-") return value::floating(x - y);
      if (op == "*") return value::floating(x * y);
      if (op == "**") return value::floating(std::pow(x, y));
      if (y == 0) fail("float division by zero");
      if (op == "//") return value::floating(std::floor(x / y));
      return value::floating(py_fmod(x, y));
    }
    int64_t x = a.as_int(), y = b.as_int();
    if (op == "+") return value::integer(checked(add_ov, x, y));
    if (op == "-") return value::integer(checked(sub_ov, x, y));
    if (op == "*") return value::integer(checked(mul_ov, x, y));
    if (op == "**") {
      if (y < 0) return value::floating(std::pow(double(x), double(y)));
      int64_t acc = 1;
      for (int64_t k = 0; k < y; ++k) {
        acc = checked(mul_ov, acc, x);
        if (acc == 0 || acc == 1) break;
        if (acc == -1 && k + 1 < y) { acc = ((y - k - 1) % 2) ? 1 : -1; break; }
      }
      return value::integer(acc);
    }
    if (y == 0) fail("integer division or modulo by zero");
    if (x == INT64_MIN && y == -1) fail("integer overflow (the result does not fit in 64 bits)");
    int64_t q = x / y, m = x % y;
    if (m != 0 && ((m < 0) != (y < 0))) {
      --q;
      m += y;
    }
    return value::integer(op == "//" ? q : m);
  }
  if (op == "+") {
    if (a.is_string() && b.is_string()) {
      check_size(a.s.size() + b.s.size());
      return value::str(a.s + b.s);
    }
    if (a.is_seq() && a.k == b.k) {
      check_size((a.l->size() + b.l->size()) * sizeof(value));
      std::vector<value> r = *a.l;
      r.insert(r.end(), b.l->begin(), b.l->end());
      return a.k == kind::tuple ? value::tuple(std::move(r)) : value::list(std::move(r));
    }
    if (a.is_string()) fail(fmt::format("can only concatenate str (not \"{}\") to str", type_name(b)));
    return unsupported();
  }
  if (op == "*" && (a.is_int() || b.is_int())) {
    const value& seq = a.is_int() ? b : a;
    int64_t n = std::max<int64_t>(0, (a.is_int() ? a : b).as_int());
    if (seq.is_string()) {
      check_size(uint64_t(n) > max_value_bytes ? max_value_bytes + 1 : size_t(n) * seq.s.size());
      std::string r;
      for (int64_t k = 0; k < n; ++k) r += seq.s;
      return value::str(std::move(r));
    }
    if (seq.is_seq()) {
      check_size(uint64_t(n) > max_value_bytes ? max_value_bytes + 1 : size_t(n) * seq.l->size() * sizeof(value));
      std::vector<value> r;
      for (int64_t k = 0; k < n; ++k) r.insert(r.end(), seq.l->begin(), seq.l->end());
      return seq.k == kind::tuple ? value::tuple(std::move(r)) : value::list(std::move(r));
    }
  }
  if (op == "%" && a.is_string()) {  // printf-style formatting
    std::vector<value> args{a};
    if (b.k == kind::tuple) args.insert(args.end(), b.l->begin(), b.l->end());
    else args.push_back(b);
    kwargs_t kw;
    return apply_filter("format", args, kw);
  }
  return unsupported();
}

bool contains(const value& container, const value& item) {
  switch (container.k) {
    case kind::undefined: return false;
    case kind::string:
      if (!item.is_string())
        fail(fmt::format("'in <string>' requires string as left operand, not {}", type_name(item)));
      return container.s.find(item.s) != std::string::npos;
    case kind::list:
    case kind::tuple:
      for (auto& e : *container.l)
        if (equals(e, item)) return true;
      return false;
    case kind::dict: return container.d->find(item) != nullptr;
    default: fail(fmt::format("argument of type '{}' is not iterable", type_name(container)));
  }
}

bool compare(const std::string& op, const value& a, const value& b) {
  if (op == "==") return equals(a, b);
  if (op == "!=") return !equals(a, b);
  if (op == "<") return less(a, b);
  if (op == ">") return less(b, a);
  if (op == "<=") return less(a, b) || equals(a, b);
  if (op == ">=") return less(b, a) || equals(a, b);
  if (op == "in") return contains(b, a);
  return !contains(b, a);  // not in
}

value make_range(std::vector<value>& args) {
  for (auto& a : args)
    if (!a.is_int()) fail(fmt::format("'{}' object cannot be interpreted as an integer", type_name(a)));
  int64_t start = 0, stop = 0, step = 1;
  if (args.size() == 1) stop = args[0].as_int();
  else if (args.size() == 2 || args.size() == 3) {
    start = args[0].as_int();
    stop = args[1].as_int();
    if (args.size() == 3) step = args[2].as_int();
  } else {
    fail("range expected 1 to 3 arguments");
  }
  if (step == 0) fail("range() arg 3 must not be zero");
  double n = std::ceil((double(stop) - double(start)) / double(step));
  if (n > 100000) fail("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
  std::vector<value> out;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.push_back(value::integer(i));
  return value::list(std::move(out));
}

class evaluator {
 public:
  evaluator(const limits& lim, std::string now) : lim_(lim), now_(std::move(now)) {}

  std::string run(const body_t& program, frame_ptr root) {
    root_ = root;
    std::string out;
    out_ = &out;
    exec(program, root);
    return out;
  }

 private:
  const limits& lim_;
  std::string now_;
  std::string* out_ = nullptr;
  uint64_t steps_ = 0;
  int call_depth_ = 0;
  frame_ptr root_;
  value block_value_;
  stack_budget stack_;

  void step() {
    if (stack_.exceeded()) fail("the template nests too deeply for this thread's stack");
    if (++steps_ > lim_.max_steps)
      fail(fmt::format("the template ran more than {} steps; it loops without end or does too much work",
                       lim_.max_steps));
  }
  void write(std::string_view s) {
    out_->append(s);
    if (out_->size() > lim_.max_output)
      fail(fmt::format("the template's output exceeds {} MiB", lim_.max_output >> 20));
  }

  // Output of body into a string of its own.
  std::string capture(const body_t& body, frame_ptr& f, flow* fl = nullptr) {
    std::string buf;
    std::string* saved = out_;
    out_ = &buf;
    try {
      flow r = exec(body, f);
      if (fl) *fl = r;
    } catch (...) {
      out_ = saved;
      throw;
    }
    out_ = saved;
    return buf;
  }

  flow exec(const body_t& body, frame_ptr& f) {
    for (auto& s : body) {
      flow r = exec_stmt(*s, f);
      if (r != flow::normal) return r;
    }
    return flow::normal;
  }

  flow exec_stmt(const stmt& s, frame_ptr& f) {
    try {
      step();
      return exec_stmt_inner(s, f);
    } catch (eval_error& e) {
      if (!e.line) e.line = s.line, e.col = s.col;
      throw;
    }
  }

  void assign(frame& f, const std::vector<std::string>& names, const value& v) {
    if (names.size() == 1) {
      f.vars[names[0]] = v;
      return;
    }
    std::vector<value> items = iterate(v);
    if (items.size() != names.size())
      fail(items.size() > names.size()
               ? fmt::format("too many values to unpack (expected {})", names.size())
               : fmt::format("not enough values to unpack (expected {}, got {})", names.size(), items.size()));
    for (size_t i = 0; i < names.size(); ++i) f.vars[names[i]] = items[i];
  }

  flow exec_stmt_inner(const stmt& s, frame_ptr& f) {
    switch (s.kind) {
      case sk::text: write(s.text); return flow::normal;
      case sk::output: write(to_str(eval(*s.e, f))); return flow::normal;
      case sk::if_:
        for (auto& [cond, body] : s.branches)
          if (truthy(eval(*cond, f))) return exec(body, f);
        return exec(s.else_body, f);
      case sk::for_: return exec_for(s, f);
      case sk::set: {
        value v = eval(*s.e, f);
        if (!s.text.empty()) {
          const value* target = f->lookup(s.targets[0]);
          if (!target || target->k != kind::ns)
            fail("cannot assign attribute on non-namespace object");
          target->d->set(value::str(s.text), std::move(v));
        } else {
          assign(*f, s.targets, v);
        }
        return flow::normal;
      }
      case sk::set_block: {
        value v = value::str(capture(s.body, f));
        if (s.e) v = with_block_value(*s.e, v, f);
        f->vars[s.targets[0]] = v;
        return flow::normal;
      }
      case sk::macro: f->vars[s.text] = make_macro(s, f, s.text); return flow::normal;
      case sk::call_block: {
        value caller = make_macro(s, f, "caller");
        write(to_str(eval_call(*s.e, f, &caller)));
        return flow::normal;
      }
      case sk::filter_block: {
        value v = value::str(capture(s.body, f));
        write(to_str(with_block_value(*s.e, v, f)));
        return flow::normal;
      }
      case sk::with: {
        auto inner = std::make_shared<frame>();
        inner->parent = f;
        for (auto& [name, e] : s.assigns) inner->vars[name] = eval(*e, f);
        return exec(s.body, inner);
      }
      case sk::break_: return flow::brk;
      case sk::continue_: return flow::cont;
      case sk::generation: return exec(s.body, f);
    }
    return flow::normal;
  }

  value with_block_value(const expr& chain, value v, const frame_ptr& f) {
    value saved = block_value_;
    block_value_ = std::move(v);
    value r = eval(chain, f);
    block_value_ = saved;
    return r;
  }

  value loop_object(const std::vector<value>& items, size_t i) {
    value loop = value::ns();
    auto& d = loop.d->items;
    int64_t n = int64_t(items.size()), k = int64_t(i);
    d.reserve(12);
    auto put = [&](const char* key, value v) { d.emplace_back(value::str(key), std::move(v)); };
    put("index", value::integer(k + 1));
    put("index0", value::integer(k));
    put("revindex", value::integer(n - k));
    put("revindex0", value::integer(n - k - 1));
    put("first", value::boolean(k == 0));
    put("last", value::boolean(k == n - 1));
    put("length", value::integer(n));
    put("depth", value::integer(1));
    put("depth0", value::integer(0));
    if (k > 0) put("previtem", items[i - 1]);
    if (k + 1 < n) put("nextitem", items[i + 1]);
    put("cycle", value::func("cycle", [k](std::vector<value>& args, kwargs_t&) {
      if (args.empty()) fail("no items for cycling given");
      return args[size_t(k) % args.size()];
    }));
    return loop;
  }

  flow exec_for(const stmt& s, frame_ptr& f) {
    value seq = eval(*s.e, f);
    if (seq.is_none()) fail("'NoneType' object is not iterable");
    std::vector<value> items = iterate(seq);
    if (s.cond) {
      std::vector<value> kept;
      auto tmp = std::make_shared<frame>();
      tmp->parent = f;
      for (auto& it : items) {
        step();
        assign(*tmp, s.targets, it);
        if (truthy(eval(*s.cond, tmp))) kept.push_back(it);
      }
      items = std::move(kept);
    }
    if (items.empty()) return exec(s.else_body, f);
    for (size_t i = 0; i < items.size(); ++i) {
      step();
      auto inner = std::make_shared<frame>();
      inner->parent = f;
      assign(*inner, s.targets, items[i]);
      if (s.uses_loop) inner->vars["loop"] = loop_object(items, i);
      flow r = exec(s.body, inner);
      if (r == flow::brk) break;
    }
    return flow::normal;
  }

  value make_macro(const stmt& s, const frame_ptr& f, const std::string& name) {
    std::weak_ptr<frame> defined_in = f;
    const stmt* def = &s;
    return value::func(name, [this, def, defined_in, name](std::vector<value>& args, kwargs_t& kw) {
      return call_macro(*def, defined_in.lock(), name, args, kw);
    });
  }

  value call_macro(const stmt& s, frame_ptr parent, const std::string& name, std::vector<value>& args,
                   kwargs_t& kw) {
    if (call_depth_ >= lim_.max_call_depth)
      fail(fmt::format("macro calls nest more than {} deep (endless recursion?)", lim_.max_call_depth));
    struct depth_guard {
      int& d;
      explicit depth_guard(int& x) : d(x) { ++d; }
      ~depth_guard() { --d; }
    } guard(call_depth_);
    auto f = std::make_shared<frame>();
    f->parent = parent ? parent : root_;
    std::vector<value> varargs;
    for (size_t i = 0; i < args.size(); ++i) {
      if (i < s.params.size()) f->vars[s.params[i].name] = args[i];
      else varargs.push_back(args[i]);
    }
    value kwargs = value::dict();
    for (auto& [k, v] : kw) {
      bool is_param = false;
      for (size_t i = 0; i < s.params.size(); ++i)
        if (s.params[i].name == k) {
          if (i < args.size()) fail(fmt::format("macro '{}' got multiple values for argument '{}'", name, k));
          is_param = true;
        }
      if (is_param || k == "caller") f->vars[k] = v;
      else kwargs.d->set(value::str(k), v);
    }
    for (auto& p : s.params)
      if (!f->vars.count(p.name))
        f->vars[p.name] = p.def ? eval(*p.def, f) : value::undef(fmt::format("parameter '{}' was not provided", p.name));
    f->vars["varargs"] = value::tuple(std::move(varargs));
    f->vars["kwargs"] = kwargs;
    return value::str(capture(s.body, f));
  }

  // ---- expressions ---------------------------------------------------------------------------

  value eval(const expr& e, const frame_ptr& f) {
    try {
      step();
      return eval_inner(e, f);
    } catch (eval_error& err) {
      if (!err.line) err.line = e.line, err.col = e.col;
      throw;
    }
  }

  value lookup(const std::string& name, const frame_ptr& f) {
    if (const value* v = f->lookup(name)) return *v;
    if (name == "range") return value::func("range", [](std::vector<value>& a, kwargs_t&) { return make_range(a); });
    if (name == "namespace" || name == "dict") {
      bool ns = name == "namespace";
      return value::func(name, [ns](std::vector<value>& a, kwargs_t& kw) {
        value d = ns ? value::ns() : value::dict();
        for (auto& x : a) {
          if (!x.is_mapping()) fail(fmt::format("{}() takes a mapping or keyword arguments", ns ? "namespace" : "dict"));
          for (auto& kv : x.d->items) d.d->set(kv.first, kv.second);
        }
        for (auto& [k, v] : kw) d.d->set(value::str(k), v);
        return d;
      });
    }
    if (name == "raise_exception")
      return value::func(name, [](std::vector<value>& a, kwargs_t&) -> value {
        throw template_exception{a.empty() ? std::string() : to_str(a[0])};
      });
    if (name == "strftime_now")
      return value::func(name, [this](std::vector<value>& a, kwargs_t&) {
        if (a.empty() || !a[0].is_string()) fail("strftime_now needs a format string");
        return value::str(strftime_at(now_, a[0].s));
      });
    return value::undef(fmt::format("'{}' is undefined", name));
  }

  void eval_args(const expr& e, const frame_ptr& f, std::vector<value>& args, kwargs_t& kw) {
    for (size_t i = 1; i < e.a.size(); ++i) args.push_back(eval(*e.a[i], f));
    for (auto& [k, x] : e.kw) kw.emplace_back(k, eval(*x, f));
  }

  value eval_call(const expr& e, const frame_ptr& f, const value* caller = nullptr) {
    value callee = eval(*e.a[0], f);
    std::vector<value> args;
    kwargs_t kw;
    eval_args(e, f, args, kw);
    if (caller) kw.emplace_back("caller", *caller);
    if (callee.k == kind::function) return callee.fn->call(args, kw);
    if (callee.is_undefined()) fail(callee.s.empty() ? "undefined value is not callable" : callee.s);
    fail(fmt::format("'{}' object is not callable", type_name(callee)));
  }

  value eval_inner(const expr& e, const frame_ptr& f) {
    switch (e.kind) {
      case ek::literal: return e.lit;
      case ek::name: return lookup(e.name, f);
      case ek::block_value: return block_value_;
      case ek::list:
      case ek::tuple: {
        std::vector<value> items;
        for (auto& x : e.a) items.push_back(eval(*x, f));
        return e.kind == ek::list ? value::list(std::move(items)) : value::tuple(std::move(items));
      }
      case ek::dict: {
        value d = value::dict();
        for (size_t i = 0; i + 1 < e.a.size(); i += 2) {
          value k = eval(*e.a[i], f);
          if (k.is_seq() && k.k == kind::list) fail("unhashable type: 'list'");
          if (k.is_mapping()) fail("unhashable type: 'dict'");
          d.d->set(k, eval(*e.a[i + 1], f));
        }
        return d;
      }
      case ek::attr: return get_attr(eval(*e.a[0], f), e.name);
      case ek::item: return get_item(eval(*e.a[0], f), eval(*e.a[1], f));
      case ek::slice: {
        value obj = eval(*e.a[0], f);
        value parts[3];
        for (int k = 0; k < 3; ++k)
          if (e.has[k]) parts[k] = eval(*e.a[size_t(k) + 1], f);
        return slice(obj, e.has[0] ? &parts[0] : nullptr, e.has[1] ? &parts[1] : nullptr,
                     e.has[2] ? &parts[2] : nullptr);
      }
      case ek::call: return eval_call(e, f);
      case ek::filter: {
        std::vector<value> args{eval(*e.a[0], f)};
        kwargs_t kw;
        eval_args(e, f, args, kw);
        return apply_filter(e.name, args, kw);
      }
      case ek::test: {
        std::vector<value> args{eval(*e.a[0], f)};
        kwargs_t kw;
        eval_args(e, f, args, kw);
        return value::boolean(apply_test(e.name, args, kw) != e.negate);
      }
      case ek::unary: {
        value v = eval(*e.a[0], f);
        if (e.name == "not") return value::boolean(!truthy(v));
        if (v.is_undefined()) fail(v.s.empty() ? "undefined value in arithmetic" : v.s);
        if (!v.is_number()) fail(fmt::format("bad operand type for unary {}: '{}'", e.name, type_name(v)));
        if (e.name == "+") return v.k == kind::boolean ? value::integer(v.as_int()) : v;
        if (v.k == kind::floating) return value::floating(-v.f);
        if (v.as_int() == INT64_MIN) fail("integer overflow (the result does not fit in 64 bits)");
        return value::integer(-v.as_int());
      }
      case ek::binary: {
        if (e.name == "and" || e.name == "or") {
          value l = eval(*e.a[0], f);
          if (truthy(l) == (e.name == "or")) return l;
          return eval(*e.a[1], f);
        }
        value l = eval(*e.a[0], f), r = eval(*e.a[1], f);
        if (e.name == "~") {
          std::string ls = to_str(l), rs = to_str(r);
          check_size(ls.size() + rs.size());
          return value::str(ls + rs);
        }
        return arith(e.name, l, r);
      }
      case ek::compare: {
        value l = eval(*e.a[0], f);
        for (size_t i = 0; i < e.ops.size(); ++i) {
          value r = eval(*e.a[i + 1], f);
          if (!compare(e.ops[i], l, r)) return value::boolean(false);
          l = std::move(r);
        }
        return value::boolean(true);
      }
      case ek::cond:
        if (truthy(eval(*e.a[0], f))) return eval(*e.a[1], f);
        if (e.a.size() > 2) return eval(*e.a[2], f);
        return value::undef("the conditional expression had no else branch");
    }
    return value();
  }
};

}  // namespace

std::string render(const body_t& program, globals g, const limits& lim) {
  auto root = std::make_shared<frame>();
  for (auto& [k, v] : g.vars) root->vars[k] = std::move(v);
  evaluator ev(lim, std::move(g.now));
  try {
    return ev.run(program, root);
  } catch (eval_error& e) {
    throw tandem::error(fmt::format("chat template line {}, column {}: {}", e.line, e.col, e.msg));
  } catch (template_exception& e) {
    throw tandem::error(e.msg);
  }
}

}  // namespace tandem::jinja
