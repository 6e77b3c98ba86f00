/* tandem.h: the public C API of the Tandem runtime (libtandem).
 *
 * Load a GGUF model once, open several sessions on it (each with its own KV cache, the weights
 * shared), turn chat messages into a prompt with the model's own chat template, and generate
 * with sampling, stop rules, a per-token callback and cancellation from another thread.
 *
 * Conventions:
 * - Every handle is opaque. Every function may be called from any thread. A session runs one
 *   generation at a time (a second concurrent tandem_generate on it fails with TANDEM_BUSY);
 *   sessions of one model may generate at the same time (their tokens interleave).
 * - Functions that can fail return NULL or a tandem_status; tandem_last_error() then gives a
 *   one-line message naming the problem and the fix (per thread: the last failure on the
 *   calling thread).
 * - Strings are UTF-8. Strings returned as `char*` are allocated by the library: release them
 *   with tandem_string_free().
 * - Structs passed in are initialised with their *_default() function first, so that fields
 *   added in later versions get their defaults.
 */
#ifndef TANDEM_H
#define TANDEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TANDEM_VERSION_MAJOR 0
#define TANDEM_VERSION_MINOR 2
#define TANDEM_VERSION_PATCH 0
#define TANDEM_VERSION_STRING "0.2.0"

#if defined(_WIN32)
#define TANDEM_API __declspec(dllexport)
#else
#define TANDEM_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- version, errors, strings ----------------------------------------------------------- */

/* The library's version, e.g. "0.2.0" (may differ from TANDEM_VERSION_STRING when an app is
 * run against a newer library than it was built with). */
TANDEM_API const char* tandem_version(void);

typedef enum tandem_status {
  TANDEM_OK = 0,
  TANDEM_ERROR = 1,      /* bad input or a failure: see tandem_last_error() */
  TANDEM_CANCELLED = 2,  /* stopped by tandem_session_cancel, a callback, or a progress callback */
  TANDEM_BUSY = 3        /* the session is already generating on another thread */
} tandem_status;

/* The message of the last failed call on this thread ("" when none). Valid until the next call
 * into the library on this thread. */
TANDEM_API const char* tandem_last_error(void);

/* Releases a string the library returned. NULL is allowed. */
TANDEM_API void tandem_string_free(char* s);

/* ---- models ------------------------------------------------------------------------------ */

typedef struct tandem_model tandem_model;
typedef struct tandem_session tandem_session;

/* Load progress in [0, 1]; return false to cancel the load (tandem_model_load then returns NULL
 * and tandem_last_error() says it was cancelled). Called on the thread that called
 * tandem_model_load, at a few points of the load (file opened, plan made, GPU weights uploaded,
 * CPU weights placed, done). */
typedef bool (*tandem_progress_fn)(float progress, void* user_data);

typedef struct tandem_model_params {
  const char* offload;     /* layers on the GPU: "auto" (default), "all", or a count ("0", "12")
                              (the last N layers and the output head, as llama.cpp's -ngl) */
  uint64_t vram_budget;    /* bytes of device memory to plan with; 0: the device's budget */
  uint64_t mem_budget;     /* bytes of host memory for weights + KV + scratch; 0: no limit */
  int32_t n_threads;       /* CPU threads; 0: the physical cores */
  int32_t n_ctx;           /* context of each session in tokens; 0: the model's, at most 4096 */
  int32_t n_batch;         /* prompt tokens per forward pass; 0: 512 */
  int32_t n_seq_max;       /* sessions that may exist at once (a KV cache each); 0: 1 */
  const char* chat_template; /* NULL: the model's tokenizer.chat_template (ChatML when it has
                              none); else a built-in name ("chatml", "llama3", ...) or the Jinja
                              text of a template */
  tandem_progress_fn progress; /* may be NULL */
  void* progress_user_data;
} tandem_model_params;

TANDEM_API tandem_model_params tandem_model_params_default(void);

/* Opens a GGUF model. NULL on failure (a bad file, no memory, a cancelled load): see
 * tandem_last_error(). No Vulkan device is not a failure: the model runs on the CPU and
 * tandem_model_notes() says so. */
TANDEM_API tandem_model* tandem_model_load(const char* path, const tandem_model_params* params);
/* Frees the model. Every session of it must have been freed first (otherwise nothing is freed
 * and tandem_last_error() says so). NULL is allowed. */
TANDEM_API void tandem_model_free(tandem_model* model);

