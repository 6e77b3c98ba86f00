// gpu-cpu-parity: the Vulkan path against the CPU path, at the level of single ops (`ops`) and of
// a whole model (`model`). Each sub-command registers its flags and returns the function that
// runs it (its exit status: 0 pass, 1 failure, 77 no Vulkan device outside CI).
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <string>

namespace tandem::parity {

using command = std::function<int()>;

command add_ops(CLI::App& app);
command add_model(CLI::App& app);

// Exit status when no Vulkan device can be had: 77 (ctest's SKIP_RETURN_CODE) on a developer
// machine, 1 under CI (CI=1), where lavapipe must be present.
int no_device_status();

// "1.23e-05", or "0" for an exact zero.
std::string sci(double v);

}  // namespace tandem::parity
