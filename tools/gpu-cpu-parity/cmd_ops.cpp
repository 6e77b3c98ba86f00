// `gpu-cpu-parity ops`: every shader against the CPU reference on random data (check_gpu_ops,
// tools/op_check), printed as a table or JSON.
#include <fmt/format.h>

#include <map>
#include <nlohmann/json.hpp>

#include "tools/op_check/op_check.h"
#include "tools/gpu-cpu-parity/parity.h"

namespace tandem::parity {

command add_ops(CLI::App& app) {
  struct opts {
    bool json = false;
    std::string filter;
    uint32_t seed = 1;
    bool failures_only = false;
  };
  auto o = std::make_shared<opts>();
  app.add_flag("--json", o->json, "print the results as JSON");
  app.add_option("--filter", o->filter,
                 "only the cases whose op (or op_type, e.g. matvec_q4_k) contains this");
  app.add_option("--seed", o->seed, "seed of the random data")->capture_default_str();
  app.add_flag("--failures", o->failures_only, "list only the failing cases in the table");
  return [o] {
    op_check_options co;
    co.filter = o->filter;
    co.seed = o->seed;
    std::string why;
    const std::vector<op_check> res = check_gpu_ops(co, &why);
    if (res.empty() && !why.empty()) {
      fmt::print(stderr, "gpu-cpu-parity: no Vulkan device: {}\n", why);
      return no_device_status();
    }
    int n_fail = 0;
    std::map<std::string, int> failed_ops;  // "op (type)" -> failing cases
    for (const op_check& c : res)
      if (!c.pass) {
        ++n_fail;
        ++failed_ops[c.op + " (" + c.type + ")"];
      }
    if (o->json) {
      nlohmann::json j;
      j["mode"] = "ops";
      j["pass"] = n_fail == 0 && !res.empty();
      j["cases"] = nlohmann::json::array();
      for (const op_check& c : res)
        j["cases"].push_back({{"op", c.op},
                              {"type", c.type},
                              {"variant", c.variant},
                              {"shape", c.shape},
                              {"nmse", c.nmse},
                              {"max_abs_err", c.max_abs_err},
                              {"threshold", c.threshold},
                              {"pass", c.pass}});
      j["failed_ops"] = nlohmann::json::array();
      for (const auto& [name, n] : failed_ops) j["failed_ops"].push_back(name);
      fmt::print("{}\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace));
    } else {
      fmt::print("{:<10} {:<5} {:<9} {:<46} {:>10} {:>10} {:>9}  {}\n", "op", "type", "variant",
                 "shape", "NMSE", "max abs", "threshold", "result");
      for (const op_check& c : res) {
        if (o->failures_only && c.pass) continue;
        fmt::print("{:<10} {:<5} {:<9} {:<46} {:>10} {:>10} {:>9}  {}\n", c.op, c.type,
                   c.variant, c.shape, sci(c.nmse), sci(c.max_abs_err), sci(c.threshold),
                   c.pass ? "pass" : "FAIL");
      }
      if (n_fail == 0) {
        fmt::print("\nPASS: {} cases, every op within its threshold\n", res.size());
      } else {
        std::string names;
        for (const auto& [name, n] : failed_ops)
          names += fmt::format("{}{} ({} cases)", names.empty() ? "" : ", ", name, n);
        fmt::print("\nFAIL: {} of {} cases; failing ops: {}\n", n_fail, res.size(), names);
      }
    }
    if (res.empty()) {
      fmt::print(stderr, "gpu-cpu-parity: no case matches --filter '{}'\n", o->filter);
      return 1;
    }
    return n_fail == 0 ? 0 : 1;
  };
}

}  // namespace tandem::parity
