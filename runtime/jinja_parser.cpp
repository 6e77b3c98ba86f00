// The Jinja parser: tokens -> statements and expressions, with jinja2's operator precedence
// (jinja2/parser.py): condexpr < or < and < not < compare < + - < ~ < * / // % < ** < unary,
// then postfix (.attr [item] (call)) and filters/tests.
#include <fmt/format.h>

#include <cstdlib>
#include <initializer_list>

#include "runtime/error.h"
#include "runtime/jinja.h"

namespace tandem::jinja {
namespace {

constexpr int max_nesting = 256;

bool mentions(const expr* e, const std::string& name) {
  if (!e) return false;
  if (e->kind == ek::name && e->name == name) return true;
  for (auto& x : e->a)
    if (mentions(x.get(), name)) return true;
  for (auto& kv : e->kw)
    if (mentions(kv.second.get(), name)) return true;
  return false;
}

bool mentions(const body_t& body, const std::string& name) {
  for (auto& s : body) {
    if (mentions(s->e.get(), name) || mentions(s->cond.get(), name) || mentions(s->body, name) ||
        mentions(s->else_body, name))
      return true;
    for (auto& [c, b] : s->branches)
      if (mentions(c.get(), name) || mentions(b, name)) return true;
    for (auto& p : s->params)
      if (mentions(p.def.get(), name)) return true;
    for (auto& kv : s->assigns)
      if (mentions(kv.second.get(), name)) return true;
  }
  return false;
}

class parser {
 public:
  explicit parser(const std::vector<token>& t) : t_(t) {}

  body_t program() {
    std::string end;
    body_t b = subparse({}, &end);
    return b;
  }

 private:
  const std::vector<token>& t_;
  size_t i_ = 0;
  int depth_ = 0;
  stack_budget stack_;

  struct nest {
    parser& p;
    int n;
    nest(parser& p_, int n_ = 1) : p(p_), n(n_) {
      p.depth_ += n;
      if (p.depth_ > max_nesting)
        p.error(p.cur(), fmt::format("the template nests more than {} levels deep", max_nesting));
      if (p.stack_.exceeded()) p.error(p.cur(), "the template nests too deeply for this thread's stack");
    }
    ~nest() { p.depth_ -= n; }
  };

  const token& cur() const { return t_[i_]; }
  const token& peek(size_t k = 1) const { return t_[std::min(i_ + k, t_.size() - 1)]; }
  const token& next() { return t_[i_ < t_.size() - 1 ? i_++ : i_]; }

  [[noreturn]] void error(const token& at, const std::string& msg) const {
    throw tandem::error(fmt::format("chat template line {}, column {}: {}", at.line, at.col, msg));
  }
  static std::string describe(const token& t) {
    switch (t.type) {
      case tok::eof: return "end of template";
      case tok::block_end: return "end of statement block";
      case tok::var_end: return "end of print statement";
      case tok::string: return "string";
      case tok::text: return "template text";
      default: return "'" + t.text + "'";
    }
  }
  bool is_op(const char* s) const { return cur().type == tok::op && cur().text == s; }
  bool is_name(const char* s) const { return cur().type == tok::name && cur().text == s; }
  bool skip_op(const char* s) {
    if (!is_op(s)) return false;
    next();
    return true;
  }
  bool skip_name(const char* s) {
    if (!is_name(s)) return false;
    next();
    return true;
  }
  void expect_op(const char* s) {
    if (!skip_op(s)) error(cur(), fmt::format("expected '{}', got {}", s, describe(cur())));
  }
  std::string expect_name() {
    if (cur().type != tok::name) error(cur(), fmt::format("expected a name, got {}", describe(cur())));
    return next().text;
  }
  void expect_block_end() {
    if (cur().type != tok::block_end)
      error(cur(), fmt::format("expected the end of the statement block ('%}}'), got {}", describe(cur())));
    next();
  }

