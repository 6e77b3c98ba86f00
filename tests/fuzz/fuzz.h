// The fuzz targets' bodies, one per tests/fuzz/fuzz_*.cpp. Each takes any bytes and must return
// normally: a tandem::error is the expected answer to bad input and is caught inside; anything
// else (a crash, a sanitizer report, an abort from a broken invariant) is a finding.
// Built twice: with TANDEM_LIBFUZZER into the libFuzzer executables (TANDEM_FUZZ=ON, clang), and
// without it into tandem_tests, whose FuzzRegressions test replays tests/fuzz/regressions/TARGET/.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace tandem::fuzz {

void gguf(const uint8_t* data, size_t size);         // a whole file: reader, model, tokenizer
void gguf_header(const uint8_t* data, size_t size);  // a header, followed by 64 KiB of zeros
void tokenizer(const uint8_t* data, size_t size);    // encode/decode on the real vocabularies
void sampler(const uint8_t* data, size_t size);      // parameters and logits
void template_text(const uint8_t* data, size_t size);      // chat template source
void template_messages(const uint8_t* data, size_t size);  // messages JSON, real templates
void request(const uint8_t* data, size_t size);  // a chat/completions request body (tools/serve)

// data as the contents of a file: the path of an in-memory file (memfd) holding exactly those
// bytes, valid until the next call.
const std::string& as_file(const uint8_t* data, size_t size);
// Opens path as a GGUF, builds its tokenizer and encodes a little, and loads it as a model: every
// tandem::error is caught, every accepted value checked against the file.
void load_all(const std::string& path);
// Aborts with a message: an invariant of the code under test is broken.
[[noreturn]] void broken(const std::string& what);

}  // namespace tandem::fuzz

#ifdef TANDEM_LIBFUZZER
#define TANDEM_FUZZ_ENTRY(fn)                                                    \
  extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {      \
    tandem::fuzz::fn(data, size);                                                \
    return 0;                                                                    \
  }
// Work done once before fuzzing starts (not counted against libFuzzer's per-input timeout).
#define TANDEM_FUZZ_INIT(fn)                                   \
  extern "C" int LLVMFuzzerInitialize(int*, char***) {         \
    fn();                                                      \
    return 0;                                                  \
  }
#else
#define TANDEM_FUZZ_ENTRY(fn)
#define TANDEM_FUZZ_INIT(fn)
#endif
