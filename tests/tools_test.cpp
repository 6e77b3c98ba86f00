// The model tools end to end: make-model -> quantize -> run, perplexity against llama.cpp's
// figures for the files it quantized, and bench's output.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cpu/kernels.h"
#include "runtime/blocks.h"
#include "runtime/engine.h"
#include "runtime/model.h"
#include "runtime/tokenizer.h"
#include "tests/greedy_text.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

const std::string k_vocab = test::model_path("vocab/ggml-vocab-llama-spm.gguf");

double ppl_of(const std::string& out) {
  auto at = out.find("PPL = ");
  return at == std::string::npos ? -1.0 : std::stod(out.substr(at + 6));
}

std::string generated(const std::string& shape, const std::string& type) {
  const std::string p = test::temp_dir() + "/" + shape + "-" + type + ".gguf";
  if (!std::filesystem::exists(p)) {
    auto r = test::run_cli("make-model --shape " + shape + " --type " + type + " --vocab " +
                           k_vocab + " -o " + p);
    EXPECT_EQ(r.status, 0) << r.err;
  }
  return p;
}

// NMSE of layer 0's matrices in `out` (dequantized by the reference) against the same matrices
// of `src`: the worst of the seven.
double worst_matrix_nmse(const model& src, const model& out) {
  double worst = 0;
  for (const layer_matrix& lm : layer_matrices) {
    const weight& a = src.layer(0).*lm.field;
    const weight& b = out.layer(0).*lm.field;
    const int64_t n = a.cols() * a.rows();
    std::vector<float> fa(static_cast<size_t>(n)), fb(static_cast<size_t>(n));
    dequantize_row(a.type(), a.data(), fa.data(), n);
    dequantize_row(b.type(), b.data(), fb.data(), n);
    double num = 0, den = 0;
    for (size_t i = 0; i < fa.size(); ++i) {
      num += (static_cast<double>(fa[i]) - fb[i]) * (static_cast<double>(fa[i]) - fb[i]);
      den += static_cast<double>(fa[i]) * fa[i];
    }
    worst = std::max(worst, num / den);
  }
  return worst;
}

TEST(Tools, QuantizeEveryTypeThenRun) {
  const std::string f16 = generated("stories15M", "f16");
  const auto src = model::load(f16);
  // The weights keep what the type can hold: the NMSE of each type's rounding of Gaussian
  // weights (measured: f16 0, q8_0 1.4e-5, q6_k 1.8e-4, q5_k_m 7.6e-4, q4_k_m 3.0e-3, q4_0
  // 4.3e-3), with a margin of 2-3x; a wrong scale or block layout gives 1e-1 or more.
  const std::pair<const char*, double> types[] = {{"f16", 0},       {"q8_0", 4e-5},
                                                  {"q4_0", 1e-2},   {"q4_k_m", 6e-3},
                                                  {"q5_k_m", 2e-3}, {"q6_k", 4e-4}};
  for (const auto& [t, max_nmse] : types) {
    const std::string out = test::temp_dir() + "/s15-" + t + ".gguf";
    auto q = test::run_cli("quantize " + f16 + " " + out + " " + t);
    ASSERT_EQ(q.status, 0) << q.err;
    const double e = worst_matrix_nmse(*src, *model::load(out));
    std::printf("quantize %s: worst layer-0 matrix NMSE %.3g\n", t, e);
    EXPECT_LE(e, max_nmse) << t;
    // It runs, and the CLI prints the engine's greedy text for it.
    auto r = test::run_cli("run -m " + out + " -p 'Once upon a time' -n 8 --temp 0 --offload 0");
    ASSERT_EQ(r.status, 0) << t << ": " << r.err;
    const std::string want = test::engine_greedy_text(out, "Once upon a time", 8, "0");
    EXPECT_GT(want.size(), std::string("Once upon a time").size()) << t;
    EXPECT_EQ(r.out, want + "\n") << t << ": " << r.err;
    EXPECT_NE(r.err.find("generation: 8 tokens"), std::string::npos) << t << ": " << r.err;
  }
}

