// `tandem tokenize -m MODEL (-p TEXT | -f FILE)`: the token ids of a text, on one line.
#include <fmt/format.h>

#include <fstream>
#include <iterator>

#include "runtime/error.h"
#include "runtime/gguf.h"
#include "runtime/tokenizer.h"
#include "tools/tandem/commands.h"

namespace tandem::cli {
namespace {

struct tokenize_opts {
  std::string model, prompt, file, separator;
  bool no_bos = false;
  bool parse_special = false;
};

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw error(fmt::format("cannot read '{}'; check the path given to -f", path));
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// "\n", "\t", "\r" and "\\" in a separator typed on a command line.
std::string unescape(const std::string& s) {
  std::string r;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      r += s[i];
      continue;
    }
    switch (s[++i]) {
      case 'n': r += '\n'; break;
      case 't': r += '\t'; break;
      case 'r': r += '\r'; break;
      case '\\': r += '\\'; break;
      default:
        throw error(fmt::format("--separator '{}': unknown escape '\\{}'; use \\n, \\t, \\r or \\\\",
                                s, s[i]));
    }
  }
  return r;
}

// The strings of text: the whole text, or with a separator the parts between separators (one
// at the very end closes the last string instead of starting an empty one).
std::vector<std::string_view> split(std::string_view text, const std::string& sep) {
  if (sep.empty()) return {text};
  std::vector<std::string_view> parts;
  size_t pos = 0;
  for (size_t end; (end = text.find(sep, pos)) != std::string_view::npos; pos = end + sep.size())
    parts.push_back(text.substr(pos, end - pos));
  if (pos < text.size() || parts.empty()) parts.push_back(text.substr(pos));
  return parts;
}

}  // namespace

command add_tokenize(CLI::App& app) {
  auto o = std::make_shared<tokenize_opts>();
  app.add_option("-m,--model", o->model, "GGUF model (or vocab-only) file")->required();
  auto* p = app.add_option("-p,--prompt", o->prompt, "text to tokenize");
  auto* f = app.add_option("-f,--file", o->file, "file whose whole content is tokenized");
  p->excludes(f);
  app.add_flag("--no-bos", o->no_bos, "do not add BOS (by default added when the vocab wants it)");
  app.add_flag("--parse-special", o->parse_special,
               "turn spellings of control tokens in the text (<|im_start|>, <s>) into those "
               "tokens; without it they are plain text");
  app.add_option("--separator", o->separator,
                 "tokenize each part of the text between separators (\\n, \\t, \\r, \\\\ "
                 "understood) and print one line per part");
  return [o, p, f] {
    if (p->count() == 0 && f->count() == 0)
      throw error("tokenize needs the text: -p TEXT or -f FILE");
    const std::string text = o->file.empty() ? o->prompt : read_text(o->file);
    auto file = gguf_file::open(o->model);
    auto tok = tokenizer::from_gguf(*file);
    const bool bos = !o->no_bos && tok->add_bos_default();
    std::string out;
    for (std::string_view part : split(text, unescape(o->separator))) {
      const std::vector<int32_t> ids = tok->encode(part, bos, o->parse_special);
      for (size_t i = 0; i < ids.size(); ++i) {
        if (i) out += ' ';
        out += std::to_string(ids[i]);
      }
      out += '\n';
    }
    fmt::print("{}", out);
    return 0;
  };
}

}  // namespace tandem::cli
