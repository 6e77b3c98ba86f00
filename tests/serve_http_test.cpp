// The server's HTTP/JSON layer on its own (tools/serve): request parsing, the OpenAI objects and
// their SSE framing, the Prometheus text, the session pool's prefix choice. No model, no sockets.
#include <gtest/gtest.h>

#include <future>
#include <nlohmann/json.hpp>

#include "tests/test_util.h"

#include "tools/serve/metrics.h"
#include "tools/serve/openai.h"
#include "tools/serve/request.h"
#include "tools/serve/session_pool.h"

namespace tandem::serve {
namespace {

using json = nlohmann::json;

// The api_error that parsing body throws (status 0 when it throws none).
api_error chat_error(const std::string& body) {
  try {
    parse_chat_request(body);
  } catch (const api_error& e) {
    return e;
  }
  return api_error(0, "no error");
}

TEST(ServeRequest, ChatDefaultsAndFields) {
  gen_request r = parse_chat_request(R"({"model":"m","messages":[{"role":"user","content":"hi"}]})");
  EXPECT_TRUE(r.chat);
  EXPECT_EQ(r.model, "m");
  EXPECT_FALSE(r.stream);
  EXPECT_EQ(r.max_tokens, -1);
  EXPECT_FLOAT_EQ(r.temperature, 1.0f);
  EXPECT_FLOAT_EQ(r.top_p, 1.0f);
  EXPECT_FALSE(r.seed.has_value());
  ASSERT_EQ(r.messages.size(), 1u);
  EXPECT_EQ(r.messages[0]["content"], "hi");

  r = parse_chat_request(R"({"messages":[{"role":"system","content":"s"},
      {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],
      "stream":true,"stream_options":{"include_usage":true},"max_tokens":7,
      "max_completion_tokens":9,"stop":["x","","y"],"temperature":0,"top_p":0.5,"seed":42,
      "presence_penalty":1.5,"frequency_penalty":-1,"n":1,"tools":[{"type":"function"}]})");
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_EQ(r.max_tokens, 9);  // max_completion_tokens wins over the older max_tokens
  EXPECT_EQ(r.stop, (std::vector<std::string>{"x", "y"}));
  EXPECT_FLOAT_EQ(r.temperature, 0.0f);
  EXPECT_FLOAT_EQ(r.top_p, 0.5f);
  EXPECT_EQ(r.seed, 42u);
  EXPECT_FLOAT_EQ(r.presence_penalty, 1.5f);
  EXPECT_FLOAT_EQ(r.frequency_penalty, -1.0f);
  EXPECT_EQ(r.messages[1]["content"], "ab");  // text parts joined
  EXPECT_EQ(r.tools.size(), 1u);
  EXPECT_EQ(parse_chat_request(R"({"messages":[{"role":"user","content":"x"}],"tools":[{"z":1,"a":2}]})")
                .tools.dump(),
            R"([{"z":1,"a":2}])");  // the client's key order is kept for the template
  nlohmann::ordered_json t = nlohmann::ordered_json::parse(template_input(r));
  EXPECT_EQ(t["messages"], r.messages);
  EXPECT_EQ(t["tools"], r.tools);
  EXPECT_EQ(t["add_generation_prompt"], true);