  expr_ptr make(ek k, const token& at) {
    auto e = std::make_unique<expr>();
    e->kind = k;
    e->line = at.line;
    e->col = at.col;
    return e;
  }
  stmt_ptr make_stmt(sk k, const token& at) {
    auto s = std::make_unique<stmt>();
    s->kind = k;
    s->line = at.line;
    s->col = at.col;
    return s;
  }

  // ---- statements ----------------------------------------------------------------------------

  // Parses until a block whose first name is one of ends (left unconsumed but for that name,
  // which goes to *which); with no ends, until the end of the template.
  body_t subparse(std::initializer_list<const char*> ends, std::string* which) {
    nest guard(*this);
    body_t body;
    for (;;) {
      const token& t = cur();
      if (t.type == tok::eof) {
        if (ends.size() == 0) return body;
        std::string names;
        for (const char* e : ends) names += std::string(names.empty() ? "" : " or ") + "'" + e + "'";
        error(t, fmt::format("unexpected end of template: expected {}", names));
      }
      if (t.type == tok::text) {
        auto s = make_stmt(sk::text, t);
        s->text = t.text;
        body.push_back(std::move(s));
        next();
      } else if (t.type == tok::var_begin) {
        next();
        auto s = make_stmt(sk::output, t);
        s->e = parse_tuple(false);
        if (cur().type != tok::var_end)
          error(cur(), fmt::format("expected the end of the print statement ('}}}}'), got {}", describe(cur())));
        next();
        body.push_back(std::move(s));
      } else if (t.type == tok::block_begin) {
        next();
        if (cur().type != tok::name) error(cur(), "expected a statement name after '{%'");
        for (const char* e : ends)
          if (cur().text == e) {
            *which = next().text;
            return body;
          }
        body.push_back(statement());
      } else {
        error(t, fmt::format("unexpected {}", describe(t)));
      }
    }
  }

  stmt_ptr statement() {
    const token& t = cur();
    const std::string& n = t.text;
    if (n == "if") return parse_if();
    if (n == "for") return parse_for();
    if (n == "set") return parse_set();
    if (n == "macro") return parse_macro();
    if (n == "call") return parse_call_block();
    if (n == "filter") return parse_filter_block();
    if (n == "with") return parse_with();
    if (n == "generation") {
      next();
      auto s = make_stmt(sk::generation, t);
      expect_block_end();
      std::string end;
      s->body = subparse({"endgeneration"}, &end);
      expect_block_end();
      return s;
    }
    if (n == "break" || n == "continue") {
      next();
      auto s = make_stmt(n == "break" ? sk::break_ : sk::continue_, t);
      expect_block_end();
      return s;
    }
    static const char* unsupported[] = {"include", "extends", "block", "import", "from", "do",
                                        "autoescape", "trans", "pluralize"};
    for (const char* u : unsupported)
      if (n == u) error(t, fmt::format("'{{% {} %}}' is not supported in chat templates", n));
    static const char* ends[] = {"endif", "endfor", "endset", "endmacro", "endcall", "endfilter",
                                 "endwith", "endgeneration", "elif", "else", "endraw"};
    for (const char* e : ends)
      if (n == e) error(t, fmt::format("unexpected '{}': no block is open that it could end", n));
    error(t, fmt::format("unknown tag '{}'", n));
  }

  stmt_ptr parse_if() {
    auto s = make_stmt(sk::if_, next());
    for (;;) {
      expr_ptr c = parse_tuple(false);
      expect_block_end();
      std::string end;
      body_t b = subparse({"elif", "else", "endif"}, &end);
      s->branches.emplace_back(std::move(c), std::move(b));
      if (end == "elif") continue;
      if (end == "else") {
        expect_block_end();
        s->else_body = subparse({"endif"}, &end);
      }
      expect_block_end();
      return s;
    }
  }

  void assign_targets(stmt& s, bool allow_ns) {
    for (;;) {
      const token& at = cur();
      std::string name = expect_name();
      if (allow_ns && is_op(".")) {
        if (!s.targets.empty()) error(at, "a namespace attribute cannot be unpacked into");
        next();
        s.text = expect_name();
      }
      s.targets.push_back(name);
      if (!skip_op(",")) break;
      if (!s.text.empty()) error(at, "a namespace attribute cannot be unpacked into");
      if (cur().type != tok::name) break;  // trailing comma: still a tuple
    }
  }

