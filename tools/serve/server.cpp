#include "tools/serve/server.h"

#include <fmt/format.h>
#include <httplib.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "runtime/error.h"
#include "tools/serve/task_queue.h"

namespace tandem::serve {
namespace {

std::string take(char* s) {
  std::string r = s ? s : "";
  tandem_string_free(s);
  return r;
}

void check(const server_options& o) {
  if (o.parallel < 1 || o.parallel > 256) throw error("--parallel must be between 1 and 256");
  if (o.queue < -1) throw error("--queue must be 0 or more (the requests that may wait)");
  if (o.port < 0 || o.port > 65535) throw error("--port must be between 0 and 65535");
  if (o.n_ctx < 0) throw error("-c must be 0 (the model's) or a number of tokens");
  if (o.timeout_s < 1) throw error("--timeout must be at least 1 second");
}

struct model_owner {
  tandem_model* m = nullptr;
  ~model_owner() { tandem_model_free(m); }
};

tandem_model* load(const server_options& o) {
  tandem_model_params p = tandem_model_params_default();
  p.offload = o.offload.c_str();
  p.n_threads = o.n_threads;
  p.n_ctx = o.n_ctx;
  p.n_seq_max = o.parallel;
  p.chat_template = o.chat_template.empty() ? nullptr : o.chat_template.c_str();
  tandem_model* m = tandem_model_load(o.model.c_str(), &p);
  if (!m) throw error(tandem_last_error());
  return m;
}

// SIGINT and SIGTERM are blocked in every thread and taken here, outside signal context, where
// stopping the pool and the listener is allowed.
class signal_watch {
 public:
  explicit signal_watch(std::function<void(int)> on_signal) : on_signal_(std::move(on_signal)) {
    thread_ = std::thread([this] {
      sigset_t set;
      sigemptyset(&set);
      sigaddset(&set, SIGINT);
      sigaddset(&set, SIGTERM);
      while (!done_) {
        timespec t{0, 200 * 1000 * 1000};
        int sig = sigtimedwait(&set, nullptr, &t);
        if (sig > 0) on_signal_(sig);
      }
    });
  }
  ~signal_watch() {
    done_ = true;
    thread_.join();
  }

 private:
  std::function<void(int)> on_signal_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

int bind(httplib::Server& svr, const server_options& o) {
  int port = o.port == 0 ? svr.bind_to_any_port(o.host) : (svr.bind_to_port(o.host, o.port) ? o.port : -1);
  if (port <= 0)
    throw error(fmt::format("cannot listen on {}:{}: the port is in use (or the address is not one "
                            "of this machine's); pick another with --port",
                            o.host, o.port));
  return port;
}

// Threads for connections at most (see elastic_task_queue); connections beyond wait for one.
constexpr size_t k_max_threads = 4096;

// Every open connection is a descriptor: the soft limit (often 1024) up to the hard one, so that
// a thousand clients do not make accept() fail.
void raise_open_files_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

}  // namespace

int run_server(const server_options& opt) {
  check(opt);
  // Before any thread starts, so that every thread inherits the mask.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a client that went away is a failed write, not the end

  model_owner owner;  // before the state, so that the sessions are freed before the model
  server_state s;
  s.opt = opt;
  if (s.opt.queue < 0) s.opt.queue = 4 * s.opt.parallel;

  // The port first: a port in use is said at once, before a long model load.
  httplib::Server svr;
  // Every session's request, every waiting one, and a few for /health, /metrics and the page;
  // more while connections hold them all (each connection holds a thread while it is open, an
  // idle one for the keep-alive timeout), so that idle clients cannot keep others waiting.
  const size_t threads = static_cast<size_t>(s.opt.parallel + s.opt.queue + 8);
  svr.new_task_queue = [threads] {
    return new elastic_task_queue(threads, std::max<size_t>(threads, k_max_threads),
                                  std::chrono::seconds(10));
  };
  raise_open_files_limit();
  // SO_REUSEADDR only: cpp-httplib's default also sets SO_REUSEPORT, which would let a second
  // server share a port that is in use instead of saying so.
  int listen_fd = -1;
  svr.set_socket_options([&listen_fd](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    listen_fd = sock;
  });
  svr.set_read_timeout(s.opt.timeout_s);
  svr.set_write_timeout(s.opt.timeout_s);
  svr.set_payload_max_length(s.opt.max_body);
  const int port = bind(svr, s.opt);
  // cpp-httplib listens with a backlog of 5: a burst of clients overflows it, and the kernel
  // drops their SYNs, which they resend only a second later. Listening again sets the backlog.
  if (listen_fd >= 0) listen(listen_fd, SOMAXCONN);

  owner.m = load(s.opt);
  s.model = owner.m;
  s.model_id = take(tandem_model_name(s.model));
  s.model_file = std::filesystem::path(s.opt.model).filename().string();
  s.info = tandem_model_get_info(s.model);
  tandem_placement pl = tandem_model_placement(s.model);
  s.layers = {pl.cpu_layers, pl.gpu_resident_layers, pl.gpu_streamed_layers, pl.output_on_gpu};
  if (std::string notes = take(tandem_model_notes(s.model)); !notes.empty())
    fmt::print(stderr, "tandem: {}\n", notes);
  s.pool = std::make_unique<session_pool>(s.model, s.opt.parallel, s.opt.queue);
  add_routes(svr, s);
  add_generation_routes(svr, s);

  fmt::print("tandem serve: listening on http://{}:{} (model {}, {} session{})\n",
             s.opt.host.find(':') != std::string::npos ? "[" + s.opt.host + "]" : s.opt.host, port,
             s.model_id, s.opt.parallel, s.opt.parallel == 1 ? "" : "s");
  std::fflush(stdout);

  signal_watch watch([&](int sig) {
    if (s.stopping.exchange(true)) return;
    fmt::print(stderr, "tandem serve: {}; stopping\n", sig == SIGINT ? "interrupted" : "terminated");
    s.pool->stop();  // cancels the generations and empties the queue
    svr.stop();
  });
  svr.listen_after_bind();
  return 0;
}

}  // namespace tandem::serve
