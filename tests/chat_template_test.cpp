// Chat templates against Python's jinja2: every real template in ../shared/models/templates for
// every conversation there (byte for byte, or the template's own error), the feature templates in
// tests/data/jinja and the built-in templates in tests/data/builtin_templates (expected outputs
// rendered by ../shared/tools/render_chat_template.py), then errors, limits and the API.
#include "runtime/chat_template.h"

#include <gtest/gtest.h>
#include <pthread.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "runtime/error.h"
#include "runtime/jinja.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using tandem::chat_inputs;
using tandem::chat_template;

namespace {

std::vector<fs::path> files(const fs::path& dir, const std::string& ext) {
  std::vector<fs::path> out;
  for (auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ext) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

bool exists(const std::string& p) {
  return fs::exists(p);
}

std::string strip_newline(std::string s) {
  while (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

// A case file of the reference renderer's format, as the renderer reads it.
chat_inputs read_case(const fs::path& path) {
  auto c = nlohmann::ordered_json::parse(tandem::test::read_file(path.string()));
  chat_inputs in;
  in.messages = c["messages"];
  in.add_generation_prompt = c.value("add_generation_prompt", false);
  if (c.contains("tools")) in.tools = c["tools"];
  if (c.contains("extra")) in.extra = c["extra"];
  in.bos_token = c.value("bos_token", std::string());
  in.eos_token = c.value("eos_token", std::string());
  in.now = c.value("now", std::string("2026-01-15T09:30:00"));
  return in;
}

// The message of the error render throws, or "" when it renders.
std::string render_error(const chat_template& t, const chat_inputs& in) {
  try {
    t.render(in);
  } catch (const tandem::error& e) {
    return e.what();
  }
  return "";
}

std::string parse_error(const std::string& source) {
  try {
    chat_template t(source);
  } catch (const tandem::error& e) {
    return e.what();
  }
  return "";
}

std::string render(const std::string& source, const chat_inputs& in = {}) {
  return chat_template(source).render(in);
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

}  // namespace

// ---- the real templates ---------------------------------------------------------------------

TEST(ChatTemplate, EveryRealTemplateRendersEveryCaseAsJinja2Does) {
  const fs::path dir = tandem::test::model_path("templates");
  auto special =
      nlohmann::json::parse(tandem::test::read_file((dir / "special_tokens.json").string()));
  auto templates = files(dir, ".jinja");
  auto cases = files(dir / "cases", ".json");
  ASSERT_EQ(templates.size(), 10u);
  ASSERT_EQ(cases.size(), 8u);
  int checked = 0, errors = 0;
  for (auto& tp : templates) {
    const std::string name = tp.stem().string();
    ASSERT_TRUE(special.contains(name)) << name;
    chat_template t(tandem::test::read_file(tp.string()));
    for (auto& cp : cases) {
      const std::string what = name + " x " + cp.stem().string();
      chat_inputs in = read_case(cp);
      in.bos_token = special[name]["bos_token"];
      in.eos_token = special[name]["eos_token"];
      const fs::path golden = dir / "golden" / (name + "." + cp.stem().string());
      if (exists(golden.string() + ".txt")) {
        std::string want = tandem::test::read_file(golden.string() + ".txt");
        std::string got;
        ASSERT_NO_THROW(got = t.render(in)) << what << ": " << render_error(t, in);
        EXPECT_EQ(got, want) << what;
      } else {
        ASSERT_TRUE(exists(golden.string() + ".error")) << what << ": no golden";
        EXPECT_EQ(render_error(t, in),
                  strip_newline(tandem::test::read_file(golden.string() + ".error")))
            << what;
        ++errors;
      }
      ++checked;
    }
  }
  EXPECT_EQ(checked, 80);
  EXPECT_EQ(errors, 4);
}

// ---- feature templates (tests/data/jinja: NAME.jinja, NAME.txt or NAME.error) ----------------

TEST(ChatTemplate, FeatureTemplatesRenderAsJinja2Does) {
  const fs::path dir = fs::path(TANDEM_TEST_DATA_DIR) / "jinja";
  const chat_inputs in = read_case(dir / "case.json");
  int checked = 0;
  for (auto& tp : files(dir, ".jinja")) {
    const std::string name = tp.stem().string();
    const fs::path stem = dir / name;
    std::string got, err;
    try {
      got = chat_template(tandem::test::read_file(tp.string())).render(in);
    } catch (const tandem::error& e) {
      err = e.what();
    }
    if (exists(stem.string() + ".txt")) {
      EXPECT_EQ(err, "") << name;
      EXPECT_EQ(got, tandem::test::read_file(stem.string() + ".txt")) << name;
    } else {
      // raise_exception messages come as they are; jinja2's own errors after "line L, column C: ".
      std::string want = strip_newline(tandem::test::read_file(stem.string() + ".error"));
      EXPECT_TRUE(err == want ||
                  (err.rfind("chat template line ", 0) == 0 && ends_with(err, ": " + want)))
          << name << ": got '" << err << "', want '" << want << "'";
    }
    ++checked;
  }
  EXPECT_EQ(checked, 135);
}

TEST(ChatTemplate, BuiltinTemplatesRenderAsJinja2Does) {
  const fs::path dir = fs::path(TANDEM_TEST_DATA_DIR) / "builtin_templates";
  auto cases = files(dir / "cases", ".json");
  ASSERT_EQ(cases.size(), 6u);
  int checked = 0;
  for (auto& name : chat_template::builtin_names()) {
    chat_template t(chat_template::builtin(name));
    for (auto& cp : cases) {
      fs::path want = dir / (name + "." + cp.stem().string() + ".txt");
      ASSERT_TRUE(exists(want.string()))
          << want << " (run tests/data/builtin_templates/render_expected.sh)";
      EXPECT_EQ(t.render(read_case(cp)), tandem::test::read_file(want.string()))
          << name << " x " << cp.stem();
      ++checked;
    }
  }
  EXPECT_EQ(checked, 48);
  EXPECT_EQ(chat_template::builtin("qwen2"), chat_template::builtin("chatml"));
}

TEST(ChatTemplate, UnknownBuiltinListsTheNames) {
  try {
    chat_template::builtin("nope");
    FAIL() << "no error";
  } catch (const tandem::error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("'nope'"), std::string::npos) << m;
    for (const char* n : {"chatml", "llama3", "llama2", "mistral", "gemma", "phi3", "qwen2"})
      EXPECT_NE(m.find(n), std::string::npos) << m;
  }
}

// ---- features checked here (the reference renderer refuses them or they need no Python) ------

TEST(ChatTemplate, GenerationBlocksRenderTheirBody) {
  // transformers adds {% generation %} (for assistant masks); jinja2 alone does not know it.
  chat_inputs in;
  in.messages = nlohmann::ordered_json::parse(
      R"([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])");
  std::string with =
      "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}[{{ m.content }}]"
      "{% endgeneration %}{% else %}{{ m.content }}{% endif %}{% endfor %}";
  EXPECT_EQ(render(with, in), "a[b]");
}

TEST(ChatTemplate, ExtraVariablesAndDefaults) {
  chat_inputs in;
  in.extra = {{"enable_thinking", false}, {"bos_token", "<override>"}};
  in.bos_token = "<s>";
  EXPECT_EQ(render("{{ bos_token }}|{{ enable_thinking }}|{{ add_generation_prompt }}|{{ tools is "
                   "defined }}|{{ messages }}",
                   in),
            "<override>|False|True|False|[]");
  in.extra = nlohmann::ordered_json::array();
  EXPECT_NE(render_error(chat_template("x"), in).find("\"extra\" must be a JSON object"),
            std::string::npos);
}

TEST(ChatTemplate, StrftimeNowUsesTheGivenClockOrTheLocalTime) {
  chat_inputs in;
  in.now = "2024-02-29T23:05:09";
  EXPECT_EQ(render("{{ strftime_now('%d %B %Y, %A %H:%M:%S %j') }}", in),
            "29 February 2024, Thursday 23:05:09 060");
  in.now = "";
  std::string year = render("{{ strftime_now('%Y') }}", in);
  ASSERT_EQ(year.size(), 4u);
  EXPECT_GE(std::stoi(year), 2024);
  in.now = "yesterday";
  EXPECT_NE(render_error(chat_template("{{ strftime_now('%Y') }}"), in).find("'yesterday'"),
            std::string::npos);
}

TEST(ChatTemplate, ContentMayBeNullOrParts) {
  chat_inputs in;
  in.messages = nlohmann::ordered_json::parse(
      R"([{"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "image"}]}, {"role": "assistant", "content": null}])");
  EXPECT_EQ(render("{% for m in messages %}{{ m.content }};{% endfor %}", in),
            "[{'type': 'text', 'text': 'x'}, {'type': 'image'}];None;");
}