// The qwen2.5-0.5b shape: a qwen2 model (Q/K/V biases, tied output head, NeoX RoPE) with
// Qwen2.5-0.5B's layer shapes and GPT-2's BPE vocabulary by default; it loads and generates.
// make-model's Qwen2.5-0.5B: the shape (through the library and `tandem info`), a file that is a
// function of its seed, and what the model computes, pinned: the greedy text (tied embeddings: the
// made weights leave each token its own nearest) and the log-perplexity of a fixed text, which
// every layer's arithmetic feeds (1% apart: the kernel levels differ by 0.2%; seed 2 by 6%).
TEST(Tools, MakeModelQwen25Shape) {
  const std::string dir = test::temp_dir();
  const auto make = [&](const std::string& name, int seed) {
    const std::string p = dir + "/" + name;
    auto r = test::run_cli("make-model --shape qwen2.5-0.5b --type q4_0 --seed " +
                           std::to_string(seed) + " --vocab " +
                           test::model_path("vocab/ggml-vocab-gpt-2.gguf") + " -o " + p);
    EXPECT_EQ(r.status, 0) << r.err;
    return p;
  };
  const std::string p = make("qwen2.5-0.5b-q4_0.gguf", 1);
  auto m = model::load(p);
  const hparams& hp = m->hp();
  EXPECT_EQ(hp.arch, "qwen2");
  EXPECT_EQ(hp.n_embd, 896);
  EXPECT_EQ(hp.n_layer, 24);
  EXPECT_EQ(hp.n_head, 14);
  EXPECT_EQ(hp.n_head_kv, 2);
  EXPECT_EQ(hp.head_dim, 64);
  EXPECT_EQ(hp.n_rot, 64);
  EXPECT_EQ(hp.n_ff, 4864);
  EXPECT_EQ(hp.n_vocab, 50257);
  EXPECT_EQ(hp.rope, rope_style::neox);
  EXPECT_FLOAT_EQ(hp.rope_freq_base, 1e6f);
  EXPECT_FLOAT_EQ(hp.rms_eps, 1e-6f);
  for (int il = 0; il < hp.n_layer; ++il) {
    const layer_weights& L = m->layer(il);
    EXPECT_TRUE(L.bq && L.bk && L.bv) << "layer " << il;
    for (const layer_matrix& lm : layer_matrices)
      EXPECT_EQ((L.*lm.field).type(), dtype::q4_0) << "layer " << il << " " << lm.name;
  }
  EXPECT_EQ(m->file().tensor("output.weight"), nullptr);  // tied to token_embd
  const auto info = test::run_cli("info -m " + p);
  ASSERT_EQ(info.status, 0) << info.err;
  for (const char* line : {"general.architecture                         string       qwen2",
                           "qwen2.attention.head_count_kv                u32          2",
                           "qwen2.rope.freq_base                         f32          1e+06",
                           "tensors (290):"})
    EXPECT_NE(info.out.find(line), std::string::npos) << line << "\n" << info.out;
  // The same seed writes the same bytes; another seed other weights.
  EXPECT_EQ(test::read_file(make("again.gguf", 1)), test::read_file(p));
  const std::string p2 = make("seed2.gguf", 2);
  EXPECT_NE(test::read_file(p2), test::read_file(p));

  auto g = test::run_cli("run -m " + p + " -p 'Hello world' -n 6 --temp 0 -c 64 --offload 0");
  ASSERT_EQ(g.status, 0) << g.err;
  EXPECT_EQ(g.out, "Hello world world world world world world world\n") << g.err;
  const std::string text = dir + "/text.txt";
  std::FILE* f = std::fopen(text.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs("Once upon a time, there was a little girl named Lily. She loved to play outside in "
             "the park with her friends and her dog. One day she found a shiny red ball under a "
             "big tree.\n",
             f);
  std::fclose(f);
  const auto log_ppl = [&](const std::string& model) {
    auto r = test::run_cli("perplexity -m " + model + " -f " + text + " -c 16");
    EXPECT_EQ(r.status, 0) << r.err;
    return std::log(ppl_of(r.out + r.err));
  };
  const double lp = log_ppl(p);
  EXPECT_NEAR(lp, 199.7, 2.0);
  EXPECT_GT(std::abs(log_ppl(p2) - lp), 5.0);
}

TEST(Tools, QuantizeSaysWhatItKeeps) {
  const std::string out = test::temp_dir() + "/stories260K-q4_0.gguf";
  auto q = test::run_cli("quantize " + test::model_path("stories260K.gguf") + " " + out + " q4_0");
  ASSERT_EQ(q.status, 0) << q.err;
  EXPECT_NE(q.err.find("tensor 'blk.0.ffn_down.weight' has rows of 172 elements, not a multiple of "
                       "q4_0's block of 32; kept as f16"),
            std::string::npos)
      << q.err;
  auto r = test::run_cli("run -m " + out + " -p 'Once upon a time' -n 20 --temp 0");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out.rfind("Once upon a time, there was a little girl", 0), 0u) << r.out;
}

TEST(Tools, UnknownQuantTypeIsRefused) {
  auto q = test::run_cli("quantize " + test::model_path("stories260K.gguf") + " /tmp/x.gguf q3_xs");
  EXPECT_EQ(q.status, 1);
  EXPECT_NE(q.err.find("error: unknown quantization type 'q3_xs'"), std::string::npos) << q.err;
}

// Greedy ids of a generated stories110M: Q8_0 follows F16 for the first tokens.
TEST(Tools, Q8MatchesF16OnGeneratedStories110M) {
  const std::string f16 = generated("stories110M", "f16");
  const std::string q8 = test::temp_dir() + "/s110-q8_0.gguf";
  ASSERT_EQ(test::run_cli("quantize " + f16 + " " + q8 + " q8_0").status, 0);
  auto greedy = [](const std::string& path) {
    auto m = model::load(path);
    auto tok = tokenizer::from_gguf(m->file());
    engine_options eo;
    eo.n_ctx = 64;
    engine eng(*m, eo);
    std::vector<float> logits = eng.eval(tok->encode("Once upon a time", true));
    std::vector<int32_t> ids;
    for (int i = 0; i < 6; ++i) {
      ids.push_back(
          static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin()));
      logits = eng.eval({ids.back()});
    }
    return ids;
  };
  const auto a = greedy(f16), b = greedy(q8);
  EXPECT_EQ(std::vector<int32_t>(a.begin(), a.begin() + 4),
            std::vector<int32_t>(b.begin(), b.begin() + 4));
}

