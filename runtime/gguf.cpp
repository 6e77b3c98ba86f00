#include "runtime/gguf.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string_view>

namespace tandem {

namespace {
constexpr uint32_t k_magic = 0x46554747;  // "GGUF" little-endian
constexpr uint64_t k_max_string = 1ull << 30;
constexpr int k_max_depth = 2;  // arrays of arrays are legal but nothing deeper is sane

// Strict UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF), as GGUF strings must be.
// Returns the offset of the first bad byte, or npos.
size_t utf8_error(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<uint8_t>(s[i]);
    if (c < 0x80) { ++i; continue; }
    size_t n = 0;
    uint32_t cp = 0, min = 0;
    if ((c & 0xE0) == 0xC0) n = 1, cp = c & 0x1F, min = 0x80;
    else if ((c & 0xF0) == 0xE0) n = 2, cp = c & 0x0F, min = 0x800;
    else if ((c & 0xF8) == 0xF0) n = 3, cp = c & 0x07, min = 0x10000;
    else return i;
    if (n > s.size() - i - 1) return i;
    for (size_t k = 1; k <= n; ++k) {
      const auto cc = static_cast<uint8_t>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return i;
      cp = cp << 6 | (cc & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += n + 1;
  }
  return std::string_view::npos;
}
}  // namespace

const char* gguf_type_name(gguf_type t) {
  switch (t) {
    case gguf_type::u8: return "u8";
    case gguf_type::i8: return "i8";
    case gguf_type::u16: return "u16";
    case gguf_type::i16: return "i16";
    case gguf_type::u32: return "u32";
    case gguf_type::i32: return "i32";
    case gguf_type::f32: return "f32";
    case gguf_type::boolean: return "bool";
    case gguf_type::string: return "string";
    case gguf_type::array: return "array";
    case gguf_type::u64: return "u64";
    case gguf_type::i64: return "i64";
    case gguf_type::f64: return "f64";
  }
  return "?";
}

bool gguf_value::is_int() const {
  switch (type) {
    case gguf_type::u8: case gguf_type::i8: case gguf_type::u16: case gguf_type::i16:
    case gguf_type::u32: case gguf_type::i32: case gguf_type::u64: case gguf_type::i64:
    case gguf_type::boolean:
      return true;
    default:
      return false;
  }
}

static bool is_signed(gguf_type t) {
  return t == gguf_type::i8 || t == gguf_type::i16 || t == gguf_type::i32 || t == gguf_type::i64;
}

int64_t gguf_value::as_int() const {
  if (is_signed(type)) return i;
  if (is_int()) return static_cast<int64_t>(u);
  if (is_float()) return static_cast<int64_t>(f);
  throw error(fmt::format("expected a number, found a {}", gguf_type_name(type)));
}

double gguf_value::as_float() const {
  if (is_float()) return f;
  if (is_int()) return static_cast<double>(as_int());
  throw error(fmt::format("expected a number, found a {}", gguf_type_name(type)));
}

std::string gguf_value::to_string(size_t max_items) const {
  switch (type) {
    case gguf_type::string: return str;
    case gguf_type::boolean: return u ? "true" : "false";
    case gguf_type::f32: case gguf_type::f64: return fmt::format("{:g}", f);
    case gguf_type::array: {
      std::string s = fmt::format("[{} x {}] [", arr.size(), gguf_type_name(elem_type));
      for (size_t k = 0; k < arr.size() && k < max_items; ++k) {
        if (k) s += ", ";
        s += arr[k].type == gguf_type::string ? "'" + arr[k].str + "'" : arr[k].to_string(max_items);
      }
      if (arr.size() > max_items) s += ", ...";
      return s + "]";
    }
    default:
      return is_signed(type) ? std::to_string(i) : std::to_string(u);
  }
}

std::string gguf_tensor::shape_string() const {
  std::string s = "[";
  for (uint32_t d = 0; d < n_dims; ++d) s += (d ? ", " : "") + std::to_string(ne[d]);
  return s + "]";
}

// ---------------------------------------------------------------------------------------------
// Parser: a cursor over the mapping that checks every read against the end of the file.

class gguf_parser {
 public:
  gguf_parser(gguf_file& f) : f_(f), p_(0) {}

