// The host's cost of a decode token's layers on the Vulkan backend: the time forward_layer takes
// on the host (recording, or executing the layers recorded once, and submitting every 8 layers),
// with TANDEM_VK_VARIANT=record=fresh (every dispatch recorded each token) and record=replay
// (vulkan/replay.h). The upload and the output head are outside the timing. Needs a Vulkan device
// (lavapipe will do). TANDEM_BENCH_MODEL=path picks the model (default: stories260K).
//   TANDEM_BENCH_MODEL=/tmp/tl_q4_0.gguf TANDEM_BENCH_TOKENS=8 tandem_recording_bench
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "runtime/backend_factory.h"
#include "runtime/model.h"

namespace tandem {

void BM_decode_layers_host(benchmark::State& state, const char* mode) {
  const char* env = std::getenv("TANDEM_BENCH_MODEL");
  const std::string path = env ? env : std::string(TANDEM_MODELS_DIR) + "/stories260K.gguf";
  ::setenv("TANDEM_VK_VARIANT", mode, 1);
  auto m = model::load(path);
  const auto& hp = m->hp();
  backend_options o;
  o.n_ctx = 512;
  o.n_batch = 8;
  o.output = true;
  for (int il = 0; il < hp.n_layer; ++il) o.layers.push_back(il);
  std::string why;
  auto b = make_vulkan_backend(*m, o, /*allow_cpu_device=*/true, &why);
  if (!b) {
    state.SkipWithError(("no Vulkan device: " + why).c_str());
    return;
  }
  std::vector<float> x(static_cast<size_t>(hp.n_embd), 0.01f);
  std::vector<float> logits(static_cast<size_t>(hp.n_vocab));
  int pos = 0;
  for (auto _ : state) {
    state.PauseTiming();
    if (pos + 1 >= o.n_ctx) pos = 0;
    b->upload_hidden(x.data(), 1);
    state.ResumeTiming();
    for (int il = 0; il < hp.n_layer; ++il) b->forward_layer(il, 1, pos);
    state.PauseTiming();
    b->forward_output(1, false, logits.data());
    ++pos;
    state.ResumeTiming();
  }
  state.counters["layers"] = hp.n_layer;
  ::unsetenv("TANDEM_VK_VARIANT");
}

}  // namespace tandem

// A fixed number of tokens each (TANDEM_BENCH_TOKENS, default 100): the output head waits for the
// GPU outside the timing, so a time-based run would wait far longer than it measures.
int main(int argc, char** argv) {
  const char* n = std::getenv("TANDEM_BENCH_TOKENS");
  const int64_t tokens = n ? std::max<int64_t>(1, std::atoll(n)) : 100;
  for (const char* mode : {"record=fresh", "record=replay"})
    benchmark::RegisterBenchmark((std::string("BM_decode_layers_host/") + (mode + 7)).c_str(),
                                 tandem::BM_decode_layers_host, mode)
        ->Unit(benchmark::kMicrosecond)
        ->Iterations(tokens);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