TEST(ChatTemplate, SourceIsKeptAndRenderingIsRepeatable) {
  chat_template t(
      "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ "
      "ns.n }}");
  EXPECT_NE(t.source().find("namespace"), std::string::npos);
  chat_inputs in;
  in.messages = nlohmann::ordered_json::parse(
      R"([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])");
  EXPECT_EQ(t.render(in), "2");
  EXPECT_EQ(t.render(in), "2");  // no state carried over from the first rendering
  std::vector<std::string> outs(4);
  std::vector<std::thread> threads;
  for (auto& o : outs) threads.emplace_back([&t, &in, &o] { o = t.render(in); });
  for (auto& th : threads) th.join();
  for (auto& o : outs) EXPECT_EQ(o, "2");
}

// ---- errors name the line and column ----------------------------------------------------------

TEST(ChatTemplate, SyntaxErrorsNameLineAndColumn) {
  EXPECT_EQ(parse_error("ab\n{{ 1 + }}"),
            "chat template line 2, column 8: unexpected end of print statement");
  EXPECT_EQ(parse_error("{% if x %}\n  {{ x | nope }}\n{% endif %}"),
            "chat template line 2, column 10: no filter named 'nope'");
  EXPECT_EQ(parse_error("{{ x is nope }}"), "chat template line 1, column 9: no test named 'nope'");
  EXPECT_EQ(
      parse_error("{% for x in y %}"),
      "chat template line 1, column 17: unexpected end of template: expected 'endfor' or 'else'");
  EXPECT_EQ(parse_error("{% include 'x.jinja' %}"),
            "chat template line 1, column 4: '{% include %}' is not supported in chat templates");
  EXPECT_EQ(parse_error("{% frobnicate %}"),
            "chat template line 1, column 4: Encountered unknown tag 'frobnicate'.");
  EXPECT_EQ(
      parse_error("{% endif %}"),
      "chat template line 1, column 4: unexpected 'endif': no block is open that it could end");
  EXPECT_EQ(parse_error("x\n\n  {{ 'unclosed }}"),
            "chat template line 3, column 6: unexpected end of string literal");
  EXPECT_EQ(parse_error("{{ (1 + 2 }}"),
            "chat template line 1, column 11: unexpected '}', expected ')'");
  EXPECT_EQ(parse_error("{# never closed"),
            "chat template line 1, column 1: missing end of comment tag (#})");
  EXPECT_EQ(parse_error("{% for x in y recursive %}{% endfor %}"),
            "chat template line 1, column 15: recursive for loops are not supported");
  EXPECT_EQ(parse_error("é {{ x ! y }}"),
            "chat template line 1, column 8: unexpected char '!' (write 'not' or '!=')");
}

