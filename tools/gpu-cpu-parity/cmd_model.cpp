// `gpu-cpu-parity model`: one model, the same tokens, three plans: every layer on the CPU (the
// reference), every layer and the output head on the GPU, and a split (the last K layers and the
// head on the GPU). The tokens are the prompt (one batch) and then a fixed continuation, the CPU's
// greedy choices, fed one at a time to every plan alike. Compared position by position: the
// output of every op of every layer (backend::set_capture), every layer's hidden state
// (engine::set_layer_capture) and the logits (top-1, KL divergence); then the free-running greedy
// text of each plan. The first layer and op beyond its threshold is named.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "runtime/backend_factory.h"
#include "runtime/engine.h"
#include "runtime/error.h"
#include "runtime/model.h"
#include "runtime/tokenizer.h"
#include "tools/gpu-cpu-parity/parity.h"

namespace tandem::parity {
namespace {

// ---- thresholds (see the help text of the command and tools/gpu-cpu-parity/README.md) -------
struct thresholds {
  double nmse_float = 1e-5;   // per position, each op and layer output, F32/F16 weights
  double nmse_quant = 5e-3;   // the same with quantized weights
  double kl_float = 1e-4;     // per position, KL(p_cpu || p_gpu), F32/F16 weights
  double kl_quant = 5e-3;     // the same with quantized weights
  double top1_random = 0.90;  // fraction of positions whose argmax agrees (random weights)
  double top1_trained = 1.0;  // the same for a trained model
};
constexpr thresholds k_thr;

bool is_quantized(dtype t) { return t != dtype::f32 && t != dtype::f16; }

bool layer_quantized(const model& m, int il) {
  const layer_weights& L = m.layer(il);
  for (const weight* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.ffn_gate, &L.ffn_up, &L.ffn_down})
    if (*w && is_quantized(w->type())) return true;
  return false;
}

// ---- one run of the tokens through an engine, with everything captured ---------------------

struct captured_layer {
  std::vector<std::pair<std::string, std::vector<float>>> ops;  // in the order the backend ran them
  std::vector<float> hidden;
};

struct step {  // one eval call: the prompt batch, or one continuation token
  int pos0 = 0, n = 0;
  std::vector<float> logits;  // n x n_vocab
  std::vector<captured_layer> layers;
};

struct run_data {
  std::string plan;                       // engine::describe()
  std::vector<std::string> layer_device;  // per layer, then the output head
  std::vector<step> steps;
};

// Runs the prompt and the continuation through eng with capture on. With reference set, the
// continuation is made here (greedy on this engine's logits) and stored in *cont.
run_data run_forced(engine& eng, const model& m, const std::vector<int32_t>& prompt,
                    std::vector<int32_t>* cont, int n_tokens, bool reference) {
  const auto& hp = m.hp();
  run_data r;
  r.plan = eng.describe();
  for (int il = 0; il <= hp.n_layer; ++il) {
    const backend* b = eng.layer_backend(il);
    r.layer_device.push_back(b ? b->name() : "?");
  }
  step* cur = nullptr;
  eng.set_op_capture([&cur](int il, const char* op, const float* d, size_t n) {
    if (cur && il >= 0 && static_cast<size_t>(il) < cur->layers.size())
      cur->layers[static_cast<size_t>(il)].ops.emplace_back(op, std::vector<float>(d, d + n));
  });
  eng.set_layer_capture([&cur](int il, const char*, const float* d, size_t n) {
    if (cur && il >= 0 && static_cast<size_t>(il) < cur->layers.size())
      cur->layers[static_cast<size_t>(il)].hidden.assign(d, d + n);
  });
  eng.reset();
  const size_t nv = static_cast<size_t>(hp.n_vocab);
  auto eval = [&](const std::vector<int32_t>& toks) {
    r.steps.emplace_back();
    step& s = r.steps.back();
    s.pos0 = eng.n_past();
    s.n = static_cast<int>(toks.size());
    s.layers.resize(static_cast<size_t>(hp.n_layer));
    cur = &s;
    s.logits = eng.eval(toks, /*all_logits=*/true);
    cur = nullptr;
    return std::max_element(s.logits.end() - static_cast<std::ptrdiff_t>(nv), s.logits.end()) -
           (s.logits.end() - static_cast<std::ptrdiff_t>(nv));
  };
  int32_t next = static_cast<int32_t>(eval(prompt));
  if (reference) cont->clear();
  for (int i = 0; i < n_tokens; ++i) {
    if (reference) cont->push_back(next);
    next = static_cast<int32_t>(eval({(*cont)[static_cast<size_t>(i)]}));
  }
  eng.set_op_capture({});
  eng.set_layer_capture({});
  return r;
}

// Greedy generation of n tokens after the prompt, nothing captured.
std::vector<int32_t> free_run(engine& eng, const model& m, const std::vector<int32_t>& prompt,
                              int n) {
  const size_t nv = static_cast<size_t>(m.hp().n_vocab);
  eng.reset();
  std::vector<int32_t> out;
  std::vector<float> logits = eng.eval(prompt);
  for (int i = 0; i < n; ++i) {
    const int32_t t = static_cast<int32_t>(
        std::max_element(logits.begin(), logits.begin() + static_cast<std::ptrdiff_t>(nv)) -
        logits.begin());
    out.push_back(t);
    if (i + 1 < n) logits = eng.eval({t});
  }
  return out;
}

// ---- comparison -------------------------------------------------------------------------------

struct worst {
  double nmse = 0;
  double max_abs = 0;  // over every position
  int pos = -1;        // where nmse is worst
  void add(double e, double a, int p) {
    if (pos < 0 || e > nmse) nmse = e, pos = p;
    max_abs = std::max(max_abs, a);
  }
};

struct row_err {
  double nmse, max_abs;
};
row_err compare_rows(const float* ref, const float* got, size_t n) {
  double num = 0, den = 0, ma = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(ref[i]) - static_cast<double>(got[i]);
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
    ma = std::max(ma, std::fabs(d));
  }
  double e = den > 0 ? num / den : num;
  if (!std::isfinite(e) || !std::isfinite(ma)) e = INFINITY, ma = INFINITY;
  return {e, ma};
}

