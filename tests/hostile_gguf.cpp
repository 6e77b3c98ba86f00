// The hostile model corpus (see hostile_gguf.h). Files are built byte by byte from an in-memory
// image of a tiny, valid model, so that any field can be given any value, including ones the
// project's gguf_writer would never write.
#include "tests/hostile_gguf.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <optional>
#include <set>
#include <stdexcept>

namespace tandem::test {
namespace {

using bytes = std::vector<uint8_t>;

// GGUF value types (gguf_type in runtime/gguf.h, repeated here on purpose: the corpus must not
// depend on the reader it attacks).
enum : uint32_t {
  t_u8 = 0, t_i8, t_u16, t_i16, t_u32, t_i32, t_f32, t_bool, t_string, t_array, t_u64, t_i64,
  t_f64,
};
constexpr uint32_t k_f32 = 0, k_f16 = 1, k_q4_0 = 2, k_bf16 = 30;  // tensor types

template <typename T>
void put(bytes& b, T v) {
  const size_t at = b.size();
  b.resize(at + sizeof(T));
  std::memcpy(b.data() + at, &v, sizeof(T));
}
void put_str(bytes& b, const std::string& s) {
  put<uint64_t>(b, s.size());
  b.insert(b.end(), s.begin(), s.end());
}

// ---- value payloads ---------------------------------------------------------------------------

struct value {
  uint32_t type;
  bytes payload;           // what follows the type id
  std::vector<size_t> at;  // structural boundaries inside the payload (for truncation)
};

template <typename T>
value scalar(uint32_t type, T v) {
  value x{type, {}, {}};
  put<T>(x.payload, v);
  return x;
}
value u32(uint32_t v) { return scalar(t_u32, v); }
value i32(int32_t v) { return scalar(t_i32, v); }
value u64(uint64_t v) { return scalar(t_u64, v); }
value f32(float v) { return scalar(t_f32, v); }
value str(const std::string& s) {
  value x{t_string, {}, {}};
  put_str(x.payload, s);
  x.at = {8};
  return x;
}
// An array of values of one type; boundaries after the header and after the first two elements.
value array(uint32_t elem_type, const std::vector<value>& elems) {
  value x{t_array, {}, {}};
  put<uint32_t>(x.payload, elem_type);
  x.at.push_back(x.payload.size());
  put<uint64_t>(x.payload, elems.size());
  x.at.push_back(x.payload.size());
  for (size_t i = 0; i < elems.size(); ++i) {
    x.payload.insert(x.payload.end(), elems[i].payload.begin(), elems[i].payload.end());
    if (i < 2) x.at.push_back(x.payload.size());
  }
  return x;
}
value strings(const std::vector<std::string>& v) {
  std::vector<value> e;
  for (auto& s : v) e.push_back(str(s));
  return array(t_string, e);
}
value floats(const std::vector<float>& v) {
  std::vector<value> e;
  for (float f : v) e.push_back(f32(f));
  return array(t_f32, e);
}
value ints(const std::vector<int32_t>& v) {
  std::vector<value> e;
  for (int32_t i : v) e.push_back(i32(i));
  return array(t_i32, e);
}
// Overwrites the u64 element count of an array payload.
value with_count(value v, uint64_t n) {
  std::memcpy(v.payload.data() + 4, &n, 8);
  return v;
}

// ---- the file image ---------------------------------------------------------------------------

struct tensor {
  std::string name;
  std::vector<uint64_t> ne;
  uint32_t type = k_f32;
  bytes data;
  std::optional<uint64_t> offset;  // a lie about where the data is (default: where it is)
};

struct image {
  uint32_t magic = 0x46554747, version = 3;
  std::optional<uint64_t> n_tensors, n_kv;  // lies about the counts
  std::vector<std::pair<std::string, value>> kv;
  std::vector<tensor> tensors;
  uint64_t alignment = 32;

  value* find(const std::string& key) {
    for (auto& [k, v] : kv)
      if (k == key) return &v;
    return nullptr;
  }
  void set(const std::string& key, value v) {
    if (value* p = find(key)) *p = std::move(v);
    else kv.emplace_back(key, std::move(v));
  }
  void erase(const std::string& key) {
    for (size_t i = 0; i < kv.size(); ++i)
      if (kv[i].first == key) kv.erase(kv.begin() + static_cast<long>(i));
  }
  tensor& t(const std::string& name) {
    for (auto& x : tensors)
      if (x.name == name) return x;
    throw std::logic_error("hostile_gguf: no tensor " + name);
  }

