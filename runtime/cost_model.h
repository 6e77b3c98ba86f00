// The streaming cost model: for each layer the plan streams to the GPU (placement::gpu_streamed),
// whether it is worth streaming in each phase (prompt: n_batch tokens; decode: one token), or
// whether the CPU runs it faster. Fed by speeds measured at start-up and cached per device in
// $XDG_CACHE_HOME/tandem (else ~/.cache/tandem):
//   - host -> device copy bandwidth (vulkan/measure.cpp: a pinned buffer copied into device memory),
//   - CPU memory read bandwidth (cpu/bandwidth.h) and CPU f32 multiply-add throughput.
//
// Estimates per layer, ms:  CPU      = max(weight bytes / CPU read bandwidth, 2 params n / CPU flops)
//                           streamed = max(weight bytes / host->device bandwidth, GPU compute)
// GPU compute is not measured: for a CPU-type device (lavapipe) it is the CPU's own estimate, for a
// real GPU it is taken as hidden behind the upload (a streamed layer is upload bound).
//
// KV cache: a layer's KV cache lives on the device the plan puts it on, and only there. So the
// choice can only move a layer for both phases at once: when the CPU wins the prompt and the
// decode, the layer goes to the CPU (its KV cache with it); when streaming wins either phase it
// stays streamed, and a decode the CPU would run faster still runs streamed on the GPU, because
// the CPU does not have the layer's KV entries (the plan says so). This is the simplest choice
// that keeps the KV cache consistent; mirroring it on both devices is left for later.
#pragma once
#include <string>

#include "runtime/backend_factory.h"
#include "runtime/model.h"
#include "runtime/scheduler.h"

namespace tandem {

struct machine_speeds {
  double h2d_bytes_per_s = 0;       // host -> device copies
  double cpu_read_bytes_per_s = 0;  // CPU memory reads (decode is bound by this)
  double cpu_flops = 0;             // CPU f32 multiply-adds x 2 per second (all threads)
  std::string cache_path;           // where they were read from or written to ("" : not cached)
  bool from_cache = false;
};

// Defined in vulkan/measure.cpp (vulkan/no_vulkan.cpp, built when there are no Vulkan headers,
// returns 0): the host -> device copy bandwidth of the device select_gpu_device picks, in bytes per second; 0 and
// *why set when there is none.
double measure_host_to_device_bandwidth(bool allow_cpu_device, std::string* why);

// The speeds for device (a name; the cache key), from the cache when present, else measured
// (h2d through measure_host_to_device_bandwidth) and written to the cache.
machine_speeds get_machine_speeds(const std::string& device, bool allow_cpu_device);

// How streamed layers are placed: "auto" (the cost model), "gpu" (always streamed), "cpu" (on the
// CPU). Throws tandem::error for another value.
void check_stream_policy(const std::string& policy);

// Applies the policy to the plan's streamed layers (moving some to placement::cpu) and returns
// the lines that say what was chosen and why, for the printed plan ("" when nothing streams).
std::string apply_stream_policy(const model& m, const std::string& policy, int n_batch,
                                const gpu_device_info* dev, plan& p);

}  // namespace tandem