  void parse() {
    if (f_.size_ < 4) fail("file is empty or shorter than the GGUF header", 0);
    uint32_t magic = read<uint32_t>("magic");
    if (magic != k_magic)
      fail(fmt::format("not a GGUF file (magic {:08x}, expected 46554747 \"GGUF\")", magic), 0);
    f_.version_ = read<uint32_t>("version");
    if (f_.version_ != 2 && f_.version_ != 3)
      fail(fmt::format("unsupported GGUF version {} (Tandem reads versions 2 and 3; re-convert the "
                       "model with a current llama.cpp)",
                       f_.version_),
           4);
    uint64_t n_tensors = read<uint64_t>("tensor count");
    uint64_t n_kv = read<uint64_t>("metadata count");
    // Every tensor info takes at least 8+4+8+4+8 bytes and every key-value at least 8+4+1.
    if (n_tensors > (f_.size_ - p_) / 32)
      fail(fmt::format("tensor count {} cannot fit in a file of {} bytes; the file is truncated or corrupt", n_tensors, f_.size_), 8);
    if (n_kv > (f_.size_ - p_) / 13)
      fail(fmt::format("metadata count {} cannot fit in a file of {} bytes; the file is truncated or corrupt", n_kv, f_.size_), 16);

    for (uint64_t k = 0; k < n_kv; ++k) {
      uint64_t at = p_;
      std::string key = read_string("metadata key");
      if (key.empty()) fail("metadata key is empty", at);
      if (size_t bad = utf8_error(key); bad != std::string::npos)
        fail(fmt::format("metadata key is not valid UTF-8 (byte {} of the key)", bad), at);
      auto type = read<uint32_t>("metadata type");
      key_ = key;
      gguf_value v = read_value(type, 0);
      key_.clear();
      if (f_.kv_index_.count(key)) fail(fmt::format("duplicate metadata key '{}'", key), at);
      f_.kv_index_[key] = f_.kv_.size();
      f_.kv_.emplace_back(std::move(key), std::move(v));
    }

    if (const gguf_value* a = f_.find("general.alignment")) {
      if (!a->is_int())
        fail(fmt::format("general.alignment should be an integer, found a {}",
                         gguf_type_name(a->type)),
             0);
      const int64_t al = a->type == gguf_type::u64 && a->u > (1u << 20) ? 0 : a->as_int();
      if (al <= 0 || al > (1 << 20) || (al & (al - 1)) != 0)
        fail(fmt::format("general.alignment {} is not a power of two from 1 to 2^20",
                         a->to_string()),
             0);
      f_.alignment_ = static_cast<uint64_t>(al);
    }

    for (uint64_t k = 0; k < n_tensors; ++k) {
      uint64_t at = p_;
      gguf_tensor t;
      t.name = read_string("tensor name");
      if (t.name.empty()) fail("tensor name is empty", at);
      if (size_t bad = utf8_error(t.name); bad != std::string::npos)
        fail(fmt::format("tensor name is not valid UTF-8 (byte {} of the name)", bad), at);
      t.n_dims = read<uint32_t>("tensor dimension count");
      if (t.n_dims == 0 || t.n_dims > 4)
        fail(fmt::format("tensor '{}' has {} dimensions (1 to 4 allowed)", t.name, t.n_dims), at);
      uint64_t n = 1;
      for (uint32_t d = 0; d < t.n_dims; ++d) {
        uint64_t ne = read<uint64_t>("tensor dimension");
        if (ne == 0 || ne > (1ull << 40) || n > (1ull << 50) / ne)
          fail(fmt::format("tensor '{}' has an absurd dimension {} = {}", t.name, d, ne), at);
        t.ne[d] = static_cast<int64_t>(ne);
        n *= ne;
      }
      uint32_t type_id = read<uint32_t>("tensor type");
      auto info = dtype_info(type_id);
      if (!info)
        fail(fmt::format("tensor '{}' has unknown type id {} (not a ggml type this build knows)",
                         t.name, type_id),
             at);
      t.type = static_cast<dtype>(type_id);
      if (t.ne[0] % info->block_size != 0)
        fail(fmt::format("tensor '{}' of type {} has a row of {} elements, not a multiple of the "
                         "block size {}",
                         t.name, info->name, t.ne[0], info->block_size),
             at);
      t.nbytes = n / info->block_size * info->type_size;
      t.offset = read<uint64_t>("tensor offset");
      if (t.offset % f_.alignment_ != 0)
        fail(fmt::format("tensor '{}' offset {} is not aligned to {}", t.name, t.offset,
                         f_.alignment_),
             at);
      if (f_.tensor_index_.count(t.name)) fail(fmt::format("duplicate tensor '{}'", t.name), at);
      f_.tensor_index_[t.name] = f_.tensors_.size();
      f_.tensors_.push_back(std::move(t));
    }

    uint64_t data = (p_ + f_.alignment_ - 1) / f_.alignment_ * f_.alignment_;
    f_.data_offset_ = data;
    for (auto& t : f_.tensors_) {
      uint64_t begin = data + t.offset;
      uint64_t end = begin + t.nbytes;
      if (t.offset > UINT64_MAX - data - t.nbytes)  // data + offset + nbytes wraps 64 bits
        throw error(fmt::format("{}: tensor '{}' data offset {} is past the end of the file ({}); "
                                "the file is truncated or corrupt, download or convert it again",
                                f_.path_, t.name, t.offset, f_.size_));
      if (begin > f_.size_ || end > f_.size_ || end < begin)
        throw error(fmt::format("{}: tensor '{}' data ends at byte {}, past the end of the file "
                                "({}); the file is truncated or corrupt, download or convert it "
                                "again",
                                f_.path_, t.name, end, f_.size_));
      t.data = f_.base_ + begin;
    }
    check_overlaps();
  }

