// shmarray internals: the shared mappings this process has, each with its
// address range, its name and a sequence number in the order they were made.
// A process_pool notes the number when it forks its workers and refuses a
// job argument that points into a mapping made later: its workers do not
// have that memory mapped.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

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
    const std::uint64_t seq = ++last_;
    begins_[seq] = b;  // first: if the next line throws, remove() still finds its way
    ranges_[b] = {b, b + n, seq, std::string(name)};  // live mappings never overlap
    return seq;
  }
  void remove(std::uint64_t seq) noexcept {
    std::lock_guard<std::mutex> g(m_);
    const auto at = begins_.find(seq);
    if (at == begins_.end()) return;
    const auto r = ranges_.find(at->second);
    if (r != ranges_.end() && r->second.seq == seq) ranges_.erase(r);
    begins_.erase(at);
  }
  // The number of the last mapping made so far.
  std::uint64_t last() const {
    std::lock_guard<std::mutex> g(m_);
    return last_;
  }
  // The mapping that holds `addr`; seq 0 if none.
  mapped_range holding(std::uintptr_t addr) const { return made_after(addr, 0); }
  // The mapping that holds `addr`, made after mapping number `after`; seq 0
  // if none. A lookup, not a scan: a pool checks every word of every job's
  // argument, in processes that may hold tens of thousands of arrays.
  mapped_range made_after(std::uintptr_t addr, std::uint64_t after) const {
    std::lock_guard<std::mutex> g(m_);
    auto it = ranges_.upper_bound(addr);  // the first mapping that starts past addr
    if (it == ranges_.begin()) return {};
    const mapped_range& r = (--it)->second;
    return addr < r.end && r.seq > after ? r : mapped_range{};
  }

 private:
  mapping_registry() = default;
  mutable std::mutex m_;
  std::map<std::uintptr_t, mapped_range> ranges_;             // by first address
  std::unordered_map<std::uint64_t, std::uintptr_t> begins_;  // by sequence number
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
