// Fuzz target: a whole GGUF file through the reader, the model description and the tokenizer,
// as `tandem run` would meet it (model files come from strangers).
#include "tests/fuzz/fuzz.h"

namespace tandem::fuzz {

void gguf(const uint8_t* data, size_t size) { load_all(as_file(data, size)); }

}  // namespace tandem::fuzz

TANDEM_FUZZ_ENTRY(gguf)
