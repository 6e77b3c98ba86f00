// GGUF reader (v2, v3) over a read-only mmap, and a writer for the tools and tests.
// The file is untrusted: every count, length, dimension product and offset is checked against
// the file size before use, and a bad file raises tandem::error naming the file, the problem and
// where it is.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "runtime/dtype.h"
#include "runtime/error.h"

namespace tandem {

enum class gguf_type : uint32_t {
  u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7,
  string = 8, array = 9, u64 = 10, i64 = 11, f64 = 12,
};
const char* gguf_type_name(gguf_type t);

// A metadata value. Scalars keep their exact value in the widest field of their kind; arrays keep
// their elements (numbers widened, strings as strings).
struct gguf_value {
  gguf_type type = gguf_type::u8;
  gguf_type elem_type = gguf_type::u8;  // arrays only
  uint64_t u = 0;                       // unsigned ints and bool
  int64_t i = 0;                        // signed ints
  double f = 0;                         // floats
  std::string str;
  std::vector<gguf_value> arr;

  bool is_int() const;
  bool is_float() const { return type == gguf_type::f32 || type == gguf_type::f64; }
  // Numeric value of an integer, float or bool (throws tandem::error on other types).
  int64_t as_int() const;
  double as_float() const;
  std::string to_string(size_t max_items = 8) const;
};

struct gguf_tensor {
  std::string name;
  dtype type = dtype::f32;
  uint32_t n_dims = 0;
  int64_t ne[4] = {1, 1, 1, 1};  // ne[0] is the contiguous (row) dimension
  uint64_t offset = 0;           // from the start of the data section
  uint64_t nbytes = 0;
  const uint8_t* data = nullptr;  // into the mapping
  int64_t n_elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  std::string shape_string() const;
};

class gguf_file {
 public:
  // Maps and validates the file. Throws tandem::error on any problem.
  static std::unique_ptr<gguf_file> open(const std::string& path);
  ~gguf_file();
  gguf_file(const gguf_file&) = delete;
  gguf_file& operator=(const gguf_file&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t file_size() const { return size_; }
  uint64_t data_offset() const { return data_offset_; }
  const uint8_t* base() const { return base_; }

  const std::vector<std::pair<std::string, gguf_value>>& metadata() const { return kv_; }
  const gguf_value* find(const std::string& key) const;
  // Typed getters; the required forms throw naming the key when it is absent or mistyped.
  int64_t get_int(const std::string& key) const;
  int64_t get_int(const std::string& key, int64_t def) const;
  double get_float(const std::string& key, double def) const;
  std::string get_string(const std::string& key, const std::string& def) const;

  const std::vector<gguf_tensor>& tensors() const { return tensors_; }
  const gguf_tensor* tensor(const std::string& name) const;

 private:
  gguf_file() = default;
  std::string path_;
  int fd_ = -1;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, gguf_value>> kv_;
  std::map<std::string, size_t> kv_index_;
  std::vector<gguf_tensor> tensors_;
  std::map<std::string, size_t> tensor_index_;
  friend class gguf_parser;
};

// Writes GGUF v3. Values and tensor data are kept in memory until write().
class gguf_writer {
 public:
  void set_u32(const std::string& key, uint32_t v);
  void set_i32(const std::string& key, int32_t v);
  void set_f32(const std::string& key, float v);
  void set_bool(const std::string& key, bool v);
  void set_string(const std::string& key, const std::string& v);
  void set_value(const std::string& key, const gguf_value& v);  // any value, e.g. copied
  void set_array_string(const std::string& key, const std::vector<std::string>& v);
  void set_array_f32(const std::string& key, const std::vector<float>& v);
  void set_array_i32(const std::string& key, const std::vector<int32_t>& v);
  // ne[0] is the row length; data must hold the tensor's bytes for its type.
  void add_tensor(const std::string& name, dtype type, std::vector<int64_t> ne,
                  std::vector<uint8_t> data);
  // A tensor whose bytes are produced at write() time, one tensor at a time, so that files larger
  // than memory can be written. The producer must return exactly the tensor's byte size.
  void add_tensor(const std::string& name, dtype type, std::vector<int64_t> ne,
                  std::function<std::vector<uint8_t>()> producer);
  void write(const std::string& path, uint32_t alignment = 32) const;

 private:
  struct kv {
    std::string key;
    gguf_value value;
  };
  struct tensor {
    std::string name;
    dtype type;
    std::vector<int64_t> ne;
    std::vector<uint8_t> data;
    std::function<std::vector<uint8_t>()> producer;
    uint64_t nbytes = 0;
  };
  void set(const std::string& key, gguf_value v);
  std::vector<kv> kvs_;
  std::vector<tensor> tensors_;
};

}  // namespace tandem
