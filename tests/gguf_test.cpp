// GGUF reader: well-formed files round-trip through the writer; corrupted files are refused with
// a message that names the file, the problem and where.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "runtime/gguf.h"
#include "runtime/model.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

std::vector<uint8_t> bytes_of(const std::string& path) {
  std::string s = test::read_file(path);
  return {s.begin(), s.end()};
}
void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(b.data()),
                                              static_cast<std::streamsize>(b.size()));
}

// A small valid file: two metadata values, one array, two tensors.
std::string make_small(const std::string& name) {
  gguf_writer w;
  w.set_string("general.architecture", "llama");
  w.set_u32("llama.block_count", 3);
  w.set_array_f32("some.scores", {0.5f, -1.0f, 2.0f});
  std::vector<uint8_t> a(4 * 8 * 2), b(2 * 64);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<uint8_t>(i);
  w.add_tensor("a.weight", dtype::f32, {8, 2}, a);
  w.add_tensor("b.weight", dtype::f16, {64}, b);
  const std::string path = test::temp_dir() + "/" + name;
  w.write(path);
  return path;
}

std::string error_of(const std::string& path) {
  try {
    gguf_file::open(path);
  } catch (const error& e) {
    return e.what();
  }
  return "";
}

TEST(Gguf, WriterRoundTrip) {
  auto f = gguf_file::open(make_small("ok.gguf"));
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->alignment(), 32u);
  EXPECT_EQ(f->get_string("general.architecture", ""), "llama");
  EXPECT_EQ(f->get_int("llama.block_count"), 3);
  const gguf_value* s = f->find("some.scores");
  ASSERT_NE(s, nullptr);
  ASSERT_EQ(s->arr.size(), 3u);
  EXPECT_FLOAT_EQ(static_cast<float>(s->arr[2].as_float()), 2.0f);
  const gguf_tensor* t = f->tensor("a.weight");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->ne[0], 8);
  EXPECT_EQ(t->ne[1], 2);
  EXPECT_EQ(t->nbytes, 64u);
  EXPECT_EQ(t->data[5], 5);
  EXPECT_EQ(f->tensor("b.weight")->nbytes, 128u);
  EXPECT_EQ((f->tensor("b.weight")->data - f->base()) % 32, 0);
}

TEST(Gguf, ReadsStories260K) {
  auto f = gguf_file::open(test::model_path("stories260K.gguf"));
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->alignment(), 32u);  // no general.alignment key: the default
  EXPECT_EQ(f->get_int("llama.block_count"), 5);
  EXPECT_EQ(f->get_int("llama.embedding_length"), 64);
  EXPECT_EQ(f->find("tokenizer.ggml.tokens")->arr.size(), 512u);
  ASSERT_NE(f->tensor("blk.4.ffn_down.weight"), nullptr);
  EXPECT_EQ(f->tensor("blk.4.ffn_down.weight")->ne[0], 172);
}

TEST(Gguf, MissingFile) {
  {
    std::string e = error_of("/nonexistent/model.gguf");
    EXPECT_NE(e.find("/nonexistent/model.gguf: cannot open"), std::string::npos) << e;
  }
}

TEST(Gguf, Truncated) {
  auto b = bytes_of(make_small("src.gguf"));
  for (size_t cut : {size_t{0}, size_t{3}, size_t{20}, size_t{60}, b.size() - 40, b.size() - 1}) {
    const std::string p = test::temp_dir() + "/trunc.gguf";
    write_bytes(p, std::vector<uint8_t>(b.begin(), b.begin() + static_cast<long>(cut)));
    std::string e = error_of(p);
    ASSERT_FALSE(e.empty()) << "cut at " << cut;
    EXPECT_NE(e.find(p + ":"), std::string::npos) << e;
    EXPECT_TRUE(e.find("truncated") != std::string::npos || e.find("empty") != std::string::npos ||
                e.find("past the end") != std::string::npos)
        << e;
  }
  // Cutting into the tensor data names the tensor and where its data ends.
  const std::string p = test::temp_dir() + "/trunc_data.gguf";
  write_bytes(p, std::vector<uint8_t>(b.begin(), b.end() - 40));
  std::string e = error_of(p);
  EXPECT_NE(e.find("tensor 'b.weight' data ends at byte"), std::string::npos) << e;
  EXPECT_NE(e.find("past the end of the file (" + std::to_string(b.size() - 40) + ")"),
            std::string::npos)
      << e;
}