 private:
  // Tensor data may not overlap: a file that aliases two weights is corrupt or crafted.
  void check_overlaps() {
    std::vector<const gguf_tensor*> by_offset;
    for (const auto& t : f_.tensors_) by_offset.push_back(&t);
    std::sort(by_offset.begin(), by_offset.end(),
              [](const gguf_tensor* a, const gguf_tensor* b) { return a->offset < b->offset; });
    for (size_t k = 1; k < by_offset.size(); ++k) {
      const gguf_tensor& a = *by_offset[k - 1];
      const gguf_tensor& b = *by_offset[k];
      if (a.offset + a.nbytes > b.offset)
        throw error(fmt::format("{}: tensor '{}' data (bytes {}..{} of the data section) overlaps "
                                "tensor '{}' (bytes {}..{}); the file is corrupt, download or "
                                "convert it again",
                                f_.path_, b.name, b.offset, b.offset + b.nbytes, a.name, a.offset,
                                a.offset + a.nbytes));
    }
  }

  [[noreturn]] void fail(const std::string& what, uint64_t at) {
    throw error(fmt::format("{}: {} (at byte {})", f_.path_, what, at));
  }

  void need(uint64_t n, const char* what) {
    if (n > f_.size_ - p_) {
      std::string ctx = key_.empty() ? "" : fmt::format(" of metadata '{}'", key_);
      throw error(fmt::format("{}: file ends while reading the {}{} at byte {} (needs {} bytes, "
                              "{} left); the file is truncated",
                              f_.path_, what, ctx, p_, n, f_.size_ - p_));
    }
  }

  template <typename T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, f_.base_ + p_, sizeof(T));
    p_ += sizeof(T);
    return v;
  }

  std::string read_string(const char* what) {
    uint64_t at = p_;
    uint64_t len = read<uint64_t>(what);
    if (len > k_max_string || len > f_.size_ - p_)
      fail(fmt::format("{} length {} runs past the end of the file ({} bytes)", what, len,
                       f_.size_),
           at);
    std::string s(reinterpret_cast<const char*>(f_.base_ + p_), len);
    p_ += len;
    return s;
  }

  static uint64_t min_size(gguf_type t) {
    switch (t) {
      case gguf_type::u8: case gguf_type::i8: case gguf_type::boolean: return 1;
      case gguf_type::u16: case gguf_type::i16: return 2;
      case gguf_type::u32: case gguf_type::i32: case gguf_type::f32: return 4;
      case gguf_type::u64: case gguf_type::i64: case gguf_type::f64: case gguf_type::string:
        return 8;
      case gguf_type::array: return 12;
    }
    return 1;
  }

