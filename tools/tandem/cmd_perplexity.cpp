// `tandem perplexity -m MODEL -f TEXT [-c CTX]`, computed as llama.cpp's llama-perplexity does:
// the text (tokenized with BOS) cut into n_tokens / CTX windows, each starting with BOS and
// evaluated from position 0; the second half of each window scored; PPL = exp(mean NLL).
#include <fmt/format.h>

#include <chrono>
#include <cmath>

#include "runtime/engine.h"
#include "runtime/model.h"
#include "runtime/tokenizer.h"
#include "tools/tandem/commands.h"

namespace tandem::cli {
namespace {
struct ppl_opts {
  std::string model, file;
  int n_ctx = 512;
  int n_threads = 0;
  int n_chunks = -1;
};
std::string slurp(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw error(fmt::format("{}: cannot open the text file", path));
  std::string s;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  std::fclose(f);
  return s;
}
}  // namespace

command add_perplexity(CLI::App& app) {
  auto o = std::make_shared<ppl_opts>();
  app.add_option("-m,--model", o->model, "GGUF model file")->required();
  app.add_option("-f,--file", o->file, "text file to score")->required();
  app.add_option("-c,--ctx-size", o->n_ctx, "window (context) size in tokens")->capture_default_str();
  app.add_option("-t,--threads", o->n_threads, "CPU threads (0 = physical cores)")->capture_default_str();
  app.add_option("--chunks", o->n_chunks, "score at most this many windows (-1 = all)");
  return [o] {
    if (o->n_ctx < 4) throw error("-c must be at least 4 for perplexity");
    auto m = model::load(o->model);
    auto tok = tokenizer::from_gguf(m->file());
    std::vector<int32_t> ids = tok->encode(slurp(o->file), true);
    int n_chunk = static_cast<int>(ids.size()) / o->n_ctx;
    if (o->n_chunks >= 0) n_chunk = std::min(n_chunk, o->n_chunks);
    if (n_chunk == 0)
      throw error(fmt::format("{}: {} tokens is less than one window of {}; use a longer text or a "
                              "smaller -c",
                              o->file, ids.size(), o->n_ctx));
    engine_options eo;
    eo.n_ctx = o->n_ctx;
    eo.n_batch = o->n_ctx;
    eo.n_threads = o->n_threads;
    engine eng(*m, eo);
    const int nv = m->hp().n_vocab;
    double nll = 0, nll2 = 0;
    int count = 0;
    auto t0 = std::chrono::steady_clock::now();
    fmt::print(stderr, "perplexity: {} tokens, {} windows of {}\n", ids.size(), n_chunk, o->n_ctx);
    for (int c = 0; c < n_chunk; ++c) {
      std::vector<int32_t> w(ids.begin() + static_cast<long>(c) * o->n_ctx,
                             ids.begin() + static_cast<long>(c + 1) * o->n_ctx);
      if (tok->bos() >= 0) w[0] = tok->bos();
      eng.reset();
      const std::vector<float>& logits = eng.eval(w, true);
      for (int p = o->n_ctx / 2; p <= o->n_ctx - 2; ++p) {
        const float* l = logits.data() + static_cast<size_t>(p) * nv;
        float mx = l[0];
        for (int i = 1; i < nv; ++i) mx = std::max(mx, l[i]);
        double sum = 0;
        for (int i = 0; i < nv; ++i) sum += std::exp(static_cast<double>(l[i]) - mx);
        const double lp = static_cast<double>(l[w[static_cast<size_t>(p) + 1]]) - mx - std::log(sum);
        nll -= lp;
        nll2 += lp * lp;
        ++count;
      }
      fmt::print("[{}]{:.4f},", c + 1, std::exp(nll / count));
      std::fflush(stdout);
    }
    const double mean = nll / count;
    const double var = nll2 / count - mean * mean;
    const double ppl = std::exp(mean);
    const double err = count > 1 ? ppl * std::sqrt(std::max(0.0, var) / (count - 1)) : 0.0;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    fmt::print("\nFinal estimate: PPL = {:.4f} +/- {:.5f}\n", ppl, err);
    fmt::print(stderr, "perplexity: {} windows in {:.2f} s ({:.1f} tokens/s), {}\n", n_chunk, s,
               n_chunk * o->n_ctx / s, eng.describe());
    return 0;
  };
}

}  // namespace tandem::cli
