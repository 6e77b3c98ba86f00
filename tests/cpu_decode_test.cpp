// Decode as one parallel region per layer: cpu::run_steps (every item of a step done before any
// item of the next starts, on any number of threads; exceptions rethrown) and the CPU backend's
// decode path (cpu_backend::decode_layer), which must give the same bits as the general path that
// runs every op with its own fork-join (the path taken when a per-op capture is set).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/parallel.h"
#include "runtime/backend_factory.h"
#include "runtime/model.h"
#include "tests/test_util.h"
#include "tests/tiny_model.h"

namespace tandem {
namespace {

struct threads_guard {
  int threads = cpu::num_threads();
  ~threads_guard() { cpu::set_num_threads(threads); }
};

TEST(RunSteps, EveryItemOnceAndStepsInOrder) {
  threads_guard guard;
  const std::vector<int64_t> counts = {1, 7, 0, 3, 1, 64, 2, 0, 5};
  for (int threads : {1, 2, 3, 5}) {
    cpu::set_num_threads(threads);
    for (int rep = 0; rep < 20; ++rep) {
      std::vector<std::atomic<int64_t>> finished(counts.size());
      std::vector<std::vector<std::atomic<int>>> ran;
      for (int64_t c : counts) ran.emplace_back(static_cast<size_t>(c));
      std::atomic<int> out_of_order{0}, warmed{0};
      std::vector<cpu::step> steps;
      for (size_t s = 0; s < counts.size(); ++s) {
        steps.push_back({counts[s],
                         [&, s](int64_t i) {
                           for (size_t e = 0; e < s; ++e)
                             if (finished[e].load() != counts[e]) ++out_of_order;
                           ++ran[s][static_cast<size_t>(i)];
                           ++finished[s];
                         },
                         [&](int64_t) { ++warmed; }});
      }
      cpu::run_steps(steps.data(), static_cast<int>(steps.size()));
      EXPECT_EQ(out_of_order.load(), 0) << threads << " threads";
      for (size_t s = 0; s < counts.size(); ++s)
        for (auto& r : ran[s])
          ASSERT_EQ(r.load(), 1) << "step " << s << ", " << threads << " threads";
      if (threads == 1) {
        EXPECT_EQ(warmed.load(), 0);  // one thread never waits
      }
    }
  }
}

// Unit steps among item steps: every unit of every step run once, by ranges inside [0, n), each
// step after every unit and item of the ones before; with even and uneven shares (a split that
// gives one thread everything, one that gives the first thread nothing) and grains of 1 to more
// than a share, so that threads take from each other's shares; on more than one thread, no range
// longer than 8 grains (a thread takes at most that from its share at a time; one thread runs a
// step as one range). Every other step has a `last`: run once, after all of its step, before
// anything of the next.
TEST(RunSteps, UnitStepsRunEveryUnitOnceInOrder) {
  threads_guard guard;
  struct shape {
    int64_t n;  // units (0: an item step of 3 items)
    int64_t grain;
    int split;  // 0 none, 1 all to the last thread, 2 nothing to the first thread
  };
  const std::vector<shape> shapes = {{1000, 7, 0}, {0, 0, 0}, {5, 1, 1},       {333, 64, 2},
                                     {0, 0, 0},    {1, 1, 0}, {4097, 5000, 0}, {64, 3, 1}};
  for (int threads : {1, 2, 3, 5}) {
    cpu::set_num_threads(threads);
    for (int rep = 0; rep < 20; ++rep) {
      std::vector<std::atomic<int64_t>> finished(shapes.size());
      std::vector<std::vector<std::atomic<int>>> ran;
      std::vector<int64_t> size(shapes.size());
      for (size_t s = 0; s < shapes.size(); ++s) {
        size[s] = shapes[s].n ? shapes[s].n : 3;
        ran.emplace_back(static_cast<size_t>(size[s]));
      }
      std::atomic<int> out_of_order{0}, bad_range{0};
      std::vector<std::atomic<int>> last_ran(shapes.size());
      const auto has_last = [](size_t s) { return s % 2 == 0; };
      const auto check_before = [&](size_t s) {
        for (size_t e = 0; e < s; ++e)
          if (finished[e].load() != size[e] || (has_last(e) && last_ran[e].load() != 1))
            ++out_of_order;
      };
      std::vector<cpu::step> steps;
      for (size_t s = 0; s < shapes.size(); ++s) {
        cpu::step st;
        st.n = size[s];
        if (shapes[s].n == 0) {
          st.item = [&, s](int64_t i) {
            check_before(s);
            ++ran[s][static_cast<size_t>(i)];
            ++finished[s];
          };
        } else {
          st.grain = shapes[s].grain;
          st.range = [&, s](int64_t u0, int64_t u1) {
            check_before(s);
            const bool too_long = threads > 1 && u1 - u0 > 8 * shapes[s].grain;
            if (u0 < 0 || u1 > size[s] || u0 >= u1 || too_long) {
              ++bad_range;
              return;
            }
            for (int64_t u = u0; u < u1; ++u) ++ran[s][static_cast<size_t>(u)];
            finished[s] += u1 - u0;
          };
          st.warm = [&, s](int64_t u) {
            if (u < 0 || u >= size[s]) ++bad_range;
          };
          const int64_t n = size[s];
          if (shapes[s].split == 1) st.split = [n](int k, int parts) { return k < parts ? 0 : n; };
          if (shapes[s].split == 2)
            st.split = [](int k, int) { return k <= 1 ? int64_t{0} : int64_t{1}; };
        }
        if (has_last(s))
          st.last = [&, s] {
            check_before(s);
            if (finished[s].load() != size[s]) ++out_of_order;
            ++last_ran[s];
          };
        steps.push_back(std::move(st));
      }
      cpu::run_steps(steps.data(), static_cast<int>(steps.size()));
      EXPECT_EQ(out_of_order.load(), 0) << threads << " threads";
      EXPECT_EQ(bad_range.load(), 0) << threads << " threads";
      for (size_t s = 0; s < shapes.size(); ++s) {
        for (auto& r : ran[s])
          ASSERT_EQ(r.load(), 1) << "step " << s << ", " << threads << " threads";
        EXPECT_EQ(last_ran[s].load(), has_last(s) ? 1 : 0) << "step " << s;
      }
    }
  }
  cpu::step empty;  // nothing to complete: nobody would run its last
  empty.last = [] {};
  EXPECT_THROW(cpu::run_steps(&empty, 1), std::invalid_argument);
}

TEST(RunSteps, AnItemsExceptionIsRethrownAfterTheRegion) {
  threads_guard guard;
  for (int threads : {1, 2}) {
    cpu::set_num_threads(threads);
    std::atomic<int> later{0};
    const cpu::step steps[] = {
        {4,
         [](int64_t i) {
           if (i == 2) throw std::runtime_error("item 2");
         }},
        {3, [&](int64_t) { ++later; }},
    };
    EXPECT_THROW(cpu::run_steps(steps, 2), std::runtime_error);
    // One thread runs the steps in a plain loop, which the exception leaves at once; in a region
    // the failure stops no thread, and every later item still runs (none is left waiting).
    const int after_one = threads == 1 ? 0 : 3;
    EXPECT_EQ(later.load(), after_one);
    // The same from a unit step, and the steps after it still complete (no thread left waiting).
    cpu::step units;
    units.n = 100;
    units.grain = 4;
    units.range = [](int64_t u0, int64_t u1) {
      if (u0 <= 50 && 50 < u1) throw std::runtime_error("unit 50");
    };
    const cpu::step more[] = {units, {3, [&](int64_t) { ++later; }}};
    EXPECT_THROW(cpu::run_steps(more, 2), std::runtime_error);
    EXPECT_EQ(later.load(), 2 * after_one);
  }
}

// Logits of a prompt, then of greedy decode steps, with or without a capture hook (which sends
// every layer through the general path). With `runs`, the layers go through forward_layers (all
// of them in one region where the backend runs layers), and the thread count changes half way
// (so the kept steps must be rebuilt); with `with_output` too, forward_layers also runs the
// output head (into the same logits buffer each step).
std::vector<std::vector<float>> decode_logits(const model& m, bool capture, int threads,
                                              bool runs = false, bool with_output = false) {
  backend_options o;
  o.n_ctx = 32;
  o.n_batch = 8;
  o.n_threads = threads;
  for (int il = 0; il < m.hp().n_layer; ++il) o.layers.push_back(il);
  auto b = make_cpu_backend(m, o);
  if (capture) b->set_capture([](int, const char*, const float*, size_t) {});
  const int d = m.hp().n_embd, nv = m.hp().n_vocab;
  std::vector<std::vector<float>> out;
  std::vector<int32_t> tokens = {1, 17, 5};
  int pos = 0;
  std::vector<float> logits(static_cast<size_t>(nv));
  for (int step = 0; step < 6; ++step) {
    const int n = static_cast<int>(tokens.size());
    std::vector<float> x(static_cast<size_t>(n) * d);
    std::fill(logits.begin(), logits.end(), NAN);
    b->embed(tokens.data(), n, x.data());
    b->upload_hidden(x.data(), n);
    if (runs) {
      if (step == 3) cpu::set_num_threads(threads == 1 ? 2 : 1);
      if (n == 1) {
        EXPECT_TRUE(b->runs_layers(n));
      }
      b->forward_layers(0, m.hp().n_layer, n, pos, with_output ? logits.data() : nullptr);
    } else {
      for (int il = 0; il < m.hp().n_layer; ++il) b->forward_layer(il, n, pos);
    }
    if (!with_output) b->forward_output(n, false, logits.data());
    out.push_back(logits);
    pos += n;
    int best = 0;
    for (int v = 1; v < nv; ++v)
      best = logits[static_cast<size_t>(v)] > logits[static_cast<size_t>(best)] ? v : best;
    tokens = {best};
  }
  return out;
}

// A tiny model of this shape (256 wide, 4 query heads of 64, vocab 64, FFN n_ff wide): its decode
// logits through decode_layer and through the general path are the same bits.
void expect_same_bits(test::tiny_shape s, uint32_t seed, const std::string& what, int threads = 2,
                      int n_ff = 512) {
  s.n_embd = 256;
  s.n_ff = n_ff;
  s.n_head = 4;
  s.n_vocab = 64;
  const std::string path = test::temp_dir() + "/decode.gguf";
  test::write_tiny_model(path, s, seed);
  auto m = model::load(path);
  if (s.qwen2) {
    ASSERT_TRUE(m->layer(0).bq) << what;
  }
  const auto general = decode_logits(*m, true, threads);
  const auto decode = decode_logits(*m, false, threads);
  const auto runs = decode_logits(*m, false, threads, true);
  const auto runs_out = decode_logits(*m, false, threads, true, true);
  cpu::set_num_threads(threads);
  ASSERT_EQ(general.size(), decode.size());
  ASSERT_EQ(general.size(), runs.size());
  ASSERT_EQ(general.size(), runs_out.size());
  for (size_t i = 0; i < general.size(); ++i) {
    EXPECT_EQ(std::memcmp(general[i].data(), decode[i].data(), general[i].size() * sizeof(float)),
              0)
        << what << " step " << i;
    EXPECT_EQ(std::memcmp(general[i].data(), runs[i].data(), general[i].size() * sizeof(float)), 0)
        << what << " step " << i << ", layers in one run";
    EXPECT_EQ(std::memcmp(general[i].data(), runs_out[i].data(), general[i].size() * sizeof(float)),
              0)
        << what << " step " << i << ", layers and output head in one run";
  }
}

TEST(CpuDecode, SameBitsAsTheGeneralPathForEveryType) {
  threads_guard guard;
  for (dtype t :
       {dtype::f32, dtype::f16, dtype::q8_0, dtype::q4_0, dtype::q4_k, dtype::q5_k, dtype::q6_k}) {
    for (int n_head_kv : {4, 2}) {  // one KV head per query head, and GQA
      test::tiny_shape s;
      s.n_head_kv = n_head_kv;
      s.type = t;
      expect_same_bits(s, 7,
                       std::string(dtype_name(t)) + " n_head_kv " + std::to_string(n_head_kv));
    }
  }
}

// Decode applies SwiGLU and the down input's quantization per group of 256 FFN rows, on the
// thread that completes a group's gate and up rows: groups split between threads (3 groups at 2
// and 3 threads, more threads than groups), and an FFN width that is not a multiple of 256 (one
// SwiGLU over all rows after the step), give the general path's bits.
TEST(CpuDecode, SameBitsWithSwigluByGroupsOfRows) {
  threads_guard guard;
  for (dtype t : {dtype::q4_0, dtype::q6_k, dtype::f16}) {
    for (int n_ff : {768, 640}) {
      if (n_ff % 256 != 0 && t == dtype::q6_k) continue;  // K-quant rows are whole 256s
      for (int threads : {2, 3, 5}) {
        test::tiny_shape s;
        s.type = t;
        expect_same_bits(s, 13,
                         std::string(dtype_name(t)) + " n_ff " + std::to_string(n_ff) + ", " +
                             std::to_string(threads) + " threads",
                         threads, n_ff);
      }
    }
  }
}

// Every query head's bias and RoPE comes from the KV head group that one thread handles.
TEST(CpuDecode, SameBitsAsTheGeneralPathForQwen2BiasesAndPartialRope) {
  threads_guard guard;
  for (int n_head_kv : {4, 2, 1}) {
    test::tiny_shape s;
    s.n_head_kv = n_head_kv;
    s.qwen2 = true;
    s.n_rot = 32;  // half of each 64-wide head
    // 5 threads: more threads than attention items (one per KV head).
    for (int threads : {2, 5})
      expect_same_bits(s, 11,
                       "qwen2 n_head_kv " + std::to_string(n_head_kv) + ", " +
                           std::to_string(threads) + " threads",
                       threads);
  }
}

}  // namespace
}  // namespace tandem