typedef struct tandem_model_info {
  int32_t n_vocab;
  int32_t n_ctx_train;   /* the context the model was trained with */
  int32_t n_ctx;         /* each session's context (after params.n_ctx) */
  int32_t n_layer;
  int32_t n_embd;
  int32_t n_head;
  int32_t n_head_kv;
  uint64_t n_params;
  uint64_t weight_bytes;
  int32_t bos;           /* -1 when none */
  int32_t eos;           /* -1 when none */
} tandem_model_info;

TANDEM_API tandem_model_info tandem_model_get_info(const tandem_model* model);
/* general.name of the model, or its file name without .gguf. Free with tandem_string_free. */
TANDEM_API char* tandem_model_name(const tandem_model* model);
/* The architecture (general.architecture: "llama", "qwen2", ...). Free with tandem_string_free. */
TANDEM_API char* tandem_model_arch(const tandem_model* model);

/* Where the layers run. */
typedef struct tandem_placement {
  int32_t n_layer;
  int32_t cpu_layers;
  int32_t gpu_resident_layers;
  int32_t gpu_streamed_layers;
  bool output_on_gpu;
} tandem_placement;

TANDEM_API tandem_placement tandem_model_placement(const tandem_model* model);
/* The placement plan as printable text (one line per group of layers, as `tandem run` prints
 * it). Free with tandem_string_free. */
TANDEM_API char* tandem_model_plan(const tandem_model* model);
/* One-line notices about how the load was met (e.g. "no GPU (...); running on the CPU"),
 * separated by '\n'; "" when none. Free with tandem_string_free. */
TANDEM_API char* tandem_model_notes(const tandem_model* model);

/* ---- tokens ------------------------------------------------------------------------------ */

/* Token ids of text. With parse_special, the spellings of control tokens ("<|im_start|>",
 * "<s>") become those tokens (for text that comes from a chat template, never for a user's
 * text). Writes at most capacity ids; returns the number of ids the text has (call again with
 * a larger buffer when it is above capacity), or -1 on error. */
TANDEM_API int32_t tandem_tokenize(const tandem_model* model, const char* text, size_t text_len,
                                   int32_t* ids, int32_t capacity, bool add_bos,
                                   bool parse_special);
/* The text of ids; control tokens are hidden unless show_special. NULL on error (an id out of
 * range). Free with tandem_string_free. */
TANDEM_API char* tandem_detokenize(const tandem_model* model, const int32_t* ids, int32_t n_ids,
                                   bool show_special);
/* Whether id ends generation (EOS, EOT, <|im_end|>, <|eot_id|>, <|end|>, ...). */
TANDEM_API bool tandem_token_is_eog(const tandem_model* model, int32_t id);

/* ---- chat templates ----------------------------------------------------------------------- */

typedef struct tandem_chat_message {
  const char* role;     /* "system", "user", "assistant", "tool" */
  const char* content;
} tandem_chat_message;

/* The prompt text for messages with the model's chat template (or params.chat_template), with
 * the assistant's header appended when add_generation_prompt. NULL on error (e.g. the template
 * refuses a role: its raise_exception message). Free with tandem_string_free. */
TANDEM_API char* tandem_chat_apply(const tandem_model* model, const tandem_chat_message* messages,
                                   size_t n_messages, bool add_generation_prompt);
/* The same from JSON, for messages with tool calls and for tool definitions:
 * {"messages": [...OpenAI-style messages...], "tools": [...] (optional),
 *  "add_generation_prompt": true, "extra": {...} (optional: more template variables)}.
 * Free with tandem_string_free. */
TANDEM_API char* tandem_chat_apply_json(const tandem_model* model, const char* request_json);
/* The Jinja source of the template in use. Free with tandem_string_free. */
TANDEM_API char* tandem_model_chat_template(const tandem_model* model);

/* ---- sessions and generation -------------------------------------------------------------- */

/* A new session (its own KV cache; the model's weights shared). NULL when params.n_seq_max
 * sessions already exist. */
TANDEM_API tandem_session* tandem_session_create(tandem_model* model);
/* Frees a session. A generation running on it is cancelled, and waited for. Not from inside
 * the session's own callback. NULL is allowed. */
TANDEM_API void tandem_session_free(tandem_session* session);
/* Forgets the cached tokens: the next prompt is processed from the start. */
TANDEM_API void tandem_session_reset(tandem_session* session);
/* Stops the session's generation at the next token (finish TANDEM_FINISH_CANCELLED). Safe from
 * any thread, also while no generation runs (then it does nothing). */
TANDEM_API void tandem_session_cancel(tandem_session* session);

