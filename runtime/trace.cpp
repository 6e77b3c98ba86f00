#include "runtime/trace.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <limits>

#include "runtime/error.h"

namespace tandem {

double trace_recorder::now_us() {
  return std::chrono::duration<double, std::micro>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void trace_recorder::add(trace_span s) {
  std::lock_guard<std::mutex> lock(mu_);
  spans_.push_back(std::move(s));
}

std::vector<trace_span> trace_recorder::spans() const {
  std::lock_guard<std::mutex> lock(mu_);
  return spans_;
}

void trace_recorder::clear() {
  std::lock_guard<std::mutex> lock(mu_);
  spans_.clear();
  kernels_.clear();
}

void trace_recorder::add_kernel(const std::string& name, double us, uint64_t bytes,
                                uint64_t flops) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = std::find_if(kernels_.begin(), kernels_.end(),
                         [&](const kernel_stat& k) { return k.name == name; });
  if (it == kernels_.end()) it = kernels_.insert(kernels_.end(), kernel_stat{name});
  ++it->calls;
  it->us += us;
  it->bytes += bytes;
  it->flops += flops;
}

std::vector<kernel_stat> trace_recorder::kernels() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<kernel_stat> k = kernels_;
  std::stable_sort(k.begin(), k.end(),
                   [](const kernel_stat& a, const kernel_stat& b) { return a.us > b.us; });
  return k;
}

static std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if (static_cast<unsigned char>(c) < 0x20) {
      o += fmt::format("\\u{:04x}", static_cast<int>(c));
      continue;
    }
    o += c;
  }
  return o;
}

static const char* track_name(trace_track t) {
  switch (t) {
    case trace_track::upload: return "upload (host -> device)";
    case trace_track::gpu_compute: return "GPU compute";
    case trace_track::cpu_compute: return "CPU compute";
    case trace_track::host: return "host";
  }
  return "?";
}

void trace_recorder::write(const std::string& path) const {
  std::vector<trace_span> s = spans();
  std::sort(s.begin(), s.end(), [](const trace_span& a, const trace_span& b) { return a.ts_us < b.ts_us; });
  const double t0 = s.empty() ? 0.0 : s.front().ts_us;
  std::string out = "{\"displayTimeUnit\": \"ms\", \"traceEvents\": [\n";
  out += "  {\"name\": \"process_name\", \"ph\": \"M\", \"pid\": 1, \"tid\": 0, \"args\": {\"name\": \"tandem\"}}";
  for (trace_track t : {trace_track::upload, trace_track::gpu_compute, trace_track::cpu_compute, trace_track::host})
    out += fmt::format(
        ",\n  {{\"name\": \"thread_name\", \"ph\": \"M\", \"pid\": 1, \"tid\": {}, \"args\": {{\"name\": \"{}\"}}}}"
        ",\n  {{\"name\": \"thread_sort_index\", \"ph\": \"M\", \"pid\": 1, \"tid\": {}, \"args\": {{\"sort_index\": {}}}}}",
        static_cast<int>(t), track_name(t), static_cast<int>(t), static_cast<int>(t));
  for (const trace_span& e : s)
    out += fmt::format(
        ",\n  {{\"name\": \"{}\", \"cat\": \"{}\", \"ph\": \"X\", \"pid\": 1, \"tid\": {}, \"ts\": {:.3f}, "
        "\"dur\": {:.3f}, \"args\": {{\"layer\": {}, \"clock\": \"{}\"}}}}",
        json_escape(e.name), e.track == trace_track::upload ? "upload" : "compute", static_cast<int>(e.track),
        e.ts_us - t0, std::max(e.dur_us, 0.0), e.layer, e.clock.empty() ? "host" : e.clock);
  out += "\n]";
  const std::vector<kernel_stat> ks = kernels();
  if (!ks.empty()) {
    out += ",\n\"kernels\": [";
    for (size_t i = 0; i < ks.size(); ++i) {
      const kernel_stat& k = ks[i];
      const double sec = k.us / 1e6;
      out += fmt::format(
          "{}\n  {{\"name\": \"{}\", \"calls\": {}, \"ms\": {:.4f}, \"bytes\": {}, \"flops\": {}, "
          "\"GBps\": {:.3f}, \"GFLOPps\": {:.3f}}}",
          i ? "," : "", json_escape(k.name), k.calls, k.us / 1000, k.bytes, k.flops,
          sec > 0 ? static_cast<double>(k.bytes) / sec / 1e9 : 0.0,
          sec > 0 ? static_cast<double>(k.flops) / sec / 1e9 : 0.0);
    }
    out += "\n]";
  }
  out += "}\n";
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw error(fmt::format("--trace {}: cannot open for writing", path));
  const bool ok = std::fwrite(out.data(), 1, out.size(), f) == out.size();
  if (std::fclose(f) != 0 || !ok) throw error(fmt::format("--trace {}: write failed", path));
}

trace_recorder::summary trace_recorder::summarize() const {
  summary r;
  double lo = std::numeric_limits<double>::max(), hi = std::numeric_limits<double>::lowest();
  for (const trace_span& e : spans()) {
    if (e.track == trace_track::upload) {
      r.upload_us += e.dur_us;
      ++r.uploads;
    } else if (e.track == trace_track::gpu_compute) {
      r.compute_us += e.dur_us;
      ++r.computes;
    } else {
      continue;
    }
    lo = std::min(lo, e.ts_us);
    hi = std::max(hi, e.ts_us + e.dur_us);
  }
  if (hi > lo) r.extent_us = hi - lo;
  return r;
}

double trace_recorder::summary::overlap_efficiency() const {
  const double m = std::max(upload_us, compute_us);
  return m > 0 ? extent_us / m : 0.0;
}

}  // namespace tandem
