// Checking of every Vulkan call. VK_CHECK(expr) always runs (never compiled out) and on failure
// throws tandem::error naming the expression, file:line, the VkResult and the op being run, e.g.
//   vulkan: vkQueueSubmit(...) failed with VK_ERROR_DEVICE_LOST at vulkan/context.cpp:310
//   (op: forward_layer 3)
// The op comes from the innermost live op_scope on the calling thread.
#pragma once
#include <atomic>
#include <cstdlib>
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

// Test hook for the failures a real device rarely shows on demand, read once from the environment:
//   TANDEM_VK_FAULT=alloc           every device memory allocation fails (out of device memory);
//   TANDEM_VK_FAULT=device_lost:N   every queue submission after the first N fails (device lost).
// Returns the VkResult to pretend, or VK_SUCCESS to make the real call.
enum class fault_point { alloc, submit };
inline VkResult injected_fault(fault_point p) {
  struct config {
    bool alloc = false;
    long lost_after = -1;  // -1: never
  };
  static const config cfg = [] {
    config c;
    const char* e = std::getenv("TANDEM_VK_FAULT");
    const std::string v = e ? e : "";
    c.alloc = v == "alloc";
    if (v.rfind("device_lost", 0) == 0)
      c.lost_after = v.size() > 12 && v[11] == ':' ? std::atol(v.c_str() + 12) : 0;
    return c;
  }();
  static std::atomic<long> submits{0};
  if (p == fault_point::alloc) return cfg.alloc ? VK_ERROR_OUT_OF_DEVICE_MEMORY : VK_SUCCESS;
  if (cfg.lost_after < 0) return VK_SUCCESS;
  return submits.fetch_add(1) >= cfg.lost_after ? VK_ERROR_DEVICE_LOST : VK_SUCCESS;
}

}  // namespace tandem::vk

#define VK_CHECK(expr)                                                         \
  do {                                                                         \
    const VkResult vk_check_result_ = (expr);                                  \
    if (vk_check_result_ != VK_SUCCESS)                                        \
      ::tandem::vk::check_failed(vk_check_result_, #expr, __FILE__, __LINE__); \
  } while (0)