struct op_result {
  std::string op;
  worst w;
  bool pass = true;
};

struct layer_result {
  int layer = 0;
  std::string device;
  double threshold = 0;
  worst hidden;
  std::vector<op_result> ops;
  bool pass = true;
};

struct logit_pos {
  int pos = 0;
  int top_ref = 0, top_got = 0;
  double kl = 0, nmse = 0, max_abs = 0;
  double margin = 0;  // the reference's top-1 minus top-2 logit
};

struct divergence {
  int pos = -1, layer = -1;
  std::string op;  // an op name, "hidden" (the layer output), or "logits"
  double nmse = 0, threshold = 0;
};

struct config_result {
  std::string name, offload, plan;
  std::vector<layer_result> layers;
  std::vector<logit_pos> logits;
  double kl_threshold = 0;
  double top1 = 0, kl_max = 0, kl_mean = 0, logit_nmse_max = 0;
  std::vector<int32_t> greedy;
  int greedy_agree = 0;  // leading tokens equal to the CPU's
  std::optional<divergence> first;
  std::vector<std::string> problems;  // why it failed
  bool pass = true;
};

double kl_divergence(const float* p_logits, const float* q_logits, size_t n) {
  auto log_softmax = [n](const float* x, std::vector<double>& out) {
    double mx = -INFINITY;
    for (size_t i = 0; i < n; ++i) mx = std::max(mx, static_cast<double>(x[i]));
    double s = 0;
    for (size_t i = 0; i < n; ++i) s += std::exp(static_cast<double>(x[i]) - mx);
    const double lse = mx + std::log(s);
    out.resize(n);
    for (size_t i = 0; i < n; ++i) out[i] = static_cast<double>(x[i]) - lse;
  };
  std::vector<double> lp, lq;
  log_softmax(p_logits, lp);
  log_softmax(q_logits, lq);
  double kl = 0;
  for (size_t i = 0; i < n; ++i) kl += std::exp(lp[i]) * (lp[i] - lq[i]);
  return std::isfinite(kl) ? std::max(0.0, kl) : INFINITY;
}