  stmt_ptr parse_for() {
    auto s = make_stmt(sk::for_, next());
    assign_targets(*s, false);
    if (!skip_name("in")) error(cur(), fmt::format("expected 'in', got {}", describe(cur())));
    s->e = parse_tuple(true);
    if (skip_name("if")) s->cond = parse_expression(true);
    if (is_name("recursive")) error(cur(), "recursive for loops are not supported");
    expect_block_end();
    std::string end;
    s->body = subparse({"endfor", "else"}, &end);
    if (end == "else") {
      expect_block_end();
      s->else_body = subparse({"endfor"}, &end);
    }
    expect_block_end();
    s->uses_loop = mentions(s->body, "loop");
    return s;
  }

  stmt_ptr parse_set() {
    const token& at = next();
    auto s = make_stmt(sk::set, at);
    assign_targets(*s, true);
    if (skip_op("=")) {
      s->e = parse_tuple(false);
      expect_block_end();
      return s;
    }
    if (s->targets.size() != 1 || !s->text.empty()) error(at, "a block set assigns one plain name");
    s->kind = sk::set_block;
    if (is_op("|")) s->e = parse_filter_chain(make(ek::block_value, cur()));
    expect_block_end();
    std::string end;
    s->body = subparse({"endset"}, &end);
    expect_block_end();
    return s;
  }

  void parse_params(std::vector<macro_param>& params) {
    expect_op("(");
    while (!skip_op(")")) {
      if (!params.empty()) expect_op(",");
      if (skip_op(")")) break;
      macro_param p;
      p.name = expect_name();
      if (skip_op("=")) p.def = parse_expression(true);
      else if (!params.empty() && params.back().def)
        error(cur(), "a parameter without a default follows one with a default");
      params.push_back(std::move(p));
    }
  }

  stmt_ptr parse_macro() {
    auto s = make_stmt(sk::macro, next());
    s->text = expect_name();
    parse_params(s->params);
    expect_block_end();
    std::string end;
    s->body = subparse({"endmacro"}, &end);
    if (cur().type == tok::name && cur().text == s->text) next();
    expect_block_end();
    return s;
  }

  stmt_ptr parse_call_block() {
    auto s = make_stmt(sk::call_block, next());
    if (is_op("(")) parse_params(s->params);
    s->e = parse_expression(true);
    if (s->e->kind != ek::call) error(cur(), "'{% call %}' needs a macro call");
    expect_block_end();
    std::string end;
    s->body = subparse({"endcall"}, &end);
    expect_block_end();
    return s;
  }

  stmt_ptr parse_filter_block() {
    const token& at = next();
    auto s = make_stmt(sk::filter_block, at);
    s->e = parse_filter_chain(make(ek::block_value, at), true);
    expect_block_end();
    std::string end;
    s->body = subparse({"endfilter"}, &end);
    expect_block_end();
    return s;
  }

  stmt_ptr parse_with() {
    auto s = make_stmt(sk::with, next());
    while (cur().type != tok::block_end) {
      if (!s->assigns.empty()) expect_op(",");
      std::string name = expect_name();
      expect_op("=");
      s->assigns.emplace_back(name, parse_expression(true));
    }
    expect_block_end();
    std::string end;
    s->body = subparse({"endwith"}, &end);
    expect_block_end();
    return s;
  }

  // ---- expressions ---------------------------------------------------------------------------

  // An expression, or several separated by commas (a tuple without parentheses).
  expr_ptr parse_tuple(bool no_condexpr) {
    const token& at = cur();
    expr_ptr first = parse_expression(!no_condexpr);
    if (!is_op(",")) return first;
    auto t = make(ek::tuple, at);
    t->a.push_back(std::move(first));
    while (skip_op(",")) {
      if (cur().type == tok::block_end || cur().type == tok::var_end || is_op(")") || is_name("if")) break;
      t->a.push_back(parse_expression(!no_condexpr));
    }
    return t;
  }

