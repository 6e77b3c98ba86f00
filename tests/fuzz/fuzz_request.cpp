// Fuzz target: the body of a POST /v1/chat/completions or /v1/completions request, as
// tools/serve/request.h parses it before anything else sees it. Input: byte 0 picks the endpoint
// (even: chat, odd: completions), the rest is the body. Must end with a request or an api_error
// (a 4xx for the client); an accepted request must hold what the server relies on. Seeds: the
// template cases (chat message lists).
#include <cmath>
#include <string_view>

#include "tests/fuzz/fuzz.h"
#include "tools/serve/request.h"

namespace tandem::fuzz {

void request(const uint8_t* data, size_t size) {
  if (size < 1) return;
  const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    const serve::gen_request r =
        data[0] % 2 == 0 ? serve::parse_chat_request(body) : serve::parse_completion_request(body);
    if (r.stop.size() > 4) broken("more than 4 stop strings accepted");
    if (r.max_tokens < -1) broken("a negative max_tokens accepted");
    if (!std::isfinite(r.temperature) || !std::isfinite(r.top_p) ||
        !std::isfinite(r.presence_penalty) || !std::isfinite(r.frequency_penalty))
      broken("a non-finite sampling parameter accepted");
    if (r.chat) {
      if (!r.messages.is_array()) broken("chat messages accepted that are not an array");
      (void)serve::template_input(r);
    }
  } catch (const serve::api_error& e) {
    if (e.status < 400 || e.status > 499) broken("a parse error that is not a 4xx");
  }
}

}  // namespace tandem::fuzz

TANDEM_FUZZ_ENTRY(request)
