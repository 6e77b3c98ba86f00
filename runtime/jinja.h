// Internals of the Jinja interpreter behind runtime/chat_template.h: values with Python's
// semantics, the lexer, the syntax tree, the parser and the evaluator. Not part of the API.
//
// The reference is Python's jinja2 3.1 as transformers configures it: ImmutableSandboxedEnvironment
// (lists and dicts cannot be modified: .append() is an error), trim_blocks, lstrip_blocks, loop
// controls, autoescape off, the default Undefined (prints as "", fails when its attribute is taken
// or it is called).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tandem::jinja {

// ---- values ------------------------------------------------------------------------------------

enum class kind : uint8_t {
  undefined,
  none,
  boolean,
  integer,
  floating,
  string,
  list,
  tuple,
  dict,
  ns,
  function,
};

struct value;
struct dict_t;
struct function_t;
using list_ptr = std::shared_ptr<std::vector<value>>;
using dict_ptr = std::shared_ptr<dict_t>;
using kwargs_t = std::vector<std::pair<std::string, value>>;

struct value {
  kind k = kind::undefined;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;  // string; for undefined: why it is undefined (the error it raises when used)
  list_ptr l;     // list, tuple
  dict_ptr d;     // dict, namespace
  std::shared_ptr<function_t> fn;

  value() = default;
  static value undef(std::string why) {
    value v;
    v.s = std::move(why);
    return v;
  }
  static value none_v() {
    value v;
    v.k = kind::none;
    return v;
  }
  static value boolean(bool x) {
    value v;
    v.k = kind::boolean;
    v.b = x;
    return v;
  }
  static value integer(int64_t x) {
    value v;
    v.k = kind::integer;
    v.i = x;
    return v;
  }
  static value floating(double x) {
    value v;
    v.k = kind::floating;
    v.f = x;
    return v;
  }
  static value str(std::string x) {
    value v;
    v.k = kind::string;
    v.s = std::move(x);
    return v;
  }
  static value list(std::vector<value> items = {});
  static value tuple(std::vector<value> items);
  static value dict();
  static value ns();
  static value func(std::string name, std::function<value(std::vector<value>&, kwargs_t&)> call);
  static value from_json(const nlohmann::ordered_json& j);

  bool is_undefined() const { return k == kind::undefined; }
  bool is_none() const { return k == kind::none; }
  bool is_string() const { return k == kind::string; }
  bool is_int() const { return k == kind::integer || k == kind::boolean; }  // Python: bool is int
  bool is_number() const { return is_int() || k == kind::floating; }
  bool is_seq() const { return k == kind::list || k == kind::tuple; }
  bool is_mapping() const { return k == kind::dict; }
  int64_t as_int() const { return k == kind::boolean ? (b ? 1 : 0) : i; }
  double as_double() const { return k == kind::floating ? f : double(as_int()); }
};

struct dict_t {
  std::vector<std::pair<value, value>> items;  // in insertion order, as Python's dicts
  const value* find(const value& key) const;
  const value* find(std::string_view key) const;
  void set(const value& key, value v);
};

struct function_t {
  std::string name;
  std::function<value(std::vector<value>&, kwargs_t&)> call;
};

// A runtime error of the template, with the position filled in by the evaluator.
struct eval_error {
  std::string msg;
  int line = 0, col = 0;  // of the innermost expression or statement that failed
};
// raise_exception(): propagates with its message unchanged.
struct template_exception {
  std::string msg;
};
[[noreturn]] void fail(std::string msg);

bool truthy(const value& v);
bool equals(const value& a, const value& b);
// Python's a < b; throws for types that do not order.
bool less(const value& a, const value& b);
std::string type_name(const value& v);         // "str", "int", "list", "dict", ...
std::string object_type_repr(const value& v);  // "dict object", "None", ... (jinja2's wording)
std::string to_str(const value& v);            // Python's str()
std::string repr(const value& v);              // Python's repr()
std::string float_repr(double x);
std::string py_string_repr(std::string_view s);
// json.dumps(v, ensure_ascii=False, indent, separators, sort_keys); indent < 0: none, and
// indent_str overrides the spaces when not empty.
struct json_style {
  int indent = -1;
  std::string indent_str;
  std::string item_sep = ", ", key_sep = ": ";
  bool sort_keys = false;
  bool ensure_ascii = false;  // \uXXXX for every character outside printable ASCII
};
std::string to_json(const value& v, const json_style& style);
// The items a for loop visits: list/tuple elements, dict keys, string characters.
std::vector<value> iterate(const value& v);
// len(); throws for what has no length.
int64_t length(const value& v);
// The value at key (dict) or index (list/tuple/string), undefined when absent (jinja2's getitem).
value get_item(const value& obj, const value& key);
// obj.name as jinja2 resolves it: methods of str/list/dict first, then items.
value get_attr(const value& obj, const std::string& name);
// obj[lo:hi:step] (null: not given) of a list, tuple or string.
value slice(const value& obj, const value* lo, const value* hi, const value* step);
// obj.name(args...) where obj is a str, list or dict.
bool call_method(const value& obj, const std::string& name, std::vector<value>& args,
                 kwargs_t& kwargs, value& out);
