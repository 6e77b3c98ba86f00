#include "tools/serve/metrics.h"

#include <fmt/format.h>

namespace tandem::serve {

void metrics::count_request(const std::string& endpoint, int status) {
  std::lock_guard lock(mu_);
  ++requests_[{endpoint, status}];
}

void metrics::count_generation(int32_t prompt_tokens, int32_t cached_tokens,
                               int32_t completion_tokens, double prompt_tps, double gen_tps,
                               bool cancelled) {
  std::lock_guard lock(mu_);
  prompt_tokens_ += static_cast<uint64_t>(prompt_tokens);
  cached_tokens_ += static_cast<uint64_t>(cached_tokens);
  completion_tokens_ += static_cast<uint64_t>(completion_tokens);
  ++generations_;
  if (cancelled) ++cancelled_;
  if (prompt_tokens > cached_tokens) last_prompt_tps_ = prompt_tps;
  if (completion_tokens > 0) last_generation_tps_ = gen_tps;
}

namespace {

void family(std::string& out, const char* name, const char* type, const char* help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

}  // namespace

std::string metrics::render(int queued, int busy, int sessions, const layer_counts& layers) const {
  std::lock_guard lock(mu_);
  std::string o;
  family(o, "tandem_requests_total", "counter", "HTTP requests answered, by endpoint and status.");
  for (const auto& [key, n] : requests_)
    o += fmt::format("tandem_requests_total{{endpoint=\"{}\",status=\"{}\"}} {}\n", key.first,
                     key.second, n);
  family(o, "tandem_prompt_tokens_total", "counter", "Prompt tokens of finished generations.");
  o += fmt::format("tandem_prompt_tokens_total {}\n", prompt_tokens_);
  family(o, "tandem_prompt_tokens_cached_total", "counter",
         "Prompt tokens reused from a session's KV cache instead of evaluated.");
  o += fmt::format("tandem_prompt_tokens_cached_total {}\n", cached_tokens_);
  family(o, "tandem_completion_tokens_total", "counter", "Generated tokens.");
  o += fmt::format("tandem_completion_tokens_total {}\n", completion_tokens_);
  family(o, "tandem_generations_total", "counter", "Generations run (cancelled ones included).");
  o += fmt::format("tandem_generations_total {}\n", generations_);
  family(o, "tandem_generations_cancelled_total", "counter",
         "Generations stopped early: the client went away or the server is stopping.");
  o += fmt::format("tandem_generations_cancelled_total {}\n", cancelled_);
  family(o, "tandem_prompt_tokens_per_second", "gauge",
         "Prompt processing speed of the last request that evaluated prompt tokens.");
  o += fmt::format("tandem_prompt_tokens_per_second {:.3f}\n", last_prompt_tps_);
  family(o, "tandem_generation_tokens_per_second", "gauge",
         "Generation speed of the last request that generated tokens.");
  o += fmt::format("tandem_generation_tokens_per_second {:.3f}\n", last_generation_tps_);
  family(o, "tandem_queue_length", "gauge", "Requests waiting for a free session.");
  o += fmt::format("tandem_queue_length {}\n", queued);
  family(o, "tandem_sessions_busy", "gauge", "Sessions generating now.");
  o += fmt::format("tandem_sessions_busy {}\n", busy);
  family(o, "tandem_sessions", "gauge", "Sessions (--parallel).");
  o += fmt::format("tandem_sessions {}\n", sessions);
  family(o, "tandem_model_layers", "gauge", "The model's layers by where they run.");
  o += fmt::format("tandem_model_layers{{device=\"cpu\"}} {}\n", layers.cpu);
  o += fmt::format("tandem_model_layers{{device=\"gpu_resident\"}} {}\n", layers.gpu_resident);
  o += fmt::format("tandem_model_layers{{device=\"gpu_streamed\"}} {}\n", layers.gpu_streamed);
  family(o, "tandem_model_output_on_gpu", "gauge", "1 when the output head runs on the GPU.");
  o += fmt::format("tandem_model_output_on_gpu {}\n", layers.output_on_gpu ? 1 : 0);
  return o;
}

}  // namespace tandem::serve