  // The file's bytes; cuts (when given) receives every structural boundary.
  bytes build(std::vector<size_t>* cuts = nullptr) const {
    bytes b;
    auto mark = [&] { if (cuts) cuts->push_back(b.size()); };
    put<uint32_t>(b, magic), mark();
    put<uint32_t>(b, version), mark();
    put<uint64_t>(b, n_tensors.value_or(tensors.size())), mark();
    put<uint64_t>(b, n_kv.value_or(kv.size())), mark();
    for (const auto& [key, v] : kv) {
      put<uint64_t>(b, key.size()), mark();
      b.insert(b.end(), key.begin(), key.end()), mark();
      put<uint32_t>(b, v.type), mark();
      const size_t base = b.size();
      b.insert(b.end(), v.payload.begin(), v.payload.end());
      if (cuts)
        for (size_t a : v.at) cuts->push_back(base + a);
      mark();
    }
    auto pad = [&](uint64_t x) { return (x + alignment - 1) / alignment * alignment; };
    uint64_t off = 0;
    std::vector<uint64_t> where;
    for (const auto& x : tensors) {
      put_str(b, x.name), mark();
      put<uint32_t>(b, static_cast<uint32_t>(x.ne.size())), mark();
      for (uint64_t d : x.ne) put<uint64_t>(b, d), mark();
      put<uint32_t>(b, x.type), mark();
      put<uint64_t>(b, x.offset.value_or(off)), mark();
      where.push_back(off);
      off = pad(off + x.data.size());
    }
    b.resize(pad(b.size()), 0);
    const size_t data = b.size();
    for (size_t i = 0; i < tensors.size(); ++i) {
      b.resize(data + where[i], 0);
      if (cuts) cuts->push_back(b.size());
      b.insert(b.end(), tensors[i].data.begin(), tensors[i].data.end());
      if (cuts) cuts->push_back(b.size() - tensors[i].data.size() / 2);
    }
    return b;
  }
};

bytes f32_data(size_t n, float seed) {
  bytes b(n * 4);
  for (size_t i = 0; i < n; ++i) {
    const float v = 0.5f * std::sin(seed + 0.37f * static_cast<float>(i)) + (seed < 0 ? 1.0f : 0);
    std::memcpy(b.data() + i * 4, &v, 4);
  }
  return b;
}

// A llama model: n_embd 8, 1 layer, 2 heads of 4, 1 KV head, ffn 16, 8 tokens, all f32.
image base_model(bool bpe) {
  image m;
  m.set("general.architecture", str("llama"));
  m.set("general.name", str("hostile base"));
  m.set("llama.context_length", u32(64));
  m.set("llama.embedding_length", u32(8));
  m.set("llama.block_count", u32(1));
  m.set("llama.feed_forward_length", u32(16));
  m.set("llama.attention.head_count", u32(2));
  m.set("llama.attention.head_count_kv", u32(1));
  m.set("llama.attention.layer_norm_rms_epsilon", f32(1e-5f));
  m.set("llama.rope.freq_base", f32(10000.0f));
  if (bpe) {
    m.set("tokenizer.ggml.model", str("gpt2"));
    m.set("tokenizer.ggml.pre", str("gpt-2"));
    m.set("tokenizer.ggml.tokens",
          strings({"a", "b", "ab", "\xc4\xa0", "\xc4\xa0" "a", "<|endoftext|>", "c", "d"}));
    m.set("tokenizer.ggml.token_type", ints({1, 1, 1, 1, 1, 3, 1, 1}));
    m.set("tokenizer.ggml.merges", strings({"a b", "\xc4\xa0 a"}));
    m.set("tokenizer.ggml.eos_token_id", u32(5));
  } else {
    m.set("tokenizer.ggml.model", str("llama"));
    m.set("tokenizer.ggml.tokens", strings({"<unk>", "<s>", "</s>", "\xe2\x96\x81", "a", "b",
                                            "\xe2\x96\x81" "a", "ab"}));
    m.set("tokenizer.ggml.scores", floats({0, 0, 0, -1, -2, -3, -4, -5}));
    m.set("tokenizer.ggml.token_type", ints({2, 3, 3, 1, 1, 1, 1, 1}));
    m.set("tokenizer.ggml.bos_token_id", u32(1));
    m.set("tokenizer.ggml.eos_token_id", u32(2));
  }
  float seed = 0;
  auto mat = [&](const std::string& name, uint64_t cols, uint64_t rows) {
    m.tensors.push_back({name, {cols, rows}, k_f32, f32_data(cols * rows, seed += 1), {}});
  };
  auto vec = [&](const std::string& name, uint64_t n) {
    m.tensors.push_back({name, {n}, k_f32, f32_data(n, -(seed += 1)), {}});
  };
  mat("token_embd.weight", 8, 8);
  vec("output_norm.weight", 8);
  vec("blk.0.attn_norm.weight", 8);
  mat("blk.0.attn_q.weight", 8, 8);
  mat("blk.0.attn_k.weight", 8, 4);
  mat("blk.0.attn_v.weight", 8, 4);
  mat("blk.0.attn_output.weight", 8, 8);
  vec("blk.0.ffn_norm.weight", 8);
  mat("blk.0.ffn_gate.weight", 8, 16);
  mat("blk.0.ffn_up.weight", 8, 16);
  mat("blk.0.ffn_down.weight", 16, 8);
  return m;
}

void write(const std::string& path, const bytes& b) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  if (!out) throw std::runtime_error("hostile_gguf: cannot write " + path);
}

constexpr uint64_t k_max64 = std::numeric_limits<uint64_t>::max();

// Byte offset of the first occurrence of s in b, just past it.
size_t after(const bytes& b, const std::string& s) {
  for (size_t i = 0; i + s.size() <= b.size(); ++i)
    if (std::memcmp(b.data() + i, s.data(), s.size()) == 0) return i + s.size();
  throw std::logic_error("hostile_gguf: no '" + s + "' in the image");
}

struct corpus {
  std::string dir;
  std::vector<hostile_case> cases;

