// Timeline trace (`--trace FILE.json`): per-layer upload and compute spans in Chrome's
// trace-event format, for Perfetto (ui.perfetto.dev) or chrome://tracing. Backends add spans
// from any thread; times are microseconds on the host's steady clock (GPU timestamps are
// calibrated onto it by the Vulkan backend), so upload and compute tracks line up.
#pragma once
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace tandem {

enum class trace_track : int {
  upload = 1,       // host -> device copies of streamed layers
  gpu_compute = 2,  // layers on the GPU's compute queue
  cpu_compute = 3,  // layers on the CPU
  host = 4,         // other host-side work (batches)
};

struct trace_span {
  std::string name;
  trace_track track = trace_track::host;
  double ts_us = 0, dur_us = 0;  // start and length, microseconds (steady clock)
  int layer = -1;
  std::string clock;  // "gpu" (device timestamps) or "host"
};

// Per-kernel totals from GPU timestamps around each dispatch (`tandem bench --trace`): the
// kernel's variant name, its calls, their summed time and the bytes and FLOPs they had to move and
// do at the least (the ops' recorder::cost), so GB/s = bytes / time.
struct kernel_stat {
  std::string name;
  uint64_t calls = 0;
  double us = 0;
  uint64_t bytes = 0, flops = 0;
};

class trace_recorder {
 public:
  // The steady clock in microseconds, the time base of every span.
  static double now_us();

  void add(trace_span s);
  std::vector<trace_span> spans() const;
  void clear();
  // Writes {"traceEvents": [...]} with one named thread per track. Throws tandem::error.
  void write(const std::string& path) const;

  // Over the spans since the last clear(): summed durations per track and the extent from the
  // first start to the last end of upload and GPU compute spans.
  struct summary {
    double upload_us = 0, compute_us = 0, extent_us = 0;
    int uploads = 0, computes = 0;
    // run time / max(upload, compute): 1.0 means the slower of the two hides the other fully.
    double overlap_efficiency() const;
  };
  summary summarize() const;

  // Per-dispatch GPU timing, off unless asked for before the backends are made (it puts two
  // timestamps around every dispatch). Backends that can time dispatches add them here.
  void set_kernel_timing(bool on) { kernel_timing_ = on; }
  bool kernel_timing() const { return kernel_timing_; }
  void add_kernel(const std::string& name, double us, uint64_t bytes, uint64_t flops);
  // The totals since the last clear(), slowest first; write() puts them under "kernels".
  std::vector<kernel_stat> kernels() const;

 private:
  mutable std::mutex mu_;
  std::vector<trace_span> spans_;
  std::vector<kernel_stat> kernels_;
  bool kernel_timing_ = false;
};

}  // namespace tandem
