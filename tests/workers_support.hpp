// What the fork workers' tests share (test_fork_workers.cpp,
// test_process_pool.cpp, test_array_ref.cpp): Catch's signal handlers off in
// workers, looking for children left, a call's worker_error, a child's stderr,
// a killed owner.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <shmarray/shmarray.hpp>
#include <stdexcept>
#include <string>
#include <utility>

#include "support.hpp"

namespace workers_test {

using namespace shmarray;

// Catch's handlers for fatal signals would report a failure from a worker's
// copy of the test: a worker dies of its signal as any process would. The
// worker hook is how a program sets up its workers.
inline void default_fatal_signals() {
  for (int sig : {SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE, SIGTERM, SIGINT})
    std::signal(sig, SIG_DFL);
}
inline const bool registered = add_worker_init(&default_fatal_signals);

// True when this process has no child left, reaped or not.
inline bool no_children() {
  errno = 0;
  return ::waitpid(-1, nullptr, WNOHANG) == -1 && errno == ECHILD;
}

// The worker_error a call throws (fails the test if it throws none).
template <class F>
worker_error error_of(F&& f) {
  try {
    f();
  } catch (const worker_error& e) {
    return e;
  }
  FAIL("no worker_error");
  return worker_error({});
}

inline const worker_failure* failure_of(const worker_error& e, std::size_t rank) {
  for (const auto& f : e.failures())
    if (f.rank == rank) return &f;
  return nullptr;
}

// What a child wrote to its stderr while running fn, which returns its exit code.
template <class F>
std::pair<int, std::string> stderr_of(F&& fn, bool terminal) {
  int master = -1, fds[2] = {-1, -1};
  std::string slave_name;
  if (terminal) {
    master = ::posix_openpt(O_RDWR | O_NOCTTY);
    REQUIRE(master >= 0);
    REQUIRE(::grantpt(master) == 0);
    REQUIRE(::unlockpt(master) == 0);
    slave_name = ::ptsname(master);
  } else {
    REQUIRE(::pipe(fds) == 0);
  }
  const int status = test::in_child([&] {
    const int out = terminal ? ::open(slave_name.c_str(), O_RDWR | O_NOCTTY) : fds[1];
    if (out < 0 || ::dup2(out, 2) < 0) return 90;
    if (fds[0] >= 0) ::close(fds[0]);
    return fn();
  });
  if (fds[1] >= 0) ::close(fds[1]);
  const int in = terminal ? master : fds[0];
  std::string text = test::read_all(in);
  ::close(in);
  return {status, text};
}

// Runs `owner` in a process P under a subreaper G (a child of the test).
// `owner` starts workers that write their pids into `pids` and then wait
// forever. G kills P with SIGKILL and collects every orphaned process: 0
// when all were gone within 5 s, killed by SIGKILL.
template <class Owner>
int owner_killed(std::size_t n_workers, Owner owner) {
  auto* pids = static_cast<std::atomic<pid_t>*>(
      ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  REQUIRE(pids != MAP_FAILED);
  detail::scope_exit unmap([&] { ::munmap(pids, 4096); });
  const int status = test::in_child([&] {
    ::prctl(PR_SET_CHILD_SUBREAPER, 1);
    const pid_t p = ::fork();
    if (p == 0) {
      owner(pids);
      ::_exit(0);
    }
    using clock = std::chrono::steady_clock;
    auto deadline = clock::now() + std::chrono::seconds(20);
    auto up = [&] {
      for (std::size_t r = 0; r < n_workers; ++r)
        if (pids[r].load() == 0) return false;
      return true;
    };
    while (!up())
      if (clock::now() > deadline)
        return 2;
      else
        ::usleep(1000);
    ::kill(p, SIGKILL);
    if (!test::killed_by(test::reap(p), SIGKILL)) return 3;
    std::size_t killed = 0;
    deadline = clock::now() + std::chrono::seconds(5);
    for (;;) {
      int st = 0;
      const pid_t got = ::waitpid(-1, &st, WNOHANG);
      if (got < 0) break;  // ECHILD: nobody is left
      if (got > 0) {
        killed += test::killed_by(st, SIGKILL);
        continue;
      }
      if (clock::now() > deadline) return 4;  // a worker outlived its parent
      ::usleep(1000);
    }
    for (std::size_t r = 0; r < n_workers; ++r)
      if (::kill(pids[r].load(), 0) == 0) return 5;
    return killed >= n_workers ? 0 : 6;  // a pool's fork server is among them
  });
  return status;
}

}  // namespace workers_test

namespace frames {
struct bad_frame : std::runtime_error {
  using std::runtime_error::runtime_error;
};
}  // namespace frames

using namespace shmarray;
using namespace workers_test;
using Catch::Matchers::Contains;
using kind = worker_failure::kind;