  void add(const std::string& name, const bytes& b, const std::string& expect,
           const std::string& what) {
    write(dir + "/" + name + ".gguf", b);
    cases.push_back({name, expect, what});
  }
  // A variant of a base model, changed by edit.
  void edit(const std::string& name, bool bpe, const std::function<void(image&)>& change,
            const std::string& expect, const std::string& what) {
    image m = base_model(bpe);
    change(m);
    add(name, m.build(), expect, what);
  }
};

void header_cases(corpus& c) {
  c.edit("bad_magic", false, [](image& m) { m.magic = 0x4c4d4747; }, "not a GGUF file",
         "the magic says GGML, an older format");
  c.edit("version_1", false, [](image& m) { m.version = 1; }, "unsupported GGUF version 1",
         "GGUF version 1");
  c.edit("version_max", false, [](image& m) { m.version = 0xffffffffu; },
         "unsupported GGUF version 4294967295", "version 2^32-1");
  c.edit("tensor_count_2^64-1", false, [](image& m) { m.n_tensors = k_max64; },
         "tensor count 18446744073709551615 cannot fit", "tensor count near 2^64");
  c.edit("kv_count_2^64-1", false, [](image& m) { m.n_kv = k_max64; },
         "metadata count 18446744073709551615 cannot fit", "metadata count near 2^64");
  c.edit("kv_count_2^59", false, [](image& m) { m.n_kv = 1ull << 59; },
         "metadata count 576460752303423488 cannot fit", "metadata count whose bytes overflow");
  c.edit("kv_count_one_too_many", false, [](image& m) { m.n_kv = m.kv.size() + 1; },
         "unknown value type|runs past the end|truncated",
         "one more key-value than present: the tensor table is read as metadata");
  c.edit("tensor_count_one_too_many", false, [](image& m) { m.n_tensors = m.tensors.size() + 1; },
         "truncated|past the end|tensor name is empty",
         "one more tensor than present: padding and data are read as a tensor info");
}

void metadata_cases(corpus& c) {
  {
    bytes b = base_model(false).build();
    const uint64_t n = k_max64;
    std::memcpy(b.data() + 24, &n, 8);  // the first key's length
    c.add("key_length_2^64-1", b, "metadata key length 18446744073709551615 runs past the end",
          "a key length near 2^64");
    const uint64_t h = 1ull << 63;
    std::memcpy(b.data() + 24, &h, 8);
    c.add("key_length_2^63", b, "metadata key length 9223372036854775808 runs past the end",
          "a key length of 2^63 (negative as a signed number)");
  }
  {
    bytes b = base_model(false).build();
    const size_t at = after(b, "general.architecture") + 4;
    const uint64_t n = k_max64;
    std::memcpy(b.data() + at, &n, 8);
    c.add("string_length_2^64-1", b, "string value length 18446744073709551615 runs past the end",
          "a string value length near 2^64");
  }
  c.edit("array_count_2^64-1", false,
         [](image& m) { m.set("tokenizer.ggml.tokens", with_count(*m.find("tokenizer.ggml.tokens"), k_max64)); },
         "array length 18446744073709551615 runs past the end", "an array count near 2^64");
  c.edit("array_count_times_4_wraps", false,
         [](image& m) { m.set("tokenizer.ggml.scores", with_count(*m.find("tokenizer.ggml.scores"), 1ull << 62)); },
         "array length 4611686018427387904 runs past the end",
         "an f32 array count whose byte size wraps to 0");
  c.edit("array_count_times_8_wraps", false,
         [](image& m) { m.set("tokenizer.ggml.tokens", with_count(*m.find("tokenizer.ggml.tokens"), 1ull << 61)); },
         "array length 2305843009213693952 runs past the end",
         "a string array count whose minimum byte size wraps to 0");
  c.edit("value_type_13", false, [](image& m) { m.find("general.name")->type = 13; },
         "metadata 'general.name' has unknown value type 13", "an unknown value type");
  c.edit("value_type_2^32-1", false, [](image& m) { m.find("general.name")->type = 0xffffffffu; },
         "unknown value type 4294967295", "a value type of 2^32-1");
  c.edit("array_elem_type_13", false,
         [](image& m) { m.find("tokenizer.ggml.scores")->payload[0] = 13; },
         "metadata 'tokenizer.ggml.scores' has unknown array element type 13",
         "an unknown array element type");
  c.edit("nested_arrays_3_deep", false,
         [](image& m) { m.set("general.tags", array(t_array, {array(t_array, {ints({1})})})); },
         "metadata 'general.tags' nests arrays too deeply", "arrays of arrays of arrays");
  c.edit("tokens_array_of_arrays", false,
         [](image& m) {
           std::vector<value> rows(8, strings({"x"}));
           m.set("tokenizer.ggml.tokens", array(t_array, rows));
         },
         "'tokenizer.ggml.tokens' should hold strings, found array",
         "the vocabulary as an array of arrays (legal nesting, wrong shape)");
  c.edit("duplicate_key", false,
         [](image& m) { m.kv.emplace_back("general.architecture", str("llama")); },
         "duplicate metadata key 'general.architecture'", "a key given twice");
  c.edit("key_not_utf8", false, [](image& m) { m.kv.emplace_back("general.\xff\xfe", u32(1)); },
         "not valid UTF-8", "a key with bytes that are not UTF-8");
  c.edit("key_empty", false, [](image& m) { m.kv.emplace_back("", u32(1)); },
         "metadata key is empty", "an empty key");
  c.edit("architecture_not_utf8", false,
         [](image& m) { m.set("general.architecture", str("ll\xc3\x28ma")); },
         "metadata 'general.architecture' is not valid UTF-8", "an overlong/broken UTF-8 value");
  c.edit("token_not_utf8", false,
         [](image& m) {
           m.set("tokenizer.ggml.tokens", strings({"<unk>", "<s>", "</s>", "\xe2\x96", "a", "b",
                                                   "\xe2\x96\x81" "a", "ab"}));
         },
         "metadata 'tokenizer.ggml.tokens' is not valid UTF-8", "a token cut inside a character");
  c.edit("token_surrogate", false,
         [](image& m) {
           m.set("tokenizer.ggml.tokens", strings({"<unk>", "<s>", "</s>", "\xed\xa0\x80", "a",
                                                   "b", "\xe2\x96\x81" "a", "ab"}));
         },
         "not valid UTF-8", "a UTF-16 surrogate encoded in UTF-8");
  c.edit("alignment_3", false, [](image& m) { m.set("general.alignment", u32(3)); },
         "general.alignment 3 is not a power of two", "alignment 3");
  c.edit("alignment_0", false, [](image& m) { m.set("general.alignment", u32(0)); },
         "general.alignment 0 is not a power of two", "alignment 0");
  c.edit("alignment_2^40", false, [](image& m) { m.set("general.alignment", u64(1ull << 40)); },
         "general.alignment 1099511627776", "an alignment larger than any file");
  c.edit("alignment_string", false, [](image& m) { m.set("general.alignment", str("32")); },
         "general.alignment should be an integer, found a string",
         "alignment given as a string");
}

void tensor_info_cases(corpus& c) {
  c.edit("tensor_dims_0", false, [](image& m) { m.t("output_norm.weight").ne = {}; },
         "tensor 'output_norm.weight' has 0 dimensions", "no dimensions");
  c.edit("tensor_dims_5", false, [](image& m) { m.t("output_norm.weight").ne = {8, 1, 1, 1, 1}; },
         "tensor 'output_norm.weight' has 5 dimensions", "five dimensions");
  c.edit("tensor_dim_zero", false, [](image& m) { m.t("token_embd.weight").ne = {8, 0}; },
         "tensor 'token_embd.weight' has an absurd dimension 1 = 0", "a zero dimension");
  c.edit("tensor_dim_2^64-1", false, [](image& m) { m.t("token_embd.weight").ne = {8, k_max64}; },
         "absurd dimension 1 = 18446744073709551615", "a dimension near 2^64");
  c.edit("tensor_dims_overflow_3d", false,
         [](image& m) { m.t("token_embd.weight").ne = {1ull << 32, 1ull << 32, 1ull << 32}; },
         "tensor 'token_embd.weight' has an absurd dimension", "3 dimensions of 2^32: 2^96 elements");
  c.edit("tensor_dims_overflow_4d", false,
         [](image& m) { m.t("token_embd.weight").ne = {1ull << 21, 1ull << 21, 1ull << 21, 1ull << 21}; },
         "tensor 'token_embd.weight' has an absurd dimension",
         "4 dimensions of 2^21 each: the product wraps 64 bits");
  c.edit("tensor_bytes_past_end", false,
         [](image& m) { m.t("blk.0.ffn_down.weight").ne = {16, 1ull << 30}; },
         "tensor 'blk.0.ffn_down.weight' data ends at byte", "a tensor of 64 GiB in a 4 KiB file");
  c.edit("tensor_type_99", false, [](image& m) { m.t("blk.0.attn_q.weight").type = 99; },
         "tensor 'blk.0.attn_q.weight' has unknown type id 99", "an unknown tensor type");
  c.edit("tensor_type_4_removed", false, [](image& m) { m.t("blk.0.attn_q.weight").type = 4; },
         "has unknown type id 4", "the removed Q4_2 type");
  c.edit("tensor_type_2^32-1", false, [](image& m) { m.t("blk.0.attn_q.weight").type = 0xffffffffu; },
         "has unknown type id 4294967295", "a tensor type of 2^32-1");
  c.edit("tensor_row_not_block_multiple", false,
         [](image& m) {
           tensor& t = m.t("blk.0.attn_q.weight");
           t.type = k_q4_0;
           t.data.resize(8 * 18 / 32 + 1);
         },
         "not a multiple of the block size 32", "a q4_0 row of 8 elements");
  c.edit("tensor_offset_past_end", false,
         [](image& m) { m.t("blk.0.ffn_down.weight").offset = 1ull << 20; },
         "tensor 'blk.0.ffn_down.weight' data ends at byte", "a data offset past the end");
  c.edit("tensor_offset_2^64-32", false,
         [](image& m) { m.t("blk.0.ffn_down.weight").offset = k_max64 - 31; },
         "tensor 'blk.0.ffn_down.weight' data offset 18446744073709551584 is past the end", "a data offset whose end wraps 64 bits");
  c.edit("tensor_offset_misaligned", false,
         [](image& m) { m.t("blk.0.ffn_up.weight").offset = 4; },
         "tensor 'blk.0.ffn_up.weight' offset 4 is not aligned to 32", "a misaligned data offset");
  c.edit("tensor_overlap_same_offset", false,
         [](image& m) { m.t("blk.0.ffn_up.weight").offset = 0; },
         "overlaps tensor", "two tensors at the same offset");
  c.edit("tensor_overlap_partial", false,
         [](image& m) {
           // attn_k follows attn_q (256 bytes); start it half-way into attn_q's data.
           uint64_t off = 0;
           for (auto& t : m.tensors) {
             if (t.name == "blk.0.attn_k.weight") break;
             off = (off + t.data.size() + 31) / 32 * 32;
           }
           m.t("blk.0.attn_k.weight").offset = off - 128;
         },
         "overlaps tensor", "a tensor starting inside the previous one");
  c.edit("tensor_duplicate_name", false,
         [](image& m) { m.t("blk.0.ffn_up.weight").name = "blk.0.ffn_gate.weight"; },
         "duplicate tensor 'blk.0.ffn_gate.weight'", "two tensors with one name");
  c.edit("tensor_name_not_utf8", false,
         [](image& m) { m.tensors.push_back({"blk.0.\xc0\xaf", {8}, k_f32, f32_data(8, 1), {}}); },
         "not valid UTF-8", "a tensor name with an overlong encoding of '/'");
  c.edit("tensor_name_empty", false,
         [](image& m) { m.tensors.push_back({"", {8}, k_f32, f32_data(8, 1), {}}); },
         "tensor name is empty", "a tensor without a name");
}

void model_cases(corpus& c) {
  c.edit("no_architecture", false, [](image& m) { m.erase("general.architecture"); },
         "'general.architecture' is missing", "no architecture");
  c.edit("architecture_unknown", false,
         [](image& m) { m.set("general.architecture", str("gptj")); },
         "architecture 'gptj' is not supported", "an architecture Tandem does not run");
  c.edit("context_length_0", false, [](image& m) { m.set("llama.context_length", u32(0)); },
         "'llama.context_length' = 0 is out of range", "context length 0");
  c.edit("context_length_2^40", false,
         [](image& m) { m.set("llama.context_length", u64(1ull << 40)); },
         "'llama.context_length' = 1099511627776 is out of range", "context length 2^40");
  c.edit("context_length_2^64-1", false,
         [](image& m) { m.set("llama.context_length", u64(k_max64)); },
         "'llama.context_length' = 18446744073709551615", "context length 2^64-1 (-1 if signed)");
  c.edit("context_length_negative", false,
         [](image& m) { m.set("llama.context_length", i32(-4096)); },
         "'llama.context_length' = -4096 is out of range", "a negative context length");
  c.edit("context_length_string", false,
         [](image& m) { m.set("llama.context_length", str("4096")); },
         "'llama.context_length' should be an integer", "context length as a string");
  c.edit("block_count_0", false, [](image& m) { m.set("llama.block_count", u32(0)); },
         "'llama.block_count' = 0 is out of range", "no layers");
  c.edit("block_count_2^31", false, [](image& m) { m.set("llama.block_count", u32(1u << 31)); },
         "'llama.block_count' = 2147483648 is out of range", "2^31 layers");
  c.edit("embedding_negative", false, [](image& m) { m.set("llama.embedding_length", i32(-8)); },
         "'llama.embedding_length' = -8 is out of range", "a negative width");
  c.edit("heads_not_multiple", false,
         [](image& m) {
           m.set("llama.attention.head_count", u32(2));
           m.set("llama.attention.head_count_kv", u32(3));
         },
         "head_count 2 is not a multiple of head_count_kv 3", "2 heads over 3 KV heads");
  c.edit("head_dim_2^32+4", false,
         [](image& m) { m.set("llama.attention.key_length", u64((1ull << 32) + 4)); },
         "head dimension 4294967300", "a key length that wraps to 4 in 32 bits");
  c.edit("rope_dims_odd", false, [](image& m) { m.set("llama.rope.dimension_count", u32(3)); },
         "rope.dimension_count 3 must be even", "an odd number of rotated dimensions");
  c.edit("rms_eps_nan", false,
         [](image& m) { m.set("llama.attention.layer_norm_rms_epsilon", f32(std::nanf(""))); },
         "'llama.attention.layer_norm_rms_epsilon' = nan", "a NaN epsilon");
  c.edit("rope_base_infinite", false,
         [](image& m) { m.set("llama.rope.freq_base", f32(INFINITY)); },
         "'llama.rope.freq_base' = inf", "an infinite RoPE base");
  c.edit("rope_base_negative", false, [](image& m) { m.set("llama.rope.freq_base", f32(-1)); },
         "'llama.rope.freq_base' = -1", "a negative RoPE base");
  c.edit("rope_scaling_yarn", false,
         [](image& m) { m.set("llama.rope.scaling.type", str("yarn")); },
         "rope scaling type 'yarn' is not supported", "an unsupported RoPE scaling");
  c.edit("rope_scaling_negative", false,
         [](image& m) {
           m.set("llama.rope.scaling.type", str("linear"));
           m.set("llama.rope.scaling.factor", f32(-2));
         },
         "rope scaling factor -2 must be > 0", "a negative scaling factor");
  c.edit("weight_shape_mismatch", false,
         [](image& m) { m.t("blk.0.attn_q.weight").ne = {4, 16}; },
         "tensor 'blk.0.attn_q.weight' has shape [4, 16], expected [8, 8]",
         "a projection whose rows are not n_embd wide");
  c.edit("missing_tensor", false,
         [](image& m) { m.tensors.pop_back(); },
         "missing tensor 'blk.0.ffn_down.weight'", "a layer without its down projection");
  c.edit("norm_f16", false,
         [](image& m) {
           tensor& t = m.t("output_norm.weight");
           t.type = k_f16;
           t.data.resize(16);
         },
         "norm/bias tensor 'output_norm.weight' has type f16, expected f32", "an f16 norm");
  c.edit("weight_bf16", false,
         [](image& m) {
           tensor& t = m.t("blk.0.attn_q.weight");
           t.type = k_bf16;
           t.data.resize(8 * 8 * 2);
         },
         "has type bf16, which Tandem cannot compute with", "a weight type without kernels");
}

void vocab_cases(corpus& c) {
  c.edit("vocab_larger_than_embedding", false,
         [](image& m) {
           m.set("tokenizer.ggml.tokens", strings({"<unk>", "<s>", "</s>", "\xe2\x96\x81", "a",
                                                   "b", "\xe2\x96\x81" "a", "ab", "c"}));
         },
         "the vocabulary has 9 tokens but token_embd.weight has 8 rows",
         "a vocabulary one larger than the embedding");
  c.edit("vocab_empty", false, [](image& m) { m.set("tokenizer.ggml.tokens", strings({})); },
         "the vocabulary has 0 tokens", "an empty vocabulary");
  c.edit("vocab_missing", false, [](image& m) { m.erase("tokenizer.ggml.tokens"); },
         "'tokenizer.ggml.tokens' is missing", "no vocabulary");
  c.edit("vocab_floats", false,
         [](image& m) { m.set("tokenizer.ggml.tokens", floats({0, 1, 2, 3, 4, 5, 6, 7})); },
         "'tokenizer.ggml.tokens' should hold strings, found f32", "tokens that are numbers");
  c.edit("bos_out_of_range", false,
         [](image& m) { m.set("tokenizer.ggml.bos_token_id", u32(1000)); },
         "'tokenizer.ggml.bos_token_id' = 1000 is outside the vocabulary", "BOS id 1000 of 8");
  c.edit("eos_negative", false, [](image& m) { m.set("tokenizer.ggml.eos_token_id", i32(-5)); },
         "'tokenizer.ggml.eos_token_id' = -5 is outside the vocabulary", "EOS id -5");
  c.edit("eos_equal_to_size", false, [](image& m) { m.set("tokenizer.ggml.eos_token_id", u32(8)); },
         "'tokenizer.ggml.eos_token_id' = 8 is outside the vocabulary", "EOS id = vocab size");
  c.edit("bos_2^63", false, [](image& m) { m.set("tokenizer.ggml.bos_token_id", u64(1ull << 63)); },
         "'tokenizer.ggml.bos_token_id' = 9223372036854775808", "BOS id 2^63 (negative if signed)");
  c.edit("bos_string", false, [](image& m) { m.set("tokenizer.ggml.bos_token_id", str("<s>")); },
         "'tokenizer.ggml.bos_token_id' should be an integer token id", "BOS as a string");
  c.edit("tokenizer_model_missing", false, [](image& m) { m.erase("tokenizer.ggml.model"); },
         "'tokenizer.ggml.model' is missing", "no tokenizer model");
  c.edit("tokenizer_model_unknown", false,
         [](image& m) { m.set("tokenizer.ggml.model", str("bert")); },
         "tokenizer.ggml.model 'bert' is not supported", "a WordPiece vocabulary");
  c.edit("scores_short", false,
         [](image& m) { m.set("tokenizer.ggml.scores", floats({0, 0, 0})); },
         "'tokenizer.ggml.scores' has 3 entries but tokenizer.ggml.tokens has 8",
         "fewer scores than tokens");
  c.edit("scores_strings", false,
         [](image& m) { m.set("tokenizer.ggml.scores", strings({"", "", "", "", "", "", "", ""})); },
         "'tokenizer.ggml.scores' should hold f32", "scores that are strings");
  c.edit("token_type_strings", false,
         [](image& m) { m.set("tokenizer.ggml.token_type", strings({"", "", "", "", "", "", "", ""})); },
         "'tokenizer.ggml.token_type' should hold i32", "token types that are strings");
  c.edit("token_duplicate", false,
         [](image& m) {
           m.set("tokenizer.ggml.tokens", strings({"<unk>", "<s>", "</s>", "\xe2\x96\x81", "a",
                                                   "a", "\xe2\x96\x81" "a", "ab"}));
         },
         "tokenizer.ggml.tokens has 'a' twice", "one token text twice");
  c.edit("byte_token_malformed", false,
         [](image& m) { m.set("tokenizer.ggml.token_type", ints({2, 3, 3, 1, 6, 1, 1, 1})); },
         "is marked a byte token", "a byte-typed token that is not <0xNN>");
  c.edit("bpe_merges_missing", true, [](image& m) { m.erase("tokenizer.ggml.merges"); },
         "'tokenizer.ggml.merges' is missing", "a BPE vocabulary without merges");
  c.edit("bpe_merges_numbers", true,
         [](image& m) { m.set("tokenizer.ggml.merges", ints({1, 2})); },
         "'tokenizer.ggml.merges' is not an array of strings", "merges that are numbers");
  c.edit("bpe_merge_unknown_part", true,
         [](image& m) { m.set("tokenizer.ggml.merges", strings({"a b", "a z"})); },
         "merge 1 ('a z') names 'z', which is not in the vocabulary",
         "a merge of a token that does not exist");
  c.edit("bpe_merge_unknown_result", true,
         [](image& m) { m.set("tokenizer.ggml.merges", strings({"b a"})); },
         "merge 0 ('b a') makes 'ba', which is not in the vocabulary",
         "a merge whose result does not exist");
  c.edit("bpe_merge_without_space", true,
         [](image& m) { m.set("tokenizer.ggml.merges", strings({"ab"})); },
         "merge 0 ('ab') is not two tokens separated by a space", "a merge without a space");
  c.edit("bpe_pre_unknown", true, [](image& m) { m.set("tokenizer.ggml.pre", str("klingon")); },
         "tokenizer.ggml.pre 'klingon' is not a pre-tokenizer Tandem knows",
         "an unknown pre-tokenizer");
}

// Chat templates that never end on their own; the engine's limits must stop them.
void template_cases(corpus& c) {
  auto add = [&](const std::string& name, const std::string& source, const std::string& expect,
                 const std::string& what) {
    image m = base_model(false);
    m.set("tokenizer.chat_template", str(source));
    c.add(name, m.build(), expect, what);
    c.cases.back().at_render = true;
  };
  add("template_loop_forever", "{% for i in range(1000000000) %}{{ i }}{% endfor %}",
      "chat template", "a loop of a billion steps that prints");
  add("template_nested_loops", "{% for a in range(100000) %}{% for b in range(100000) %}"
      "{% endfor %}{% endfor %}", "chat template", "ten billion silent steps");
  add("template_recursion", "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
      "chat template", "a macro that calls itself without end");
  add("template_string_bomb", "{% set s = namespace(v='ab') %}{% for i in range(64) %}"
      "{% set s.v = s.v + s.v %}{% endfor %}{{ s.v }}", "chat template",
      "a string doubled 64 times");
  add("template_syntax_error", "{% for m in messages %}{{ m.content }", "chat template",
      "an unclosed expression");
}

// The base model cut at every structural boundary of its header, and in and at each tensor's data.
void truncation_cases(corpus& c) {
  std::vector<size_t> cuts;
  const bytes full = base_model(false).build(&cuts);
  std::set<size_t> uniq(cuts.begin(), cuts.end());
  uniq.insert(0);
  uniq.insert(1);  // inside the magic
  uniq.insert(6);  // inside the version
  for (size_t cut : uniq) {
    if (cut >= full.size()) continue;
    c.add("truncated_at_" + std::to_string(cut), bytes(full.begin(), full.begin() + static_cast<long>(cut)),
          "truncated|past the end|empty", "the file cut at byte " + std::to_string(cut));
  }
}

}  // namespace

std::vector<std::string> write_hostile_bases(const std::string& dir) {
  std::vector<std::string> paths;
  for (bool bpe : {false, true}) {
    paths.push_back(dir + (bpe ? "/base_bpe.gguf" : "/base_spm.gguf"));
    write(paths.back(), base_model(bpe).build());
  }
  return paths;
}

std::vector<hostile_case> write_hostile_ggufs(const std::string& dir) {
  corpus c{dir, {}};
  header_cases(c);
  metadata_cases(c);
  tensor_info_cases(c);
  model_cases(c);
  vocab_cases(c);
  template_cases(c);
  truncation_cases(c);
  return c.cases;
}

}  // namespace tandem::test
