// shmarray internals: what a ring's processes synchronise with: the
// protocol words (atomic builtins on words in the segment: address-free),
// the liveness locks, and descriptors a forked child must not keep
// (docs/FORMAT.md, "Rings: format version 2"). Its futexes and spinning
// are waiting.hpp's.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <vector>

#include "os_error.hpp"
#include "owner/token.hpp"
#include "same_object.hpp"
#include "waiting.hpp"

namespace shmarray::detail::ring {

// The futexes and the pause of waiting.hpp, by the names the ring's code uses.
using detail::cpu_relax;
using detail::deadline_after;
using detail::futex_wait;
using detail::futex_wake;

// The protocol words. Only these are atomic; frame bytes are plain.
inline std::uint64_t load64(const std::byte* p, int mo) noexcept {
  return __atomic_load_n(reinterpret_cast<const std::uint64_t*>(p), mo);
}
inline std::uint32_t load32(const std::byte* p, int mo) noexcept {
  return __atomic_load_n(reinterpret_cast<const std::uint32_t*>(p), mo);
}
inline void store64(std::byte* p, std::uint64_t v, int mo) noexcept {
  __atomic_store_n(reinterpret_cast<std::uint64_t*>(p), v, mo);
}
inline void store32(std::byte* p, std::uint32_t v, int mo) noexcept {
  __atomic_store_n(reinterpret_cast<std::uint32_t*>(p), v, mo);
}
inline std::uint32_t add32(std::byte* p, std::int32_t v, int mo) noexcept {
  return __atomic_fetch_add(reinterpret_cast<std::uint32_t*>(p), std::uint32_t(v), mo);
}
inline std::uint64_t add64(std::byte* p, std::uint64_t v, int mo) noexcept {
  return __atomic_fetch_add(reinterpret_cast<std::uint64_t*>(p), v, mo);
}
inline bool cas32(std::byte* p, std::uint32_t expected, std::uint32_t desired) noexcept {
  return __atomic_compare_exchange_n(reinterpret_cast<std::uint32_t*>(p), &expected, desired, false,
                                     __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}
inline bool cas64(std::byte* p, std::uint64_t expected, std::uint64_t desired) noexcept {
  return __atomic_compare_exchange_n(reinterpret_cast<std::uint64_t*>(p), &expected, desired, false,
                                     __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

// Adds 1 to a futex word and wakes at most n of those asleep on it.
inline void bump_and_wake(std::byte* word, int n) noexcept {
  add32(word, 1, __ATOMIC_RELEASE);
  futex_wake(word, n);
}

inline std::uint64_t clock_ns(clockid_t c) noexcept {
  timespec ts{};
  ::clock_gettime(c, &ts);
  return std::uint64_t(ts.tv_sec) * 1000000000u + std::uint64_t(ts.tv_nsec);
}

using clock = std::chrono::steady_clock;

// Takes (F_RDLCK, F_WRLCK) or drops (F_UNLCK) an open-file-description
// lock on one byte, without waiting: false when another description's lock
// is in the way.
inline bool lock_byte(int fd, std::uint64_t at, short type) noexcept {
  struct flock l {};
  l.l_type = type;
  l.l_whence = SEEK_SET;
  l.l_start = off_t(at);
  l.l_len = 1;
  return ::fcntl(fd, F_OFD_SETLK, &l) == 0;
}
// Liveness: a read lock on one byte, held through a descriptor nothing
// maps; the kernel drops it when its process dies.
inline bool hold_byte(int fd, std::uint64_t at) noexcept {
  return lock_byte(fd, at, F_RDLCK);
}
// Whether anyone (another open file description) holds a lock on the byte.
// A failed question is answered "held": never take a live process for dead.
inline bool byte_held(int fd, std::uint64_t at) noexcept {
  struct flock l {};
  l.l_type = F_WRLCK;
  l.l_whence = SEEK_SET;
  l.l_start = off_t(at);
  l.l_len = 1;
  if (::fcntl(fd, F_OFD_GETLK, &l) != 0) return true;
  return l.l_type != F_UNLCK;
}

// A new open file description of the object behind `fd` (its own locks,
// apart from any the mapping's description holds), through /proc.
inline int reopen(int fd, std::string_view name) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  const int nfd = ::open(path, O_RDWR | O_CLOEXEC);
  if (nfd < 0) throw_os_error(errno, name, "could not be opened again for its liveness lock");
  object_id a, b;
  if (!identify(fd, a) || !identify(nfd, b) || a.device != b.device || a.inode != b.inode) {
    ::close(nfd);
    throw_os_error(EIO, name, "changed while it was opened again");
  }
  return nfd;
}

// Descriptors that belong to one process: the liveness locks. A forked
// child closes its copies at once (a lock held by a child's copy would keep
// a dead writer or reader looking alive), and everything made before the
// fork learns it is in another process from generation().
class process_fds {
 public:
  static process_fds& get() {
    static process_fds* p = make_once();  // never destroyed: used from atexit paths
    return *p;
  }
  void add(int fd) {
    std::lock_guard<std::mutex> g(mu_);
    fds_.push_back(fd);
  }
  void close(int fd) noexcept {
    if (fd < 0) return;
    std::lock_guard<std::mutex> g(mu_);
    fds_.erase(std::remove(fds_.begin(), fds_.end(), fd), fds_.end());
    ::close(fd);
  }
  // Bumped in every forked child.
  static std::uint64_t generation() noexcept { return gen().load(std::memory_order_relaxed); }

 private:
  static std::atomic<std::uint64_t>& gen() noexcept {
    static std::atomic<std::uint64_t> g{0};
    return g;
  }
  static process_fds* make_once() {
    auto* p = new process_fds;
    static const owner::fork_reset::hooks hooks{[]() noexcept { get().mu_.lock(); },
                                                []() noexcept { get().mu_.unlock(); },
                                                []() noexcept { get().forget(); }};
    owner::fork_reset::join(owner::fork_reset::ring_part, hooks);
    return p;
  }
  void forget() noexcept {
    for (int fd : fds_)
      ::close(fd);
    fds_.clear();
    gen().fetch_add(1, std::memory_order_relaxed);
  }
  std::mutex mu_;
  std::vector<int> fds_;
};

}  // namespace shmarray::detail::ring