TEST(Gguf, BadMagic) {
  auto b = bytes_of(make_small("src.gguf"));
  b[0] = 'X';
  const std::string p = test::temp_dir() + "/magic.gguf";
  write_bytes(p, b);
  EXPECT_NE(error_of(p).find("not a GGUF file"), std::string::npos) << error_of(p);
}

TEST(Gguf, BadVersion) {
  auto b = bytes_of(make_small("src.gguf"));
  b[4] = 7;
  const std::string p = test::temp_dir() + "/version.gguf";
  write_bytes(p, b);
  EXPECT_NE(error_of(p).find("unsupported GGUF version 7"), std::string::npos) << error_of(p);
}

// Finds the byte offset of a tensor info's fields by locating its name in the header.
size_t find_name(const std::vector<uint8_t>& b, const std::string& name) {
  for (size_t i = 0; i + name.size() <= b.size(); ++i)
    if (std::memcmp(b.data() + i, name.data(), name.size()) == 0) return i + name.size();
  return std::string::npos;
}

TEST(Gguf, OffsetPastEnd) {
  auto b = bytes_of(make_small("src.gguf"));
  size_t at = find_name(b, "b.weight");  // then n_dims(4) ne(8) type(4) offset(8)
  uint64_t off = 1u << 20;
  std::memcpy(&b[at + 4 + 8 + 4], &off, 8);
  const std::string p = test::temp_dir() + "/offset.gguf";
  write_bytes(p, b);
  std::string e = error_of(p);
  EXPECT_NE(e.find("tensor 'b.weight' data ends at byte"), std::string::npos) << e;
}

TEST(Gguf, AbsurdDimension) {
  auto b = bytes_of(make_small("src.gguf"));
  size_t at = find_name(b, "a.weight");
  uint64_t ne = 1ull << 62;
  std::memcpy(&b[at + 4], &ne, 8);
  const std::string p = test::temp_dir() + "/dim.gguf";
  write_bytes(p, b);
  std::string e = error_of(p);
  EXPECT_NE(e.find("tensor 'a.weight' has an absurd dimension 0"), std::string::npos) << e;
}

TEST(Gguf, HugeArrayLength) {
  auto b = bytes_of(make_small("src.gguf"));
  size_t at = find_name(b, "some.scores");  // then type(4) elem_type(4) count(8)
  uint64_t n = 1ull << 60;
  std::memcpy(&b[at + 8], &n, 8);
  const std::string p = test::temp_dir() + "/array.gguf";
  write_bytes(p, b);
  std::string e = error_of(p);
  EXPECT_NE(e.find("metadata 'some.scores' array length 1152921504606846976 runs past the end"),
            std::string::npos)
      << e;
}

TEST(Gguf, HugeStringLength) {
  auto b = bytes_of(make_small("src.gguf"));
  size_t at = find_name(b, "general.architecture");  // then type(4) len(8)
  uint64_t n = 1ull << 40;
  std::memcpy(&b[at + 4], &n, 8);
  const std::string p = test::temp_dir() + "/string.gguf";
  write_bytes(p, b);
  std::string e = error_of(p);
  EXPECT_NE(e.find("string value length 1099511627776 runs past the end"), std::string::npos) << e;
}

TEST(Gguf, UnknownTensorType) {
  auto b = bytes_of(make_small("src.gguf"));
  size_t at = find_name(b, "b.weight");
  uint32_t type = 99;
  std::memcpy(&b[at + 4 + 8], &type, 4);
  const std::string p = test::temp_dir() + "/type.gguf";
  write_bytes(p, b);
  std::string e = error_of(p);
  EXPECT_NE(e.find("tensor 'b.weight' has unknown type id 99"), std::string::npos) << e;
}

TEST(Gguf, HugeTensorCount) {
  auto b = bytes_of(make_small("src.gguf"));
  uint64_t n = 1ull << 50;
  std::memcpy(&b[8], &n, 8);
  const std::string p = test::temp_dir() + "/count.gguf";
  write_bytes(p, b);
  EXPECT_NE(error_of(p).find("tensor count 1125899906842624 cannot fit"), std::string::npos)
      << error_of(p);
}

