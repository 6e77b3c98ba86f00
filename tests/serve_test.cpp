// `tandem serve` over real HTTP: the server runs as a child process on a free loopback port
// (--port 0; its start line names the port), on stories260K. Every wait is a poll with a bound,
// never a sleep taken as an assertion.
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "tests/test_util.h"

namespace tandem {
namespace {

using json = nlohmann::json;
using clock_type = std::chrono::steady_clock;
const std::string k_stories = test::model_path("stories260K.gguf");

// A `tandem serve` child process, stopped with SIGTERM when the test ends.
class server_process {
 public:
  explicit server_process(std::vector<std::string> args) {
    int out[2];
    if (pipe(out) != 0) throw std::runtime_error("pipe failed");
    pid_ = fork();
    if (pid_ == 0) {
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

  int port() const { return port_; }
  const std::string& start_line() const { return start_line_; }

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

httplib::Client client(const server_process& s) {
  httplib::Client c("127.0.0.1", s.port());
  c.set_read_timeout(120, 0);
  return c;
}

json post_json(const server_process& s, const std::string& path, const json& body,
               int* status = nullptr, const httplib::Headers& headers = {}) {
  auto r = client(s).Post(path.c_str(), headers, body.dump(), "application/json");
  if (!r) return json{{"transport_error", httplib::to_string(r.error())}};
  if (status) *status = r->status;
  return json::parse(r->body, nullptr, false);
}

// The JSON objects of a server-sent-event body, and whether it ended with [DONE].
std::vector<json> sse_objects(const std::string& body, bool* done) {
  std::vector<json> out;
  *done = false;
  size_t at = 0;
  while (at < body.size()) {
    size_t end = body.find("\n\n", at);
    if (end == std::string::npos) break;
    std::string event = body.substr(at, end - at);
    at = end + 2;
    EXPECT_EQ(event.rfind("data: ", 0), 0u) << event;
    std::string data = event.substr(6);
    EXPECT_FALSE(*done) << "an event after [DONE]";
    if (data == "[DONE]") *done = true;
    else out.push_back(json::parse(data));
  }
  EXPECT_EQ(at, body.size()) << "the stream ends inside an event";
  return out;
}

// A metric's value from /metrics (-1 when absent).
double metric(const server_process& s, const std::string& name) {
  auto r = client(s).Get("/metrics");
  if (!r || r->status != 200) return -1;
  std::regex line("(^|\n)" + std::regex_replace(name, std::regex(R"([{}\[\]"])"), R"(\$&)") +
                  " ([0-9.e+-]+)\n");
  std::smatch m;
  return std::regex_search(r->body, m, line) ? std::stod(m[2]) : -1;
}

// Polls /metrics until name has value want; false after limit.
bool wait_metric(const server_process& s, const std::string& name, double want,
                 std::chrono::seconds limit = std::chrono::seconds(60)) {
  auto until = clock_type::now() + limit;
  while (clock_type::now() < until) {
    if (metric(s, name) == want) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// A raw connection, for what httplib::Client does not do: go away mid-stream, stop reading.
class raw_connection {
 public:
  raw_connection(int port, int rcvbuf = 0) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    if (rcvbuf > 0) setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) close_now();
  }
  ~raw_connection() { close_now(); }
  bool ok() const { return fd_ >= 0; }
  void send_text(const std::string& s) { (void)!::send(fd_, s.data(), s.size(), MSG_NOSIGNAL); }
  void send_post(const std::string& path, const std::string& body) {
    send_text("POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
  }
  // Reads until the received text holds what n times (at most limit); returns all it read.
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
  void close_now() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
  std::string got_;
};

json chat_body(const std::string& user, int max_tokens, bool stream = false) {
  json b = {{"model", "stories260K"},
            {"messages", json::array({{{"role", "user"}, {"content", user}}})},
            {"temperature", 0},
            {"max_tokens", max_tokens}};
  if (stream) b["stream"] = true;
  return b;
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

class Serve : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new server_process({"-m", k_stories, "--port", "0"});
  }
  static void TearDownTestSuite() {
    EXPECT_EQ(server_->stop(SIGTERM), 0) << "SIGTERM must stop the server cleanly (exit 0)";
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override { ASSERT_GT(server_->port(), 0) << "start line: " << server_->start_line(); }
  static server_process* server_;
};
server_process* Serve::server_ = nullptr;

TEST_F(Serve, StartLineHealthModelsAndPage) {
  EXPECT_NE(server_->start_line().find("tandem serve: listening on http://127.0.0.1:"), std::string::npos);
  EXPECT_NE(server_->start_line().find("1 session)"), std::string::npos) << server_->start_line();
  auto h = client(*server_).Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  auto m = client(*server_).Get("/v1/models");
  ASSERT_TRUE(m);
  ASSERT_EQ(m->status, 200);
  json j = json::parse(m->body);
  EXPECT_EQ(j["object"], "list");
  ASSERT_EQ(j["data"].size(), 1u);
  EXPECT_EQ(j["data"][0]["object"], "model");
  EXPECT_FALSE(j["data"][0]["id"].get<std::string>().empty());
  EXPECT_EQ(j["data"][0]["meta"]["n_layer"], 5);
  const json& pl = j["data"][0]["meta"]["placement"];
  EXPECT_EQ(pl["cpu_layers"].get<int>() + pl["gpu_resident_layers"].get<int>() +
                pl["gpu_streamed_layers"].get<int>(),
            5);
  auto page = client(*server_).Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->get_header_value("Content-Type").find("text/html"), std::string::npos);
  EXPECT_NE(page->body.find("<title>Tandem chat</title>"), std::string::npos);
  for (const char* asset : {"/app.js", "/style.css", "/vendor/marked.umd.js", "/vendor/purify.min.js"}) {
    auto a = client(*server_).Get(asset);
    ASSERT_TRUE(a) << asset;
    EXPECT_EQ(a->status, 200) << asset;
    EXPECT_GT(a->body.size(), 1000u) << asset;
  }
}

// Greedy chat: one JSON object and the stream carry the same text, and both equal `tandem run`
// on the prompt the chat template rendered.
TEST_F(Serve, GreedyStreamingEqualsNonStreamingEqualsRun) {
  int status = 0;
  json whole = post_json(*server_, "/v1/chat/completions", chat_body("Tell me a story.", 40), &status);
  ASSERT_EQ(status, 200) << whole.dump();
  EXPECT_EQ(whole["object"], "chat.completion");
  EXPECT_EQ(whole["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  EXPECT_TRUE(whole["created"].is_number_integer());
  const std::string text = whole["choices"][0]["message"]["content"];
  EXPECT_EQ(whole["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(whole["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(whole["usage"]["completion_tokens"], 40);
  EXPECT_EQ(whole["usage"]["total_tokens"].get<int>(),
            whole["usage"]["prompt_tokens"].get<int>() + 40);
  EXPECT_TRUE(whole["usage"]["prompt_tokens_details"]["cached_tokens"].is_number_integer());
  ASSERT_FALSE(text.empty());

  json sb = chat_body("Tell me a story.", 40, true);
  sb["stream_options"] = {{"include_usage", true}};
  auto r = client(*server_).Post("/v1/chat/completions", sb.dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  EXPECT_NE(r->get_header_value("Content-Type").find("text/event-stream"), std::string::npos);
  bool done = false;
  std::vector<json> ev = sse_objects(r->body, &done);
  EXPECT_TRUE(done) << "the stream must end with data: [DONE]";
  ASSERT_GE(ev.size(), 3u);
  const std::string id = ev[0]["id"];
  EXPECT_EQ(id.rfind("chatcmpl-", 0), 0u);
  EXPECT_EQ(ev[0]["choices"][0]["delta"], (json{{"role", "assistant"}, {"content", ""}}));
  std::string streamed;
  for (size_t i = 0; i + 2 < ev.size(); ++i) {
    EXPECT_EQ(ev[i]["object"], "chat.completion.chunk");
    EXPECT_EQ(ev[i]["id"], id);
    EXPECT_TRUE(ev[i]["choices"][0]["finish_reason"].is_null());
    if (i > 0) streamed += ev[i]["choices"][0]["delta"]["content"].get<std::string>();
  }
  const json& last = ev[ev.size() - 2];
  EXPECT_TRUE(last["choices"][0]["delta"].empty()) << last.dump();
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  const json& usage = ev.back();
  EXPECT_TRUE(usage["choices"].is_array() && usage["choices"].empty()) << usage.dump();
  EXPECT_EQ(usage["usage"]["completion_tokens"], 40);
  EXPECT_EQ(usage["usage"]["prompt_tokens"], whole["usage"]["prompt_tokens"]);
  EXPECT_EQ(streamed, text);

  json rendered = post_json(*server_, "/apply-template",
                            {{"messages", {{{"role", "user"}, {"content", "Tell me a story."}}}}}, &status);
  ASSERT_EQ(status, 200) << rendered.dump();
  const std::string prompt = rendered["prompt"];
  auto run = test::run_cli("run -m " + k_stories + " -p " + shell_quote(prompt) + " -n 40 --temp 0");
  ASSERT_EQ(run.status, 0) << run.err;
  EXPECT_EQ(run.out, prompt + text + "\n");
}

TEST_F(Serve, CompletionsMatchTheGoldenText) {
  const std::string golden = test::read_file(test::model_path("golden/stories260K_t0_n64_once.txt"));
  const std::string prompt = "Once upon a time";
  ASSERT_EQ(golden.rfind(prompt, 0), 0u);
  int status = 0;
  json j = post_json(*server_, "/v1/completions",
                     {{"prompt", prompt}, {"max_tokens", 60}, {"temperature", 0}}, &status);
  ASSERT_EQ(status, 200) << j.dump();
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["id"].get<std::string>().rfind("cmpl-", 0), 0u);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  std::string want = golden.substr(prompt.size());
  if (!want.empty() && want.back() == '\n') want.pop_back();
  EXPECT_EQ(j["choices"][0]["text"], want);

  auto r = client(*server_).Post(
      "/v1/completions",
      json{{"prompt", prompt}, {"max_tokens", 60}, {"temperature", 0}, {"stream", true}}.dump(),
      "application/json");
  ASSERT_TRUE(r);
  bool done = false;
  std::string streamed;
  std::vector<json> ev = sse_objects(r->body, &done);
  EXPECT_TRUE(done);
  for (const json& e : ev) {
    EXPECT_EQ(e["object"], "text_completion");
    streamed += e["choices"][0]["text"].get<std::string>();
  }
  EXPECT_EQ(streamed, want);
  EXPECT_EQ(ev.back()["choices"][0]["finish_reason"], "length");
}

TEST_F(Serve, SecondTurnReusesTheCachedPrompt) {
  int status = 0;
  json first = post_json(*server_, "/v1/chat/completions", chat_body("Where is the cat?", 24), &status);
  ASSERT_EQ(status, 200) << first.dump();
  const int first_prompt = first["usage"]["prompt_tokens"];
  json second_body = chat_body("Where is the cat?", 24);
  second_body["messages"].push_back({{"role", "assistant"}, {"content", first["choices"][0]["message"]["content"]}});
  second_body["messages"].push_back({{"role", "user"}, {"content", "And the dog?"}});
  json second = post_json(*server_, "/v1/chat/completions", second_body, &status);
  ASSERT_EQ(status, 200) << second.dump();
  const int cached = second["usage"]["prompt_tokens_details"]["cached_tokens"];
  const int prompt = second["usage"]["prompt_tokens"];
  // The whole first prompt is a prefix of the second: none of it is evaluated again.
  EXPECT_GE(cached, first_prompt) << second.dump();
  EXPECT_LT(cached, prompt);
  EXPECT_EQ(second["timings"]["cache_n"], cached);
}

TEST_F(Serve, FinishReasons) {
  int status = 0;
  json base = post_json(*server_, "/v1/chat/completions", chat_body("A story about a dog.", 30), &status);
  ASSERT_EQ(status, 200);
  const std::string text = base["choices"][0]["message"]["content"];
  EXPECT_EQ(base["choices"][0]["finish_reason"], "length");

  json five = post_json(*server_, "/v1/chat/completions", chat_body("A story about a dog.", 5), &status);
  EXPECT_EQ(five["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(five["usage"]["completion_tokens"], 5);
  EXPECT_EQ(text.rfind(five["choices"][0]["message"]["content"].get<std::string>(), 0), 0u);

  // A stop string from the middle of the greedy text: the reply ends just before it.
  const size_t cut = text.find(' ', text.size() / 2);
  ASSERT_NE(cut, std::string::npos) << text;
  const std::string stop = text.substr(cut, std::min<size_t>(4, text.size() - cut));
  json b = chat_body("A story about a dog.", 30);
  b["stop"] = json::array({"\x01never", stop});
  json stopped = post_json(*server_, "/v1/chat/completions", b, &status);
  ASSERT_EQ(status, 200) << stopped.dump();
  EXPECT_EQ(stopped["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(stopped["choices"][0]["message"]["content"], text.substr(0, text.find(stop)));
}

TEST_F(Serve, ErrorsAreOpenAIShaped) {
  auto check = [&](int status, const std::string& body, const std::string& code) {
    json j = json::parse(body, nullptr, false);
    ASSERT_TRUE(j.is_object()) << body;
    ASSERT_TRUE(j.contains("error")) << body;
    EXPECT_TRUE(j["error"]["message"].is_string()) << body;
    EXPECT_TRUE(j["error"]["type"].is_string()) << body;
    EXPECT_TRUE(j["error"].contains("code")) << body;
    if (!code.empty()) {
      EXPECT_EQ(j["error"]["code"], code) << status << " " << body;
    }
  };
  auto c = client(*server_);
  auto r = c.Post("/v1/chat/completions", "{\"messages\": [", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  check(400, r->body, "invalid_json");

  r = c.Post("/v1/chat/completions", R"({"messages":[{"role":"user","content":"x"}],"n":2})", "application/json");
  EXPECT_EQ(r->status, 400);
  check(400, r->body, "invalid_value");
  EXPECT_EQ(json::parse(r->body)["error"]["param"], "n");

  std::string long_text;
  for (int i = 0; i < 3000; ++i) long_text += "dog ";
  r = c.Post("/v1/chat/completions", chat_body(long_text, 4).dump(), "application/json");
  EXPECT_EQ(r->status, 400);
  check(400, r->body, "context_length_exceeded");

  r = c.Get("/v1/nothing");
  EXPECT_EQ(r->status, 404);
  check(404, r->body, "not_found");

  r = c.Get("/v1/chat/completions");
  EXPECT_EQ(r->status, 405);
  EXPECT_EQ(r->get_header_value("Allow"), "POST");
  check(405, r->body, "method_not_allowed");

  // A body over the 8 MiB limit is read and discarded in small pieces, then refused; the
  // connection stays usable (the body is not taken for the next request).
  raw_connection big(server_->port());
  ASSERT_TRUE(big.ok());
  const size_t size = (8u << 20) + 1;
  big.send_text("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "Content-Length: " + std::to_string(size) + "\r\n\r\n");
  const std::string piece(1 << 16, ' ');
  for (size_t sent = 0; sent < size; sent += piece.size())
    big.send_text(piece.substr(0, std::min(piece.size(), size - sent)));
  std::string got = big.read_until("}}");
  EXPECT_EQ(got.rfind("HTTP/1.1 413", 0), 0u) << got;
  EXPECT_NE(got.find("request_too_large"), std::string::npos) << got;
  big.send_text("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
  got = big.read_until("\"ok\"");
  EXPECT_NE(got.find("HTTP/1.1 200"), std::string::npos) << got;
}

TEST(ServeAuth, ApiKey) {
  server_process s({"-m", k_stories, "--port", "0", "--api-key", "sekret"});
  ASSERT_GT(s.port(), 0) << s.start_line();
  auto c = client(s);
  auto r = c.Get("/v1/models");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(json::parse(r->body)["error"]["code"], "invalid_api_key");
  r = c.Get("/v1/models", {{"Authorization", "Bearer wrong"}});
  EXPECT_EQ(r->status, 401);
  int status = 0;
  post_json(s, "/v1/chat/completions", chat_body("hi", 2), &status, {{"Authorization", "Bearer wrong"}});
  EXPECT_EQ(status, 401);
  r = c.Get("/v1/models", {{"Authorization", "Bearer sekret"}});
  EXPECT_EQ(r->status, 200);
  post_json(s, "/v1/chat/completions", chat_body("hi", 2), &status, {{"Authorization", "Bearer sekret"}});
  EXPECT_EQ(status, 200);
  EXPECT_EQ(c.Get("/health")->status, 200);  // for load balancers
  EXPECT_EQ(c.Get("/")->status, 200);        // the page asks for the key itself
  EXPECT_EQ(s.stop(SIGINT), 0);
}

// Sessions held by clients that stop reading or go away; the bounded queue.
class ServeBusy : public ::testing::Test {
 protected:
  // A context long enough that an unread or abandoned stream cannot simply run to its end first.
  server_process s{{"-m", k_stories, "--port", "0", "--parallel", "1", "--queue", "0", "-c", "8192"}};
  const std::string long_stream = chat_body("Tell me a long story.", 8000, true).dump();
};

TEST_F(ServeBusy, DisconnectMidStreamFreesTheSession) {
  ASSERT_GT(s.port(), 0) << s.start_line();
  {
    raw_connection c(s.port());
    ASSERT_TRUE(c.ok());
    c.send_post("/v1/chat/completions", long_stream);
    // The role chunk, then at least one piece of text.
    std::string got = c.read_until("data: {", 2);
    ASSERT_NE(got.find("HTTP/1.1 200"), std::string::npos) << got;
    ASSERT_EQ(metric(s, "tandem_sessions_busy"), 1);
  }  // the client goes away mid-stream
  ASSERT_TRUE(wait_metric(s, "tandem_sessions_busy", 0)) << "the session was not freed";
  EXPECT_EQ(metric(s, "tandem_generations_cancelled_total"), 1);
  EXPECT_LT(metric(s, "tandem_completion_tokens_total"), 8000);
  // The single session serves the next request.
  int status = 0;
  json j = post_json(s, "/v1/chat/completions", chat_body("Hello", 4), &status);
  EXPECT_EQ(status, 200) << j.dump();
  EXPECT_EQ(s.stop(SIGTERM), 0);
}

TEST_F(ServeBusy, QueueFullIs503) {
  ASSERT_GT(s.port(), 0) << s.start_line();
  // A client that reads the first chunk and then nothing: with a tiny receive window the
  // server's writes block, and the one session stays busy until the client goes.
  raw_connection holder(s.port(), 2048);
  ASSERT_TRUE(holder.ok());
  holder.send_post("/v1/chat/completions", long_stream);
  holder.read_until("data: {");
  ASSERT_TRUE(wait_metric(s, "tandem_sessions_busy", 1));
  int status = 0;
  json j = post_json(s, "/v1/chat/completions", chat_body("Hello", 4), &status);
  EXPECT_EQ(status, 503) << j.dump();
  EXPECT_EQ(j["error"]["code"], "queue_full") << j.dump();
  EXPECT_EQ(metric(s, "tandem_sessions_busy"), 1) << "the long request ended before the check";
  holder.close_now();
  ASSERT_TRUE(wait_metric(s, "tandem_sessions_busy", 0));
  post_json(s, "/v1/chat/completions", chat_body("Hello", 4), &status);
  EXPECT_EQ(status, 200);
  // SIGINT with nothing running: a clean stop.
  EXPECT_EQ(s.stop(SIGINT), 0);
}

TEST_F(ServeBusy, StopsCleanlyWhileGenerating) {
  ASSERT_GT(s.port(), 0) << s.start_line();
  raw_connection c(s.port());
  c.send_post("/v1/chat/completions", long_stream);
  c.read_until("data: {");
  ASSERT_EQ(metric(s, "tandem_sessions_busy"), 1);
  EXPECT_EQ(s.stop(SIGTERM), 0) << "SIGTERM cancels the generation and exits 0";
}

// --chat-template FILE, and a request's tools and tool calls reach the template: the prompt is
// the one Python's jinja2 renders for the same conversation.
TEST(ServeTemplate, ToolsReachTheChatTemplate) {
  const std::string name = "Qwen-Qwen2.5-7B-Instruct";
  server_process s({"-m", k_stories, "--port", "0", "--chat-template",
                    test::model_path("templates/" + name + ".jinja")});
  ASSERT_GT(s.port(), 0) << s.start_line();
  for (const char* c : {"tools", "toolcall"}) {
    // Ordered, as a client sends them: the template prints the tools in their own key order.
    using ojson = nlohmann::ordered_json;
    ojson cs = ojson::parse(test::read_file(test::model_path(std::string("templates/cases/") + c + ".json")));
    ojson body = {{"messages", cs["messages"]}, {"tools", cs["tools"]}};
    int status = 0;
    auto res = client(s).Post("/apply-template", body.dump(), "application/json");
    ASSERT_TRUE(res);
    status = res->status;
    json r = json::parse(res->body);
    ASSERT_EQ(status, 200) << c << ": " << r.dump();
    EXPECT_EQ(r["prompt"], test::read_file(test::model_path("templates/golden/" + name + "." + c + ".txt")))
        << c;
    // The same conversation generates (the template's control tokens are plain text to this
    // vocabulary, which is fine for a test of the plumbing).
    body["max_tokens"] = 2;
    res = client(s).Post("/v1/chat/completions", body.dump(), "application/json");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200) << c << ": " << res->body;
  }
  EXPECT_EQ(s.stop(SIGTERM), 0);
}

TEST(ServePort, InUseSaysSo) {
  server_process first({"-m", k_stories, "--port", "0"});
  ASSERT_GT(first.port(), 0);
  auto r = test::run_cli("serve -m " + k_stories + " --port " + std::to_string(first.port()));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find(std::to_string(first.port())), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--port"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

}  // namespace
}  // namespace tandem
