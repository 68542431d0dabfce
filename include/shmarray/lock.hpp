// shmarray: the guard over a segment's process-shared robust mutex.
#pragma once

#include <errno.h>
#include <pthread.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "detail/os_error.hpp"
#include "errors.hpp"

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