  expr_ptr parse_primary_postfix() {
    nest guard(*this);
    return parse_postfix(parse_primary());
  }

  expr_ptr parse_expression(bool with_cond) {
    nest guard(*this);
    if (!with_cond) return parse_or();
    const token& at = cur();
    expr_ptr e = parse_or();
    int chain = 0;
    while (skip_name("if")) {
      nest more(*this);
      ++chain;
      auto c = make(ek::cond, at);
      expr_ptr test = parse_or();
      expr_ptr other = skip_name("else") ? parse_expression(true) : nullptr;
      c->a.push_back(std::move(test));
      c->a.push_back(std::move(e));
      if (other) c->a.push_back(std::move(other));
      e = std::move(c);
    }
    return e;
  }

  template <class F>
  expr_ptr binary_chain(F operand, std::initializer_list<const char*> ops, bool names) {
    expr_ptr left = operand();
    int grown = 0;
    for (;;) {
      const char* found = nullptr;
      for (const char* o : ops)
        if (names ? is_name(o) : is_op(o)) found = o;
      if (!found) break;
      const token& at = next();
      ++grown;
      ++depth_;
      if (depth_ > max_nesting) {
        depth_ -= grown;
        error(at, fmt::format("the template nests more than {} levels deep", max_nesting));
      }
      auto b = make(ek::binary, at);
      b->name = found;
      b->a.push_back(std::move(left));
      b->a.push_back(operand());
      left = std::move(b);
    }
    depth_ -= grown;
    return left;
  }

  expr_ptr parse_or() { return binary_chain([&] { return parse_and(); }, {"or"}, true); }
  expr_ptr parse_and() { return binary_chain([&] { return parse_not(); }, {"and"}, true); }
  expr_ptr parse_not() {
    if (is_name("not")) {
      nest guard(*this);
      auto u = make(ek::unary, next());
      u->name = "not";
      u->a.push_back(parse_not());
      return u;
    }
    return parse_compare();
  }
  expr_ptr parse_compare() {
    const token& at = cur();
    expr_ptr first = parse_math1();
    expr_ptr cmp;
    for (;;) {
      std::string op;
      if (cur().type == tok::op && (cur().text == "==" || cur().text == "!=" || cur().text == "<" ||
                                    cur().text == "<=" || cur().text == ">" || cur().text == ">=")) {
        op = next().text;
      } else if (is_name("in")) {
        next();
        op = "in";
      } else if (is_name("not") && peek().type == tok::name && peek().text == "in") {
        next();
        next();
        op = "not in";
      } else {
        break;
      }
      if (!cmp) {
        cmp = make(ek::compare, at);
        cmp->a.push_back(std::move(first));
      }
      nest guard(*this);
      cmp->ops.push_back(op);
      cmp->a.push_back(parse_math1());
    }
    return cmp ? std::move(cmp) : std::move(first);
  }
  expr_ptr parse_math1() { return binary_chain([&] { return parse_concat(); }, {"+", "-"}, false); }
  expr_ptr parse_concat() { return binary_chain([&] { return parse_math2(); }, {"~"}, false); }
  expr_ptr parse_math2() {
    return binary_chain([&] { return parse_pow(); }, {"*", "/", "//", "%"}, false);
  }
  expr_ptr parse_pow() { return binary_chain([&] { return parse_unary(true); }, {"**"}, false); }

