// `gpu-cpu-parity model`: one model, the same tokens, several plans against every layer on the
// CPU (the reference): every layer and the output head on the GPU, a split (the last K layers and
// the head on the GPU), every layer streamed through the GPU's two slots, and an isolated run
// (each GPU layer fed the CPU's input to that layer). The tokens are the prompt (one batch) and
// then a fixed continuation, the CPU's greedy choices, fed one at a time to every plan alike.
// Compared position by position: the output of every op of every layer (backend::set_capture,
// isolated run), every layer's hidden state (engine::set_layer_capture) and the logits (top-1,
// KL divergence); then the free-running greedy text of each plan. The first layer and op beyond
// its threshold is named.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/matmul.h"
#include "runtime/backend_factory.h"
#include "runtime/engine.h"
#include "runtime/error.h"
#include "runtime/model.h"
#include "runtime/tokenizer.h"
#include "tools/gpu-cpu-parity/parity.h"

namespace tandem::parity {
namespace {

// ---- thresholds (the help text of the tool says the same, with the measurements) ------------
// The weights a layer (or the model) multiplies by, by how the CPU computes with them.
enum class weight_class { f32, f16, quantized };

const char* class_name(weight_class c) {
  return c == weight_class::quantized ? "quantized" : c == weight_class::f16 ? "F16" : "F32";
}

struct thresholds {
  struct by_type {
    double f;  // F32 weights
    double h;  // F16: the CPU may pack them to 14-bit levels with 13-bit activations (repack.h)
    double q;  // quantized weights: the CPU rounds the activations of their products to 8 bits
    double of(weight_class c) const {
      return c == weight_class::quantized ? q : c == weight_class::f16 ? h : f;
    }
  };
  // Isolated: each GPU layer fed the CPU's input to that layer (the head the CPU's last hidden
  // state). Per position, every op's output and the layer's output: the error one layer adds.
  by_type iso_nmse{1e-5, 1e-4, 1e-2};
  by_type iso_kl{1e-6, 1e-6, 1e-3};
  // End to end (the engine runs the plan): each layer's output and the logits, with the error
  // of every layer before compounded (random weights amplify it).
  by_type e2e_nmse{1e-4, 1e-3, 1e-1};
  by_type e2e_kl{1e-4, 1e-3, 1e-1};
  // Top-1 agreement of the logits over all positions; a trained model must also produce the
  // same free-running greedy text.
  double top1_random = 0.75;
  double top1_trained = 1.0;
  // --expect auto: trained when the CPU's top-1 probability averages at least this (a random
  // model's output is near-uniform).
  double trained_top1_prob = 0.3;
};
constexpr thresholds k_thr;

weight_class class_of(dtype t) {
  return t == dtype::f32   ? weight_class::f32
         : t == dtype::f16 ? weight_class::f16
                           : weight_class::quantized;
}

// The loosest class among a layer's matrices.
weight_class layer_class(const model& m, int il) {
  const layer_weights& L = m.layer(il);
  weight_class c = weight_class::f32;
  for (const layer_matrix& lm : layer_matrices)
    if (L.*lm.field) c = std::max(c, class_of((L.*lm.field).type()));
  return c;
}

weight_class model_class(const model& m) {
  weight_class c = class_of(m.output().type());
  for (int il = 0; il < m.hp().n_layer; ++il) c = std::max(c, layer_class(m, il));
  return c;
}

// ---- runs of the tokens, with everything captured --------------------------------------------

struct captured_layer {
  std::vector<std::pair<std::string, std::vector<float>>> ops;  // in the order the backend ran them
  std::vector<float> hidden;
};

struct step {  // one eval call: the prompt batch, or one continuation token
  int pos0 = 0, n = 0;
  std::vector<int32_t> tokens;
  std::vector<float> logits;  // n x n_vocab
  std::vector<captured_layer> layers;
};

struct run_data {
  std::string plan;                       // where the layers ran
  std::vector<std::string> layer_device;  // per layer, then the output head
  std::vector<step> steps;
};

capture_fn op_recorder(step** cur) {
  return [cur](int il, const char* op, const float* d, size_t n) {
    if (*cur && il >= 0 && static_cast<size_t>(il) < (*cur)->layers.size())
      (*cur)->layers[static_cast<size_t>(il)].ops.emplace_back(op, std::vector<float>(d, d + n));
  };
}

int argmax(const float* v, size_t n) {
  return static_cast<int>(std::max_element(v, v + n) - v);
}

// Runs the prompt and the continuation through eng, capturing each layer's output (and with
// ops, every op's). With reference set, the continuation is made here (greedy on this engine's
// logits) and stored in *cont.
run_data run_forced(engine& eng, const model& m, const std::vector<int32_t>& prompt,
                    std::vector<int32_t>* cont, int n_tokens, bool reference, bool ops) {
  const auto& hp = m.hp();
  run_data r;
  r.plan = eng.describe();
  for (int il = 0; il <= hp.n_layer; ++il) {
    const backend* b = eng.layer_backend(il);
    r.layer_device.push_back(b ? b->name() : "?");
  }
  step* cur = nullptr;
  if (ops) eng.set_op_capture(op_recorder(&cur));
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
    s.tokens = toks;
    s.layers.resize(static_cast<size_t>(hp.n_layer));
    cur = &s;
    s.logits = eng.eval(toks, /*all_logits=*/true);
    cur = nullptr;
    return static_cast<int32_t>(argmax(s.logits.data() + nv * static_cast<size_t>(s.n - 1), nv));
  };
  int32_t next = eval(prompt);
  if (reference) cont->clear();
  for (int i = 0; i < n_tokens; ++i) {
    if (reference) cont->push_back(next);
    next = eval({(*cont)[static_cast<size_t>(i)]});
  }
  eng.set_op_capture({});
  eng.set_layer_capture({});
  return r;
}

// Every layer on gpu (and the output head), each fed the reference's input to that layer: the
// embedding for layer 0, else the reference's output of the layer before; the head gets the
// reference's last layer output. The KV caches fill from those inputs, so every position is
// isolated too.
run_data run_isolated(const model& m, const run_data& ref, backend& embedder, backend& gpu) {
  const auto& hp = m.hp();
  run_data r;
  r.plan = gpu.name() + ": each layer and the output head, fed the CPU's input";
  r.layer_device.assign(static_cast<size_t>(hp.n_layer) + 1, gpu.name());
  step* cur = nullptr;
  gpu.set_capture(op_recorder(&cur));
  const size_t d = static_cast<size_t>(hp.n_embd);
  for (const step& rs : ref.steps) {
    r.steps.emplace_back();
    step& s = r.steps.back();
    s.pos0 = rs.pos0;
    s.n = rs.n;
    s.tokens = rs.tokens;
    s.layers.resize(static_cast<size_t>(hp.n_layer));
    std::vector<float> x(static_cast<size_t>(s.n) * d);
    embedder.embed(s.tokens.data(), s.n, x.data());
    for (int il = 0; il < hp.n_layer; ++il) {
      const std::vector<float>& in = il == 0 ? x : rs.layers[static_cast<size_t>(il) - 1].hidden;
      if (in.size() != x.size()) throw error(fmt::format("no reference input for layer {}", il));
      gpu.upload_hidden(in.data(), s.n);
      cur = &s;
      gpu.forward_layer(il, s.n, s.pos0);
      cur = nullptr;
      captured_layer& c = s.layers[static_cast<size_t>(il)];
      c.hidden.resize(x.size());
      gpu.download_hidden(c.hidden.data(), s.n);
    }
    const std::vector<float>& last = rs.layers.back().hidden;
    if (last.size() != x.size()) throw error("no reference output of the last layer");
    gpu.upload_hidden(last.data(), s.n);
    s.logits.resize(static_cast<size_t>(s.n) * static_cast<size_t>(hp.n_vocab));
    gpu.forward_output(s.n, /*all_tokens=*/true, s.logits.data());
  }
  gpu.set_capture({});
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
    const int32_t t = static_cast<int32_t>(argmax(logits.data(), nv));
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
};

struct divergence {
  int pos = -1, layer = -1;  // layer n_layer: the output head
  std::string op;            // an op, "output" (the layer's output) or "logits"
  double value = 0, threshold = 0;
  std::string what() const {
    if (op == "logits")
      return fmt::format("the output head (logits), position {} (KL {} > {})", pos, sci(value),
                         sci(threshold));
    return fmt::format("layer {}, op {}, position {} (NMSE {} > {})", layer, op, pos, sci(value),
                       sci(threshold));
  }
};

struct config_result {
  std::string name, offload, plan;
  std::vector<layer_result> layers;
  std::vector<logit_pos> logits;
  double kl_threshold = 0, top1_need = 0;
  double top1 = 0, kl_max = 0, kl_mean = 0, logit_nmse_max = 0;
  bool has_greedy = false;
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

void diverge(config_result& res, int pos, int il, const std::string& op, double v, double thr) {
  if (!res.first) res.first = divergence{pos, il, op, v, thr};
}

// An op (or the layer output) that got lacks or holds at another size: a problem, and a failure.
void missing_capture(config_result& res, layer_result& L, op_result* orr, const step& a,
                     const std::string& op, const std::vector<float>* data_a,
                     const std::vector<float>* data_b) {
  const std::string why = fmt::format("layer {} op {}: {} on {} ({} floats, the reference {})",
                                      L.layer, op, data_b ? "a different size" : "not captured",
                                      L.device, data_b ? data_b->size() : 0, data_a->size());
  if (res.problems.size() < 8 &&
      std::find(res.problems.begin(), res.problems.end(), why) == res.problems.end())
    res.problems.push_back(why);
  L.pass = false;
  if (orr) orr->pass = false;
  diverge(res, a.pos0, L.layer, op, INFINITY, L.threshold);
}

// One layer of one eval step: its ops in the reference's order (with_ops), then its output,
// position by position.
void compare_layer(config_result& res, layer_result& L, const step& a, const step& b,
                   bool with_ops) {
  const captured_layer& ca = a.layers[static_cast<size_t>(L.layer)];
  const captured_layer& cb = b.layers[static_cast<size_t>(L.layer)];
  std::vector<std::pair<std::string, const std::vector<float>*>> items;
  if (with_ops)
    for (const auto& [op, data] : ca.ops) items.emplace_back(op, &data);
  items.emplace_back("output", &ca.hidden);
  for (const auto& [op, data_a] : items) {
    const bool is_output = op == "output";
    const std::vector<float>* data_b = is_output ? &cb.hidden : nullptr;
    if (!is_output)
      for (const auto& [opb, dat] : cb.ops)
        if (opb == op) data_b = &dat;
    op_result* orr = nullptr;
    if (!is_output) {
      auto it =
          std::find_if(L.ops.begin(), L.ops.end(), [&](const op_result& x) { return x.op == op; });
      if (it == L.ops.end()) it = L.ops.insert(L.ops.end(), op_result{op, {}, true});
      orr = &*it;
    }
    if (!data_b || data_b->size() != data_a->size() || data_a->empty() || a.n <= 0 ||
        data_a->size() % static_cast<size_t>(a.n) != 0) {
      missing_capture(res, L, orr, a, op, data_a, data_b);
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
        diverge(res, pos, L.layer, op, e.nmse, L.threshold);
      }
    }
  }
}

// The logits of one eval step, position by position.
void compare_logits(config_result& res, const step& a, const step& b, size_t nv, int n_layer) {
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
    res.logits.push_back(lp);
    if (lp.kl > res.kl_threshold) diverge(res, lp.pos, n_layer, "logits", lp.kl, res.kl_threshold);
  }
}

