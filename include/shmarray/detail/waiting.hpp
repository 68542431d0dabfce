// shmarray internals: waiting on workers and on shared words: pidfds,
// spinning, futexes, eventfds, and collecting a child's status.
#pragma once

#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <csignal>
#include <cstdint>

namespace shmarray::detail {

inline bool& use_pidfd() {
  static bool use = true;  // tests turn it off to check the polling fallback
  return use;
}

inline int open_pidfd(pid_t pid) noexcept {
#ifdef SYS_pidfd_open
  if (use_pidfd()) return int(::syscall(SYS_pidfd_open, pid, 0));
#endif
  (void)pid;
  return -1;
}

// now + d on the steady clock, where nanoseconds::max() (for ever) does
// not overflow.
inline std::chrono::steady_clock::time_point deadline_after(std::chrono::nanoseconds d) noexcept {
  using clock = std::chrono::steady_clock;
  const auto now = clock::now();
  if (d >= clock::time_point::max() - now) return clock::time_point::max();
  return now + std::chrono::duration_cast<clock::duration>(std::max(d, d.zero()));
}

// What a spinning loop does between looks: a pause the core understands.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Sleeps on a shared 32-bit word while it holds `expected`, at most
// `slice` (for ever: nanoseconds::max()); true when the whole slice passed
// (nobody woke it). A shared futex, never the private flag: the word may be
// in a segment other processes map. A read-only mapping is enough to wait.
inline bool futex_wait(const void* word, std::uint32_t expected,
                       std::chrono::nanoseconds slice) noexcept {
  if (slice <= slice.zero()) return true;
  timespec ts{};
  const bool forever = slice == std::chrono::nanoseconds::max();
  ts.tv_sec = time_t(slice.count() / 1000000000);
  ts.tv_nsec = long(slice.count() % 1000000000);
  return ::syscall(SYS_futex, static_cast<const std::uint32_t*>(word), FUTEX_WAIT, expected,
                   forever ? nullptr : &ts, nullptr, 0) != 0 &&
         errno == ETIMEDOUT;
}
// Wakes at most n of those asleep on the word.
inline void futex_wake(void* word, int n) noexcept {
  (void)::syscall(SYS_futex, static_cast<std::uint32_t*>(word), FUTEX_WAKE, n, nullptr, nullptr, 0);
}

// Checks ready() until it holds or `budget` has passed: with a pause between
// looks (the parent, briefly), or giving the core away (a worker: with as many
// workers as cores, the parent needs one to post the next job).
template <class Ready>
bool spin_until(Ready ready, std::chrono::nanoseconds budget, bool yield) {
  const auto until = std::chrono::steady_clock::now() + budget;
  for (unsigned i = 1;; ++i) {
    if (ready()) return true;
    if (yield)
      ::sched_yield();
    else
      cpu_relax();
    if (i % 16 == 0 && std::chrono::steady_clock::now() >= until) return false;
  }
}

// Waits on a 32-bit shared word until it differs from `seen`: spins a little
// (giving the core away), then sleeps on the futex with its `sleeping` flag
// up, so that the parent knows to wake it.
inline std::uint32_t wait_for_change(std::atomic<std::uint32_t>& word,
                                     std::atomic<std::uint32_t>& sleeping, std::uint32_t seen) {
  std::uint32_t v = seen;
  if (spin_until([&] { return (v = word.load(std::memory_order_acquire)) != seen; },
                 std::chrono::microseconds(50), true))
    return v;
  sleeping.store(1);  // seq_cst, as the parent's store of the word and load of this flag
  while ((v = word.load()) == seen)
    futex_wait(&word, seen, std::chrono::nanoseconds::max());
  sleeping.store(0);
  return v;
}

inline void wake_all(std::atomic<std::uint32_t>& word) {
  futex_wake(&word, INT_MAX);
}

inline void post(int eventfd) noexcept {
  const std::uint64_t one = 1;
  (void)!::write(eventfd, &one, sizeof one);
}

inline void drain(int eventfd) noexcept {
  std::uint64_t n;
  (void)!::read(eventfd, &n, sizeof n);
}

// SIGKILL through a pidfd where there is one: a pid could have been reused
// if a handler of the program's reaped the child behind our back.
inline void kill_process(pid_t pid, int pidfd) noexcept {
#ifdef SYS_pidfd_send_signal
  if (pidfd >= 0) {
    if (::syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0) == 0 || errno != ENOSYS)
      return;  // sent, or the process is gone: its pid may belong to another now
  }
#endif
  ::kill(pid, SIGKILL);
}

// Blocking or (WNOHANG) not: the child's wait status, -1 when someone else
// collected it, or nothing yet (false).
inline bool collect(pid_t pid, int options, int& status) {
  int st = 0;
  pid_t got;
  while ((got = ::waitpid(pid, &st, options)) < 0 && errno == EINTR) {
  }
  if (got == 0) return false;
  status = got < 0 ? -1 : st;
  return true;
}

// How a worker ended: its pid and wait status (-1: collected elsewhere).
struct ending {
  pid_t pid = 0;
  int status = 0;
};

}  // namespace shmarray::detail
