#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <shmarray/manager.hpp>

#include "support.hpp"

using namespace shmarray;
using namespace std::chrono_literals;

namespace {

// A child that takes the lock, says so through a pipe, then waits to be
// signalled. Returns its pid once it holds the lock.
pid_t child_holding(const ndarray<int>& a, bool stop_itself) {
  int fds[2];
  if (::pipe(fds) != 0) return -1;
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    auto g = a.lock();
    (void)!::write(fds[1], "L", 1);
    if (stop_itself) ::raise(SIGSTOP);
    for (;;)
      ::pause();
  }
  ::close(fds[1]);
  char c = 0;
  const bool ok = ::read(fds[0], &c, 1) == 1 && c == 'L';
  ::close(fds[0]);
  return ok ? pid : -1;
}

}  // namespace

TEST_CASE("lock and try_lock exclude other processes") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<int>({1});
    {
      auto g = a.lock();
      CHECK(g.owns_lock());
      CHECK_FALSE(g.owner_died());
      // another process, through its own attach, finds it taken
      const int status = test::in_child([&] {
        auto b = ndarray<int>::attach(a.name());
        return b.try_lock().owns_lock() ? 1 : 0;
      });
      CHECK(test::exited_with(status, 0));
      CHECK_THROWS_AS(a.lock(), lock_error);  // this thread holds it already
    }
    const int status = test::in_child([&] { return a.try_lock().owns_lock() ? 0 : 1; });
    CHECK(test::exited_with(status, 0));
    scoped_lock moved = a.lock();
    scoped_lock target;
    target = std::move(moved);
    CHECK(target.owns_lock());
    CHECK_FALSE(moved.owns_lock());
    target.unlock();
    CHECK_FALSE(target);
    CHECK(a.try_lock());
  }
  CHECK(names.left().empty());
}

TEST_CASE("the lock makes read-modify-write from several processes exact") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<std::int64_t>({1});
    constexpr int workers = 3, rounds = 20000;
    pid_t pids[workers];
    for (auto& pid : pids) {
      pid = ::fork();
      if (pid == 0) {
        for (int i = 0; i < rounds; ++i) {
          auto g = a.lock();
          volatile std::int64_t* p = a.data();
          *p = *p + 1;
        }
        ::_exit(0);
      }
    }
    for (auto pid : pids)
      CHECK(test::exited_with(test::reap(pid), 0));
    CHECK(a(0) == workers * rounds);
  }
  CHECK(names.left().empty());
}

TEST_CASE("a holder killed with SIGKILL leaves a lock the next locker gets, with owner_died") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<int>({4});
    const pid_t holder = child_holding(a, false);
    REQUIRE(holder > 0);
    ::kill(holder, SIGKILL);
    CHECK(test::killed_by(test::reap(holder), SIGKILL));
    {
      auto g = a.lock();
      CHECK(g.owns_lock());
      CHECK(g.owner_died());
    }
    {
      auto g = a.lock();  // consistent again: a normal lock
      CHECK(g.owns_lock());
      CHECK_FALSE(g.owner_died());
    }
    const int status = test::in_child([&] {
      auto g = a.try_lock_for(1s);
      return g.owns_lock() && !g.owner_died() ? 0 : 1;
    });
    CHECK(test::exited_with(status, 0));
  }
  CHECK(names.left().empty());
}

TEST_CASE("try_lock_for times out while a stopped process holds the lock") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<int>({4});
    const pid_t holder = child_holding(a, true);
    REQUIRE(holder > 0);
    int st = 0;
    REQUIRE(::waitpid(holder, &st, WUNTRACED) == holder);
    CHECK(WIFSTOPPED(st));
    const auto t0 = std::chrono::steady_clock::now();
    auto g = a.try_lock_for(100ms);
    const auto waited = std::chrono::steady_clock::now() - t0;
    CHECK_FALSE(g.owns_lock());
    CHECK(waited >= 100ms);
    CHECK_FALSE(a.try_lock());
    ::kill(holder, SIGKILL);
    CHECK(test::killed_by(test::reap(holder), SIGKILL));
    auto after = a.try_lock_for(1s);
    CHECK(after.owns_lock());
    CHECK(after.owner_died());
  }
  CHECK(names.left().empty());
}