  r = parse_chat_request(R"({"messages":[{"role":"user","content":"q"}],"stop":"end","seed":-1})");
  EXPECT_EQ(r.stop, std::vector<std::string>{"end"});
  EXPECT_EQ(r.seed, 0xFFFFFFFEu);  // all ones means "random" to the runtime: a fixed seed stays fixed
}

TEST(ServeRequest, ChatErrorsNameTheField) {
  struct bad_case {
    const char* body;
    const char* param;
  };
  const bad_case cases[] = {
      {R"({"messages":[{"role":"user","content":"hi"}],"n":2})", "n"},
      {R"({})", "messages"},
      {R"({"messages":[]})", "messages"},
      {R"({"messages":"hi"})", "messages"},
      {R"({"messages":[{"role":"wizard","content":"hi"}]})", "messages[0].role"},
      {R"({"messages":[{"role":"user"}]})", "messages[0].content"},
      {R"({"messages":[{"role":"user","content":[{"type":"image_url"}]}]})", "messages[0].content"},
      {R"({"messages":[{"role":"user","content":"a"}],"max_tokens":0})", "max_tokens"},
      {R"({"messages":[{"role":"user","content":"a"}],"max_tokens":1.5})", "max_tokens"},
      {R"({"messages":[{"role":"user","content":"a"}],"temperature":3})", "temperature"},
      {R"({"messages":[{"role":"user","content":"a"}],"top_p":"x"})", "top_p"},
      {R"({"messages":[{"role":"user","content":"a"}],"stop":["a","b","c","d","e"]})", "stop"},
      {R"({"messages":[{"role":"user","content":"a"}],"stop":[1]})", "stop"},
      {R"({"messages":[{"role":"user","content":"a"}],"stream_options":{"include_usage":true}})",
       "stream_options"},
      {R"({"messages":[{"role":"user","content":"a"}],"tools":{}})", "tools"},
      {R"({"messages":[{"role":"user","content":"a"}],"seed":"7"})", "seed"},
      {R"({"messages":[{"role":"user","content":"a"}],"logprobs":true})", "logprobs"},
      {R"({"messages":[{"role":"user","content":"a"}],"stream":"yes"})", "stream"},
  };
  for (const bad_case& c : cases) {
    api_error e = chat_error(c.body);
    EXPECT_EQ(e.status, 400) << c.body;
    EXPECT_EQ(e.param, c.param) << c.body << ": " << e.what();
    EXPECT_EQ(e.type, "invalid_request_error") << c.body;
    EXPECT_FALSE(std::string(e.what()).empty());
  }
}

TEST(ServeRequest, MalformedJson) {
  for (const char* body : {"", "{", "{\"messages\": [}", "[1,2]", "\"text\"", "nul"}) {
    api_error e = chat_error(body);
    EXPECT_EQ(e.status, 400) << body;
    EXPECT_EQ(e.code, "invalid_json") << body;
  }
}

TEST(ServeRequest, Completions) {
  gen_request r = parse_completion_request(R"({"prompt":"Once upon","max_tokens":3})");
  EXPECT_FALSE(r.chat);
  EXPECT_EQ(r.prompt, "Once upon");
  EXPECT_EQ(r.max_tokens, 3);
  EXPECT_EQ(parse_completion_request(R"({"prompt":["one"]})").prompt, "one");
  for (const char* body : {R"({})", R"({"prompt":["a","b"]})", R"({"prompt":[1,2]})",
                           R"({"prompt":"a","echo":true})", R"({"prompt":"a","n":3})"}) {
    try {
      parse_completion_request(body);
      ADD_FAILURE() << "accepted " << body;
    } catch (const api_error& e) {
      EXPECT_EQ(e.status, 400) << body;
    }
  }
}

TEST(ServeOpenAI, ChunksAndSse) {
  response_ids ids{"chatcmpl-abc", 1700000000, "stories"};
  json first = chat_chunk(ids, {{"role", "assistant"}, {"content", ""}}, std::nullopt);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["id"], "chatcmpl-abc");
  EXPECT_EQ(first["created"], 1700000000);
  EXPECT_EQ(first["model"], "stories");
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  json last = chat_chunk(ids, ojson::object(), std::string("length"));
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(last["choices"][0]["delta"].empty());
  EXPECT_EQ(sse_event(json{{"a", 1}}), "data: {\"a\":1}\n\n");
  EXPECT_STREQ(sse_done(), "data: [DONE]\n\n");

  usage_info u;
  u.prompt_tokens = 10;
  u.cached_tokens = 4;
  u.completion_tokens = 5;
  json usage = usage_chunk(ids, true, u);
  EXPECT_TRUE(usage["choices"].is_array() && usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 15);
  EXPECT_EQ(usage["usage"]["prompt_tokens_details"]["cached_tokens"], 4);

