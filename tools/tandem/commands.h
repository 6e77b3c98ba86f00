// Sub-commands of the tandem CLI. Each registers its flags on a CLI11 sub-app and returns the
// function that runs it (exit status).
#pragma once
#include <CLI/CLI.hpp>
#include <functional>

namespace tandem::cli {

using command = std::function<int()>;

command add_run(CLI::App& app);
command add_info(CLI::App& app);
command add_make_model(CLI::App& app);
command add_quantize(CLI::App& app);
command add_perplexity(CLI::App& app);
command add_bench(CLI::App& app);
command add_chat(CLI::App& app);
command add_template(CLI::App& app);
command add_tokenize(CLI::App& app);
command add_serve(CLI::App& app);

// "512M", "4G", "1.5GiB", "1000000" -> bytes; throws tandem::error naming the text.
uint64_t parse_size(const std::string& s);
std::string format_bytes(uint64_t n);

// The load progress bar (tools/tandem/progress.cpp): draws done (0 .. 1) on stderr, clears it at
// 1; returns true (go on). Use it only where stderr_is_terminal().
bool draw_load_progress(float done);
bool stderr_is_terminal();

}  // namespace tandem::cli