// The logits' figures over every position, and the verdict.
void judge(config_result& res) {
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

  for (const layer_result& L : res.layers) res.pass &= L.pass;
  if (res.first && res.first->op != "logits")
    res.problems.push_back("diverges at " + res.first->what());
  if (res.kl_max > res.kl_threshold) {
    res.pass = false;
    res.problems.push_back(
        fmt::format("logits: KL divergence {} > {}", sci(res.kl_max), sci(res.kl_threshold)));
  }
  if (res.top1 + 1e-12 < res.top1_need) {
    res.pass = false;
    res.problems.push_back(fmt::format("logits: top-1 agreement {:.1f}% < {:.0f}%", 100 * res.top1,
                                       100 * res.top1_need));
  }
}

// Compares got against the reference position by position: every op (when got has them), each
// layer's output against layer_threshold(il), the logits against res.kl_threshold; notes the
// first divergence in the order the model computes (position batch, layer, op).
template <class Threshold>
void compare(const model& m, const run_data& ref, const run_data& got, bool with_ops,
             Threshold layer_threshold, config_result& res) {
  const auto& hp = m.hp();
  res.layers.resize(static_cast<size_t>(hp.n_layer));
  for (int il = 0; il < hp.n_layer; ++il) {
    layer_result& L = res.layers[static_cast<size_t>(il)];
    L.layer = il;
    L.device = got.layer_device[static_cast<size_t>(il)];
    L.threshold = layer_threshold(il);
  }
  for (size_t si = 0; si < ref.steps.size() && si < got.steps.size(); ++si) {
    for (layer_result& L : res.layers)
      compare_layer(res, L, ref.steps[si], got.steps[si], with_ops);
    compare_logits(res, ref.steps[si], got.steps[si], static_cast<size_t>(hp.n_vocab), hp.n_layer);
  }
  judge(res);
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
    if (c == '\n')
      out += "\\n";
    else if (c == '"')
      out += "\\\"";
    else if (c < 0x20)
      out += fmt::format("\\x{:02x}", c);
    else
      out += static_cast<char>(c);
  }
  return out;
}