  gguf_value read_value(uint32_t type_id, int depth) {
    uint64_t at = p_;
    if (type_id > 12)
      fail(fmt::format("metadata '{}' has unknown value type {}", key_, type_id), at);
    gguf_value v;
    v.type = static_cast<gguf_type>(type_id);
    switch (v.type) {
      case gguf_type::u8: v.u = read<uint8_t>("value"); break;
      case gguf_type::i8: v.i = read<int8_t>("value"); break;
      case gguf_type::u16: v.u = read<uint16_t>("value"); break;
      case gguf_type::i16: v.i = read<int16_t>("value"); break;
      case gguf_type::u32: v.u = read<uint32_t>("value"); break;
      case gguf_type::i32: v.i = read<int32_t>("value"); break;
      case gguf_type::u64: v.u = read<uint64_t>("value"); break;
      case gguf_type::i64: v.i = read<int64_t>("value"); break;
      case gguf_type::f32: v.f = read<float>("value"); break;
      case gguf_type::f64: v.f = read<double>("value"); break;
      case gguf_type::boolean: v.u = read<uint8_t>("value") != 0; break;
      case gguf_type::string:
        v.str = read_string("string value");
        if (size_t bad = utf8_error(v.str); bad != std::string::npos)
          fail(fmt::format("metadata '{}' is not valid UTF-8 (byte {} of a string)", key_, bad), at);
        break;
      case gguf_type::array: {
        if (depth >= k_max_depth) fail(fmt::format("metadata '{}' nests arrays too deeply", key_), at);
        uint32_t et = read<uint32_t>("array element type");
        if (et > 12) fail(fmt::format("metadata '{}' has unknown array element type {}", key_, et), at);
        v.elem_type = static_cast<gguf_type>(et);
        uint64_t count = read<uint64_t>("array length");
        if (count > (f_.size_ - p_) / min_size(v.elem_type))
          fail(fmt::format("metadata '{}' array length {} runs past the end of the file ({} bytes)",
                           key_, count, f_.size_),
               at);
        v.arr.reserve(count);
        for (uint64_t k = 0; k < count; ++k) v.arr.push_back(read_value(et, depth + 1));
        break;
      }
    }
    return v;
  }

  gguf_file& f_;
  uint64_t p_;
  std::string key_;
};

// ---------------------------------------------------------------------------------------------

std::unique_ptr<gguf_file> gguf_file::open(const std::string& path) {
  std::unique_ptr<gguf_file> f(new gguf_file());
  f->path_ = path;
  f->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f->fd_ < 0)
    throw error(fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
  struct stat st {};
  if (fstat(f->fd_, &st) != 0 || !S_ISREG(st.st_mode))
    throw error(fmt::format("{}: not a regular file", path));
  f->size_ = static_cast<uint64_t>(st.st_size);
  if (f->size_ == 0) throw error(fmt::format("{}: file is empty (0 bytes)", path));
  void* p = mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, f->fd_, 0);
  if (p == MAP_FAILED) throw error(fmt::format("{}: mmap failed: {}", path, std::strerror(errno)));
  f->base_ = static_cast<const uint8_t*>(p);
  gguf_parser(*f).parse();
  return f;
}

gguf_file::~gguf_file() {
  if (base_) munmap(const_cast<uint8_t*>(base_), size_);
  if (fd_ >= 0) ::close(fd_);
}

