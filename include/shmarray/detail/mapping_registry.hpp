// shmarray internals: the shared mappings this process has, each with its
// address range, its name and a sequence number in the order they were made.
// A process_pool notes the number when it forks its workers and refuses a
// job argument that points into a mapping made later: its workers do not
// have that memory mapped.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace shmarray::detail {

struct mapped_range {
  std::uintptr_t begin = 0, end = 0;
  std::uint64_t seq = 0;  // 0: none
  std::string name;       // empty for anonymous memory
};

class mapping_registry {
 public:
  static mapping_registry& instance() {
    static mapping_registry r;
    return r;
  }
  std::uint64_t add(const void* p, std::size_t n, std::string_view name) {
    const auto b = reinterpret_cast<std::uintptr_t>(p);
    std::lock_guard<std::mutex> g(m_);
    ranges_.push_back({b, b + n, ++last_, std::string(name)});
    return last_;
  }
  void remove(std::uint64_t seq) noexcept {
    std::lock_guard<std::mutex> g(m_);
    ranges_.erase(std::remove_if(ranges_.begin(), ranges_.end(),
                                 [seq](const mapped_range& r) { return r.seq == seq; }),
                  ranges_.end());
  }
  // The number of the last mapping made so far.
  std::uint64_t last() const {
    std::lock_guard<std::mutex> g(m_);
    return last_;
  }
  // The mapping that holds `addr`; seq 0 if none.
  mapped_range holding(std::uintptr_t addr) const { return made_after(addr, 0); }
  // The mapping that holds `addr`, made after mapping number `after`; seq 0 if none.
  mapped_range made_after(std::uintptr_t addr, std::uint64_t after) const {
    std::lock_guard<std::mutex> g(m_);
    for (const auto& r : ranges_)
      if (r.seq > after && addr >= r.begin && addr < r.end) return r;
    return {};
  }

 private:
  mapping_registry() = default;
  mutable std::mutex m_;
  std::vector<mapped_range> ranges_;
  std::uint64_t last_ = 0;
};

// A mapping's entry in the registry, for as long as the mapping lives.
class registered_mapping {
 public:
  registered_mapping() noexcept = default;
  registered_mapping(const void* p, std::size_t n, std::string_view name)
      : seq_(mapping_registry::instance().add(p, n, name)) {}
  registered_mapping(registered_mapping&& o) noexcept : seq_(std::exchange(o.seq_, 0)) {}
  registered_mapping& operator=(registered_mapping&& o) noexcept {
    if (this != &o) {
      reset();
      seq_ = std::exchange(o.seq_, 0);
    }
    return *this;
  }
  registered_mapping(const registered_mapping&) = delete;
  registered_mapping& operator=(const registered_mapping&) = delete;
  ~registered_mapping() { reset(); }

 private:
  void reset() noexcept {
    if (seq_) mapping_registry::instance().remove(seq_);
    seq_ = 0;
  }
  std::uint64_t seq_ = 0;
};

}  // namespace shmarray::detail
