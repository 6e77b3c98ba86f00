// Hazard tracking for the recorder: which dispatches (and copies) of a command buffer need a
// barrier before them. The recorder tells it every buffer range a dispatch binds and whether the
// shader writes it (the op table's written-bindings column, vulkan/op_table.h); a barrier is
// needed only when the new work
//   - reads or writes a range written since the last barrier (read after write, write after
//     write), or
//   - writes a range read since the last barrier (write after read).
// Ranges are compared by buffer and byte interval; two ranges of one buffer that do not overlap
// never conflict, so independent dispatches (Q, K and V products; the two RoPEs) run without a
// barrier between them. Plain data, no Vulkan calls: the unit tests drive it directly.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace tandem::vk {

struct tracked_access {
  uint64_t buf = 0;            // the buffer's handle as an integer
  uint64_t begin = 0, end = 0;  // bytes [begin, end)
  bool write = false;
};

class hazard_tracker {
 public:
  // Whether work with these accesses must wait for a barrier (given what came since the last).
  bool conflicts(std::span<const tracked_access> accesses) const {
    for (const tracked_access& a : accesses) {
      if (a.begin >= a.end) continue;
      for (const tracked_access& w : written_)
        if (overlap(a, w)) return true;
      if (a.write)
        for (const tracked_access& r : read_)
          if (overlap(a, r)) return true;
    }
    return false;
  }
  // Notes the accesses of work recorded after the last barrier.
  void add(std::span<const tracked_access> accesses) {
    for (const tracked_access& a : accesses) {
      if (a.begin >= a.end) continue;
      (a.write ? written_ : read_).push_back(a);
    }
  }
  // A barrier was recorded: everything before it is visible to everything after it.
  void clear() {
    written_.clear();
    read_.clear();
  }
  // The accesses noted since the last barrier (written ones first).
  std::vector<tracked_access> pending() const {
    std::vector<tracked_access> v(written_);
    v.insert(v.end(), read_.begin(), read_.end());
    return v;
  }
  // Whether nothing was accessed since the last barrier.
  bool empty() const { return written_.empty() && read_.empty(); }

 private:
  static bool overlap(const tracked_access& a, const tracked_access& b) {
    return a.buf == b.buf && a.begin < b.end && b.begin < a.end;
  }
  std::vector<tracked_access> written_, read_;
};

}  // namespace tandem::vk
