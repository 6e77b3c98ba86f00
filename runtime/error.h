// One error type for problems a user can fix (bad file, bad flag, missing device). The CLI prints
// what() as a single "error: ..." line; internal invariants use assert instead.
#pragma once
#include <stdexcept>
#include <string>

namespace tandem {

class error : public std::runtime_error {
 public:
  explicit error(const std::string& msg) : std::runtime_error(msg) {}
};

}  // namespace tandem