TEST_CASE("a raw segment has no lock, and says so") {
  test::names names;
  {
    manager m(names.options());
    const auto raw = test::raw();
    auto a = m.from_shape<int>({4}, raw);
    CHECK_THROWS_AS(a.lock(), lock_error);
    CHECK_THROWS_WITH(a.try_lock(), Catch::Contains("has no record, so it has no lock"));
    ndarray<int> empty;
    CHECK_THROWS_AS(empty.lock(), lock_error);
  }
  CHECK(names.left().empty());
}

TEST_CASE("an anonymous array's lock works across fork") {
  manager m;
  auto a = m.from_shape<int>({1}, anonymous{});
  auto g = a.lock();
  const int status = test::in_child([&] { return a.try_lock().owns_lock() ? 1 : 0; });
  CHECK(test::exited_with(status, 0));
  g.unlock();
  const int after = test::in_child([&] { return a.try_lock().owns_lock() ? 0 : 1; });
  CHECK(test::exited_with(after, 0));
}

TEST_CASE("any timeout works: huge ones do not overflow, negative ones try once") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<int>({1});
    CHECK(a.try_lock_for(std::chrono::nanoseconds::max()).owns_lock());
    CHECK(a.try_lock_for(std::chrono::hours::max()).owns_lock());
    CHECK(a.try_lock_for(std::chrono::seconds(1LL << 40)).owns_lock());
    CHECK(a.try_lock_for(std::chrono::duration<double>(1e300)).owns_lock());
    CHECK(a.try_lock_for(-1s).owns_lock());
    // held by another process that lets go after 50 ms: a huge timeout waits for it
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    const pid_t holder = ::fork();
    REQUIRE(holder >= 0);
    if (holder == 0) {
      auto g = a.lock();
      (void)!::write(fds[1], "L", 1);
      ::usleep(50000);
      g.unlock();  // _exit runs no destructors
      ::_exit(0);
    }
    char c;
    REQUIRE(::read(fds[0], &c, 1) == 1);
    CHECK_FALSE(a.try_lock_for(-1s).owns_lock());
    auto g = a.try_lock_for(std::chrono::hours::max());
    CHECK(g.owns_lock());
    CHECK_FALSE(g.owner_died());
    CHECK(test::exited_with(test::reap(holder), 0));
    ::close(fds[0]);
    ::close(fds[1]);
  }
  CHECK(names.left().empty());
}

#if defined(__GLIBC__)
TEST_CASE("a forged mutex in a record is corrupt_metadata, not a lock that hangs") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<int>({1});
    const auto& seg = a.mapped_segment();
    auto* mutex = reinterpret_cast<pthread_mutex_t*>(seg.data() + seg.size() - 512 + 448);
    mutex->__data.__kind = 0;       // a plain, non-robust, private mutex ...
    mutex->__data.__lock = 123456;  // ... "held" by a thread that never was
    CHECK_THROWS_AS(ndarray<int>::attach(a.name()), corrupt_metadata);
    CHECK_THROWS_WITH(ndarray<int>::attach(a.name()), Catch::Contains("robust"));
  }
  CHECK(names.left().empty());
}
#endif

#if defined(__GLIBC__)
TEST_CASE(
    "a mutex overwritten after attach is corrupt_metadata at lock(), never a locked garbage") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<int>({1});
    auto b = ndarray<int>::attach(a.name());  // checked here, and fine
    auto* mutex = detail::record_mutex(detail::record_of(
        const_cast<std::byte*>(b.mapped_segment().data()), b.mapped_segment().size()));
    // Any writer of the segment can do this after the attach (glibc then
    // writes through the robust list's pointers at unlock).
    mutex->__data.__kind = 0;
    mutex->__data.__lock = 123456;
    CHECK_THROWS_AS(b.lock(), corrupt_metadata);
    CHECK_THROWS_AS(b.try_lock(), corrupt_metadata);
    CHECK_THROWS_AS(b.try_lock_for(std::chrono::milliseconds(10)), corrupt_metadata);
    CHECK_THROWS_WITH(a.lock(), Catch::Contains("overwritten"));
  }
  CHECK(names.left().empty());
}
#endif