const gguf_value* gguf_file::find(const std::string& key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

int64_t gguf_file::get_int(const std::string& key) const {
  const gguf_value* v = find(key);
  if (!v) throw error(fmt::format("{}: required metadata '{}' is missing", path_, key));
  if (!v->is_int())
    throw error(fmt::format("{}: metadata '{}' should be an integer, found a {}", path_, key,
                            gguf_type_name(v->type)));
  if (v->type == gguf_type::u64 && v->u > static_cast<uint64_t>(INT64_MAX))
    throw error(fmt::format("{}: metadata '{}' = {} is out of range (more than 2^63-1)", path_,
                            key, v->u));
  return v->as_int();
}

int64_t gguf_file::get_int(const std::string& key, int64_t def) const {
  return find(key) ? get_int(key) : def;
}

double gguf_file::get_float(const std::string& key, double def) const {
  const gguf_value* v = find(key);
  if (!v) return def;
  if (!v->is_float() && !v->is_int())
    throw error(fmt::format("{}: metadata '{}' should be a number, found a {}", path_, key,
                            gguf_type_name(v->type)));
  return v->as_float();
}

std::string gguf_file::get_string(const std::string& key, const std::string& def) const {
  const gguf_value* v = find(key);
  if (!v) return def;
  if (v->type != gguf_type::string)
    throw error(fmt::format("{}: metadata '{}' should be a string, found a {}", path_, key,
                            gguf_type_name(v->type)));
  return v->str;
}

const gguf_tensor* gguf_file::tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

// ---------------------------------------------------------------------------------------------
// Writer

void gguf_writer::set(const std::string& key, gguf_value v) {
  for (auto& e : kvs_)
    if (e.key == key) {
      e.value = std::move(v);
      return;
    }
  kvs_.push_back({key, std::move(v)});
}

void gguf_writer::set_u32(const std::string& key, uint32_t v) {
  gguf_value x; x.type = gguf_type::u32; x.u = v; set(key, x);
}
void gguf_writer::set_i32(const std::string& key, int32_t v) {
  gguf_value x; x.type = gguf_type::i32; x.i = v; set(key, x);
}
void gguf_writer::set_f32(const std::string& key, float v) {
  gguf_value x; x.type = gguf_type::f32; x.f = v; set(key, x);
}
void gguf_writer::set_bool(const std::string& key, bool v) {
  gguf_value x; x.type = gguf_type::boolean; x.u = v; set(key, x);
}
void gguf_writer::set_string(const std::string& key, const std::string& v) {
  gguf_value x; x.type = gguf_type::string; x.str = v; set(key, x);
}
void gguf_writer::set_value(const std::string& key, const gguf_value& v) { set(key, v); }

void gguf_writer::set_array_string(const std::string& key, const std::vector<std::string>& v) {
  gguf_value x; x.type = gguf_type::array; x.elem_type = gguf_type::string;
  for (auto& s : v) { gguf_value e; e.type = gguf_type::string; e.str = s; x.arr.push_back(e); }
  set(key, std::move(x));
}
void gguf_writer::set_array_f32(const std::string& key, const std::vector<float>& v) {
  gguf_value x; x.type = gguf_type::array; x.elem_type = gguf_type::f32;
  for (float f : v) { gguf_value e; e.type = gguf_type::f32; e.f = f; x.arr.push_back(e); }
  set(key, std::move(x));
}
void gguf_writer::set_array_i32(const std::string& key, const std::vector<int32_t>& v) {
  gguf_value x; x.type = gguf_type::array; x.elem_type = gguf_type::i32;
  for (int32_t i : v) { gguf_value e; e.type = gguf_type::i32; e.i = i; x.arr.push_back(e); }
  set(key, std::move(x));
}

void gguf_writer::add_tensor(const std::string& name, dtype type, std::vector<int64_t> ne,
                             std::vector<uint8_t> data) {
  uint64_t n = 1;
  for (auto d : ne) n *= static_cast<uint64_t>(d);
  const auto& tr = traits(type);
  if (ne.empty() || ne[0] % tr.block_size != 0 || data.size() != n / tr.block_size * tr.type_size)
    throw error(fmt::format("gguf_writer: tensor '{}' has {} bytes, its {} shape needs {}", name,
                            data.size(), tr.name, n / tr.block_size * tr.type_size));
  const uint64_t nb = data.size();
  tensors_.push_back({name, type, std::move(ne), std::move(data), nullptr, nb});
}

void gguf_writer::add_tensor(const std::string& name, dtype type, std::vector<int64_t> ne,
                             std::function<std::vector<uint8_t>()> producer) {
  uint64_t n = 1;
  for (auto d : ne) n *= static_cast<uint64_t>(d);
  const auto& tr = traits(type);
  if (ne.empty() || ne[0] % tr.block_size != 0)
    throw error(fmt::format("gguf_writer: tensor '{}' row of {} does not fit {} blocks of {}", name,
                            ne.empty() ? 0 : ne[0], tr.name, tr.block_size));
  tensors_.push_back({name, type, std::move(ne), {}, std::move(producer),
                      n / tr.block_size * tr.type_size});
}

namespace {

// A file written under path + ".tmp.PID" and renamed to path by commit(); removed if destroyed
// before (an exception on the way). No fsync: this guards against failures of the process and of
// the disk's space, not against a power cut.
class temp_file {
 public:
  explicit temp_file(std::string path)
      : path_(std::move(path)), tmp_(path_ + ".tmp." + std::to_string(::getpid())) {
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd_ < 0)
      throw error(fmt::format("{}: cannot create {}: {}", path_, tmp_, std::strerror(errno)));
  }
  ~temp_file() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_.c_str());
  }
  temp_file(const temp_file&) = delete;
  temp_file& operator=(const temp_file&) = delete;

  void write(const uint8_t* p, size_t n) {
    while (n > 0) {
      const ssize_t w = ::write(fd_, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) fail("write failed");
      p += w;
      n -= static_cast<size_t>(w);
    }
  }
  void commit() {
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) fail("write failed (close)");
    if (::rename(tmp_.c_str(), path_.c_str()) != 0)
      fail(fmt::format("cannot rename {} to it", tmp_));
    committed_ = true;
  }

 private:
  [[noreturn]] void fail(const std::string& what) {
    const int e = errno;
    throw error(fmt::format("{}: {}: {}{}; nothing was written under this name", path_, what,
                            std::strerror(e),
                            e == ENOSPC || e == EFBIG || e == EDQUOT ? " (disk full?)" : ""));
  }
  std::string path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