int argmax(const float* v, size_t n) { return static_cast<int>(std::max_element(v, v + n) - v); }

void compare(const model& m, const run_data& ref, const run_data& got, config_result& res) {
  const auto& hp = m.hp();
  const size_t nv = static_cast<size_t>(hp.n_vocab);
  res.layers.resize(static_cast<size_t>(hp.n_layer));
  for (int il = 0; il < hp.n_layer; ++il) {
    layer_result& L = res.layers[static_cast<size_t>(il)];
    L.layer = il;
    L.device = got.layer_device[static_cast<size_t>(il)];
    L.threshold = layer_quantized(m, il) ? k_thr.nmse_quant : k_thr.nmse_float;
  }
  bool quant_any = is_quantized(m.output().type());
  for (int il = 0; il < hp.n_layer; ++il) quant_any |= layer_quantized(m, il);
  res.kl_threshold = quant_any ? k_thr.kl_quant : k_thr.kl_float;

  auto note_divergence = [&](int pos, int il, const std::string& op, double e, double thr) {
    if (!res.first) res.first = divergence{pos, il, op, e, thr};
  };
  for (size_t si = 0; si < ref.steps.size(); ++si) {
    const step& a = ref.steps[si];
    const step& b = got.steps[si];
    for (int il = 0; il < hp.n_layer; ++il) {
      layer_result& L = res.layers[static_cast<size_t>(il)];
      const captured_layer& ca = a.layers[static_cast<size_t>(il)];
      const captured_layer& cb = b.layers[static_cast<size_t>(il)];
      // Every op in the reference's order; then the layer output.
      std::vector<std::pair<std::string, const std::vector<float>*>> items;
      for (const auto& [op, data] : ca.ops) items.emplace_back(op, &data);
      items.emplace_back("hidden", &ca.hidden);
      for (const auto& [op, data_a] : items) {
        const std::vector<float>* data_b = nullptr;
        if (op == "hidden") {
          data_b = &cb.hidden;
        } else {
          for (const auto& [opb, d] : cb.ops)
            if (opb == op) data_b = &d;
        }
        op_result* orr = nullptr;
        if (op != "hidden") {
          auto it = std::find_if(L.ops.begin(), L.ops.end(),
                                 [&](const op_result& x) { return x.op == op; });
          if (it == L.ops.end()) {
            L.ops.push_back({op, {}, true});
            orr = &L.ops.back();
          } else {
            orr = &*it;
          }
        }
        if (!data_b || data_b->size() != data_a->size() || data_a->empty()) {
          const std::string why =
              fmt::format("layer {} op {}: {} on {} ({} vs {} floats)", il, op,
                          data_b ? "size differs" : "not captured", L.device, data_a->size(),
                          data_b ? data_b->size() : 0);
          if (std::find(res.problems.begin(), res.problems.end(), why) == res.problems.end())
            res.problems.push_back(why);
          L.pass = false;
          if (orr) orr->pass = false;
          note_divergence(a.pos0, il, op, INFINITY, L.threshold);
          continue;
        }
        const size_t width = data_a->size() / static_cast<size_t>(a.n);
        for (int t = 0; t < a.n; ++t) {
          const size_t off = static_cast<size_t>(t) * width;
          const row_err e = compare_rows(data_a->data() + off, data_b->data() + off, width);
          const int pos = a.pos0 + t;
          (orr ? orr->w : L.hidden).add(e.nmse, e.max_abs, pos);
          if (e.nmse > L.threshold) {
            L.pass = false;
            if (orr) orr->pass = false;
            note_divergence(pos, il, op, e.nmse, L.threshold);
          }
        }
      }
    }
    for (int t = 0; t < a.n; ++t) {
      const float* la = a.logits.data() + static_cast<size_t>(t) * nv;
      const float* lb = b.logits.data() + static_cast<size_t>(t) * nv;
      logit_pos lp;
      lp.pos = a.pos0 + t;
      lp.top_ref = argmax(la, nv);
      lp.top_got = argmax(lb, nv);
      lp.kl = kl_divergence(la, lb, nv);
      const row_err e = compare_rows(la, lb, nv);
      lp.nmse = e.nmse;
      lp.max_abs = e.max_abs;
      float second = -INFINITY;
      for (size_t i = 0; i < nv; ++i)
        if (static_cast<int>(i) != lp.top_ref) second = std::max(second, la[i]);
      lp.margin = nv > 1 ? static_cast<double>(la[lp.top_ref]) - second : 0.0;
      res.logits.push_back(lp);
    }
  }
  int agree = 0;
  double kl_sum = 0;
  for (const logit_pos& lp : res.logits) {
    agree += lp.top_ref == lp.top_got;
    kl_sum += lp.kl;
    res.kl_max = std::max(res.kl_max, lp.kl);
    res.logit_nmse_max = std::max(res.logit_nmse_max, lp.nmse);
  }
  res.top1 = res.logits.empty() ? 0 : static_cast<double>(agree) / res.logits.size();
  res.kl_mean = res.logits.empty() ? 0 : kl_sum / res.logits.size();
}