  json whole = chat_completion(ids, "hello", "stop", u);
  EXPECT_EQ(whole["object"], "chat.completion");
  EXPECT_EQ(whole["choices"][0]["message"]["content"], "hello");
  EXPECT_EQ(whole["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(whole["usage"]["completion_tokens"], 5);
  EXPECT_EQ(whole["timings"]["prompt_n"], 6);
  json text = text_completion(ids, "abc", "length", u);
  EXPECT_EQ(text["object"], "text_completion");
  EXPECT_EQ(text["choices"][0]["text"], "abc");

  EXPECT_EQ(new_id("chatcmpl-").rfind("chatcmpl-", 0), 0u);
  EXPECT_EQ(new_id("x").size(), 25u);
  EXPECT_NE(new_id("x"), new_id("x"));

  json err = error_json("bad", "invalid_request_error");
  EXPECT_EQ(err["error"]["message"], "bad");
  EXPECT_TRUE(err["error"]["code"].is_null());
  EXPECT_TRUE(err["error"]["param"].is_null());
  EXPECT_EQ(error_json("m", "t", "c", "p")["error"]["param"], "p");
}

TEST(ServeMetrics, PrometheusText) {
  metrics m;
  m.count_request("/v1/chat/completions", 200);
  m.count_request("/v1/chat/completions", 200);
  m.count_request("other", 404);
  m.count_generation(10, 4, 20, 100.0, 50.0, false);
  m.count_generation(3, 0, 1, 10.0, 5.0, true);
  std::string t = m.render(2, 1, 4, layer_counts{3, 2, 1, true});
  auto has = [&](const std::string& line) { return t.find(line + "\n") != std::string::npos; };
  EXPECT_TRUE(has("tandem_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"} 2")) << t;
  EXPECT_TRUE(has("tandem_requests_total{endpoint=\"other\",status=\"404\"} 1")) << t;
  EXPECT_TRUE(has("tandem_prompt_tokens_total 13"));
  EXPECT_TRUE(has("tandem_prompt_tokens_cached_total 4"));
  EXPECT_TRUE(has("tandem_completion_tokens_total 21"));
  EXPECT_TRUE(has("tandem_generations_cancelled_total 1"));
  EXPECT_TRUE(has("tandem_generation_tokens_per_second 5.000"));
  EXPECT_TRUE(has("tandem_queue_length 2"));
  EXPECT_TRUE(has("tandem_sessions_busy 1"));
  EXPECT_TRUE(has("tandem_sessions 4"));
  EXPECT_TRUE(has("tandem_model_layers{device=\"cpu\"} 3"));
  EXPECT_TRUE(has("tandem_model_layers{device=\"gpu_resident\"} 2"));
  EXPECT_TRUE(has("tandem_model_layers{device=\"gpu_streamed\"} 1"));
  EXPECT_TRUE(has("tandem_model_output_on_gpu 1"));
  EXPECT_TRUE(has("# TYPE tandem_requests_total counter"));
}

TEST(ServePool, CommonPrefix) {
  EXPECT_EQ(session_pool::common_prefix({1, 2, 3}, {1, 2, 4}), 2u);
  EXPECT_EQ(session_pool::common_prefix({}, {1}), 0u);
  EXPECT_EQ(session_pool::common_prefix({1, 2}, {1, 2, 3}), 2u);
}

// The pool on a real model (two sessions): the longest shared prefix wins, the queue is bounded,
// a waiter gets the session that is given back, leaves when its client goes, and stop wakes all.
TEST(ServePool, PrefixChoiceQueueAndStop) {
  tandem_model_params mp = tandem_model_params_default();
  mp.n_seq_max = 2;
  mp.offload = "0";
  tandem_model* m = tandem_model_load(test::model_path("stories260K.gguf").c_str(), &mp);
  ASSERT_NE(m, nullptr) << tandem_last_error();
  {
    session_pool pool(m, 2, 1);
    int a = -1, b = -1;
    ASSERT_EQ(pool.acquire({1, 2, 3}, nullptr, &a), session_pool::outcome::ok);
    ASSERT_EQ(pool.acquire({1, 5}, nullptr, &b), session_pool::outcome::ok);
    ASSERT_NE(a, b);
    EXPECT_EQ(pool.busy(), 2);
    pool.release(a, {1, 2, 3, 9});
    pool.release(b, {1, 5, 9});
    int got = -1;
    ASSERT_EQ(pool.acquire({1, 5, 9, 7}, nullptr, &got), session_pool::outcome::ok);
    EXPECT_EQ(got, b);  // shares 3 tokens with b's cache, 1 with a's
    int other = -1;
    ASSERT_EQ(pool.acquire({1, 5, 9, 7}, nullptr, &other), session_pool::outcome::ok);
    EXPECT_EQ(other, a);  // the only free one

    // Both busy: one request may wait, the next is refused.
    auto waiter = std::async(std::launch::async, [&] {
      int i = -1;
      auto r = pool.acquire({1, 2}, nullptr, &i);
      return std::make_pair(r, i);
    });
    while (pool.queued() != 1) std::this_thread::yield();
    int refused = -1;
    EXPECT_EQ(pool.acquire({1}, nullptr, &refused), session_pool::outcome::queue_full);
    pool.release(other, {1, 2, 3});
    auto [r, i] = waiter.get();
    EXPECT_EQ(r, session_pool::outcome::ok);
    EXPECT_EQ(i, other);
    EXPECT_EQ(pool.queued(), 0);

    // A waiter whose client went away leaves the queue; stop wakes the rest.
    int gone = -1;
    EXPECT_EQ(pool.acquire({1}, [] { return true; }, &gone), session_pool::outcome::abandoned);
    auto stopped = std::async(std::launch::async, [&] {
      int j = -1;
      return pool.acquire({1}, nullptr, &j);
    });
    while (pool.queued() != 1) std::this_thread::yield();
    pool.stop();
    EXPECT_EQ(stopped.get(), session_pool::outcome::stopping);
    int late = -1;
    EXPECT_EQ(pool.acquire({1}, nullptr, &late), session_pool::outcome::stopping);
    pool.release(got, {});
    pool.release(i, {});
  }
  tandem_model_free(m);
}

}  // namespace
}  // namespace tandem::serve
