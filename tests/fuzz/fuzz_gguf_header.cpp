// Fuzz target: the header of a GGUF file (magic, metadata, tensor infos), followed by 64 KiB of
// zeros so that small tensors' data is there: the fuzzer spends its time on the metadata, the
// hyper-parameters and the vocabulary instead of on matching data sizes. Seeds: the first bytes of
// every GGUF in ../shared/models.
#include <vector>

#include "tests/fuzz/fuzz.h"

namespace tandem::fuzz {

void gguf_header(const uint8_t* data, size_t size) {
  std::vector<uint8_t> padded(data, data + size);
  padded.resize(size + (64 << 10), 0);
  load_all(as_file(padded.data(), padded.size()));
}

}  // namespace tandem::fuzz

TANDEM_FUZZ_ENTRY(gguf_header)