TEST(ChatTemplate, RuntimeErrorsNameLineAndColumn) {
  chat_inputs in;
  in.messages = nlohmann::ordered_json::parse(R"([{"role": "user", "content": "a"}])");
  EXPECT_EQ(render_error(chat_template("line one\n  {{ messages[0].nope.deeper }}"), in),
            "chat template line 2, column 22: 'dict object' has no attribute 'nope'");
  EXPECT_EQ(
      render_error(chat_template("{% set l = [] %}\n{{ l.append(1) }}"), in),
      "chat template line 2, column 12: access to attribute 'append' of 'list' object is unsafe.");
  EXPECT_EQ(render_error(chat_template("{{ 1 // 0 }}"), in),
            "chat template line 1, column 6: integer division or modulo by zero");
  EXPECT_EQ(
      render_error(chat_template("{{ 9223372036854775807 + 1 }}"), in),
      "chat template line 1, column 24: integer overflow (the result does not fit in 64 bits)");
  // raise_exception's message comes alone, exactly as the template wrote it.
  EXPECT_EQ(render_error(
                chat_template("{{ raise_exception('No system role, ' ~ messages[0].role) }}"), in),
            "No system role, user");
}

// ---- hostile templates stop with a one-line message ---------------------------------------------

TEST(ChatTemplate, EndlessLoopsStopAtTheStepLimit) {
  std::string err = render_error(
      chat_template(
          "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"),
      {});
  EXPECT_NE(err.find("the template ran more than 2000000 steps"), std::string::npos) << err;
  EXPECT_EQ(err.find('\n'), std::string::npos);
  // The evaluator's limits can be set lower (the API uses the defaults).
  auto prog =
      tandem::jinja::parse(tandem::jinja::lex("{% for i in range(1000) %}{{ i }}{% endfor %}"));
  tandem::jinja::limits lim;
  lim.max_steps = 500;
  EXPECT_THROW(tandem::jinja::render(prog, {}, lim), tandem::error);
  lim.max_steps = 100000;
  EXPECT_EQ(tandem::jinja::render(prog, {}, lim).size(), 2890u);
}

TEST(ChatTemplate, EndlessRecursionStopsAtTheCallDepthLimit) {
  std::string err =
      render_error(chat_template("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"), {});
  EXPECT_EQ(
      err,
      "chat template line 1, column 21: macro calls nest more than 200 deep (endless recursion?)");
  // Mutual recursion too, and a deep but finite recursion still renders.
  err = render_error(chat_template("{% macro a(n) %}{{ b(n) }}{% endmacro %}{% macro b(n) %}{{ "
                                   "a(n) }}{% endmacro %}{{ a(1) }}"),
                     {});
  EXPECT_NE(err.find("macro calls nest more than 200 deep"), std::string::npos) << err;
  EXPECT_EQ(render("{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{% else %}done{% endif %}{% "
                   "endmacro %}{{ f(150) }}"),
            "done");
}

