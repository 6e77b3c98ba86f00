// What the fuzz targets share: bytes as a file, loading a file, reporting a broken invariant.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>

#include "runtime/error.h"
#include "runtime/gguf.h"
#include "runtime/model.h"
#include "runtime/tokenizer.h"
#include "tests/fuzz/fuzz.h"

namespace tandem::fuzz {

const std::string& as_file(const uint8_t* data, size_t size) {
  static const int fd = memfd_create("tandem-fuzz", MFD_CLOEXEC);
  static const std::string path = "/proc/self/fd/" + std::to_string(fd);
  if (fd < 0 || ftruncate(fd, 0) != 0) broken("memfd_create/ftruncate failed");
  for (size_t done = 0; done < size;) {
    const ssize_t n = pwrite(fd, data + done, size - done, static_cast<off_t>(done));
    if (n <= 0) broken("pwrite to the memfd failed");
    done += static_cast<size_t>(n);
  }
  return path;
}

void broken(const std::string& what) {
  std::fprintf(stderr, "fuzz: broken invariant: %s\n", what.c_str());
  std::abort();
}

// The file as the reader, the tokenizer (vocab-only files have one and no model) and the model
// loader see it.
void load_all(const std::string& path) {
  std::unique_ptr<gguf_file> f;
  try {
    f = gguf_file::open(path);
  } catch (const error&) {
    return;
  }
  // Whatever was accepted must be consistent with the file it came from.
  for (const auto& t : f->tensors())
    if (t.data < f->base() || t.data + t.nbytes > f->base() + f->file_size())
      broken("tensor '" + t.name + "' accepted with data outside the file");
  try {
    auto tok = tokenizer::from_gguf(*f);
    const auto ids = tok->encode("Hello world, <s> \xe4\xb8\x96\xe7\x95\x8c", true);
    for (int32_t id : ids)
      if (id < 0 || id >= tok->n_vocab()) broken("encode produced an id outside the vocabulary");
    tok->decode(ids);
  } catch (const error&) {
  }
  try {
    auto m = model::load(path);
    if (m->hp().n_vocab < 1 || m->hp().n_layer < 1) broken("a model without vocabulary or layers");
  } catch (const error&) {
  }
}

}  // namespace tandem::fuzz
