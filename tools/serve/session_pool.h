// The server's sessions (one KV cache each, --parallel of them) and the bounded queue of requests
// waiting for one. A request gets the free session whose cached tokens share the longest prefix
// with its prompt, so that the next turn of a conversation finds its history already evaluated.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <vector>

#include "runtime/tandem.h"

namespace tandem::serve {

class session_pool {
 public:
  // Creates n sessions of model; throws tandem::error when the runtime refuses one.
  session_pool(tandem_model* model, int n, int max_queue);
  ~session_pool();
  session_pool(const session_pool&) = delete;
  session_pool& operator=(const session_pool&) = delete;

  enum class outcome { ok, queue_full, abandoned, stopping };

  // Takes a free session for prompt (the token ids it will evaluate); when none is free, waits in
  // a first-come first-served queue of at most max_queue requests. abandoned() is asked while
  // waiting (the client went away: leave the queue). On ok, *index is the session's index.
  outcome acquire(const std::vector<int32_t>& prompt, const std::function<bool()>& abandoned,
                  int* index);
  // Gives session index back; cached are the tokens its KV cache now holds (as far as known).
  void release(int index, std::vector<int32_t> cached);

  tandem_session* session(int index) const { return slots_[static_cast<size_t>(index)].session; }
  // Cancels every generation and wakes every waiter; acquire answers stopping from now on.
  void stop();

  int size() const { return static_cast<int>(slots_.size()); }
  int busy() const;
  int queued() const;

  // The length of the common prefix of a and b.
  static size_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b);

 private:
  struct slot {
    tandem_session* session = nullptr;
    bool busy = false;
    std::vector<int32_t> cached;
    uint64_t last_used = 0;
  };
  int pick(const std::vector<int32_t>& prompt) const;  // -1 when none is free

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<slot> slots_;
  int max_queue_;
  std::vector<uint64_t> queue_;  // tickets of the waiting requests, oldest first
  uint64_t next_ticket_ = 0;
  uint64_t clock_ = 0;
  bool stopping_ = false;
};

}  // namespace tandem::serve