// Checks a string about to be made is not over the size limit.
void check_size(size_t bytes);
constexpr size_t max_value_bytes = size_t(32) << 20;

// UTF-8 helpers: code points of s (invalid bytes pass as themselves), and back.
std::u32string utf8_decode(std::string_view s);
std::string utf8_encode(std::u32string_view s);
bool is_ascii(std::string_view s);
bool is_py_space(char32_t c);  // str.isspace()
char32_t to_upper(char32_t c);
char32_t to_lower(char32_t c);
bool is_alpha(char32_t c);
bool is_alnum(char32_t c);

// How much of the calling thread's stack the parser and the evaluator may use: what is left of
// it below the point where they start, less a margin, so that a deeply nested template fails
// with an error instead of overflowing a small thread stack.
class stack_budget {
 public:
  stack_budget();
  bool exceeded() const {
    char here;
    return &here < base_ && size_t(base_ - &here) > budget_;
  }

 private:
  const char* base_;
  size_t budget_;
};

// ---- lexer -------------------------------------------------------------------------------------

enum class tok : uint8_t {
  text,
  var_begin,
  var_end,
  block_begin,
  block_end,
  name,
  string,
  integer,
  floating,
  op,
  eof,
};

struct token {
  tok type;
  std::string text;  // text: the data; string: the unescaped value; op/name: itself
  int line = 1, col = 1;
};

// Splits source into tokens, applying jinja2's newline normalization, trailing newline removal,
// whitespace control ({%- -%} {{- -}}), trim_blocks and lstrip_blocks; comments are dropped and
// {% raw %} bodies become text. Throws tandem::error with line and column on bad syntax.
std::vector<token> lex(std::string_view source);

// ---- syntax tree -------------------------------------------------------------------------------

enum class ek : uint8_t {
  literal,
  name,
  list,
  tuple,
  dict,
  attr,
  item,
  slice,
  call,
  filter,
  test,
  unary,
  binary,
  compare,
  cond,
  block_value,
};

struct expr;
using expr_ptr = std::unique_ptr<expr>;

struct expr {
  ek kind;
  int line = 0, col = 0;
  value lit;                // literal
  std::string name;         // name, attr, filter, test; unary/binary operator
  std::vector<expr_ptr> a;  // operands: attr/item/slice/call/filter/test: a[0] is the target
  std::vector<std::pair<std::string, expr_ptr>> kw;  // keyword arguments of call/filter/test
  std::vector<std::string> ops;                      // compare: one operator per a[1..]
  bool negate = false;                               // test: "is not"
  bool has[3] = {};  // slice: which of lower, upper, step are given (in a[1..3])
};

enum class sk : uint8_t {
  text,
  output,
  if_,
  for_,
  set,
  set_block,
  macro,
  call_block,
  filter_block,
  with,
  break_,
  continue_,
  generation,
};

struct stmt;
using stmt_ptr = std::unique_ptr<stmt>;
using body_t = std::vector<stmt_ptr>;

struct macro_param {
  std::string name;
  expr_ptr def;  // null: required
};

struct stmt {
  sk kind;
  int line = 0, col = 0;
  std::string text;                  // text; macro name; set: attribute of a namespace
  std::vector<std::string> targets;  // for/set: names (several: tuple unpacking)
  expr_ptr e;                        // output/set/for iterable/call_block call/filter chain
  expr_ptr cond;                     // for: the `if` filter
  std::vector<std::pair<expr_ptr, body_t>> branches;  // if/elif
  body_t body, else_body;
  std::vector<macro_param> params;                        // macro, call block (caller's parameters)
  std::vector<std::pair<std::string, expr_ptr>> assigns;  // with
  bool uses_loop = true;  // for: whether the body names `loop` (else not built)
};

// Parses tokens into statements; throws tandem::error("chat template line L, column C: ...").
body_t parse(const std::vector<token>& tokens);

// ---- evaluation --------------------------------------------------------------------------------

struct limits {
  // A step (a loop iteration, a statement, a call) costs about 1 us of CPU in a release build:
  // 2 million is some 2 s, far above any real template (thousands of steps for a long chat with
  // tools) and short enough that a hostile one cannot hold a server thread for a minute.
  uint64_t max_steps = 2'000'000;
  int max_call_depth = 200;
  size_t max_output = max_value_bytes;
};

struct globals {
  std::vector<std::pair<std::string, value>> vars;
  std::string now;  // ISO date-time for strftime_now; empty: the local time
};

// Renders a parsed template; throws tandem::error.
std::string render(const body_t& program, globals g, const limits& lim = {});

// Filters and tests by name; each returns false when the name is unknown.
bool known_filter(const std::string& name);
bool known_test(const std::string& name);
// Applies filter `name` to args[0] with the other args / test `name` to args[0].
value apply_filter(const std::string& name, std::vector<value>& args, kwargs_t& kwargs);
bool apply_test(const std::string& name, std::vector<value>& args, kwargs_t& kwargs);

// Helpers shared by the filters and the evaluator.
std::string py_strip(std::string_view s, const value* chars, bool left, bool right);
std::string strftime_at(const std::string& now, const std::string& fmt);

}  // namespace tandem::jinja