  expr_ptr parse_unary(bool with_filter) {
    nest guard(*this);
    expr_ptr node;
    if (is_op("-") || is_op("+")) {
      const token& at = next();
      node = make(ek::unary, at);
      node->name = at.text;
      node->a.push_back(parse_unary(false));
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_chain(std::move(node));
    return node;
  }

  expr_ptr parse_primary() {
    const token& t = cur();
    switch (t.type) {
      case tok::name: {
        next();
        auto e = make(ek::literal, t);
        if (t.text == "true" || t.text == "True") e->lit = value::boolean(true);
        else if (t.text == "false" || t.text == "False") e->lit = value::boolean(false);
        else if (t.text == "none" || t.text == "None") e->lit = value::none_v();
        else {
          e->kind = ek::name;
          e->name = t.text;
        }
        return e;
      }
      case tok::string: {
        auto e = make(ek::literal, t);
        std::string s = next().text;
        while (cur().type == tok::string) s += next().text;  // adjacent literals concatenate
        e->lit = value::str(std::move(s));
        return e;
      }
      case tok::integer: {
        next();
        auto e = make(ek::literal, t);
        errno = 0;
        char* end = nullptr;
        long long v = std::strtoll(t.text.c_str(), &end, 10);
        if (errno == ERANGE) error(t, "integer literal out of range");
        e->lit = value::integer(v);
        return e;
      }
      case tok::floating: {
        next();
        auto e = make(ek::literal, t);
        e->lit = value::floating(std::strtod(t.text.c_str(), nullptr));
        return e;
      }
      case tok::op:
        if (t.text == "(") {
          next();
          if (skip_op(")")) return make(ek::tuple, t);
          expr_ptr inner = parse_expression(true);
          if (is_op(",")) {
            auto tup = make(ek::tuple, t);
            tup->a.push_back(std::move(inner));
            while (skip_op(",")) {
              if (is_op(")")) break;
              tup->a.push_back(parse_expression(true));
            }
            inner = std::move(tup);
          }
          expect_op(")");
          return inner;
        }
        if (t.text == "[") {
          next();
          auto e = make(ek::list, t);
          while (!skip_op("]")) {
            if (!e->a.empty()) expect_op(",");
            if (skip_op("]")) break;
            e->a.push_back(parse_expression(true));
          }
          return e;
        }
        if (t.text == "{") {
          next();
          auto e = make(ek::dict, t);
          while (!skip_op("}")) {
            if (!e->a.empty()) expect_op(",");
            if (skip_op("}")) break;
            e->a.push_back(parse_expression(true));
            expect_op(":");
            e->a.push_back(parse_expression(true));
          }
          return e;
        }
        break;
      default:
        break;
    }
    error(t, fmt::format("unexpected {}", describe(t)));
  }

  expr_ptr parse_postfix(expr_ptr node) {
    int grown = 0;
    for (;; ++grown, ++depth_) {
      if (depth_ > max_nesting) {
        depth_ -= grown;
        error(cur(), fmt::format("the template nests more than {} levels deep", max_nesting));
      }
      if (is_op(".")) {
        const token& at = next();
        if (cur().type == tok::name) {
          auto e = make(ek::attr, at);
          e->name = next().text;
          e->a.push_back(std::move(node));
          node = std::move(e);
        } else if (cur().type == tok::integer) {
          auto e = make(ek::item, at);
          e->a.push_back(std::move(node));
          auto idx = make(ek::literal, cur());
          idx->lit = value::integer(std::strtoll(next().text.c_str(), nullptr, 10));
          e->a.push_back(std::move(idx));
          node = std::move(e);
        } else {
          error(cur(), fmt::format("expected a name after '.', got {}", describe(cur())));
        }
      } else if (is_op("[")) {
        node = parse_subscript(std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node), ek::call, "");
      } else {
        break;
      }
    }
    depth_ -= grown;
    return node;
  }