std::string short_device(const std::string& name) {
  if (name.rfind("CPU", 0) == 0) return "CPU";
  if (name.rfind("vulkan", 0) == 0) return "GPU";
  return name;
}

// Text on one line: control characters escaped.
std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '\n') out += "\\n";
    else if (c == '"') out += "\\\"";
    else if (c < 0x20) out += fmt::format("\\x{:02x}", c);
    else out += static_cast<char>(c);
  }
  return out;
}

std::string join_tokens(const std::vector<int32_t>& v) {
  std::string s;
  for (int32_t t : v) s += (s.empty() ? "" : " ") + std::to_string(t);
  return s;
}

}  // namespace

command add_model(CLI::App& app) {
  struct opts {
    std::string model;
    std::string prompt = "Once upon a time, there was a little";
    int n_tokens = 8;
    int split = -1;
    int threads = 0;
    std::string expect = "auto";
    bool json = false;
    bool verbose = false;
  };
  auto o = std::make_shared<opts>();
  app.add_option("-m,--model", o->model, "GGUF model file")->required();
  app.add_option("-p,--prompt", o->prompt, "prompt (one batch)")->capture_default_str();
  app.add_option("-n,--tokens", o->n_tokens,
                 "continuation tokens fed after the prompt (the CPU's greedy choices), also the "
                 "length of the free-running greedy comparison")
      ->capture_default_str();
  app.add_option("--split", o->split,
                 "layers on the GPU in the split plan (the last K, with the output head; default "
                 "half of them, at least 1)");
  app.add_option("-t,--threads", o->threads, "CPU threads (0 = physical cores)")
      ->capture_default_str();
  app.add_option("--expect", o->expect,
                 "trained: top-1 must agree everywhere and the greedy text must be identical; "
                 "random: top-1 >= 90% and the greedy text is only reported; auto: trained when "
                 "the CPU's top-1 is decisive at every position (see --help of the tool)")
      ->check(CLI::IsMember({"auto", "trained", "random"}))
      ->capture_default_str();
  app.add_flag("--json", o->json, "print the results as JSON");
  app.add_flag("-v,--verbose", o->verbose, "print every op of every layer");

  return [o]() -> int {
    if (o->n_tokens < 0) throw error("--tokens must be at least 0");
    auto m = model::load(o->model);
    auto tok = tokenizer::from_gguf(m->file());
    const auto& hp = m->hp();
    std::vector<int32_t> prompt = tok->encode(o->prompt, tok->add_bos_default());
    if (prompt.empty() && tok->bos() >= 0) prompt.push_back(tok->bos());
    if (prompt.empty()) throw error("the prompt is empty and the vocabulary has no BOS token");
    const int n_prompt = static_cast<int>(prompt.size());

    engine_options eo;
    eo.n_ctx = (n_prompt + o->n_tokens + 1 + 15) / 16 * 16;
    eo.n_batch = n_prompt;
    eo.n_threads = o->threads;

    // The reference: every layer on the CPU.
    eo.offload = "0";
    engine cpu_eng(*m, eo);
    std::vector<int32_t> cont;
    const run_data ref = run_forced(cpu_eng, *m, prompt, &cont, o->n_tokens, true);
    const std::vector<int32_t> cpu_greedy = free_run(cpu_eng, *m, prompt, o->n_tokens);

    // The plans to check.
    std::vector<std::pair<std::string, std::string>> plans = {{"gpu", "all"}};
    const int split = o->split >= 0 ? o->split : std::max(1, hp.n_layer / 2);
    if (hp.n_layer >= 2 && split < hp.n_layer) plans.emplace_back("split", std::to_string(split));
    std::vector<config_result> results;
    for (const auto& [name, offload] : plans) {
      eo.offload = offload;
      engine eng(*m, eo);
      bool on_gpu = false;
      for (int il = 0; il <= hp.n_layer; ++il)
        on_gpu |= short_device(eng.layer_backend(il)->name()) == "GPU";
      if (!on_gpu) {
        std::string why;
        for (const auto& n : eng.notes()) why += n;
        fmt::print(stderr, "gpu-cpu-parity: no Vulkan device for --offload {}: {}\n", offload,
                   why);
        return no_device_status();
      }
      config_result res;
      res.name = name;
      res.offload = offload;
      const run_data got = run_forced(eng, *m, prompt, &cont, o->n_tokens, false);
      res.plan = got.plan;
      compare(*m, ref, got, res);
      res.greedy = free_run(eng, *m, prompt, o->n_tokens);
      while (res.greedy_agree < static_cast<int>(res.greedy.size()) &&
             res.greedy[static_cast<size_t>(res.greedy_agree)] ==
                 cpu_greedy[static_cast<size_t>(res.greedy_agree)])
        ++res.greedy_agree;
      results.push_back(std::move(res));
    }

    // Trained or random weights: whether the reference's choice is decisive everywhere, i.e. its
    // top-1 logit leads the runner-up by more than k_decisive (in logits) at every position.
    constexpr double k_decisive = 0.05;
    double min_margin = INFINITY;
    if (!results.empty())
      for (const logit_pos& lp : results.front().logits) min_margin = std::min(min_margin, lp.margin);
    const bool trained =
        o->expect == "trained" || (o->expect == "auto" && min_margin > k_decisive);
    const double top1_need = trained ? k_thr.top1_trained : k_thr.top1_random;

    bool all_pass = true;
    for (config_result& r : results) {
      for (const layer_result& L : r.layers) r.pass &= L.pass;
      if (r.first)
        r.problems.push_back(fmt::format("layer {} op {} diverges at position {} (NMSE {} > {})",
                                         r.first->layer, r.first->op, r.first->pos,
                                         sci(r.first->nmse), sci(r.first->threshold)));
      if (r.kl_max > r.kl_threshold) {
        r.pass = false;
        r.problems.push_back(fmt::format("logits: KL divergence {} > {}", sci(r.kl_max),
                                         sci(r.kl_threshold)));
        if (!r.first) {
          for (const logit_pos& lp : r.logits)
            if (lp.kl > r.kl_threshold) {
              r.first = divergence{lp.pos, hp.n_layer, "output head (logits)", lp.kl,
                                   r.kl_threshold};
              break;
            }
        }
      }
      if (r.top1 + 1e-12 < top1_need) {
        r.pass = false;
        r.problems.push_back(fmt::format("logits: top-1 agreement {:.1f}% < {:.0f}%",
                                         100 * r.top1, 100 * top1_need));
      }
      if (trained && r.greedy_agree < static_cast<int>(r.greedy.size())) {
        r.pass = false;
        r.problems.push_back(fmt::format("greedy text differs from the CPU's at token {}",
                                         r.greedy_agree));
      }
      all_pass &= r.pass;
    }

    if (o->json) {
      nlohmann::json j;
      j["mode"] = "model";
      j["model"] = o->model;
      j["n_layer"] = hp.n_layer;
      j["prompt_tokens"] = prompt;
      j["continuation"] = cont;
      j["cpu_greedy"] = cpu_greedy;
      j["cpu_greedy_text"] = tok->decode(cpu_greedy);
      j["expect"] = trained ? "trained" : "random";
      j["min_top1_margin"] = min_margin;
      j["thresholds"] = {{"nmse_float", k_thr.nmse_float}, {"nmse_quant", k_thr.nmse_quant},
                         {"kl_float", k_thr.kl_float},     {"kl_quant", k_thr.kl_quant},
                         {"top1", top1_need}};
      j["configs"] = nlohmann::json::array();
      for (const config_result& r : results) {
        nlohmann::json c;
        c["name"] = r.name;
        c["offload"] = r.offload;
        c["plan"] = r.plan;
        c["pass"] = r.pass;
        c["problems"] = r.problems;
        c["layers"] = nlohmann::json::array();
        for (const layer_result& L : r.layers) {
          nlohmann::json l{{"layer", L.layer},
                           {"device", L.device},
                           {"threshold", L.threshold},
                           {"nmse", L.hidden.nmse},
                           {"worst_pos", L.hidden.pos},
                           {"max_abs_err", L.hidden.max_abs},
                           {"pass", L.pass}};
          l["ops"] = nlohmann::json::array();
          for (const op_result& op : L.ops)
            l["ops"].push_back({{"op", op.op},
                                {"nmse", op.w.nmse},
                                {"worst_pos", op.w.pos},
                                {"max_abs_err", op.w.max_abs},
                                {"pass", op.pass}});
          c["layers"].push_back(l);
        }
        nlohmann::json lg;
        lg["top1_agreement"] = r.top1;
        lg["kl_max"] = r.kl_max;
        lg["kl_mean"] = r.kl_mean;
        lg["kl_threshold"] = r.kl_threshold;
        lg["nmse_max"] = r.logit_nmse_max;
        lg["positions"] = nlohmann::json::array();
        for (const logit_pos& lp : r.logits)
          lg["positions"].push_back({{"pos", lp.pos},
                                     {"top1_cpu", lp.top_ref},
                                     {"top1_gpu", lp.top_got},
                                     {"kl", lp.kl},
                                     {"nmse", lp.nmse},
                                     {"max_abs_err", lp.max_abs},
                                     {"cpu_margin", lp.margin}});
        c["logits"] = lg;
        c["greedy"] = {{"tokens", r.greedy},
                       {"text", tok->decode(r.greedy)},
                       {"agree", r.greedy_agree},
                       {"required", trained}};
        if (r.first)
          c["first_divergence"] = {{"layer", r.first->layer},
                                   {"op", r.first->op},
                                   {"pos", r.first->pos},
                                   {"nmse", r.first->nmse},
                                   {"threshold", r.first->threshold}};
        else
          c["first_divergence"] = nullptr;
        j["configs"].push_back(c);
      }
      j["pass"] = all_pass;
      fmt::print("{}\n", j.dump(2));
      return all_pass ? 0 : 1;
    }

    fmt::print("gpu-cpu-parity model: {}\n", o->model);
    fmt::print("  {} layers, {} prompt tokens [{}] + {} continuation tokens (the CPU's greedy) "
               "[{}]\n",
               hp.n_layer, n_prompt, join_tokens(prompt), cont.size(), join_tokens(cont));
    fmt::print("  weights {}: {}; min top-1 margin {:.3g}\n",
               trained ? "trained" : "random", o->expect == "auto" ? "auto-detected" : "--expect",
               min_margin);
    fmt::print("  reference: {}\n", ref.plan);
    for (const config_result& r : results) {
      fmt::print("\n[{}] --offload {}: {}\n", r.name, r.offload, r.plan);
      fmt::print("  {:<5} {:<4} {:>10} {:>5} {:>10}  {:<36} {:>9}  {}\n", "layer", "dev",
                 "NMSE", "pos", "max abs", "worst op (NMSE, pos)", "threshold", "result");
      for (const layer_result& L : r.layers) {
        const op_result* w = nullptr;
        for (const op_result& op : L.ops)
          if (!w || op.w.nmse > w->w.nmse) w = &op;
        const std::string wop =
            w ? fmt::format("{} ({}, {})", w->op, sci(w->w.nmse), w->w.pos) : "-";
        fmt::print("  {:<5} {:<4} {:>10} {:>5} {:>10}  {:<36} {:>9}  {}\n", L.layer,
                   short_device(L.device), sci(L.hidden.nmse), L.hidden.pos,
                   sci(L.hidden.max_abs), wop, sci(L.threshold), L.pass ? "ok" : "FAIL");
        if (o->verbose)
          for (const op_result& op : L.ops)
            fmt::print("        {:<20} {:>10} {:>5} {:>10}  {}\n", op.op, sci(op.w.nmse),
                       op.w.pos, sci(op.w.max_abs), op.pass ? "ok" : "FAIL");
      }
      int agree = 0;
      for (const logit_pos& lp : r.logits) agree += lp.top_ref == lp.top_got;
      fmt::print("  logits: top-1 {}/{} ({:.1f}%, need {:.0f}%), KL max {} mean {} (<= {}), "
                 "NMSE max {}\n",
                 agree, r.logits.size(), 100 * r.top1, 100 * top1_need, sci(r.kl_max),
                 sci(r.kl_mean), sci(r.kl_threshold), sci(r.logit_nmse_max));
      if (o->verbose)
        for (const logit_pos& lp : r.logits)
          fmt::print("        pos {:>3}: top-1 {:>6} / {:>6}  KL {:>10}  NMSE {:>10}  margin "
                     "{:.3g}\n",
                     lp.pos, lp.top_ref, lp.top_got, sci(lp.kl), sci(lp.nmse), lp.margin);
      fmt::print("  greedy ({} tokens, free-running): {}{}\n", r.greedy.size(),
                 r.greedy_agree == static_cast<int>(r.greedy.size())
                     ? std::string("identical to the CPU's")
                     : fmt::format("differs from the CPU's at token {}", r.greedy_agree),
                 trained ? "" : " (not required: random weights)");
      if (r.greedy_agree < static_cast<int>(r.greedy.size()) || o->verbose) {
        fmt::print("    cpu: \"{}\"\n", printable(tok->decode(cpu_greedy)));
        fmt::print("    {}: \"{}\"\n", r.name, printable(tok->decode(r.greedy)));
      }
      if (r.first)
        fmt::print("  first divergence: layer {}, op {}, position {} (NMSE {} > {})\n",
                   r.first->layer, r.first->op, r.first->pos, sci(r.first->nmse),
                   sci(r.first->threshold));
      else
        fmt::print("  first divergence: none\n");
      for (const std::string& p : r.problems) fmt::print("  problem: {}\n", p);
      fmt::print("  {}\n", r.pass ? "PASS" : "FAIL");
    }
    fmt::print("\n{}\n", all_pass ? "PASS" : "FAIL");
    return all_pass ? 0 : 1;
  };
}

}  // namespace tandem::parity