// Every single-byte corruption of the header and every truncation is refused or read; never a
// crash (a cheap stand-in for fuzzing that runs in CI).
TEST(Gguf, NoCrashOnAnyCorruption) {
  auto b = bytes_of(make_small("src.gguf"));
  const std::string p = test::temp_dir() + "/fuzz.gguf";
  const size_t header = find_name(b, "b.weight") + 24;
  int read = 0, refused = 0;
  for (size_t i = 0; i < header; ++i) {
    for (uint8_t v : {uint8_t{0}, uint8_t{0xff}, uint8_t{0x7f}}) {
      auto c = b;
      c[i] = v;
      write_bytes(p, c);
      try {
        auto f = gguf_file::open(p);
        ++read;
        // What was read holds together: every tensor inside the file, its bytes its shape's.
        for (const gguf_tensor& t : f->tensors()) {
          ASSERT_GE(t.n_elements(), 0) << "byte " << i << " = " << int(v);
          ASSERT_LE(f->data_offset() + t.offset + t.nbytes, f->file_size())
              << t.name << ", byte " << i << " = " << int(v);
          ASSERT_EQ(t.nbytes, row_bytes(t.type, static_cast<uint64_t>(t.ne[0])) *
                                  static_cast<uint64_t>(t.n_elements() / t.ne[0]))
              << t.name << ", byte " << i << " = " << int(v);
        }
      } catch (const error& e) {
        ++refused;
        EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();  // one line
      }
    }
  }
  // Both outcomes happen: a changed byte of a name or a value is read, of a count or a type is
  // refused.
  EXPECT_GT(read, 0);
  EXPECT_GT(refused, 0);
  // Every truncation of the header is refused.
  for (size_t n = 0; n < header; ++n) {
    write_bytes(p, std::vector<uint8_t>(b.begin(), b.begin() + static_cast<long>(n)));
    EXPECT_THROW(gguf_file::open(p), error) << "truncated to " << n << " bytes";
  }
}

TEST(Model, MissingTensorIsNamed) {
  gguf_writer w;
  w.set_string("general.architecture", "llama");
  w.set_u32("llama.embedding_length", 8);
  w.set_u32("llama.block_count", 1);
  w.set_u32("llama.feed_forward_length", 16);
  w.set_u32("llama.attention.head_count", 2);
  w.add_tensor("token_embd.weight", dtype::f32, {8, 4}, std::vector<uint8_t>(8 * 4 * 4));
  w.add_tensor("output_norm.weight", dtype::f32, {8}, std::vector<uint8_t>(8 * 4));
  const std::string p = test::temp_dir() + "/missing.gguf";
  w.write(p);
  try {
    model::load(p);
    FAIL() << "loaded a model without layers";
  } catch (const error& e) {
    EXPECT_NE(std::string(e.what()).find("missing tensor 'blk.0.attn_norm.weight'"),
              std::string::npos)
        << e.what();
  }
}

TEST(Model, Stories260KHparams) {
  auto m = model::load(test::model_path("stories260K.gguf"));
  const hparams& hp = m->hp();
  EXPECT_EQ(hp.n_embd, 64);
  EXPECT_EQ(hp.n_layer, 5);
  EXPECT_EQ(hp.n_head, 8);
  EXPECT_EQ(hp.n_head_kv, 4);
  EXPECT_EQ(hp.head_dim, 8);
  EXPECT_EQ(hp.n_ff, 172);
  EXPECT_EQ(hp.n_vocab, 512);
  EXPECT_EQ(hp.n_ctx_train, 2048);
}

}  // namespace
}  // namespace tandem

#include "tests/tiny_model.h"

namespace tandem {
namespace {

TEST(Model, MissingOutputIsTiedToEmbedding) {
  test::tiny_shape s;
  s.tied_output = true;
  const std::string p = test::temp_dir() + "/tied.gguf";
  test::write_tiny_model(p, s);
  auto m = model::load(p);
  EXPECT_TRUE(m->output_tied());
  EXPECT_EQ(m->output().data(), m->tok_embd().data());
}

TEST(Model, WrongShapeIsNamed) {
  test::tiny_shape s;
  const std::string p = test::temp_dir() + "/shape.gguf";
  test::write_tiny_model(p, s);
  // Same file with a lying head count: attn_q's shape no longer fits.
  auto f = gguf_file::open(p);
  gguf_writer w;
  for (auto& [k, v] : f->metadata()) w.set_value(k, v);
  w.set_u32("llama.feed_forward_length", 48);
  for (auto& t : f->tensors())
    w.add_tensor(t.name, t.type, std::vector<int64_t>(t.ne, t.ne + t.n_dims),
                 std::vector<uint8_t>(t.data, t.data + t.nbytes));
  const std::string q = test::temp_dir() + "/shape2.gguf";
  w.write(q);
  try {
    model::load(q);
    FAIL();
  } catch (const error& e) {
    EXPECT_NE(std::string(e.what()).find("tensor 'blk.0.ffn_gate.weight' has shape [32, 64], "
                                         "expected [32, 48]"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace tandem
