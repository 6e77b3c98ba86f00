#include "tools/serve/task_queue.h"

#include <system_error>
#include <thread>

namespace tandem::serve {

elastic_task_queue::elastic_task_queue(size_t base, size_t max, std::chrono::milliseconds idle)
    : base_(base), max_(max < base ? base : max), idle_(idle) {
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < base_; ++i) start_thread(true);
}

elastic_task_queue::~elastic_task_queue() { shutdown(); }

void elastic_task_queue::start_thread(bool permanent) {
  try {
    // Detached: a thread beyond base ends by itself; shutdown waits for the count to reach 0.
    std::thread([this, permanent] { work(permanent); }).detach();
    ++threads_;
  } catch (const std::system_error&) {
    // No thread to be had (a system limit): the jobs wait for the running threads.
  }
}

void elastic_task_queue::enqueue(std::function<void()> fn) {
  std::lock_guard lock(mu_);
  jobs_.push_back(std::move(fn));
  if (waiting_ < jobs_.size() && threads_ < max_) start_thread(false);
  jobs_cv_.notify_one();
}

void elastic_task_queue::work(bool permanent) {
  std::unique_lock lock(mu_);
  auto ready = [this] { return shutdown_ || !jobs_.empty(); };
  for (;;) {
    ++waiting_;
    if (permanent) jobs_cv_.wait(lock, ready);
    else jobs_cv_.wait_for(lock, idle_, ready);
    --waiting_;
    if (jobs_.empty()) {
      if (shutdown_ || !permanent) break;  // stopping, or idle for long enough
      continue;
    }
    std::function<void()> fn = std::move(jobs_.front());
    jobs_.pop_front();
    lock.unlock();
    fn();
    fn = nullptr;  // what the job holds goes before the lock is taken again
    lock.lock();
  }
  --threads_;
  ended_cv_.notify_all();  // under the lock: shutdown cannot return before this thread is done with it
}

void elastic_task_queue::shutdown() {
  std::unique_lock lock(mu_);
  shutdown_ = true;
  jobs_cv_.notify_all();
  ended_cv_.wait(lock, [this] { return threads_ == 0; });
}

size_t elastic_task_queue::threads() const {
  std::lock_guard lock(mu_);
  return threads_;
}

}  // namespace tandem::serve
