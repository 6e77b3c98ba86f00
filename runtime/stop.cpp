#include "runtime/stop.h"

#include <algorithm>

namespace tandem {

size_t utf8_incomplete_tail(std::string_view s) {
  for (size_t i = 1; i <= std::min<size_t>(4, s.size()); ++i) {
    const auto c = static_cast<unsigned char>(s[s.size() - i]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back
    const size_t need = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
    return need > i ? i : 0;
  }
  return 0;
}

stop_stream::stop_stream(std::vector<std::string> stops) {
  for (std::string& s : stops)
    if (!s.empty()) stops_.push_back(std::move(s));
}

std::string stop_stream::push(std::string_view piece) {
  if (stopped_) return {};
  pending_ += piece;
  // Everything returned so far ends before any possible start of a stop string, so a match
  // starts inside pending_: the earliest wins.
  size_t at = std::string::npos;
  for (const std::string& s : stops_) {
    const size_t p = pending_.find(s);
    if (p < at) at = p, matched_ = s;
  }
  if (at != std::string::npos) {
    stopped_ = true;
    std::string out = pending_.substr(0, at);
    pending_.clear();
    return out;
  }
  // Hold back the longest tail that is a proper prefix of a stop string, and an unfinished
  // UTF-8 character.
  size_t hold = utf8_incomplete_tail(pending_);
  for (const std::string& s : stops_) {
    for (size_t k = std::min(s.size() - 1, pending_.size()); k > hold; --k) {
      if (std::string_view(pending_).substr(pending_.size() - k) == std::string_view(s).substr(0, k)) {
        hold = k;
        break;
      }
    }
  }
  size_t cut = pending_.size() - hold;
  // A stop string may start inside a character only if the text is not UTF-8 at that point;
  // never cut a character in two.
  for (int back = 0; back < 3 && cut > 0 && cut < pending_.size() &&
                     (static_cast<unsigned char>(pending_[cut]) & 0xC0) == 0x80;
       ++back)
    --cut;
  std::string out = pending_.substr(0, cut);
  pending_.erase(0, cut);
  return out;
}

std::string stop_stream::flush() {
  std::string out;
  out.swap(pending_);
  return out;
}

}  // namespace tandem
