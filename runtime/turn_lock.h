// A first-come, first-served lock that a waiter can give up on: the sessions of one model take
// it around each evaluation, so that generations on several threads take turns token by token
// (a plain mutex lets the thread that just released it take it again, starving the others),
// and a cancelled session stops waiting at once.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>

namespace tandem {

class turn_lock {
 public:
  // Waits for this caller's turn. Returns false (without the lock) when *cancel became true
  // while waiting; wake() makes waiters look at their flags.
  bool acquire(const std::atomic<bool>& cancel) {
    std::unique_lock<std::mutex> lk(m_);
    const uint64_t me = next_ticket_++;
    queue_.push_back(me);
    cv_.wait(lk, [&] { return cancel.load() || (!held_ && queue_.front() == me); });
    if (!held_ && queue_.front() == me) {
      queue_.pop_front();
      held_ = true;
      return true;
    }
    for (auto it = queue_.begin(); it != queue_.end(); ++it)
      if (*it == me) {
        queue_.erase(it);
        break;
      }
    cv_.notify_all();  // the next in line may be first now
    return false;
  }
  void release() {
    {
      std::lock_guard<std::mutex> lk(m_);
      held_ = false;
    }
    cv_.notify_all();
  }
  // After setting a cancel flag: waiters re-check theirs.
  void wake() {
    { std::lock_guard<std::mutex> lk(m_); }
    cv_.notify_all();
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<uint64_t> queue_;
  uint64_t next_ticket_ = 0;
  bool held_ = false;
};

// Holds a turn_lock for a scope (when acquire succeeded).
class turn_guard {
 public:
  turn_guard(turn_lock& l, const std::atomic<bool>& cancel) : l_(l), owns_(l.acquire(cancel)) {}
  ~turn_guard() {
    if (owns_) l_.release();
  }
  turn_guard(const turn_guard&) = delete;
  turn_guard& operator=(const turn_guard&) = delete;
  bool owns() const { return owns_; }

 private:
  turn_lock& l_;
  bool owns_;
};

}  // namespace tandem
