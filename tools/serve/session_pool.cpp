#include "tools/serve/session_pool.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>

#include "runtime/error.h"

namespace tandem::serve {

session_pool::session_pool(tandem_model* model, int n, int max_queue) : max_queue_(max_queue) {
  slots_.resize(static_cast<size_t>(n));
  for (auto& s : slots_) {
    s.session = tandem_session_create(model);
    if (!s.session) {
      std::string why = tandem_last_error();
      for (auto& t : slots_)
        if (t.session) tandem_session_free(t.session);
      throw error(fmt::format("cannot open {} sessions: {}", n, why));
    }
  }
}

session_pool::~session_pool() {
  stop();
  for (auto& s : slots_) tandem_session_free(s.session);
}

size_t session_pool::common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  size_t n = std::min(a.size(), b.size()), i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return i;
}

int session_pool::pick(const std::vector<int32_t>& prompt) const {
  int best = -1;
  size_t best_len = 0;
  for (size_t i = 0; i < slots_.size(); ++i) {
    const slot& s = slots_[i];
    if (s.busy) continue;
    size_t len = common_prefix(s.cached, prompt);
    // Longest shared prefix; among equals, the least recently used (keeps other caches warm).
    if (best < 0 || len > best_len ||
        (len == best_len && s.last_used < slots_[static_cast<size_t>(best)].last_used)) {
      best = static_cast<int>(i);
      best_len = len;
    }
  }
  return best;
}

session_pool::outcome session_pool::acquire(const std::vector<int32_t>& prompt,
                                            const std::function<bool()>& abandoned, int* index) {
  std::unique_lock lock(mu_);
  if (stopping_) return outcome::stopping;
  if (queue_.empty()) {
    if (int i = pick(prompt); i >= 0) {
      slots_[static_cast<size_t>(i)].busy = true;
      *index = i;
      return outcome::ok;
    }
  }
  if (static_cast<int>(queue_.size()) >= max_queue_) return outcome::queue_full;
  const uint64_t ticket = next_ticket_++;
  queue_.push_back(ticket);
  auto leave = [&] { std::erase(queue_, ticket); cv_.notify_all(); };
  for (;;) {
    if (stopping_) return leave(), outcome::stopping;
    if (queue_.front() == ticket) {
      if (int i = pick(prompt); i >= 0) {
        slots_[static_cast<size_t>(i)].busy = true;
        *index = i;
        leave();
        return outcome::ok;
      }
    }
    // A waiter wakes when a session is released; the timeout is only for noticing a client
    // that went away while it waited.
    cv_.wait_for(lock, std::chrono::milliseconds(100));
    if (abandoned && abandoned()) return leave(), outcome::abandoned;
  }
}

void session_pool::release(int index, std::vector<int32_t> cached) {
  {
    std::lock_guard lock(mu_);
    slot& s = slots_[static_cast<size_t>(index)];
    s.busy = false;
    s.cached = std::move(cached);
    s.last_used = ++clock_;
  }
  cv_.notify_all();
}

void session_pool::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    for (auto& s : slots_)
      if (s.busy) tandem_session_cancel(s.session);
  }
  cv_.notify_all();
}

int session_pool::busy() const {
  std::lock_guard lock(mu_);
  return static_cast<int>(std::count_if(slots_.begin(), slots_.end(), [](const slot& s) { return s.busy; }));
}

int session_pool::queued() const {
  std::lock_guard lock(mu_);
  return static_cast<int>(queue_.size());
}

}  // namespace tandem::serve
