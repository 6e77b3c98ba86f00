// `tandem serve` as a child process for tests that drive it over real HTTP on loopback: start it
// on a free port (--port 0; its start line names the port), read its /metrics, open raw
// connections for what httplib::Client does not do (go away mid-stream, stop reading, stay
// silent). Every wait is a poll with a bound, never a sleep taken as an assertion.
#pragma once
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <regex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace tandem::serve_child {

using clock_type = std::chrono::steady_clock;

// A `tandem serve` child process (TANDEM_CLI), killed if the test did not stop it.
class server_process {
 public:
  explicit server_process(std::vector<std::string> args) {
    int out[2];
    if (pipe(out) != 0) throw std::runtime_error("pipe failed");
    pid_ = fork();
    if (pid_ == 0) {
      // A test process that dies (a crash, a timeout) takes its server with it: an orphan would
      // hold the test's output pipe open, and its port.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      dup2(out[1], 1);
      close(out[0]);
      close(out[1]);
      std::vector<std::string> full = {TANDEM_CLI, "serve"};
      full.insert(full.end(), args.begin(), args.end());
      std::vector<char*> argv;
      for (auto& a : full) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(TANDEM_CLI, argv.data());
      _exit(127);
    }
    close(out[1]);
    out_ = out[0];
    start_line_ = read_line(std::chrono::seconds(60));
    std::smatch m;
    if (std::regex_search(start_line_, m, std::regex("http://127\\.0\\.0\\.1:([0-9]+)")))
      port_ = std::stoi(m[1]);
  }
  ~server_process() {
    if (pid_ > 0) stop(SIGKILL);
    if (out_ >= 0) close(out_);
  }
  server_process(const server_process&) = delete;
  server_process& operator=(const server_process&) = delete;

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  const std::string& start_line() const { return start_line_; }

  // Whether the process is still running (it has not exited or been killed).
  bool alive() {
    if (pid_ <= 0) return false;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == 0) return true;
    pid_ = -1;
    return false;
  }

  // Resident memory in KiB (VmRSS of /proc/PID/status); -1 when it cannot be read.
  long rss_kib() const {
    std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
    std::string line;
    while (std::getline(in, line))
      if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
    return -1;
  }

  // Sends sig and waits (at most 60 s) for the exit; returns the exit status, or -1.
  int stop(int sig = SIGTERM) {
    if (pid_ <= 0) return -1;
    kill(pid_, sig);
    int status = 0;
    auto until = clock_type::now() + std::chrono::seconds(60);
    while (waitpid(pid_, &status, WNOHANG) == 0) {
      if (clock_type::now() > until) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
        pid_ = -1;
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  std::string read_line(std::chrono::seconds limit) {
    std::string line;
    auto until = clock_type::now() + limit;
    while (clock_type::now() < until) {
      pollfd p{out_, POLLIN, 0};
      if (poll(&p, 1, 200) <= 0) continue;
      char c;
      if (read(out_, &c, 1) != 1) break;
      if (c == '\n') break;
      line += c;
    }
    return line;
  }

  pid_t pid_ = -1;
  int out_ = -1;
  int port_ = -1;
  std::string start_line_;
};

inline httplib::Client client(int port) {
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(120, 0);
  c.set_write_timeout(120, 0);
  return c;
}

// A metric's value from /metrics (-1 when absent or the server does not answer).
inline double metric(int port, const std::string& name) {
  auto r = client(port).Get("/metrics");
  if (!r || r->status != 200) return -1;
  std::regex line("(^|\n)" + std::regex_replace(name, std::regex(R"([{}\[\]"])"), R"(\$&)") +
                  " ([0-9.e+-]+)\n");
  std::smatch m;
  return std::regex_search(r->body, m, line) ? std::stod(m[2]) : -1;
}

// Polls /metrics until name has value want; false after limit.
inline bool wait_metric(int port, const std::string& name, double want,
                        std::chrono::seconds limit = std::chrono::seconds(60)) {
  auto until = clock_type::now() + limit;
  while (clock_type::now() < until) {
    if (metric(port, name) == want) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// A raw loopback connection. rcvbuf > 0 shrinks the receive buffer (a client that stops reading
// then stalls the server's writes quickly).
class raw_connection {
 public:
  explicit raw_connection(int port, int rcvbuf = 0) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) return;
    if (rcvbuf > 0) setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) close_now();
  }
  ~raw_connection() { close_now(); }
  raw_connection(raw_connection&& o) noexcept : fd_(o.fd_), got_(std::move(o.got_)) { o.fd_ = -1; }
  raw_connection(const raw_connection&) = delete;
  raw_connection& operator=(const raw_connection&) = delete;

  bool ok() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  // False when the peer took less than all of s (it closed, or the socket broke).
  bool send_text(const std::string& s) {
    size_t at = 0;
    while (at < s.size()) {
      ssize_t n = ::send(fd_, s.data() + at, s.size() - at, MSG_NOSIGNAL);
      if (n <= 0) return false;
      at += static_cast<size_t>(n);
    }
    return true;
  }
  bool send_post(const std::string& path, const std::string& body) {
    return send_text("POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
  }
  // Reads until the received text holds what n times, the peer closes, or limit passes; returns
  // all it has read.
  std::string read_until(const std::string& what, size_t n = 1,
                         std::chrono::seconds limit = std::chrono::seconds(60)) {
    auto count = [&] {
      size_t c = 0;
      for (size_t at = got_.find(what); at != std::string::npos; at = got_.find(what, at + 1)) ++c;
      return c;
    };
    auto until = clock_type::now() + limit;
    while (count() < n && clock_type::now() < until) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 200) <= 0) continue;
      char buf[4096];
      ssize_t got = recv(fd_, buf, sizeof buf, 0);
      if (got <= 0) break;
      got_.append(buf, static_cast<size_t>(got));
    }
    return got_;
  }
  // True when there is something to read (or the peer closed), without blocking.
  bool readable() const {
    pollfd p{fd_, POLLIN, 0};
    return poll(&p, 1, 0) > 0;
  }
  // True when the peer has closed its end (EOF or an error), without blocking.
  bool peer_closed() const {
    pollfd p{fd_, POLLIN | POLLRDHUP, 0};
    if (poll(&p, 1, 0) <= 0) return false;
    if (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) return true;
    char c;
    return recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
  }
  void close_now() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
  std::string got_;
};

}  // namespace tandem::serve_child