// The files llama.cpp quantized load, and their perplexity lands within 0.5% of llama-perplexity's
// with the kernels chosen by env (empty: the best level; the x16 layouts where the level has them).
void check_quant_perplexity(const std::string& env) {
  const std::pair<const char*, double> files[] = {{"F16", 1870.6107},    {"Q8_0", 1880.3237},
                                                  {"Q6_K", 1854.7812},   {"Q5_K_M", 1843.7490},
                                                  {"Q4_K_M", 1917.3289}, {"Q4_0", 1844.6598}};
  for (auto [name, want] : files) {
    auto r = test::run_cli_env(
        env, "perplexity -m " + test::model_path(std::string("quant/tiny-") + name + ".gguf") +
                 " -f " + test::model_path("quant/ppl-sample.txt") + " -c 128");
    ASSERT_EQ(r.status, 0) << r.err;
    const double got = ppl_of(r.out);
    EXPECT_LT(std::abs(got - want) / want, 0.005)
        << env << " " << name << ": " << got << " vs llama.cpp " << want;
  }
}

TEST(Tools, PerplexityOfLlamaCppQuantFiles) {
  check_quant_perplexity("");
  auto r = test::run_cli("perplexity -m " + test::model_path("stories260K.gguf") + " -f " +
                         test::model_path("quant/ppl-sample.txt") + " -c 128");
  EXPECT_LT(std::abs(ppl_of(r.out) - 4.3515) / 4.3515, 0.005) << r.out;
}

// The same at the AVX2 level, which has its own kernels for the packed layouts.
TEST(Tools, PerplexityOfLlamaCppQuantFilesAvx2) {
  if (!cpu::cpu_supports(cpu::kernel_level::avx2)) GTEST_SKIP() << "no AVX2 on this CPU";
  check_quant_perplexity("TANDEM_KERNELS=avx2");
}

TEST(Tools, BenchJson) {
  auto r = test::run_cli("bench -m " + test::model_path("stories260K.gguf") +
                         " -p 16 -n 8 -r 2 -o json");
  ASSERT_EQ(r.status, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["results"].size(), 2u);
  EXPECT_EQ(j["results"][0]["test"], "pp16");
  EXPECT_EQ(j["results"][1]["test"], "tg8");
  EXPECT_GT(j["results"][1]["tokens_per_s_mean"].get<double>(), 0.0);
  EXPECT_GT(j["results"][1]["weight_bytes_per_token"].get<double>(), 1e6);
}

// With --memory, every tg repetition gets the bandwidth measured next to it, and its fraction is
// that repetition's weight bytes per second over it; the row's fraction is their median.
TEST(Tools, BenchMemoryFractionPerRepetition) {
  auto r = test::run_cli("bench -m " + test::model_path("stories260K.gguf") +
                         " -p 0 -n 4 -r 3 --memory -o json");
  ASSERT_EQ(r.status, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_GT(j["memory_read_GBps"].get<double>(), 0.1);
  ASSERT_EQ(j["results"].size(), 1u);
  const auto& row = j["results"][0];
  const auto bw = row["memory_read_GBps_per_rep"].get<std::vector<double>>();
  const auto frac = row["fraction_of_memory_bw_per_rep"].get<std::vector<double>>();
  const auto tps = row["samples_tokens_per_s"].get<std::vector<double>>();
  ASSERT_EQ(bw.size(), 3u);
  ASSERT_EQ(frac.size(), 3u);
  ASSERT_EQ(tps.size(), 3u);
  const double per_token = row["weight_bytes_per_token"].get<double>();
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_GT(bw[i], 0.1);
    EXPECT_NEAR(frac[i], tps[i] * per_token / (bw[i] * 1e9), 1e-9 * frac[i]);
  }
  auto sorted = frac;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_DOUBLE_EQ(row["fraction_of_memory_bw"].get<double>(), sorted[1]);
}

}  // namespace
}  // namespace tandem

namespace tandem {
namespace {

// The scalar kernel table and the SIMD one give the same perplexity on the trained model.
TEST(Tools, PerplexityScalarVsSimdKernels) {
  const std::string args = "perplexity -m " + test::model_path("stories260K.gguf") + " -f " +
                           test::model_path("quant/ppl-sample.txt") + " -c 128";
  auto simd = test::run_cli(args);
  auto sc = test::run_cli_env("TANDEM_KERNELS=scalar", args);
  ASSERT_EQ(simd.status, 0) << simd.err;
  ASSERT_EQ(sc.status, 0) << sc.err;
  const double a = ppl_of(simd.out), b = ppl_of(sc.out);
  EXPECT_LT(std::abs(a - b) / b, 0.001) << "SIMD " << a << " vs scalar " << b;
}

}  // namespace
}  // namespace tandem
