/* The public C API from plain C11 (-std=c11 -Wall -Wextra -Werror), using only tandem.h:
 * version, a bad path, tokens, greedy generation against the golden text, two sessions on two
 * threads, a stop string, max_tokens, cancel and BUSY from another thread, a prompt longer than
 * the context, NULL arguments, the chat template.
 * Usage: c_api_test MODELS_DIR (the directory with stories260K.gguf and golden/). */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>

#include <tandem.h>

static int failures = 0;

#define CHECK(cond)                                                                    \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      fprintf(stderr, "%s:%d: check failed: %s (last error: %s)\n", __FILE__, __LINE__, \
              #cond, tandem_last_error());                                             \
      ++failures;                                                                      \
    }                                                                                  \
  } while (0)

/* ---- collected text ---------------------------------------------------------------------- */

typedef struct text_buf {
  char data[8192];
  size_t len;
  int calls;
} text_buf;

static bool collect(const char* text, size_t len, int32_t token, void* user_data) {
  text_buf* b = (text_buf*)user_data;
  (void)token;
  if (b->len + len < sizeof b->data) {
    memcpy(b->data + b->len, text, len);
    b->len += len;
    b->data[b->len] = '\0';
  }
  ++b->calls;
  return true;
}

static char* read_file(const char* path) {
  FILE* f = fopen(path, "rb");
  if (!f) return NULL;
  static char buf[8192];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  return buf;
}

/* ---- load progress ------------------------------------------------------------------------- */

typedef struct progress_log {
  int calls;
  float last;
  bool monotonic;
  int cancel_at; /* cancel on this call (0: never) */
} progress_log;

static bool on_progress(float p, void* user_data) {
  progress_log* l = (progress_log*)user_data;
  if (p < l->last) l->monotonic = false;
  l->last = p;
  ++l->calls;
  return l->cancel_at == 0 || l->calls < l->cancel_at;
}

static tandem_generate_params greedy(int max_tokens, text_buf* out) {
  tandem_generate_params p = tandem_generate_params_default();
  p.sampling.temperature = 0.0f;
  p.max_tokens = max_tokens;
  p.on_token = collect;
  p.user_data = out;
  return p;
}

/* ---- two sessions on two threads --------------------------------------------------------- */

typedef struct job {
  tandem_session* session;
  text_buf text;
  tandem_status status;
  tandem_result result;
} job;

static int run_job(void* arg) {
  job* j = (job*)arg;
  tandem_generate_params p = greedy(60, &j->text);
  j->status = tandem_generate(j->session, "Once upon a time", &p, &j->result);
  return 0;
}

/* ---- cancel and BUSY from another thread ------------------------------------------------- */

typedef struct cancel_state {
  tandem_session* session;
  atomic_int tokens;      /* tokens the generation has shown */
  atomic_bool done;       /* the other thread has tried BUSY and cancelled */
  tandem_status busy_status;
} cancel_state;

/* Blocks the generation after its first piece until the other thread has acted, so that the
 * cancel lands while it runs, at a known point. */
static bool hold_after_first(const char* text, size_t len, int32_t token, void* user_data) {
  cancel_state* s = (cancel_state*)user_data;
  (void)text, (void)len, (void)token;
  if (atomic_fetch_add(&s->tokens, 1) == 0)
    while (!atomic_load(&s->done)) thrd_yield();
  return true;
}

static int canceller(void* arg) {
  cancel_state* s = (cancel_state*)arg;
  while (atomic_load(&s->tokens) == 0) thrd_yield();
  text_buf ignored = {{0}, 0, 0};
  tandem_generate_params p = greedy(4, &ignored);
  s->busy_status = tandem_generate(s->session, "Once", &p, NULL);
  tandem_session_cancel(s->session);
  atomic_store(&s->done, true);
  return 0;
}