struct byte_sink {
  std::vector<uint8_t> b;
  template <typename T>
  void put(T v) {
    const size_t at = b.size();
    b.resize(at + sizeof(T));
    std::memcpy(b.data() + at, &v, sizeof(T));
  }
  void str(const std::string& s) {
    put<uint64_t>(s.size());
    const size_t at = b.size();
    b.resize(at + s.size());
    if (!s.empty()) std::memcpy(b.data() + at, s.data(), s.size());
  }
  void value(const gguf_value& v) {
    switch (v.type) {
      case gguf_type::u8: put<uint8_t>(v.u); break;
      case gguf_type::i8: put<int8_t>(v.i); break;
      case gguf_type::u16: put<uint16_t>(v.u); break;
      case gguf_type::i16: put<int16_t>(v.i); break;
      case gguf_type::u32: put<uint32_t>(v.u); break;
      case gguf_type::i32: put<int32_t>(v.i); break;
      case gguf_type::u64: put<uint64_t>(v.u); break;
      case gguf_type::i64: put<int64_t>(v.i); break;
      case gguf_type::f32: put<float>(static_cast<float>(v.f)); break;
      case gguf_type::f64: put<double>(v.f); break;
      case gguf_type::boolean: put<uint8_t>(v.u ? 1 : 0); break;
      case gguf_type::string: str(v.str); break;
      case gguf_type::array:
        put<uint32_t>(static_cast<uint32_t>(v.elem_type));
        put<uint64_t>(v.arr.size());
        for (auto& e : v.arr) value(e);
        break;
    }
  }
};
}  // namespace

void gguf_writer::write(const std::string& path, uint32_t alignment) const {
  byte_sink s;
  s.put<uint32_t>(k_magic);
  s.put<uint32_t>(3);
  s.put<uint64_t>(tensors_.size());
  bool has_align = false;
  for (auto& e : kvs_) has_align |= e.key == "general.alignment";
  s.put<uint64_t>(kvs_.size() + (alignment != 32 && !has_align ? 1 : 0));
  for (auto& e : kvs_) {
    s.str(e.key);
    s.put<uint32_t>(static_cast<uint32_t>(e.value.type));
    s.value(e.value);
  }
  if (alignment != 32 && !has_align) {
    s.str("general.alignment");
    s.put<uint32_t>(static_cast<uint32_t>(gguf_type::u32));
    s.put<uint32_t>(alignment);
  }
  uint64_t off = 0;
  auto pad = [&](uint64_t x) { return (x + alignment - 1) / alignment * alignment; };
  for (auto& t : tensors_) {
    s.str(t.name);
    s.put<uint32_t>(static_cast<uint32_t>(t.ne.size()));
    for (auto d : t.ne) s.put<uint64_t>(static_cast<uint64_t>(d));
    s.put<uint32_t>(static_cast<uint32_t>(t.type));
    s.put<uint64_t>(off);
    off = pad(off + t.nbytes);
  }
  s.b.resize(pad(s.b.size()), 0);
  // Written under a temporary name beside path and renamed over it only when complete, so that a
  // full disk, a read-only directory or an interruption never leaves a half-written model under
  // the final name (nor destroys the file that was there).
  temp_file out(path);
  out.write(s.b.data(), s.b.size());
  static const std::vector<uint8_t> zeros(4096, 0);
  for (auto& t : tensors_) {
    std::vector<uint8_t> produced;
    if (t.producer) {
      produced = t.producer();
      if (produced.size() != t.nbytes)
        throw error(fmt::format("gguf_writer: tensor '{}' produced {} bytes, expected {}", t.name,
                                produced.size(), t.nbytes));
    }
    const std::vector<uint8_t>& d = t.producer ? produced : t.data;
    out.write(d.data(), d.size());
    out.write(zeros.data(), pad(d.size()) - d.size());
  }
  out.commit();
}

}  // namespace tandem
