// `tandem serve`: an OpenAI-compatible HTTP server on the public C API (runtime/tandem.h), with
// a web chat page at /. HTTP and JSON live here; everything about models is the runtime's.
#pragma once
#include <atomic>
#include <memory>
#include <string>

#include "runtime/tandem.h"
#include "tools/serve/metrics.h"
#include "tools/serve/session_pool.h"

namespace httplib {
class Server;
}

namespace tandem::serve {

struct server_options {
  std::string model;
  std::string host = "127.0.0.1";
  int port = 8080;               // 0: any free port (the start line names it)
  std::string api_key;           // "": no authentication
  int parallel = 1;              // sessions
  int queue = -1;                // waiting requests; -1: 4 x parallel
  int n_ctx = 0;
  std::string offload = "auto";
  int n_threads = 0;
  std::string chat_template;     // "": the model's
  int timeout_s = 600;           // read/write timeout of a connection, as llama-server's --timeout
  size_t max_body = 8u << 20;    // larger request bodies get 413
};

// What the handlers share.
struct server_state {
  server_options opt;
  tandem_model* model = nullptr;
  std::string model_id;          // the name in /v1/models and in responses
  std::string model_file;
  tandem_model_info info{};
  layer_counts layers;
  std::unique_ptr<session_pool> pool;
  serve::metrics metrics;
  std::atomic<bool> stopping{false};
};

// Loads the model, listens, serves until SIGINT or SIGTERM; returns the exit status. Throws
// tandem::error for problems the user can fix (bad model, port in use).
int run_server(const server_options& opt);

// The routes (routes.cpp): everything but the generation endpoints.
void add_routes(httplib::Server& svr, server_state& s);
// POST /v1/chat/completions (chat) and /v1/completions (generation.cpp).
void add_generation_routes(httplib::Server& svr, server_state& s);

}  // namespace tandem::serve