std::string join_tokens(const std::vector<int32_t>& v) {
  std::string s;
  for (int32_t t : v) s += (s.empty() ? "" : " ") + std::to_string(t);
  return s;
}

nlohmann::json to_json(const config_result& r, const tokenizer& tok) {
  nlohmann::json c;
  c["name"] = r.name;
  if (!r.offload.empty()) c["offload"] = r.offload;
  c["plan"] = r.plan;
  c["pass"] = r.pass;
  c["problems"] = r.problems;
  c["layers"] = nlohmann::json::array();
  for (const layer_result& L : r.layers) {
    nlohmann::json l{
        {"layer", L.layer},      {"device", L.device},        {"threshold", L.threshold},
        {"nmse", L.hidden.nmse}, {"worst_pos", L.hidden.pos}, {"max_abs_err", L.hidden.max_abs},
        {"pass", L.pass}};
    if (!L.ops.empty()) {
      l["ops"] = nlohmann::json::array();
      for (const op_result& op : L.ops)
        l["ops"].push_back({{"op", op.op},
                            {"nmse", op.w.nmse},
                            {"worst_pos", op.w.pos},
                            {"max_abs_err", op.w.max_abs},
                            {"pass", op.pass}});
    }
    c["layers"].push_back(l);
  }
  nlohmann::json lg;
  lg["top1_agreement"] = r.top1;
  lg["top1_needed"] = r.top1_need;
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
                               {"max_abs_err", lp.max_abs}});
  c["logits"] = lg;
  if (r.has_greedy)
    c["greedy"] = {{"tokens", r.greedy}, {"text", tok.decode(r.greedy)}, {"agree", r.greedy_agree}};
  if (r.first)
    c["first_divergence"] = {{"layer", r.first->layer},
                             {"op", r.first->op},
                             {"pos", r.first->pos},
                             {"value", r.first->value},
                             {"threshold", r.first->threshold}};
  else
    c["first_divergence"] = nullptr;
  return c;
}

