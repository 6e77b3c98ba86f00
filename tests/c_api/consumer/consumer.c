/* A program built against an installed libtandem (by pkg-config or find_package(tandem)):
 * loads a model and generates a few tokens greedily. Usage: consumer MODEL.gguf */
#include <stdio.h>
#include <string.h>

#include <tandem.h>

static bool print_piece(const char* text, size_t len, int32_t token, void* user_data) {
  (void)token, (void)user_data;
  fwrite(text, 1, len, stdout);
  return true;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s MODEL.gguf\n", argv[0]);
    return 2;
  }
  if (strcmp(tandem_version(), TANDEM_VERSION_STRING) != 0) {
    fprintf(stderr, "header %s, library %s\n", TANDEM_VERSION_STRING, tandem_version());
    return 1;
  }
  tandem_model* model = tandem_model_load(argv[1], NULL);
  if (!model) {
    fprintf(stderr, "error: %s\n", tandem_last_error());
    return 1;
  }
  tandem_session* session = tandem_session_create(model);
  tandem_generate_params p = tandem_generate_params_default();
  p.sampling.temperature = 0.0f;
  p.max_tokens = 8;
  p.on_token = print_piece;
  tandem_result r;
  const tandem_status st = tandem_generate(session, "Once upon a time", &p, &r);
  printf("\nfinish: %s, %d tokens\n", tandem_finish_reason_name(r.finish), r.completion_tokens);
  tandem_session_free(session);
  tandem_model_free(model);
  return st == TANDEM_OK && r.completion_tokens == 8 ? 0 : 1;
}
