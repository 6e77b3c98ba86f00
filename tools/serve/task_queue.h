// The server's worker threads. cpp-httplib hands each accepted connection to its TaskQueue as one
// job that lasts as long as the connection: a silent keep-alive connection holds its thread for
// the keep-alive timeout, a client that sends slowly for the read timeout. With a fixed pool, a
// thousand idle connections would queue every new request behind them for minutes. This queue
// keeps `base` threads and starts another whenever a job arrives and no thread is free, up to
// `max`; a thread beyond base ends after `idle` without work.
#pragma once
#include <httplib.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>

namespace tandem::serve {

class elastic_task_queue : public httplib::TaskQueue {
 public:
  elastic_task_queue(size_t base, size_t max, std::chrono::milliseconds idle);
  ~elastic_task_queue() override;
  elastic_task_queue(const elastic_task_queue&) = delete;
  elastic_task_queue& operator=(const elastic_task_queue&) = delete;

  void enqueue(std::function<void()> fn) override;
  // Runs the jobs already queued, then waits until every thread has ended.
  void shutdown() override;

  size_t threads() const;  // running now

 private:
  void start_thread(bool permanent);  // with mu_ held
  void work(bool permanent);

  mutable std::mutex mu_;
  std::condition_variable jobs_cv_;
  std::condition_variable ended_cv_;
  std::deque<std::function<void()>> jobs_;
  const size_t base_, max_;
  const std::chrono::milliseconds idle_;
  size_t threads_ = 0;  // running
  size_t waiting_ = 0;  // waiting for a job
  bool shutdown_ = false;
};

}  // namespace tandem::serve