void print(const config_result& r, const tokenizer& tok, const std::vector<int32_t>& cpu_greedy,
           bool trained, bool verbose) {
  if (r.offload.empty())
    fmt::print("\n[{}] {}\n", r.name, r.plan);
  else
    fmt::print("\n[{}] --offload {}: {}\n", r.name, r.offload, r.plan);
  const bool ops = std::any_of(r.layers.begin(), r.layers.end(),
                               [](const layer_result& L) { return !L.ops.empty(); });
  fmt::print("  {:<5} {:<4} {:>10} {:>5} {:>10}  {:<38}{:>9}  {}\n", "layer", "dev", "out NMSE",
             "pos", "max abs", ops ? "worst op (NMSE, pos)" : "", "threshold", "result");
  for (const layer_result& L : r.layers) {
    const op_result* w = nullptr;
    for (const op_result& op : L.ops)
      if (!w || op.w.nmse > w->w.nmse) w = &op;
    const std::string wop = w ? fmt::format("{} ({}, {})", w->op, sci(w->w.nmse), w->w.pos) : "";
    fmt::print("  {:<5} {:<4} {:>10} {:>5} {:>10}  {:<38}{:>9}  {}\n", L.layer,
               short_device(L.device), sci(L.hidden.nmse), L.hidden.pos, sci(L.hidden.max_abs), wop,
               sci(L.threshold), L.pass ? "ok" : "FAIL");
    if (verbose)
      for (const op_result& op : L.ops)
        fmt::print("        {:<20} {:>10} {:>5} {:>10}  {}\n", op.op, sci(op.w.nmse), op.w.pos,
                   sci(op.w.max_abs), op.pass ? "ok" : "FAIL");
  }
  int agree = 0;
  for (const logit_pos& lp : r.logits) agree += lp.top_ref == lp.top_got;
  fmt::print(
      "  logits: top-1 {}/{} ({:.1f}%, need {:.0f}%), KL max {} mean {} (<= {}), NMSE max "
      "{}\n",
      agree, r.logits.size(), 100 * r.top1, 100 * r.top1_need, sci(r.kl_max), sci(r.kl_mean),
      sci(r.kl_threshold), sci(r.logit_nmse_max));
  if (verbose)
    for (const logit_pos& lp : r.logits)
      fmt::print("        pos {:>3}: top-1 {:>6} / {:>6}  KL {:>10}  NMSE {:>10}\n", lp.pos,
                 lp.top_ref, lp.top_got, sci(lp.kl), sci(lp.nmse));
  if (r.has_greedy) {
    fmt::print("  greedy ({} tokens, free-running): {}{}\n", r.greedy.size(),
               r.greedy_agree == static_cast<int>(r.greedy.size())
                   ? std::string("identical to the CPU's")
                   : fmt::format("differs from the CPU's at token {}", r.greedy_agree),
               trained ? "" : " (not required: random weights)");
    if (r.greedy_agree < static_cast<int>(r.greedy.size()) || verbose) {
      fmt::print("    cpu: \"{}\"\n", printable(tok.decode(cpu_greedy)));
      fmt::print("    {}: \"{}\"\n", r.name, printable(tok.decode(r.greedy)));
    }
  }
  fmt::print("  first divergence: {}\n", r.first ? r.first->what() : std::string("none"));
  for (const std::string& p : r.problems) fmt::print("  problem: {}\n", p);
  fmt::print("  {}\n", r.pass ? "PASS" : "FAIL");
}

