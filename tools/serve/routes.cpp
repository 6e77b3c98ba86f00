// The routes other than generation: health, models, props, metrics, the chat template, the web
// page; and what every request goes through first (CORS, 404, 405, the API key) and last
// (errors as OpenAI-style JSON, the request counters).
#include <fmt/format.h>
#include <httplib.h>

#include <cstdlib>
#include <map>
#include <set>

#include "runtime/error.h"
#include "tools/serve/openai.h"
#include "tools/serve/request.h"
#include "tools/serve/server.h"
#include "tools/serve/web_assets.h"

namespace tandem::serve {
namespace {

using json = nlohmann::json;

void send_error(httplib::Response& res, int status, const std::string& message,
                const std::string& type, const std::string& code = "",
                const std::string& param = "") {
  res.status = status;
  res.set_content(error_json(message, type, code, param).dump(), "application/json");
}

std::string take(char* s) {
  std::string r = s ? s : "";
  tandem_string_free(s);
  return r;
}

// path -> the methods it answers (HEAD goes with GET).
const std::map<std::string, std::set<std::string>>& api_routes() {
  static const std::map<std::string, std::set<std::string>> routes = {
      {"/health", {"GET", "HEAD"}},
      {"/v1/models", {"GET", "HEAD"}},
      {"/props", {"GET", "HEAD"}},
      {"/metrics", {"GET", "HEAD"}},
      {"/v1/chat/completions", {"POST"}},
      {"/v1/completions", {"POST"}},
      {"/apply-template", {"POST"}},
  };
  return routes;
}

// The page, its files and /health are open to all; the API wants the key when one is set.
bool needs_key(const std::string& path) { return path != "/health" && !find_web_asset(path); }

bool authorized(const server_state& s, const httplib::Request& req) {
  if (s.opt.api_key.empty()) return true;
  const std::string auth = req.get_header_value("Authorization");
  const std::string want = "Bearer " + s.opt.api_key;
  // Compare in time independent of where the strings differ.
  if (auth.size() != want.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < want.size(); ++i) diff |= static_cast<unsigned char>(auth[i] ^ want[i]);
  return diff == 0;
}

httplib::Server::HandlerResponse before_routing(server_state& s, const httplib::Request& req,
                                                httplib::Response& res) {
  using R = httplib::Server::HandlerResponse;
  if (req.method == "OPTIONS") {  // a browser's CORS preflight
    res.status = 204;
    res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    res.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type");
    res.set_header("Access-Control-Max-Age", "86400");
    return R::Handled;
  }
  std::set<std::string> allowed;
  if (auto it = api_routes().find(req.path); it != api_routes().end()) allowed = it->second;
  else if (find_web_asset(req.path)) allowed = {"GET", "HEAD"};
  if (allowed.empty()) {
    send_error(res, 404,
               fmt::format("there is no {} {} here; the API is GET /v1/models, POST "
                           "/v1/chat/completions and POST /v1/completions",
                           req.method, req.path),
               "invalid_request_error", "not_found");
    return R::Handled;
  }
  if (!allowed.count(req.method)) {
    std::string list;
    for (const auto& m : allowed) list += (list.empty() ? "" : ", ") + m;
    res.set_header("Allow", list);
    send_error(res, 405, fmt::format("{} takes {}, not {}", req.path, list, req.method),
               "invalid_request_error", "method_not_allowed");
    return R::Handled;
  }
  // A body over the limit with a Content-Length is left to cpp-httplib (set_payload_max_length):
  // it reads and discards the body in small pieces, then answers 413 (on_error below). Answered
  // here from the header, the unread body would be parsed as the next request's line on the kept
  // connection and held in memory whole.
  // cpp-httplib (0.11) holds a chunked body to the size limit only when it has a Content-Length:
  // a chunked one would be read into memory whatever its size. Refused before it is read.
  if (req.has_header("Transfer-Encoding") &&
      req.get_header_value("Transfer-Encoding") != "identity") {
    res.set_header("Connection", "close");
    send_error(res, 411,
               "chunked request bodies are not accepted; send the body with a Content-Length",
               "invalid_request_error", "length_required");
    return R::Handled;
  }
  if (needs_key(req.path) && !authorized(s, req)) {
    res.set_header("WWW-Authenticate", "Bearer");
    send_error(res, 401,
               req.has_header("Authorization")
                   ? "the API key is wrong; send the server's --api-key as "
                     "'Authorization: Bearer KEY'"
                   : "an API key is required; send the server's --api-key as "
                     "'Authorization: Bearer KEY'",
               "invalid_request_error", "invalid_api_key");
    return R::Handled;
  }
  return R::Unhandled;
}

json placement_json(const server_state& s) {
  return {{"cpu_layers", s.layers.cpu},
          {"gpu_resident_layers", s.layers.gpu_resident},
          {"gpu_streamed_layers", s.layers.gpu_streamed},
          {"output_on_gpu", s.layers.output_on_gpu}};
}

void get_models(server_state& s, httplib::Response& res) {
  json model = {{"id", s.model_id},
                {"object", "model"},
                {"created", 0},
                {"owned_by", "tandem"},
                {"meta",
                 {{"n_ctx", s.info.n_ctx},
                  {"n_ctx_train", s.info.n_ctx_train},
                  {"n_params", s.info.n_params},
                  {"n_vocab", s.info.n_vocab},
                  {"n_layer", s.info.n_layer},
                  {"placement", placement_json(s)}}}};
  res.set_content(json{{"object", "list"}, {"data", json::array({model})}}.dump(),
                  "application/json");
}

void get_props(server_state& s, httplib::Response& res) {
  json j = {{"model", s.model_id},
            {"model_path", s.model_file},
            {"n_ctx", s.info.n_ctx},
            {"total_slots", s.pool->size()},
            {"queue", s.pool->queued()},
            {"busy_slots", s.pool->busy()},
            {"placement", placement_json(s)},
            {"plan", take(tandem_model_plan(s.model))},
            {"notes", take(tandem_model_notes(s.model))},
            {"chat_template", take(tandem_model_chat_template(s.model))},
            {"version", tandem_version()}};
  res.set_content(j.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

void post_apply_template(server_state& s, const httplib::Request& req, httplib::Response& res) {
  gen_request r = parse_chat_request(req.body);
  char* text = tandem_chat_apply_json(s.model, template_input(r).c_str());
  if (!text)
    throw api_error(400, fmt::format("the model's chat template refused the messages: {}",
                                     tandem_last_error()),
                    "invalid_request_error", "template_error", "messages");
  res.set_content(json{{"prompt", take(text)}}.dump(-1, ' ', false, json::error_handler_t::replace),
                  "application/json");
}

void on_exception(const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
  try {
    std::rethrow_exception(ep);
  } catch (const api_error& e) {
    send_error(res, e.status, e.what(), e.type, e.code, e.param);
  } catch (const tandem::error& e) {
    send_error(res, 400, e.what(), "invalid_request_error");
  } catch (const std::exception& e) {
    send_error(res, 500, fmt::format("internal error: {}", e.what()), "server_error");
  } catch (...) {
    send_error(res, 500, "internal error", "server_error");
  }
}

// Errors that cpp-httplib answers by itself (413 body too large, 400 bad request line) get the
// same JSON shape as the rest.
httplib::Server::HandlerResponse on_error(const httplib::Request& req, httplib::Response& res) {
  if (!res.body.empty() || res.status == 499) return httplib::Server::HandlerResponse::Unhandled;
  if (res.status == 413)
    send_error(res, 413, "the request body is too large for this server", "invalid_request_error",
               "request_too_large");
  else
    send_error(res, res.status, fmt::format("{} {} failed with HTTP status {}", req.method, req.path, res.status),
               res.status >= 500 ? "server_error" : "invalid_request_error");
  return httplib::Server::HandlerResponse::Handled;
}

}  // namespace

void add_routes(httplib::Server& svr, server_state& s) {
  svr.set_default_headers({{"Access-Control-Allow-Origin", "*"}});
  svr.set_pre_routing_handler(
      [&s](const httplib::Request& req, httplib::Response& res) { return before_routing(s, req, res); });
  svr.set_exception_handler(on_exception);
  svr.set_error_handler(httplib::Server::HandlerWithResponse(on_error));
  svr.set_logger([&s](const httplib::Request& req, const httplib::Response& res) {
    const bool known = api_routes().count(req.path) || find_web_asset(req.path);
    s.metrics.count_request(known ? req.path : "other", res.status);
  });

  svr.Get("/health", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"status":"ok"})", "application/json");
  });
  svr.Get("/v1/models", [&s](const httplib::Request&, httplib::Response& res) { get_models(s, res); });
  svr.Get("/props", [&s](const httplib::Request&, httplib::Response& res) { get_props(s, res); });
  svr.Get("/metrics", [&s](const httplib::Request&, httplib::Response& res) {
    res.set_content(s.metrics.render(s.pool->queued(), s.pool->busy(), s.pool->size(), s.layers),
                    "text/plain; version=0.0.4; charset=utf-8");
  });
  svr.Post("/apply-template", [&s](const httplib::Request& req, httplib::Response& res) {
    post_apply_template(s, req, res);
  });
  for (size_t i = 0; i < k_web_asset_count; ++i) {
    const web_asset* a = &k_web_assets[i];
    svr.Get(a->path, [a](const httplib::Request&, httplib::Response& res) {
      res.set_content(reinterpret_cast<const char*>(a->data), a->size, a->content_type);
      // The page is part of the binary: a new binary may bring a new page.
      res.set_header("Cache-Control", "no-cache");
    });
  }
}

}  // namespace tandem::serve