static bool refuse(const char* text, size_t len, int32_t token, void* user_data) {
  (void)text, (void)len, (void)token;
  ++*(int*)user_data;
  return false;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s MODELS_DIR\n", argv[0]);
    return 2;
  }
  char model_path[4096], golden_path[4096];
  snprintf(model_path, sizeof model_path, "%s/stories260K.gguf", argv[1]);
  snprintf(golden_path, sizeof golden_path, "%s/golden/stories260K_t0_n64_once.txt", argv[1]);

  CHECK(strcmp(tandem_version(), TANDEM_VERSION_STRING) == 0);
  CHECK(strcmp(tandem_finish_reason_name(TANDEM_FINISH_EOG), "stop") == 0);
  CHECK(strcmp(tandem_finish_reason_name(TANDEM_FINISH_CONTEXT), "length") == 0);

  /* A bad path: NULL and a message naming the file. */
  tandem_model* bad = tandem_model_load("/nonexistent/model.gguf", NULL);
  CHECK(bad == NULL);
  CHECK(strstr(tandem_last_error(), "/nonexistent/model.gguf") != NULL);

  /* A load cancelled by its progress callback. */
  tandem_model_params params = tandem_model_params_default();
  progress_log cancel_log = {0, 0.0f, true, 2};
  params.progress = on_progress;
  params.progress_user_data = &cancel_log;
  CHECK(tandem_model_load(model_path, &params) == NULL);
  CHECK(strstr(tandem_last_error(), "cancel") != NULL);

  progress_log log = {0, 0.0f, true, 0};
  params.progress_user_data = &log;
  params.n_seq_max = 2;
  params.n_threads = 2;
  tandem_model* model = tandem_model_load(model_path, &params);
  CHECK(model != NULL);
  if (!model) return 1;
  CHECK(log.calls >= 3 && log.monotonic && log.last == 1.0f);

  tandem_model_info info = tandem_model_get_info(model);
  CHECK(info.n_vocab == 512 && info.n_layer == 5 && info.n_embd == 64 && info.bos == 1);
  CHECK(info.n_ctx == 2048 && info.n_params > 0);
  char* name = tandem_model_name(model);
  char* arch = tandem_model_arch(model);
  CHECK(name && strlen(name) > 0);
  CHECK(arch && strcmp(arch, "llama") == 0);
  tandem_string_free(name);
  tandem_string_free(arch);
  tandem_placement pl = tandem_model_placement(model);
  CHECK(pl.n_layer == 5 && pl.cpu_layers + pl.gpu_resident_layers + pl.gpu_streamed_layers == 5);
  char* plan = tandem_model_plan(model);
  CHECK(plan && strlen(plan) > 0);
  tandem_string_free(plan);

  /* Tokens: the golden prompt ids, a short buffer, the round trip. */
  const char* prompt = "Once upon a time";
  int32_t ids[16];
  CHECK(tandem_tokenize(model, prompt, strlen(prompt), ids, 2, true, false) == 5);
  int32_t n = tandem_tokenize(model, prompt, strlen(prompt), ids, 16, true, false);
  CHECK(n == 5 && ids[0] == 1 && ids[1] == 403 && ids[4] == 378);
  char* back = tandem_detokenize(model, ids, n, false);
  CHECK(back && strcmp(back, prompt) == 0);
  tandem_string_free(back);
  int32_t out_of_range = 100000;
  CHECK(tandem_detokenize(model, &out_of_range, 1, false) == NULL);
  CHECK(strlen(tandem_last_error()) > 0);
  CHECK(tandem_token_is_eog(model, info.eos));
  CHECK(!tandem_token_is_eog(model, 403));

  /* Greedy generation equals the golden text (the file is the prompt, the 60 tokens and a
   * newline, as `tandem run` prints it). */
  tandem_session* a = tandem_session_create(model);
  tandem_session* b = tandem_session_create(model);
  CHECK(a && b);
  CHECK(tandem_session_create(model) == NULL); /* n_seq_max = 2 */
  CHECK(strstr(tandem_last_error(), "sessions") != NULL);
  text_buf text = {{0}, 0, 0};
  tandem_generate_params gp = greedy(60, &text);
  tandem_result res;
  CHECK(tandem_generate(a, prompt, &gp, &res) == TANDEM_OK);
  CHECK(res.finish == TANDEM_FINISH_LENGTH && res.completion_tokens == 60);
  CHECK(res.prompt_tokens == 5 && res.cached_tokens == 0);
  const char* golden = read_file(golden_path);
  CHECK(golden != NULL);
  char want[16384];
  snprintf(want, sizeof want, "%s%s\n", prompt, text.data);
  if (golden && strcmp(want, golden) != 0) {
    fprintf(stderr, "greedy text differs from the golden file:\n%s\n---\n%s\n", want, golden);
    ++failures;
  }
  tandem_result last = tandem_session_last_result(a);
  CHECK(last.finish == TANDEM_FINISH_LENGTH && last.completion_tokens == 60);

  /* The same prompt again: all but its last token come from the cache. */
  text_buf again = {{0}, 0, 0};
  gp = greedy(60, &again);
  CHECK(tandem_generate(a, prompt, &gp, &res) == TANDEM_OK);
  CHECK(res.cached_tokens == 4 && strcmp(again.data, text.data) == 0);

  /* Two sessions on two threads at once: each gives the golden continuation. */
  tandem_session_reset(a);
  job ja = {a, {{0}, 0, 0}, TANDEM_ERROR, {0}}, jb = {b, {{0}, 0, 0}, TANDEM_ERROR, {0}};
  thrd_t ta, tb;
  CHECK(thrd_create(&ta, run_job, &ja) == thrd_success);
  CHECK(thrd_create(&tb, run_job, &jb) == thrd_success);
  thrd_join(ta, NULL);
  thrd_join(tb, NULL);
  CHECK(ja.status == TANDEM_OK && jb.status == TANDEM_OK);
  CHECK(ja.result.cached_tokens == 0);
  CHECK(strcmp(ja.text.data, text.data) == 0 && strcmp(jb.text.data, text.data) == 0);

  /* A stop string: the text ends just before it. */
  text_buf stopped = {{0}, 0, 0};
  gp = greedy(60, &stopped);
  const char* stops[] = {"little girl"};
  gp.stop = stops;
  gp.n_stop = 1;
  CHECK(tandem_generate(b, prompt, &gp, &res) == TANDEM_OK);
  CHECK(res.finish == TANDEM_FINISH_STOP_STRING);
  CHECK(strcmp(stopped.data, ", there was a ") == 0);

  /* max_tokens: finish LENGTH. */
  text_buf five = {{0}, 0, 0};
  gp = greedy(5, &five);
  CHECK(tandem_generate(b, prompt, &gp, &res) == TANDEM_OK);
  CHECK(res.finish == TANDEM_FINISH_LENGTH && res.completion_tokens == 5);
  CHECK(strncmp(five.data, text.data, five.len) == 0 && five.len > 0);

  /* A callback that returns false: CANCELLED, and it is not called again. */
  int refusals = 0;
  gp = tandem_generate_params_default();
  gp.sampling.temperature = 0.0f;
  gp.on_token = refuse;
  gp.user_data = &refusals;
  CHECK(tandem_generate(b, prompt, &gp, &res) == TANDEM_CANCELLED);
  CHECK(res.finish == TANDEM_FINISH_CANCELLED && refusals == 1);

  /* Cancel and BUSY from another thread while a generation runs (until the context is full
   * unless cancelled). */
  cancel_state cs;
  cs.session = a;
  atomic_init(&cs.tokens, 0);
  atomic_init(&cs.done, false);
  cs.busy_status = TANDEM_OK;
  thrd_t tc;
  CHECK(thrd_create(&tc, canceller, &cs) == thrd_success);
  gp = tandem_generate_params_default();
  gp.sampling.temperature = 0.0f;
  gp.on_token = hold_after_first;
  gp.user_data = &cs;
  CHECK(tandem_generate(a, prompt, &gp, &res) == TANDEM_CANCELLED);
  thrd_join(tc, NULL);
  CHECK(cs.busy_status == TANDEM_BUSY);
  CHECK(res.finish == TANDEM_FINISH_CANCELLED && res.completion_tokens == 1);
  /* Cancel while nothing runs does nothing to the next generation. */
  tandem_session_cancel(a);
  text_buf after = {{0}, 0, 0};
  gp = greedy(3, &after);
  CHECK(tandem_generate(a, prompt, &gp, &res) == TANDEM_OK && res.finish == TANDEM_FINISH_LENGTH);

  /* The chat template: ChatML for a model without one. */
  tandem_chat_message msgs[] = {{"system", "Be brief."}, {"user", "Hi"}};
  char* chat = tandem_chat_apply(model, msgs, 2, true);
  CHECK(chat && strcmp(chat,
                       "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                       "<|im_start|>assistant\n") == 0);
  tandem_string_free(chat);
  char* chat_json = tandem_chat_apply_json(
      model, "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], "
             "\"add_generation_prompt\": false}");
  CHECK(chat_json && strcmp(chat_json, "<|im_start|>user\nHi<|im_end|>\n") == 0);
  tandem_string_free(chat_json);
  CHECK(tandem_chat_apply_json(model, "{\"messages\": 3}") == NULL);
  CHECK(strstr(tandem_last_error(), "messages") != NULL);

  /* NULL arguments: errors with a message, no crash. */
  CHECK(tandem_generate(NULL, prompt, NULL, &res) == TANDEM_ERROR);
  CHECK(res.finish == TANDEM_FINISH_ERROR && strstr(tandem_last_error(), "NULL") != NULL);
  CHECK(tandem_generate(a, NULL, NULL, NULL) == TANDEM_ERROR);
  CHECK(tandem_tokenize(NULL, "x", 1, ids, 16, true, false) == -1);
  CHECK(tandem_model_load(NULL, NULL) == NULL);

  /* Freeing the model with sessions open is refused (the model stays usable). */
  tandem_model_free(model);
  CHECK(strstr(tandem_last_error(), "still open") != NULL);
  tandem_session_free(a);
  tandem_session_free(b);
  tandem_model_free(model);

  /* A prompt longer than the context: an error, nothing generated. */
  tandem_model_params small = tandem_model_params_default();
  small.n_ctx = 8;
  small.n_threads = 1;
  tandem_model* m8 = tandem_model_load(model_path, &small);
  CHECK(m8 != NULL);
  if (m8) {
    tandem_session* s8 = tandem_session_create(m8);
    text_buf none = {{0}, 0, 0};
    gp = greedy(4, &none);
    CHECK(tandem_generate(s8, "Once upon a time there was a little girl named Lily", &gp, &res) ==
          TANDEM_ERROR);
    CHECK(strstr(tandem_last_error(), "context") != NULL && none.calls == 0);
    /* A prompt that fits: generation ends when the context is full. */
    gp = greedy(-1, &none);
    CHECK(tandem_generate(s8, prompt, &gp, &res) == TANDEM_OK);
    CHECK(res.finish == TANDEM_FINISH_CONTEXT && res.completion_tokens == 4);
    tandem_session_free(s8);
    tandem_model_free(m8);
  }

  if (failures) {
    fprintf(stderr, "%d checks failed\n", failures);
    return 1;
  }
  printf("c_api_test: all checks passed\n");
  return 0;
}
