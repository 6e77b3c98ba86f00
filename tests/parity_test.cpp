// gpu-cpu-parity (tools/gpu-cpu-parity), run as CI runs it: it passes on stories260K on every
// plan (isolated layers, all on the GPU, split, streamed) with the same greedy text as the CPU;
// its op table covers every weight type and GQA ratio; and with one shader broken on purpose
// (TANDEM_PARITY_BREAK) it fails and names that shader (ops), and the layer and op where the
// model first diverges (model). Without a Vulkan device the tool exits 77 and these tests skip
// (under CI the tool exits 1 and they fail: lavapipe must be there).
#include <gtest/gtest.h>

#ifdef TANDEM_PARITY  // the tool is part of the build

#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "runtime/model.h"
#include "vulkan/op_table.h"
#include "tests/test_util.h"

namespace tandem::test {
namespace {

struct tool_run {
  int status = -1;
  std::string out, err;
  nlohmann::json json;  // stdout parsed, when it is JSON
};

// Runs gpu-cpu-parity with args; env is prepended to the command (e.g. "TANDEM_PARITY_BREAK=rope").
tool_run run_parity(const std::string& args, const std::string& env = "") {
  static int counter = 0;
  const std::string base = temp_dir() + "/parity" + std::to_string(counter++);
  const std::string cmd = "env -u TANDEM_PARITY_BREAK " + env + " " + std::string(TANDEM_PARITY) +
                          " " + args + " >" + base + ".out 2>" + base + ".err";
  const int rc = std::system(cmd.c_str());
  tool_run r;
  r.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  r.out = read_file(base + ".out");
  r.err = read_file(base + ".err");
  if (args.find("--json") != std::string::npos)
    r.json = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  return r;
}

#define SKIP_WITHOUT_DEVICE(r)                                          \
  do {                                                                  \
    if ((r).status == 77) GTEST_SKIP() << "no Vulkan device: " << (r).err; \
  } while (0)

std::string stories() { return model_path("stories260K.gguf"); }

TEST(ParityTool, StoriesPassesOnEveryPlanWithTheSameGreedyText) {
  const tool_run r = run_parity("model -m " + stories() + " --tokens 8 --json");
  SKIP_WITHOUT_DEVICE(r);
  ASSERT_FALSE(r.json.is_discarded()) << r.out << r.err;
  EXPECT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_TRUE(r.json["pass"].get<bool>());
  EXPECT_EQ(r.json["expect"], "trained");  // auto-detected
  EXPECT_TRUE(r.json["first_divergence"].is_null());
  std::set<std::string> names;
  for (const auto& c : r.json["configs"]) {
    const std::string name = c["name"];
    names.insert(name);
    SCOPED_TRACE(name);
    EXPECT_TRUE(c["pass"].get<bool>()) << c["problems"].dump();
    EXPECT_EQ(c["logits"]["top1_agreement"].get<double>(), 1.0);
    ASSERT_EQ(c["layers"].size(), 5u);
    for (const auto& l : c["layers"]) EXPECT_LE(l["nmse"].get<double>(), 1e-5);
    if (name == "isolated") {
      // Every op of every layer was captured on both sides and compared.
      for (const auto& l : c["layers"]) EXPECT_EQ(l["ops"].size(), 15u) << l.dump();
    } else {
      if (name == "stream") {
        EXPECT_NE(c["plan"].get<std::string>().find("(5 streamed)"), std::string::npos)
            << c["plan"];
      }
      EXPECT_EQ(c["greedy"]["agree"].get<int>(), 8) << c["greedy"].dump();
      EXPECT_EQ(c["greedy"]["tokens"], r.json["cpu_greedy"]);
    }
  }
  EXPECT_EQ(names, (std::set<std::string>{"isolated", "gpu", "split", "stream"}));
  EXPECT_EQ(r.json["continuation"], r.json["cpu_greedy"]);
}

TEST(ParityTool, OpsPassOnEveryWeightTypeAndGqaRatio) {
  const tool_run r = run_parity("ops --json");
  SKIP_WITHOUT_DEVICE(r);
  ASSERT_FALSE(r.json.is_discarded()) << r.out << r.err;
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_TRUE(r.json["pass"].get<bool>());
  std::set<std::string> ops, matrix_types, gqa;
  for (const auto& c : r.json["cases"]) {
    ops.insert(c["op"].get<std::string>());
    if (c["op"] == "matvec" || c["op"] == "matmul")
      matrix_types.insert(c["op"].get<std::string>() + "_" + c["type"].get<std::string>());
    const std::string shape = c["shape"];
    if (const auto p = shape.find("(gqa "); p != std::string::npos)
      gqa.insert(shape.substr(p + 5, shape.find(')', p) - p - 5));
  }
  EXPECT_EQ(ops, (std::set<std::string>(std::begin(vk::op_names), std::end(vk::op_names))));
  for (const char* t : {"f32", "f16", "q8_0", "q4_0", "q4_k", "q5_k", "q6_k"}) {
    EXPECT_TRUE(matrix_types.count(std::string("matvec_") + t)) << t;
    EXPECT_TRUE(matrix_types.count(std::string("matmul_") + t)) << t;
  }
  EXPECT_EQ(gqa, (std::set<std::string>{"1", "2", "4", "8"}));
}

// Each kernel broken in turn: the op check fails, and only on that kernel.
TEST(ParityTool, BrokenShaderFailsTheOpCheckAndIsNamed) {
  for (const std::string k : vk::op_names) {
    SCOPED_TRACE(k);
    const tool_run r = run_parity("ops --json --filter " + k, "TANDEM_PARITY_BREAK=" + k);
    SKIP_WITHOUT_DEVICE(r);
    ASSERT_FALSE(r.json.is_discarded()) << r.out << r.err;
    EXPECT_EQ(r.status, 1);
    EXPECT_FALSE(r.json["pass"].get<bool>());
    int failed = 0;
    for (const auto& c : r.json["cases"])
      if (!c["pass"].get<bool>()) {
        ++failed;
        EXPECT_EQ(c["op"], k) << c.dump();
      }
    EXPECT_GT(failed, 0);
  }
  // One type of one kernel: the table names exactly that one.
  const tool_run r = run_parity("ops --filter matvec", "TANDEM_PARITY_BREAK=matvec_q4_k");
  SKIP_WITHOUT_DEVICE(r);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("failing ops: matvec (q4_k)"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("matvec (q6_k)"), std::string::npos) << r.out;
}

// The model check on stories260K with one kernel broken: it fails and names the op where the
// model first diverges (layer 0, as every layer runs every kernel; the vector kernel only runs
// for the one-token continuation, so its divergence starts after the prompt). The model runs the
// fused rope/KV-store kernel by default; the rope and kv_store breaks act on it as on the unfused.
// Decode runs RoPE and the KV store in the Q/K/V product's epilogue (matvec_rope): its break shows
// after the prompt.
TEST(ParityTool, BrokenShaderFailsTheModelCheckAndNamesTheOp) {
  struct expectation {
    const char* kernel;
    const char* op;
    bool after_prompt;
  };
  for (const expectation& e : {expectation{"rms_norm", "rms_norm:attn_norm", false},
                               expectation{"rope", "rope:q", false},
                               expectation{"kv_store", "kv_store:v", false},
                               expectation{"attention", "attention", false},
                               expectation{"flash_attn", "attention", false},
                               expectation{"rotary_kv", "rope:q", false},
                               expectation{"matvec_rope", "rope:q", true},
                               expectation{"swiglu", "swiglu", false},
                               expectation{"matmul", "matmul:wq", false},
                               expectation{"matvec", "matmul:wq", true}}) {
    SCOPED_TRACE(e.kernel);
    const tool_run r = run_parity("model -m " + stories() + " --tokens 2 --json",
                                  std::string("TANDEM_PARITY_BREAK=") + e.kernel);
    SKIP_WITHOUT_DEVICE(r);
    ASSERT_FALSE(r.json.is_discarded()) << r.out << r.err;
    EXPECT_EQ(r.status, 1);
    EXPECT_FALSE(r.json["pass"].get<bool>());
    const auto& fd = r.json["first_divergence"];
    ASSERT_FALSE(fd.is_null());
    EXPECT_EQ(fd["config"], "isolated");
    EXPECT_EQ(fd["layer"], 0);
    EXPECT_EQ(fd["op"], e.op);
    const int n_prompt = static_cast<int>(r.json["prompt_tokens"].size());
    EXPECT_EQ(fd["pos"].get<int>(), e.after_prompt ? n_prompt : 0);
    // The end-to-end plans fail too.
    for (const auto& c : r.json["configs"]) EXPECT_FALSE(c["pass"].get<bool>()) << c["name"];
  }
  // The human-readable report says it as well.
  const tool_run r =
      run_parity("model -m " + stories() + " --tokens 2", "TANDEM_PARITY_BREAK=rope");
  SKIP_WITHOUT_DEVICE(r);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("FAIL: first divergence [isolated]: layer 0, op rope:q, position 0"),
            std::string::npos)
      << r.out;
}

// A broken kernel of one weight type is traced to the first layer and op that use that type:
// in tiny-Q4_K_M most matrices are Q4_K, a few (attn_v, ffn_down of some layers) Q6_K.
TEST(ParityTool, BrokenQuantKernelIsTracedToItsLayerAndTensor) {
  const std::string path = model_path("quant/tiny-Q4_K_M.gguf");
  auto m = model::load(path);
  int want_layer = -1;
  std::string want_op;
  const std::pair<weight layer_weights::*, const char*> order[] = {
      {&layer_weights::wq, "matmul:wq"},           {&layer_weights::wk, "matmul:wk"},
      {&layer_weights::wv, "matmul:wv"},           {&layer_weights::wo, "matmul:wo"},
      {&layer_weights::ffn_gate, "matmul:ffn_gate"}, {&layer_weights::ffn_up, "matmul:ffn_up"},
      {&layer_weights::ffn_down, "matmul:ffn_down"}};
  for (int il = 0; il < m->hp().n_layer && want_layer < 0; ++il)
    for (const auto& [field, op] : order)
      if (want_layer < 0 && (m->layer(il).*field).type() == dtype::q6_k) {
        want_layer = il;
        want_op = op;
      }
  ASSERT_GE(want_layer, 0) << "no Q6_K matrix in " << path;
  const tool_run r =
      run_parity("model -m " + path + " --tokens 2 --json", "TANDEM_PARITY_BREAK=matvec_q6_k");
  SKIP_WITHOUT_DEVICE(r);
  ASSERT_FALSE(r.json.is_discarded()) << r.out << r.err;
  EXPECT_EQ(r.status, 1);
  const auto& fd = r.json["first_divergence"];
  ASSERT_FALSE(fd.is_null());
  EXPECT_EQ(fd["layer"], want_layer);
  EXPECT_EQ(fd["op"], want_op);
  EXPECT_EQ(fd["pos"].get<int>(), static_cast<int>(r.json["prompt_tokens"].size()));
}

// The integer-dot decode's fused forms (forced: matvec=dot) broken in turn on tiny-Q4_0: the
// Q/K/V product with RoPE + KV store in its epilogue (matvec_dot_rope) and the quantization with
// the norm fused (quantize_q8) fail the model check after the prompt, at the op that reads them.
TEST(ParityTool, BrokenIntegerDotFusionFailsTheModelCheck) {
  const std::string path = model_path("quant/tiny-Q4_0.gguf");
  for (const auto& [kernel, op] : {std::pair{"matvec_dot_rope", "rope:q"},
                                   std::pair{"quantize_q8", "matmul:wq"}}) {
    SCOPED_TRACE(kernel);
    const tool_run r =
        run_parity("model -m " + path + " --tokens 2 --json",
                   std::string("TANDEM_VK_VARIANT=matvec=dot TANDEM_PARITY_BREAK=") + kernel);
    SKIP_WITHOUT_DEVICE(r);
    if (r.err.find("needs a device with integer dot products") != std::string::npos)
      GTEST_SKIP() << r.err;
    ASSERT_FALSE(r.json.is_discarded()) << r.out << r.err;
    EXPECT_EQ(r.status, 1);
    const auto& fd = r.json["first_divergence"];
    ASSERT_FALSE(fd.is_null());
    EXPECT_EQ(fd["layer"], 0);
    EXPECT_EQ(fd["op"], op);
    EXPECT_EQ(fd["pos"].get<int>(), static_cast<int>(r.json["prompt_tokens"].size()));
  }
}

TEST(ParityTool, NoDeviceSkipsOutsideCiAndFailsUnderCi) {
  const tool_run skip = run_parity("ops", "-u CI TANDEM_VK_DEVICE=no-such-gpu-xyz");
  EXPECT_EQ(skip.status, 77) << skip.out << skip.err;
  EXPECT_NE(skip.err.find("no Vulkan device"), std::string::npos) << skip.err;
  const tool_run fail =
      run_parity("model -m " + stories(), "CI=1 TANDEM_VK_DEVICE=no-such-gpu-xyz");
  EXPECT_EQ(fail.status, 1) << fail.out << fail.err;
}

}  // namespace
}  // namespace tandem::test

#endif  // TANDEM_PARITY