struct model_opts {
  std::string model;
  std::string prompt = "Once upon a time, there was a little";
  int n_tokens = 8;
  int split = -1;
  int threads = 0;
  std::string expect = "auto";
  bool json = false;
  bool verbose = false;
  bool no_stream = false;
  std::string cpu = "optimized";
};

void add_options(CLI::App& app, model_opts& o) {
  app.add_option("-m,--model", o.model, "GGUF model file")->required();
  app.add_option("-p,--prompt", o.prompt, "prompt (evaluated as one batch)")->capture_default_str();
  app.add_option("-n,--tokens", o.n_tokens,
                 "continuation tokens fed one at a time after the prompt (the CPU's greedy "
                 "choices); also the length of the free-running greedy comparison")
      ->capture_default_str();
  app.add_option("--split", o.split,
                 "layers on the GPU in the split plan: the last K, with the output head (default: "
                 "half of them, at least 1)");
  app.add_option("-t,--threads", o.threads, "CPU threads (0 = physical cores)")
      ->capture_default_str();
  app.add_option("--expect", o.expect,
                 "trained: top-1 must agree at every position and the greedy text must be "
                 "identical; random: top-1 >= 75%, greedy text only reported; auto: trained when "
                 "the CPU's top-1 probability averages 0.3 or more")
      ->check(CLI::IsMember({"auto", "trained", "random"}))
      ->capture_default_str();
  app.add_flag("--no-stream", o.no_stream,
               "skip the streamed plan (every layer on the GPU, streamed through two slots)");
  app.add_option("--cpu", o.cpu,
                 "the CPU side of the comparison: optimized (the kernels tandem runs: SIMD, 8-bit "
                 "activations for quantized weights, thresholds by weight type) or reference "
                 "(scalar reference kernels, F32 activations, weights in their file layout: "
                 "the GPU's arithmetic, so the F32 thresholds hold for every type)")
      ->check(CLI::IsMember({"optimized", "reference"}))
      ->capture_default_str();
  app.add_flag("--json", o.json, "print the results as JSON");
  app.add_flag("-v,--verbose", o.verbose, "print every op of every layer and every position");
}

