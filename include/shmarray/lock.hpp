// shmarray: the guard over a segment's process-shared robust mutex.
#pragma once

#include <errno.h>
#include <pthread.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include "detail/os_error.hpp"
#include "detail/system.hpp"
#include "errors.hpp"
#include "format.hpp"

// ThreadSanitizer intercepts pthread_mutex_lock and _trylock, but (clang 14,
// gcc 12) not pthread_mutex_clocklock: a timed lock it did not see would be
// reported as an unlock of an unlocked mutex. Under TSan only, the timed
// lock is a loop of trylocks, which TSan sees (EOWNERDEAD included).
#if defined(__SANITIZE_THREAD__)
#define SHMARRAY_TSAN_TIMED_LOCK 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SHMARRAY_TSAN_TIMED_LOCK 1
#endif
#endif

namespace shmarray {

namespace detail {

// A process-shared, robust mutex: a holder's death is reported to the next
// locker instead of leaving the mutex locked forever.
inline void init_mutex(pthread_mutex_t* m, std::string_view name) {
  pthread_mutexattr_t a;
  int rc = ::pthread_mutexattr_init(&a);
  if (rc == 0) rc = ::pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  if (rc == 0) rc = ::pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  if (rc == 0) rc = ::pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
  if (rc == 0) rc = ::pthread_mutex_init(m, &a);
  ::pthread_mutexattr_destroy(&a);
  if (rc != 0) throw lock_error(message(name, "could not initialise its lock: " + errno_text(rc)));
}

// Whether a mutex in the record is of the kind shmarray makes: a forged or
// damaged one must not be trusted to lock. (glibc keeps the kind in plain
// sight; elsewhere nothing is checked.)
inline bool mutex_kind_ok(const pthread_mutex_t* m) noexcept {
#if defined(__GLIBC__)
  static const int kind = [] {
    pthread_mutex_t probe;
    init_mutex(&probe, "");
    const int k = probe.__data.__kind;
    ::pthread_mutex_destroy(&probe);
    return k;
  }();
  return m->__data.__kind == kind;
#else
  (void)m;
  return true;
#endif
}

// Makes the lock of a writable segment usable in this boot. A lock that was
// initialised in an earlier boot (a file that survived a reboot), or never
// (a writer that could not make a pthread mutex, such as Python), is
// initialised now instead of trusted. A mutex of the wrong kind is corrupt.
inline void refresh_lock(std::byte* rec, std::string_view name) {
  const auto now = boot_id();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  for (;;) {
    std::uint32_t state = load_acquire(rec, format::off_lock_state);
    const bool current = std::memcmp(rec + format::off_lock_boot_id, now.data(), now.size()) == 0;
    if (state == format::lock_ready && current) {
      if (!mutex_kind_ok(record_mutex(rec)))
        corrupt(name, "its lock is not a robust process-shared mutex");
      return;
    }
    if (state == format::lock_ready || state == format::lock_uninitialised) {
      const std::uint32_t before = state;
      if (__atomic_compare_exchange_n(word(rec, format::off_lock_state), &state,
                                      format::lock_initialising, false, __ATOMIC_ACQUIRE,
                                      __ATOMIC_RELAXED)) {
        try {
          init_mutex(record_mutex(rec), name);
        } catch (...) {  // leave it as it was, for the next attach to try again
          __atomic_store_n(word(rec, format::off_lock_state), before, __ATOMIC_RELEASE);
          throw;
        }
        std::memcpy(rec + format::off_lock_boot_id, now.data(), now.size());
        __atomic_store_n(word(rec, format::off_lock_state), format::lock_ready, __ATOMIC_RELEASE);
        return;
      }
      continue;  // another process changed the state first: look again
    }
    if (state != format::lock_initialising)
      corrupt(name, "lock state " + std::to_string(state) + ", expected 0, 1 or 2");
    if (std::chrono::steady_clock::now() > deadline)
      throw lock_error(message(name,
                               "has a lock that another process began to initialise "
                               "and never finished"));
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

}  // namespace detail

// Owns the lock of a segment while it lives (or until unlock()). If the
// previous holder died while holding it, the lock is still acquired, made
// consistent again, and owner_died() says so: the data it guarded may be
// half-written, so the caller can repair it.
class scoped_lock {
 public:
  scoped_lock() = default;
  scoped_lock(scoped_lock&& o) noexcept
      : keep_(std::move(o.keep_)), m_(std::exchange(o.m_, nullptr)), died_(o.died_) {}
  scoped_lock& operator=(scoped_lock&& o) noexcept {
    if (this != &o) {
      unlock();
      keep_ = std::move(o.keep_);
      m_ = std::exchange(o.m_, nullptr);
      died_ = o.died_;
    }
    return *this;
  }
  ~scoped_lock() { unlock(); }

  bool owns_lock() const noexcept { return m_ != nullptr; }
  explicit operator bool() const noexcept { return owns_lock(); }
  // The previous holder died while it held the lock.
  bool owner_died() const noexcept { return died_; }

  void unlock() noexcept {
    if (m_) ::pthread_mutex_unlock(std::exchange(m_, nullptr));
    keep_.reset();
  }

 private:
  template <class T>
  friend class ndarray;

  enum class mode { wait, try_once, until };

  // A timeout as nanoseconds, clamped to [0, 100 years], so that no duration
  // overflows on its way to a deadline.
  template <class Rep, class Period>
  static std::chrono::nanoseconds saturate(std::chrono::duration<Rep, Period> d) {
    using namespace std::chrono;
    constexpr auto limit = hours(24 * 365 * 100);
    if (d <= d.zero()) return nanoseconds::zero();
    if (duration<double>(d) >= duration<double>(limit)) return limit;
    return duration_cast<nanoseconds>(d);
  }

  // Locks `m`; `keep` holds the mapping alive while the lock is held.
  static scoped_lock acquire(std::shared_ptr<const void> keep, pthread_mutex_t* m,
                             const std::string& name, mode how,
                             std::chrono::nanoseconds timeout = {}) {
    int rc = 0;
    if (how == mode::wait) {
      rc = ::pthread_mutex_lock(m);
    } else if (how == mode::try_once) {
      rc = ::pthread_mutex_trylock(m);
    } else {
#if defined(SHMARRAY_TSAN_TIMED_LOCK)
      const auto until = std::chrono::steady_clock::now() + timeout;
      while ((rc = ::pthread_mutex_trylock(m)) == EBUSY) {
        if (std::chrono::steady_clock::now() >= until) {
          rc = ETIMEDOUT;
          break;
        }
        ::usleep(50);
      }
#else
      timespec ts{};
      ::clock_gettime(CLOCK_MONOTONIC, &ts);
      const auto ns = std::max<std::int64_t>(timeout.count(), 0) + ts.tv_nsec;
      ts.tv_sec += time_t(ns / 1000000000);
      ts.tv_nsec = long(ns % 1000000000);
      rc = ::pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &ts);
#endif
    }
    scoped_lock g;
    switch (rc) {
      case 0:
        break;
      case EOWNERDEAD:
        ::pthread_mutex_consistent(m);
        g.died_ = true;
        break;
      case EBUSY:
      case ETIMEDOUT:
        return g;
      case EDEADLK:
        throw lock_error(detail::message(name, "has a lock this thread already holds"));
      case ENOTRECOVERABLE:
        throw lock_error(detail::message(
            name, "has a lock left unrecoverable by a process that did not use shmarray"));
      default:
        throw lock_error(detail::message(name, "could not be locked: " + detail::errno_text(rc)));
    }
    g.keep_ = std::move(keep);
    g.m_ = m;
    return g;
  }

  std::shared_ptr<const void> keep_;
  pthread_mutex_t* m_ = nullptr;
  bool died_ = false;
};

}  // namespace shmarray