  expr_ptr parse_subscript(expr_ptr target) {
    const token& at = next();  // '['
    auto slice_part = [&](expr_ptr& out) -> bool {
      if (is_op(":") || is_op("]")) return false;
      out = parse_expression(true);
      return true;
    };
    expr_ptr first;
    bool has_first = slice_part(first);
    if (!is_op(":")) {
      if (!has_first) error(cur(), "expected an index");
      expr_ptr idx = std::move(first);
      if (is_op(",")) {  // x[a, b]: a tuple key
        auto tup = make(ek::tuple, at);
        tup->a.push_back(std::move(idx));
        while (skip_op(",")) {
          if (is_op("]")) break;
          tup->a.push_back(parse_expression(true));
        }
        idx = std::move(tup);
      }
      expect_op("]");
      auto e = make(ek::item, at);
      e->a.push_back(std::move(target));
      e->a.push_back(std::move(idx));
      return e;
    }
    auto e = make(ek::slice, at);
    e->a.push_back(std::move(target));
    e->a.resize(4);
    e->has[0] = has_first;
    e->a[1] = std::move(first);
    next();  // ':'
    e->has[1] = slice_part(e->a[2]);
    if (skip_op(":")) e->has[2] = slice_part(e->a[3]);
    expect_op("]");
    return e;
  }

  void parse_args(expr& e) {
    expect_op("(");
    bool any = false;
    while (!skip_op(")")) {
      if (any) expect_op(",");
      if (skip_op(")")) break;
      any = true;
      if (is_op("*") || is_op("**")) error(cur(), "*args and **kwargs in calls are not supported");
      if (cur().type == tok::name && peek().type == tok::op && peek().text == "=") {
        std::string key = next().text;
        next();
        e.kw.emplace_back(key, parse_expression(true));
      } else {
        if (!e.kw.empty()) error(cur(), "a positional argument follows a keyword argument");
        e.a.push_back(parse_expression(true));
      }
    }
  }

  expr_ptr parse_call(expr_ptr target, ek k, const std::string& name) {
    auto e = make(k, cur());
    e->name = name;
    e->a.push_back(std::move(target));
    parse_args(*e);
    return e;
  }

  // Filters (| name(args)), tests (is [not] name args) and calls on their results.
  expr_ptr parse_filter_chain(expr_ptr node, bool only_filters = false) {
    int grown = 0;
    for (bool first = true;; first = false, ++grown, ++depth_) {
      if (depth_ > max_nesting) {
        depth_ -= grown;
        error(cur(), fmt::format("the template nests more than {} levels deep", max_nesting));
      }
      if (is_op("|") || (only_filters && first)) {
        if (is_op("|")) next();
        node = parse_filter(std::move(node));
      } else if (!only_filters && is_name("is")) {
        node = parse_test(std::move(node));
      } else if (!only_filters && is_op("(")) {
        node = parse_call(std::move(node), ek::call, "");
      } else {
        break;
      }
    }
    depth_ -= grown;
    return node;
  }

  std::string dotted_name() {
    std::string name = expect_name();
    while (is_op(".") && peek().type == tok::name) {
      next();
      name += "." + next().text;
    }
    return name;
  }

  expr_ptr parse_filter(expr_ptr target) {
    const token& at = cur();
    std::string name = dotted_name();
    if (!known_filter(name)) error(at, fmt::format("no filter named '{}'", name));
    auto e = make(ek::filter, at);
    e->name = name;
    e->a.push_back(std::move(target));
    if (is_op("(")) parse_args(*e);
    return e;
  }

  expr_ptr parse_test(expr_ptr target) {
    next();  // is
    bool negate = skip_name("not");
    const token& at = cur();
    std::string name = dotted_name();
    if (!known_test(name)) error(at, fmt::format("no test named '{}'", name));
    auto e = make(ek::test, at);
    e->name = name;
    e->negate = negate;
    e->a.push_back(std::move(target));
    if (is_op("(")) {
      parse_args(*e);
    } else if ((cur().type == tok::name || cur().type == tok::string || cur().type == tok::integer ||
                cur().type == tok::floating || is_op("(") || is_op("[") || is_op("{")) &&
               !is_name("else") && !is_name("or") && !is_name("and")) {
      if (is_name("is")) error(cur(), "tests cannot be chained with 'is'");
      e->a.push_back(parse_primary_postfix());
    }
    return e;
  }
};

}  // namespace

body_t parse(const std::vector<token>& tokens) { return parser(tokens).program(); }

}  // namespace tandem::jinja