// One comparison: the model, the tokens, the reference run and what follows from it.
struct parity_run {
  const model_opts& o;
  const model& m;
  const tokenizer& tok;
  bool reference = false;    // --cpu reference
  std::string comparison{};  // which comparison it makes, in words
  std::vector<int32_t> prompt{};
  engine_options eo{};
  std::vector<int32_t> cont{};        // the continuation: the reference's greedy choices
  run_data ref{};                     // every layer on the CPU, every op captured
  std::vector<int32_t> cpu_greedy{};  // the reference's free-running greedy text
  double min_margin = INFINITY;       // the reference's smallest top-1 lead over the runner-up
  double mean_top1_prob = 0;          // and its mean top-1 probability
  bool trained = false;
  double top1_need = 0;
  // The class whose thresholds apply: against the reference, the F32 ones for every type.
  weight_class model_thr() const { return reference ? weight_class::f32 : model_class(m); }
  weight_class layer_thr(int il) const {
    return reference ? weight_class::f32 : layer_class(m, il);
  }
};

// Trained or random weights: how confident the reference is (and its smallest top-1 lead).
void judge_weights(parity_run& r) {
  double top1_prob_sum = 0;
  int n_pos = 0;
  const size_t nv = static_cast<size_t>(r.m.hp().n_vocab);
  for (const step& s : r.ref.steps)
    for (int t = 0; t < s.n; ++t) {
      const float* l = s.logits.data() + static_cast<size_t>(t) * nv;
      const int top = argmax(l, nv);
      float second = -INFINITY;
      for (size_t i = 0; i < nv; ++i)
        if (static_cast<int>(i) != top) second = std::max(second, l[i]);
      if (nv > 1) r.min_margin = std::min(r.min_margin, static_cast<double>(l[top]) - second);
      double z = 0;
      for (size_t i = 0; i < nv; ++i) z += std::exp(static_cast<double>(l[i]) - l[top]);
      top1_prob_sum += 1.0 / z;
      ++n_pos;
    }
  r.mean_top1_prob = top1_prob_sum / std::max(1, n_pos);
  r.trained = r.o.expect == "trained" ||
              (r.o.expect == "auto" && r.mean_top1_prob >= k_thr.trained_top1_prob);
  r.top1_need = r.trained ? k_thr.top1_trained : k_thr.top1_random;
}

// Isolated: every layer on the GPU, each fed the CPU's input. Empty without a Vulkan device.
std::optional<config_result> run_isolated_plan(const parity_run& r) {
  backend_options bo;
  bo.n_ctx = r.eo.n_ctx;
  bo.n_batch = r.eo.n_batch;
  bo.n_threads = r.o.threads;
  bo.output = false;
  auto embedder = make_cpu_backend(r.m, bo);
  for (int il = 0; il < r.m.hp().n_layer; ++il) bo.layers.push_back(il);
  bo.output = true;
  std::string why;
  auto gpu = make_vulkan_backend(r.m, bo, /*allow_cpu_device=*/true, &why);
  if (!gpu) {
    fmt::print(stderr, "gpu-cpu-parity: no Vulkan device: {}\n", why);
    return std::nullopt;
  }
  const run_data iso = run_isolated(r.m, r.ref, *embedder, *gpu);
  config_result res;
  res.name = "isolated";
  res.plan = iso.plan;
  res.kl_threshold = k_thr.iso_kl.of(r.model_thr());
  res.top1_need = r.top1_need;
  compare(
      r.m, r.ref, iso, /*with_ops=*/true,
      [&](int il) { return k_thr.iso_nmse.of(r.layer_thr(il)); }, res);
  return res;
}

struct plan_spec {
  std::string name, offload;
  bool streamed;  // a VRAM budget of one byte: every layer streams through the two slots
};

