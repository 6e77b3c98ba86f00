// The server's elastic task queue: it grows while every thread is held, up to its maximum, and
// shrinks back to its base when the extra threads have been idle. Waits are polls with a bound.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "tools/serve/task_queue.h"

namespace tandem::serve {
namespace {

using namespace std::chrono_literals;

// Jobs that hold their thread until released.
struct gate {
  std::mutex mu;
  std::condition_variable cv;
  bool open = false;
  std::atomic<int> running{0}, done{0};

  std::function<void()> job() {
    return [this] {
      ++running;
      std::unique_lock lock(mu);
      cv.wait(lock, [this] { return open; });
      --running;
      ++done;
    };
  }
  void release() {
    {
      std::lock_guard lock(mu);
      open = true;
    }
    cv.notify_all();
  }
};

template <class F>
bool eventually(F f, std::chrono::seconds limit = 30s) {
  auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (f()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return f();
}

TEST(ServeTaskQueue, GrowsWhileThreadsAreHeldAndShrinksBack) {
  elastic_task_queue q(2, 8, 50ms);
  EXPECT_EQ(q.threads(), 2u);
  gate g;
  for (int i = 0; i < 6; ++i) q.enqueue(g.job());
  // Six held jobs at once: more threads than the base.
  ASSERT_TRUE(eventually([&] { return g.running == 6; })) << g.running;
  // At least one thread per held job; a thread that was just about to wait may have been
  // counted busy when a job came, so one or two more are allowed, never more than max.
  EXPECT_GE(q.threads(), 6u);
  EXPECT_LE(q.threads(), 8u);
  g.release();
  ASSERT_TRUE(eventually([&] { return g.done == 6; }));
  // The extra threads end after their idle time; the base stays.
  EXPECT_TRUE(eventually([&] { return q.threads() == 2; })) << q.threads();
  q.shutdown();
  EXPECT_EQ(q.threads(), 0u);
}

TEST(ServeTaskQueue, AtMostMaxThreadsTheRestWait) {
  elastic_task_queue q(1, 4, 10s);
  gate g;
  for (int i = 0; i < 10; ++i) q.enqueue(g.job());
  ASSERT_TRUE(eventually([&] { return g.running == 4; }));
  EXPECT_EQ(q.threads(), 4u);
  EXPECT_EQ(g.done, 0);
  g.release();
  // The six that waited run on the same four threads.
  ASSERT_TRUE(eventually([&] { return g.done == 10; }));
  EXPECT_EQ(q.threads(), 4u);
}

TEST(ServeTaskQueue, ShutdownRunsWhatIsQueued) {
  std::atomic<int> ran{0};
  {
    elastic_task_queue q(1, 1, 10s);
    gate g;
    q.enqueue(g.job());
    for (int i = 0; i < 5; ++i) q.enqueue([&] { ++ran; });
    ASSERT_TRUE(eventually([&] { return g.running == 1; }));
    g.release();
    q.shutdown();
    EXPECT_EQ(q.threads(), 0u);
  }
  EXPECT_EQ(ran, 5);
}

}  // namespace
}  // namespace tandem::serve
