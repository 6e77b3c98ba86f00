// The server's counters, rendered as Prometheus text for GET /metrics. Thread-safe.
#pragma once
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

namespace tandem::serve {

// Where the model's layers run (from tandem_model_placement).
struct layer_counts {
  int32_t cpu = 0;
  int32_t gpu_resident = 0;
  int32_t gpu_streamed = 0;
  bool output_on_gpu = false;
};

class metrics {
 public:
  // One answered HTTP request: endpoint is the route ("/v1/chat/completions"), or "other" for
  // paths the server does not serve (so that scanners cannot grow the table).
  void count_request(const std::string& endpoint, int status);
  // One finished generation (also a cancelled one).
  void count_generation(int32_t prompt_tokens, int32_t cached_tokens, int32_t completion_tokens,
                        double prompt_tokens_per_s, double generation_tokens_per_s,
                        bool cancelled);

  // The Prometheus text exposition (version 0.0.4). queued and busy are read at the time of the
  // scrape; sessions is the pool's size.
  std::string render(int queued, int busy, int sessions, const layer_counts& layers) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  uint64_t prompt_tokens_ = 0;
  uint64_t cached_tokens_ = 0;
  uint64_t completion_tokens_ = 0;
  uint64_t generations_ = 0;
  uint64_t cancelled_ = 0;
  double last_prompt_tps_ = 0;
  double last_generation_tps_ = 0;
};

}  // namespace tandem::serve