// End to end: the engine runs the plan. Empty when it put nothing on a GPU.
std::optional<config_result> run_plan(parity_run& r, const plan_spec& p) {
  engine_options eo = r.eo;
  eo.offload = p.offload;
  eo.vram_budget = p.streamed ? 1 : 0;
  eo.stream_policy = p.streamed ? "gpu" : "auto";
  engine eng(r.m, eo);
  bool on_gpu = false;
  for (int il = 0; il <= r.m.hp().n_layer; ++il)
    on_gpu |= short_device(eng.layer_backend(il)->name()) == "GPU";
  if (!on_gpu) {
    std::string why;
    for (const auto& n : eng.notes()) why += n;
    fmt::print(stderr, "gpu-cpu-parity: no Vulkan device for --offload {}: {}\n", p.offload, why);
    return std::nullopt;
  }
  config_result res;
  res.name = p.name;
  res.offload = p.streamed ? p.offload + " --vram-budget 1 --stream gpu" : p.offload;
  res.kl_threshold = k_thr.e2e_kl.of(r.model_thr());
  res.top1_need = r.top1_need;
  const run_data got =
      run_forced(eng, r.m, r.prompt, &r.cont, r.o.n_tokens, /*reference=*/false, /*ops=*/false);
  res.plan = got.plan;
  if (p.streamed) {
    int n_streamed = 0;
    for (size_t i = 0; (i = eng.plan_text().find("GPU streamed", i)) != std::string::npos; ++i)
      ++n_streamed;
    res.plan += fmt::format(" ({} streamed)", n_streamed);
  }
  compare(
      r.m, r.ref, got, /*with_ops=*/false,
      [&](int il) { return k_thr.e2e_nmse.of(r.layer_thr(il)); }, res);
  res.has_greedy = true;
  res.greedy = free_run(eng, r.m, r.prompt, r.o.n_tokens);
  while (res.greedy_agree < static_cast<int>(res.greedy.size()) &&
         res.greedy[static_cast<size_t>(res.greedy_agree)] ==
             r.cpu_greedy[static_cast<size_t>(res.greedy_agree)])
    ++res.greedy_agree;
  if (r.trained && res.greedy_agree < static_cast<int>(res.greedy.size())) {
    res.pass = false;
    res.problems.push_back(
        fmt::format("greedy text differs from the CPU's at token {}", res.greedy_agree));
  }
  return res;
}

using first_divergence = std::optional<std::pair<std::string, divergence>>;