typedef struct tandem_sampling {
  float temperature;        /* 0: greedy. Default 0.8 */
  int32_t top_k;            /* 0: off. Default 40 */
  float top_p;              /* 1: off. Default 0.95 */
  float min_p;              /* 0: off. Default 0.05 */
  float repeat_penalty;     /* 1: off (default) */
  int32_t repeat_last_n;    /* window of the penalties; default 64 */
  float presence_penalty;   /* OpenAI's: subtracted once from a seen token's logit; 0: off */
  float frequency_penalty;  /* OpenAI's: subtracted per occurrence; 0: off */
  uint32_t seed;            /* TANDEM_SEED_RANDOM (default): a random seed */
} tandem_sampling;

#define TANDEM_SEED_RANDOM 0xFFFFFFFFu

TANDEM_API tandem_sampling tandem_sampling_default(void);

typedef enum tandem_finish_reason {
  TANDEM_FINISH_NONE = 0,
  TANDEM_FINISH_EOG = 1,          /* an end-of-generation token (OpenAI: "stop") */
  TANDEM_FINISH_STOP_STRING = 2,  /* a stop string (not part of the text; OpenAI: "stop") */
  TANDEM_FINISH_LENGTH = 3,       /* max_tokens reached (OpenAI: "length") */
  TANDEM_FINISH_CONTEXT = 4,      /* the context is full (OpenAI: "length") */
  TANDEM_FINISH_CANCELLED = 5,    /* tandem_session_cancel or the callback returned false */
  TANDEM_FINISH_ERROR = 6         /* see tandem_last_error() */
} tandem_finish_reason;

/* "stop", "length", "cancelled" or "error": the OpenAI finish_reason of a finish ("none" for
 * TANDEM_FINISH_NONE). */
TANDEM_API const char* tandem_finish_reason_name(tandem_finish_reason reason);

/* Called with each piece of generated text that is ready to show: whole UTF-8 characters, with
 * text that could be the start of a stop string held back until it is known not to be. token is
 * the id that completed the piece. text is NUL-terminated after len bytes. Called on the thread
 * that called tandem_generate, outside the model's lock (other sessions go on meanwhile); it
 * may call tandem_session_cancel, not tandem_session_free of its own session. Return false to
 * stop (finish TANDEM_FINISH_CANCELLED). */
typedef bool (*tandem_token_fn)(const char* text, size_t len, int32_t token, void* user_data);

typedef struct tandem_generate_params {
  tandem_sampling sampling;
  int32_t max_tokens;           /* -1 (default): until an end or the context is full */
  const char* const* stop;      /* stop strings (may be NULL) */
  size_t n_stop;
  bool add_bos;                 /* prompt text starts with BOS when the vocabulary wants it
                                   (default true) */
  bool parse_special;           /* the prompt text's control-token spellings become tokens:
                                   true (default) for template output */
  tandem_token_fn on_token;     /* may be NULL */
  void* user_data;
} tandem_generate_params;

TANDEM_API tandem_generate_params tandem_generate_params_default(void);

typedef struct tandem_result {
  tandem_finish_reason finish;
  int32_t prompt_tokens;      /* tokens of the prompt */
  int32_t cached_tokens;      /* of those, reused from the session's KV cache (not evaluated) */
  int32_t completion_tokens;  /* tokens generated */
  double prompt_ms;           /* time to evaluate the uncached prompt tokens */
  double generation_ms;       /* time from the first to the last generated token */
  double prompt_tokens_per_s;
  double generation_tokens_per_s;
} tandem_result;

/* Generates a continuation of prompt (text; tokenized as params says). The session keeps its
 * tokens and KV cache: the longest common prefix with the previous request's tokens is not
 * evaluated again. The generated text goes to params->on_token; result (may be NULL) gets the
 * finish reason, counts and speeds. Returns TANDEM_OK when the generation ended normally
 * (end-of-generation, stop string, length, context full), TANDEM_CANCELLED, TANDEM_BUSY, or
 * TANDEM_ERROR (e.g. a prompt longer than the context: nothing is generated). */
TANDEM_API tandem_status tandem_generate(tandem_session* session, const char* prompt,
                                         const tandem_generate_params* params,
                                         tandem_result* result);
/* The same from token ids. */
TANDEM_API tandem_status tandem_generate_tokens(tandem_session* session, const int32_t* ids,
                                                int32_t n_ids,
                                                const tandem_generate_params* params,
                                                tandem_result* result);
/* The result of the session's last generation (zeroes before the first). */
TANDEM_API tandem_result tandem_session_last_result(const tandem_session* session);

#ifdef __cplusplus
}
#endif

#endif /* TANDEM_H */
