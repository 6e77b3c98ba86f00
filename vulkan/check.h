// Checking of every Vulkan call. VK_CHECK(expr) always runs (never compiled out) and on failure
// throws tandem::error naming the expression, file:line, the VkResult and the op being run, e.g.
//   vulkan: vkQueueSubmit(...) failed with VK_ERROR_DEVICE_LOST at vulkan/context.cpp:310
//   (op: forward_layer 3)
// The op comes from the innermost live op_scope on the calling thread.
#pragma once
#include <string>

#include "vulkan/loader.h"

namespace tandem::vk {

const char* result_name(VkResult r);

// Names what the calling thread is doing, for error messages; scopes nest.
class op_scope {
 public:
  explicit op_scope(std::string op);
  ~op_scope();
  op_scope(const op_scope&) = delete;
  op_scope& operator=(const op_scope&) = delete;
  static const std::string& current();

 private:
  std::string saved_;
};

[[noreturn]] void check_failed(VkResult r, const char* expr, const char* file, int line);

}  // namespace tandem::vk

#define VK_CHECK(expr)                                                         \
  do {                                                                         \
    const VkResult vk_check_result_ = (expr);                                  \
    if (vk_check_result_ != VK_SUCCESS)                                        \
      ::tandem::vk::check_failed(vk_check_result_, #expr, __FILE__, __LINE__); \
  } while (0)
