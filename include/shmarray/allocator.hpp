// shmarray: a standard allocator whose every allocation is shared memory, so
// containers filled before fork() are the same memory in parent and children.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <limits>
#include <map>
#include <mutex>
#include <new>
#include <type_traits>

#include "backing.hpp"
#include "detail/system.hpp"
#include "manager.hpp"

namespace shmarray {

// allocator<T> (anonymous backing) maps each allocation as its own
// MAP_SHARED | MAP_ANONYMOUS region, whole pages, page aligned. What a
// fork()ed child and its parent share is the memory allocated before the
// fork: a reallocation after it (a push_back past the capacity) is private
// to the process that made it. Reserve before forking.
//
// allocator<T, posix_shm> gives each allocation a name, owned by a manager:
// the memory is removed by deallocate or at the manager's end.
namespace detail {

template <class T>
inline std::size_t allocation_bytes(std::size_t n) {
  if (n > std::numeric_limits<std::size_t>::max() / sizeof(T)) throw std::bad_array_new_length();
  const std::size_t page = page_size();
  const std::size_t bytes = n == 0 ? 1 : n * sizeof(T);
  if (bytes > std::numeric_limits<std::size_t>::max() - page) throw std::bad_array_new_length();
  return (bytes + page - 1) / page * page;
}

// The segments allocator<T, Backing> handed out, whatever T.
struct allocation_table {
  std::mutex mu;
  std::map<void*, segment> segments;
};
template <class Backing>
allocation_table& allocations() {
  static allocation_table t;
  return t;
}

}  // namespace detail

// allocator<T, Policy> for any other unnamed backing policy (one with
// create(size, map_options) returning a segment, and no open() or remove():
// it can never leak a name) keeps each allocation's segment in a table of
// the process's, unmapped by deallocate.
template <class T, class Backing = anonymous>
class allocator {
  static_assert(detail::is_backing<Backing>::value,
                "shmarray::allocator<T, Backing>: Backing is not a backing policy: it has no "
                "create(std::size_t, const map_options&) const returning a shmarray::segment");
  static_assert(!detail::is_named<Backing>::value,
                "shmarray::allocator supports the anonymous backing (and any unnamed backing "
                "policy), and posix_shm through a manager; a named backing needs an owner for "
                "its lifetime");

 public:
  using value_type = T;
  using propagate_on_container_move_assignment = std::true_type;
  using is_always_equal = std::true_type;
  template <class U>
  struct rebind {
    using other = allocator<U, Backing>;
  };

  allocator() noexcept = default;
  template <class U>
  allocator(const allocator<U, Backing>&) noexcept {}  // NOLINT(google-explicit-constructor)

  // Throws shmarray::bad_alloc (a std::bad_alloc) with the policy's reason.
  T* allocate(std::size_t n) {
    const std::size_t bytes = detail::allocation_bytes<T>(n);
    try {
      segment s(create_only, Backing{}, bytes);
      void* p = s.data();
      auto& t = detail::allocations<Backing>();
      const std::lock_guard<std::mutex> hold(t.mu);
      t.segments.emplace(p, std::move(s));
      return static_cast<T*>(p);
    } catch (const error& e) {
      throw shmarray::bad_alloc(e.what());
    }
  }
  void deallocate(T* p, std::size_t) noexcept {
    auto& t = detail::allocations<Backing>();
    const std::lock_guard<std::mutex> hold(t.mu);
    t.segments.erase(p);
  }

  friend bool operator==(const allocator&, const allocator&) noexcept { return true; }
  friend bool operator!=(const allocator&, const allocator&) noexcept { return false; }
};

template <class T>
class allocator<T, anonymous> {
 public:
  using value_type = T;
  using propagate_on_container_move_assignment = std::true_type;
  using is_always_equal = std::true_type;
  template <class U>
  struct rebind {
    using other = allocator<U, anonymous>;
  };

  allocator() noexcept = default;
  template <class U>
  allocator(const allocator<U, anonymous>&) noexcept {}  // NOLINT(google-explicit-constructor)

  T* allocate(std::size_t n) {
    // Boost's anonymous_shared_memory cannot hand a mapping over to its
    // caller, and a container frees by pointer and size: plain mmap/munmap.
    void* p = ::mmap(nullptr, detail::allocation_bytes<T>(n), PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t n) noexcept { ::munmap(p, detail::allocation_bytes<T>(n)); }

  friend bool operator==(const allocator&, const allocator&) noexcept { return true; }
  friend bool operator!=(const allocator&, const allocator&) noexcept { return false; }
};

template <class T>
class allocator<T, posix_shm> {
 public:
  using value_type = T;
  using propagate_on_container_copy_assignment = std::true_type;
  using propagate_on_container_move_assignment = std::true_type;
  using propagate_on_container_swap = std::true_type;
  using is_always_equal = std::false_type;
  template <class U>
  struct rebind {
    using other = allocator<U, posix_shm>;
  };

  // Allocations are named segments owned by `owner`, which must outlive them.
  explicit allocator(manager& owner) noexcept : m_(&owner) {}
  template <class U>
  allocator(const allocator<U, posix_shm>& o) noexcept  // NOLINT(google-explicit-constructor)
      : m_(&o.owner()) {}

  // Throws shmarray::bad_alloc (a std::bad_alloc, as containers expect)
  // with the reason, out_of_space's message where /dev/shm is full.
  T* allocate(std::size_t n) {
    if (n > std::numeric_limits<std::size_t>::max() / sizeof(T)) throw std::bad_array_new_length();
    try {
      return static_cast<T*>(m_->allocate_bytes(n == 0 ? 1 : n * sizeof(T)));
    } catch (const error& e) {
      throw shmarray::bad_alloc(e.what());
    }
  }
  void deallocate(T* p, std::size_t) noexcept { m_->deallocate_bytes(p); }

  manager& owner() const noexcept { return *m_; }

  friend bool operator==(const allocator& a, const allocator& b) noexcept { return a.m_ == b.m_; }
  friend bool operator!=(const allocator& a, const allocator& b) noexcept { return a.m_ != b.m_; }

 private:
  manager* m_;
};

}  // namespace shmarray