void print_json(const parity_run& r, const std::vector<config_result>& results,
                const first_divergence& first, bool all_pass) {
  const hparams& hp = r.m.hp();
  nlohmann::json j;
  j["mode"] = "model";
  j["model"] = r.o.model;
  j["n_layer"] = hp.n_layer;
  j["quantized"] = model_class(r.m) == weight_class::quantized;
  j["weights"] = class_name(model_class(r.m));
  j["cpu"] = r.o.cpu;
  j["comparison"] = r.comparison;
  j["prompt_tokens"] = r.prompt;
  j["continuation"] = r.cont;
  j["cpu_greedy"] = r.cpu_greedy;
  j["cpu_greedy_text"] = r.tok.decode(r.cpu_greedy);
  j["expect"] = r.trained ? "trained" : "random";
  j["min_top1_margin"] = r.min_margin;
  j["mean_top1_prob"] = r.mean_top1_prob;
  const weight_class wc = r.model_thr();
  j["thresholds"] = {{"isolated_nmse", k_thr.iso_nmse.of(wc)},
                     {"isolated_kl", k_thr.iso_kl.of(wc)},
                     {"end_to_end_nmse", k_thr.e2e_nmse.of(wc)},
                     {"end_to_end_kl", k_thr.e2e_kl.of(wc)},
                     {"top1", r.top1_need}};
  j["configs"] = nlohmann::json::array();
  for (const config_result& c : results) j["configs"].push_back(to_json(c, r.tok));
  if (first)
    j["first_divergence"] = {
        {"config", first->first},       {"layer", first->second.layer},
        {"op", first->second.op},       {"pos", first->second.pos},
        {"value", first->second.value}, {"threshold", first->second.threshold}};
  else
    j["first_divergence"] = nullptr;
  j["pass"] = all_pass;
  fmt::print("{}\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace));
}

void print_text(const parity_run& r, const std::vector<config_result>& results,
                const first_divergence& first, bool all_pass) {
  fmt::print("gpu-cpu-parity model: {}\n", r.o.model);
  fmt::print(
      "  {} layers ({} weights), {} prompt tokens [{}] + {} continuation tokens (the "
      "CPU's greedy) [{}]\n",
      r.m.hp().n_layer, class_name(model_class(r.m)), r.prompt.size(), join_tokens(r.prompt),
      r.cont.size(), join_tokens(r.cont));
  fmt::print("  comparison: {}\n", r.comparison);
  fmt::print(
      "  weights {} ({}: the CPU's top-1 probability averages {:.3f}; its smallest lead "
      "over the runner-up is {:.3g})\n",
      r.trained ? "trained" : "random", r.o.expect == "auto" ? "auto-detected" : "--expect",
      r.mean_top1_prob, r.min_margin);
  fmt::print("  reference: {}\n", r.ref.plan);
  for (const config_result& c : results) print(c, r.tok, r.cpu_greedy, r.trained, r.o.verbose);
  if (first)
    fmt::print("\nFAIL: first divergence [{}]: {}\n", first->first, first->second.what());
  else
    fmt::print("\n{}\n", all_pass ? "PASS" : "FAIL");
}

// The reference run (every layer on the CPU, every op captured), then each plan against it.
int run_model(const model_opts& o) {
  if (o.n_tokens < 0) throw error("--tokens must be at least 0");
  const bool reference = o.cpu == "reference";
  if (reference) {  // before any backend exists: no packed copies, no decode region
    cpu::set_kernel_level(cpu::kernel_level::scalar);
    cpu::set_reference_products(true);
  }
  auto m = model::load(o.model);
  auto tok = tokenizer::from_gguf(m->file());
  parity_run r{.o = o, .m = *m, .tok = *tok, .reference = reference};
  r.comparison = reference
                     ? "GPU against the CPU reference (scalar kernels, F32 activations)"
                     : "GPU against the optimized CPU path (SIMD kernels, 8-bit activations for "
                       "quantized weights)";
  r.prompt = tok->encode(o.prompt, tok->add_bos_default());
  if (r.prompt.empty() && tok->bos() >= 0) r.prompt.push_back(tok->bos());
  if (r.prompt.empty()) throw error("the prompt is empty and the vocabulary has no BOS token");
  const int n_prompt = static_cast<int>(r.prompt.size());
  r.eo.n_ctx = (n_prompt + o.n_tokens + 1 + 15) / 16 * 16;
  r.eo.n_batch = n_prompt;
  r.eo.n_threads = o.threads;
  r.eo.offload = "0";
  {
    engine cpu_eng(*m, r.eo);
    r.ref = run_forced(cpu_eng, *m, r.prompt, &r.cont, o.n_tokens, /*reference=*/true,
                       /*ops=*/true);
    r.cpu_greedy = free_run(cpu_eng, *m, r.prompt, o.n_tokens);
  }
  judge_weights(r);

  std::vector<config_result> results;
  std::optional<config_result> iso = run_isolated_plan(r);
  if (!iso) return no_device_status();
  results.push_back(std::move(*iso));
  std::vector<plan_spec> plans = {{"gpu", "all", false}};
  const int split = o.split >= 0 ? o.split : std::max(1, m->hp().n_layer / 2);
  if (split > 0 && split < m->hp().n_layer)
    plans.push_back({"split", std::to_string(split), false});
  if (!o.no_stream) plans.push_back({"stream", "all", true});
  for (const plan_spec& p : plans) {
    std::optional<config_result> res = run_plan(r, p);
    if (!res) return no_device_status();
    results.push_back(std::move(*res));
  }

  bool all_pass = true;
  for (const config_result& c : results) all_pass &= c.pass;
  // The first divergence overall: the isolated run names the layer and op that adds the error;
  // a plan that fails although every layer is right on its own points at the hand-off.
  first_divergence first;
  for (const config_result& c : results)
    if (!first && c.first && !c.pass) first = std::pair{c.name, *c.first};
  if (o.json)
    print_json(r, results, first, all_pass);
  else
    print_text(r, results, first, all_pass);
  return all_pass ? 0 : 1;
}

}  // namespace

command add_model(CLI::App& app) {
  auto o = std::make_shared<model_opts>();
  add_options(app, *o);
  return [o]() -> int { return run_model(*o); };
}

}  // namespace tandem::parity
