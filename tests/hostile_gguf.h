// The hostile model corpus: crafted GGUF files that a loader must refuse with a one-line
// tandem::error, never a crash, a hang or an allocation out of proportion to the file.
// tests/hostile_gguf.cpp writes them; tests/hostile_gguf_test.cpp loads each one; the fuzz
// targets use them as seeds (tools/fuzz.sh).
#pragma once
#include <string>
#include <vector>

namespace tandem::test {

struct hostile_case {
  std::string name;    // file name in the corpus directory (NAME.gguf)
  std::string expect;  // a piece of the refusal message that names the problem
  std::string what;    // one line: what the file does wrong
  // The problem shows when a request renders the chat template, not at load: the message names
  // the template's line and column instead of the file.
  bool at_render = false;
};

// Writes every hostile file into dir (which must exist) and returns one case per file.
std::vector<hostile_case> write_hostile_ggufs(const std::string& dir);

// Writes the two well-formed tiny models the hostile files are made from (llama + SentencePiece
// vocab, llama + byte-level BPE vocab) as dir/base_spm.gguf and dir/base_bpe.gguf; returns their
// paths. Both must load and tokenize, or the corpus tests nothing.
std::vector<std::string> write_hostile_bases(const std::string& dir);

}  // namespace tandem::test