TEST(ChatTemplate, HugeOutputStopsAtTheSizeLimit) {
  std::string err = render_error(
      chat_template("{% set s = 'x' * 1000000 %}{% for i in range(100) %}{{ s }}{% endfor %}"), {});
  EXPECT_NE(err.find("the template's output exceeds 32 MiB"), std::string::npos) << err;
  err = render_error(chat_template("{{ 'x' * 100000000000 }}"), {});
  EXPECT_NE(err.find("a value would exceed 32 MiB"), std::string::npos) << err;
  err = render_error(
      chat_template("{% set s = 'ab' * 1000000 %}{% set ns = namespace(s=s) %}"
                    "{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"),
      {});
  EXPECT_NE(err.find("a value would exceed 32 MiB"), std::string::npos) << err;
  EXPECT_NE(render_error(chat_template("{{ range(1000000) | length }}"), {}).find("Range too big"),
            std::string::npos);
}

TEST(ChatTemplate, DeepNestingIsASyntaxErrorNotACrash) {
  std::string deep = std::string(5000, '(') + "1" + std::string(5000, ')');
  EXPECT_NE(parse_error("{{ " + deep + " }}").find("nests more than 256 levels"),
            std::string::npos);
  std::string chain = "{{ 1";
  for (int i = 0; i < 100000; ++i) chain += " + 1";
  EXPECT_NE(parse_error(chain + " }}").find("nests more than 256 levels"), std::string::npos);
  std::string ifs;
  for (int i = 0; i < 1000; ++i) ifs += "{% if true %}";
  EXPECT_NE(parse_error(ifs).find("nests more than 256 levels"), std::string::npos);
  std::string attrs = "{{ x" + std::string(0, ' ');
  for (int i = 0; i < 10000; ++i) attrs += ".a";
  EXPECT_NE(parse_error(attrs + " }}").find("nests more than 256 levels"), std::string::npos);
  // Nesting within the limit is fine.
  EXPECT_EQ(render("{{ " + std::string(100, '(') + "7" + std::string(100, ')') + " }}"), "7");
}

TEST(ChatTemplate, SmallThreadStacksGetAnErrorNotACrash) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  // The stack budget is measured against release-build frames; sanitizer builds make each frame
  // several times larger (redzones, instrumentation), so 256 KiB is not a small stack there.
  GTEST_SKIP() << "stack budget calibrated for unsanitized builds";
#endif
  // A thread with 256 KiB of stack (less than the call-depth limit would need): the deep
  // recursion and the deep nesting stop with a message.
  struct job {
    std::string recursion, nesting;
  } j;
  auto run = [](void* arg) -> void* {
    auto* jb = static_cast<job*>(arg);
    jb->recursion = render_error(
        chat_template("{% macro f(n) %}{% if n > 0 %}{% for i in [1] %}{{ f(n - 1) | trim }}"
                      "{% endfor %}{% else %}done{% endif %}{% endmacro %}{{ f(199) }}"),
        {});
    jb->nesting = parse_error("{{ " + std::string(120, '[') + "1" + std::string(120, ']') + " }}");
    return nullptr;
  };
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 256 << 10);
  pthread_t th;
  ASSERT_EQ(pthread_create(&th, &attr, run, &j), 0);
  pthread_join(th, nullptr);
  pthread_attr_destroy(&attr);
  EXPECT_NE(j.recursion.find("the template nests too deeply for this thread's stack"),
            std::string::npos)
      << j.recursion;
  EXPECT_NE(j.nesting.find("the template nests too deeply for this thread's stack"),
            std::string::npos)
      << j.nesting;
}

TEST(ChatTemplate, InputsTakePlainAndOrderedJson) {
  chat_inputs in;
  nlohmann::json plain = {{"role", "user"}, {"content", "x"}};
  in.messages.push_back(plain);  // a plain json message
  in.messages.push_back(nlohmann::ordered_json::parse(R"({"role": "assistant", "content": "y"})"));
  in.tools = nlohmann::ordered_json::parse(R"([{"z": 1, "a": 2}])");  // keeps the client's order
  EXPECT_EQ(
      render(
          "{% for m in messages %}{{ m.role }}={{ m.content }};{% endfor %}{{ tools[0] | tojson }}",
          in),
      "user=x;assistant=y;{\"z\": 1, \"a\": 2}");
  in.tools = nlohmann::json::parse(R"([{"z": 1, "a": 2}])");  // a plain json sorts its keys
  EXPECT_EQ(render("{{ tools[0] | tojson }}", in), "{\"a\": 2, \"z\": 1}");
}
