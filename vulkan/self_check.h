// First-use self-check of kernels that CI cannot run (lavapipe has no cooperative matrix): before
// such a kernel runs on a device it is compared with the reference on a few random shapes, and
// the verdict is kept per (device UUID, driver version, kernel) in memory and in a small file, so
// that an untested path never gives wrong text: a kernel that disagrees is disabled with a
// one-line notice on stderr and the caller falls back to a kernel CI has checked.
//
// The file is $XDG_CACHE_HOME/tandem/kernel-checks (~/.cache/tandem/kernel-checks without
// XDG_CACHE_HOME), one verdict a line:
//   <device uuid, 32 hex digits> <driver version> <kernel> pass|fail <nmse>
// A cache that cannot be read or written only means checking again next time, never a failure.
// TANDEM_VK_SELF_CHECK=all also checks the kernels CI runs (how CI tests this machinery).
#pragma once
#include <functional>
#include <string>

#include "vulkan/context.h"

namespace tandem::vk {

struct self_check_result {
  double nmse = 0;       // the worst case's sum (ref - got)^2 / sum ref^2
  double threshold = 0;  // pass: nmse <= threshold
};

// Whether kernel (a shader variant's name, e.g. matmul_coopmat_q4_0) may run on ctx's device: the
// verdict from memory or the cache file, else the one check() gives, which is then stored. A
// kernel that fails prints once per process: "tandem: Vulkan kernel <kernel> disagrees with the
// reference on <device> (...); using <fallback> instead".
bool kernel_trusted(const context& ctx, const std::string& kernel, const std::string& fallback,
                    const std::function<self_check_result()>& check);

// The cache file's path ("" when neither XDG_CACHE_HOME nor HOME is set).
std::string self_check_cache_path();

// TANDEM_VK_SELF_CHECK=all: every kernel that has a self-check runs it (not only those CI cannot
// run); any other value is an error naming the one accepted.
bool self_check_everything();

}  // namespace tandem::vk
