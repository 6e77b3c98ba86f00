// Stop strings and the text stream of a generation: the pieces of generated tokens go in, the
// text that is safe to show comes out. A stop string is never shown: any tail that could be the
// start of one is held back until the next pieces tell; and only whole UTF-8 characters come
// out (a character split over byte tokens waits for its last byte).
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace tandem {

class stop_stream {
 public:
  // Empty stop strings are ignored.
  explicit stop_stream(std::vector<std::string> stops = {});

  // Appends a token's piece. Returns the text now ready to show ("" when everything is held
  // back); after a stop string matched, stopped() is true and the text ends just before it.
  std::string push(std::string_view piece);
  // The end of the generation (not by a stop string): the held-back text, which no stop string
  // can complete any more (an unfinished UTF-8 character goes out as it is).
  std::string flush();

  bool stopped() const { return stopped_; }
  // The stop string that matched ("" when none).
  const std::string& matched() const { return matched_; }
  // Bytes received but not yet returned.
  size_t held() const { return pending_.size(); }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  std::string matched_;
  bool stopped_ = false;
};

// The number of bytes at the end of s that begin a UTF-8 character whose last bytes have not
// arrived yet (0 when s ends on a whole character or on bytes that are not UTF-8).
size_t utf8_incomplete_tail(std::string_view s);

}  // namespace tandem
