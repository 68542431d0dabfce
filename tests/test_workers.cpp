// Fork workers: fork_workers, parallel_for and process_pool; every way a
// worker can fail, and that nothing is left behind (no child, no segment).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <csignal>
#include <future>
#include <set>
#include <shmarray/shmarray.hpp>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace shmarray;
using Catch::Matchers::Contains;
using kind = worker_failure::kind;

namespace {

// Catch's handlers for fatal signals would report a failure from a worker's
// copy of the test: a worker dies of its signal as any process would. The
// worker hook is how a program sets up its workers.
void default_fatal_signals() {
  for (int sig : {SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE, SIGTERM, SIGINT})
    std::signal(sig, SIG_DFL);
}
const bool registered = add_worker_init(&default_fatal_signals);

// True when this process has no child left, reaped or not.
bool no_children() {
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

const worker_failure* failure_of(const worker_error& e, std::size_t rank) {
  for (const auto& f : e.failures())
    if (f.rank == rank) return &f;
  return nullptr;
}

}  // namespace

namespace frames {
struct bad_frame : std::runtime_error {
  using std::runtime_error::runtime_error;
};
}  // namespace frames

TEST_CASE("fork_workers runs fn in n children, each with its rank and n") {
  test::names names;
  {
    manager m(names.options());
    auto seen = m.from_shape<std::int64_t>({4, 3});
    const pid_t parent = ::getpid();
    fork_workers(4, [&](const worker& w) {
      seen(w.rank(), 0) = std::int64_t(w.count());
      seen(w.rank(), 1) = ::getppid() == parent;
      seen(w.rank(), 2) = ::getpid();
    });
    std::set<std::int64_t> pids;
    for (std::size_t r = 0; r < 4; ++r) {
      CHECK(seen(r, 0) == 4);
      CHECK(seen(r, 1) == 1);
      pids.insert(seen(r, 2));
    }
    CHECK(pids.size() == 4);
    CHECK(pids.count(parent) == 0);
    CHECK(no_children());
    fork_workers(1, [&] { seen(0, 0) = 7; });  // fn() without the worker is fine too
    CHECK(seen(0, 0) == 7);
  }
  CHECK(names.left().empty());
}

TEST_CASE("workers leave with _exit: no destructor of the parent's runs in a child") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<int>({2});
    const std::string name = a.name();
    {
      struct bump {
        int* count;
        ~bump() { ++*count; }
      } b{a.data()};
      static int exits = 0;
      std::atexit([] { ++exits; });
      fork_workers(3, [&] { a(1) += 1 + exits; });
      CHECK(a(0) == 0);           // three children, no destructor ran
      CHECK(a(1) == 3);           // nor an atexit handler (exits stayed 0 in each)
      CHECK(names.exists(name));  // the parent's manager removed nothing
    }
    CHECK(a(0) == 1);  // the parent's own destructor
  }
  CHECK(names.left().empty());
}

TEST_CASE("an exception in a worker comes back with its type and message") {
  const auto e = error_of([] {
    fork_workers(3, [](const worker& w) {
      if (w.rank() == 1) throw frames::bad_frame("frame 17 is truncated");
    });
  });
  REQUIRE(!e.failures().empty());
  const auto& f = e.failures()[0];
  for (std::size_t i = 1; i < e.failures().size(); ++i)  // still running when rank 1 failed
    CHECK(e.failures()[i].what == kind::stopped);
  CHECK(f.rank == 1);
  CHECK(f.what == kind::exception);
  CHECK(f.type == "frames::bad_frame");
  CHECK(f.message == "frame 17 is truncated");
  CHECK(f.pid > 0);
  CHECK_THAT(e.what(), Contains("worker 1") && Contains("threw frames::bad_frame") &&
                           Contains("frame 17 is truncated"));
  CHECK(no_children());

  const auto odd = error_of([] { fork_workers(1, [] { throw 42; }); });
  REQUIRE(odd.failures().size() == 1);
  CHECK(odd.failures()[0].type == "int");
  CHECK_THAT(odd.failures()[0].message, Contains("not derived from std::exception"));
}

TEST_CASE("a worker's std::bad_alloc is reported") {
  worker_options o;
  o.failure = on_failure::finish_all;  // worker 1 is not stopped, whenever it ends
  const auto e = error_of([&] {
    fork_workers(
        2,
        [](const worker& w) {
          if (w.rank() != 0) return;
#if defined(__SANITIZE_ADDRESS__)
          throw std::bad_alloc();  // ASan aborts on an impossible size instead of throwing
#else
          std::vector<char> huge(std::size_t(1) << 62);  // a real allocation failure
          (void)huge;
#endif
        },
        o);
  });
  REQUIRE(e.failures().size() == 1);
  CHECK(e.failures()[0].rank == 0);
  CHECK(e.failures()[0].what == kind::exception);
  CHECK(e.failures()[0].type == "std::bad_alloc");
  CHECK(no_children());
}

TEST_CASE("a worker's segfault is reported by name [segv]") {
  const auto e = error_of([] {
    fork_workers(2, [](const worker& w) {
      if (w.rank() != 1) return;
      // A page that may not be touched (a null store would be caught by UBSan first).
      void* page = ::mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      *static_cast<volatile int*>(page) = 1;
    });
  });
  REQUIRE(!e.failures().empty());
  const auto* f = failure_of(e, 1);
  REQUIRE(f);
  CHECK(f->what == kind::signal);
  CHECK(f->code == SIGSEGV);
  CHECK_THAT(e.what(), Contains("worker 1") && Contains("killed by SIGSEGV"));
  CHECK(no_children());
}

TEST_CASE("a SIGKILLed worker and a non-zero exit are reported") {
  worker_options o;
  o.failure = on_failure::finish_all;
  const auto e = error_of([&] {
    fork_workers(
        3,
        [](const worker& w) {
          if (w.rank() == 0) ::kill(::getpid(), SIGKILL);
          if (w.rank() == 2) ::_exit(3);
        },
        o);
  });
  REQUIRE(e.failures().size() == 2);
  CHECK(e.failures()[0].rank == 0);
  CHECK(e.failures()[0].what == kind::signal);
  CHECK(e.failures()[0].code == SIGKILL);
  CHECK(e.failures()[1].rank == 2);
  CHECK(e.failures()[1].what == kind::exit);
  CHECK(e.failures()[1].code == 3);
  CHECK_THAT(e.what(),
             Contains("2 workers failed") && Contains("SIGKILL") && Contains("exited with code 3"));
  CHECK(no_children());
}

TEST_CASE("the first failure stops the other workers; finish_all lets them finish") {
  test::names names;
  {
    manager m(names.options());
    auto finished = m.from_shape<int>({4});
    SECTION("stop_all, the default") {
      const auto e = error_of([&] {
        fork_workers(4, [&](const worker& w) {
          if (w.rank() == 0) throw std::runtime_error("first");
          ::pause();  // would wait forever
          finished(w.rank()) = 1;
        });
      });
      REQUIRE(e.failures().size() == 4);
      CHECK(e.failures()[0].what == kind::exception);
      for (std::size_t r = 1; r < 4; ++r) {
        CHECK(e.failures()[r].rank == r);
        CHECK(e.failures()[r].what == kind::stopped);
      }
      CHECK_THAT(e.what(), Contains("1 worker failed") && Contains("3 other workers were stopped"));
    }
    SECTION("finish_all") {
      worker_options o;
      o.failure = on_failure::finish_all;
      const auto e = error_of([&] {
        fork_workers(
            4,
            [&](const worker& w) {
              if (w.rank() == 0) throw std::runtime_error("first");
              ::usleep(50000);
              finished(w.rank()) = 1;
            },
            o);
      });
      REQUIRE(e.failures().size() == 1);
      CHECK(finished(1) + finished(2) + finished(3) == 3);
    }
    CHECK(no_children());
  }
  CHECK(names.left().empty());
}

TEST_CASE("a job past its timeout is killed and reported") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<int>({2});
    worker_options o;
    o.timeout = std::chrono::milliseconds(200);
    const auto e = error_of([&] {
      fork_workers(
          2,
          [&](const worker& w) {
            if (w.rank() == 1) ::pause();
            a(w.rank()) = 1;
          },
          o);
    });
    REQUIRE(e.failures().size() == 1);
    CHECK(e.failures()[0].rank == 1);
    CHECK(e.failures()[0].what == kind::timeout);
    CHECK_THAT(e.what(), Contains("timed out after 200 ms"));
    CHECK(a(0) == 1);
    CHECK(no_children());
  }
  CHECK(names.left().empty());
}

TEST_CASE("without pidfds, the parent polls and reports the same") {
  detail::use_pidfd() = false;
  detail::scope_exit restore([] { detail::use_pidfd() = true; });
  fork_workers(2, [] {});
  const auto e = error_of([] {
    fork_workers(2, [](const worker& w) {
      if (w.rank() == 1) throw std::runtime_error("polled");
      ::pause();
    });
  });
  REQUIRE(e.failures().size() == 2);
  CHECK(e.failures()[0].rank == 1);
  CHECK(e.failures()[0].message == "polled");
  CHECK(e.failures()[1].what == kind::stopped);
  process_pool pool(2);
  const auto pe = error_of([&] {
    pool.run([](const worker& w) {
      if (w.rank() == 0) ::kill(::getpid(), SIGKILL);
    });
  });
  CHECK(pe.failures()[0].code == SIGKILL);
  pool.run([] {});
}

TEST_CASE("the worker hook runs in every worker, not in the parent") {
  static int hook_ran = 0;
  add_worker_init([] { hook_ran = 1; });
  test::names names;
  {
    manager m(names.options());
    auto ran = m.from_shape<int>({3});
    fork_workers(3, [&](const worker& w) { ran(w.rank()) = hook_ran; });
    CHECK(ran(0) + ran(1) + ran(2) == 3);
    process_pool pool(2);
    int* p = ran.data();
    std::fill(ran.begin(), ran.end(), 0);
    pool.run([p](const worker& w) { p[w.rank()] = hook_ran; });
    CHECK(ran(0) + ran(1) == 2);
  }
  CHECK(hook_ran == 0);
  CHECK(names.left().empty());
}

TEST_CASE("parallel_for: every index once, one contiguous block per worker") {
  test::names names;
  {
    manager m(names.options());
    auto owner = m.from_shape<std::int32_t>({103});
    auto visits = m.from_shape<std::int32_t>({103});
    parallel_for(4, 0, 103, [&](int i, const worker& w) {
      visits(i) += 1;
      owner(i) = std::int32_t(w.rank());
    });
    CHECK(std::all_of(visits.begin(), visits.end(), [](int v) { return v == 1; }));
    CHECK(std::is_sorted(owner.begin(), owner.end()));  // contiguous blocks, in rank order
    CHECK(owner(0) == 0);
    CHECK(owner(102) == 3);
    for (int r = 0; r < 4; ++r) {  // sizes differ by at most one
      const auto n = std::count(owner.begin(), owner.end(), r);
      CHECK((n == 25 || n == 26));
    }
  }
  CHECK(names.left().empty());
}

TEST_CASE("parallel_for: dynamic chunks, signed and empty ranges, fewer indices than workers") {
  test::names names;
  {
    manager m(names.options());
    auto visits = m.from_shape<std::int32_t>({100});
    for_options o;
    o.sched = schedule::dynamic;
    o.chunk = 3;
    parallel_for(2, -50, 50, [&](long i) { visits(std::size_t(i + 50)) += 1; });
    parallel_for(
        2, std::size_t(0), std::size_t(100), [&](std::size_t i) { visits(i) += 1; }, o);
    CHECK(std::all_of(visits.begin(), visits.end(), [](int v) { return v == 2; }));

    // Uneven work: index 0 takes 300 ms, the others nothing. Static blocks
    // would give its worker half the indices; the dynamic schedule leaves it
    // only its first chunk while the other worker takes the rest.
    auto by = m.from_shape<std::int32_t>({40});
    o.chunk = 1;
    parallel_for(
        2, 0, 40,
        [&](int i, const worker& w) {
          by(std::size_t(i)) = int(w.rank());
          if (i == 0) ::usleep(300000);
        },
        o);
    const auto slow = by(0);
    CHECK(std::count(by.begin(), by.end(), slow) < 10);

    auto count = m.from_shape<std::int32_t>({1});
    parallel_for(4, 5, 5, [&](int) { count(0) += 1; });  // empty: nothing forked
    parallel_for(4, 9, 2, [&](int) { count(0) += 1; });  // reversed: empty
    CHECK(count(0) == 0);
    auto workers = m.from_shape<std::int32_t>({2});
    parallel_for(8, 0, 2,
                 [&](int i, const worker& w) { workers(std::size_t(i)) = int(w.count()); });
    CHECK(workers(0) == 2);  // two indices: two workers, not eight
    CHECK(workers(1) == 2);
    CHECK_THROWS_AS(parallel_for(0, 0, 10, [](int) {}), std::invalid_argument);
    CHECK_THROWS_AS(fork_workers(0, [] {}), std::invalid_argument);
  }
  CHECK(no_children());
  CHECK(names.left().empty());
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

TEST_CASE("progress: a bar on a terminal, one plain line otherwise") {
  auto job = [] {
    for_options o;
    o.progress = true;
    o.label = "frames";
    parallel_for(
        2, 0, 12, [](int) { ::usleep(40000); }, o);
    return 0;
  };
  const auto [plain_status, plain] = stderr_of(job, false);
  CHECK(test::exited_with(plain_status, 0));
  CHECK_THAT(plain, Catch::Matches("frames: 12/12 in [0-9.]+ s\n"));

  const auto [tty_status, tty] = stderr_of(job, true);
  CHECK(test::exited_with(tty_status, 0));
  CHECK_THAT(tty, Contains("\rframes [") && Contains("] 100% 12/12 "));
  std::size_t draws = 0;
  for (auto at = tty.find("\rframes ["); at != std::string::npos;
       at = tty.find("\rframes [", at + 1))
    ++draws;
  CHECK(draws >= 2);  // redrawn while waiting, then the final state

  // fork_workers: the workers count what they like, against o.total.
  const auto [st, counted] = stderr_of(
      [] {
        worker_options o;
        o.progress = true;
        o.label = "tiles";
        o.total = 6;
        fork_workers(
            3, [](const worker& w) { w.progress(2); }, o);
        return 0;
      },
      false);
  CHECK(test::exited_with(st, 0));
  CHECK_THAT(counted, Catch::Matches("tiles: 6/6 in [0-9.]+ s\n"));
}

TEST_CASE("a multithreaded parent is refused, or allowed when asked") {
  std::promise<void> go;
  std::thread other([f = go.get_future()]() mutable { f.wait(); });
  detail::scope_exit join([&] {
    go.set_value();
    other.join();
  });
  CHECK_THROWS_AS(fork_workers(1, [] {}), unsafe_fork);
  CHECK_THROWS_WITH(fork_workers(1, [] {}), Contains("runs 2 threads") && Contains("OpenMP") &&
                                                Contains("thread_policy::allow"));
  CHECK_THROWS_AS(process_pool(1), unsafe_fork);
  CHECK_THROWS_AS(parallel_for(2, 0, 4, [](int) {}), unsafe_fork);

  worker_options allow;
  allow.threads = thread_policy::allow;
  fork_workers(
      1, [] {}, allow);
  process_pool pool(1, thread_policy::allow);
  pool.run([] {});
  CHECK(no_children() == false);  // the pool's worker
}

TEST_CASE("warn says why, once, and forks") {
  std::promise<void> go;
  std::thread other([f = go.get_future()]() mutable { f.wait(); });
  detail::scope_exit join([&] {
    go.set_value();
    other.join();
  });
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const int saved = ::dup(2);
  ::dup2(fds[1], 2);
  ::close(fds[1]);
  worker_options warn;
  warn.threads = thread_policy::warn;
  int ran = 0;
  try {
    fork_workers(
        1, [] {}, warn);
    ++ran;
    fork_workers(
        1, [] {}, warn);
    ++ran;
  } catch (...) {
  }
  ::dup2(saved, 2);
  ::close(saved);
  std::string said = test::read_all(fds[0]);
  ::close(fds[0]);
  CHECK(ran == 2);
  CHECK_THAT(said, Contains("shmarray: warning: forking anyway") && Contains("runs 2 threads"));
  CHECK(said.find("warning", said.find("warning") + 1) == std::string::npos);
}

TEST_CASE("a parent that ignores SIGCHLD is refused, with the way out") {
  const int status = test::in_child([] {
    std::signal(SIGCHLD, SIG_IGN);
    try {
      fork_workers(1, [] {});
    } catch (const unsafe_fork& e) {
      return std::string(e.what()).find("signal(SIGCHLD, SIG_DFL)") != std::string::npos ? 0 : 2;
    }
    return 1;
  });
  CHECK(test::exited_with(status, 0));
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

TEST_CASE("workers die with their parent: a killed parent leaves none") {
  SECTION("fork_workers") {
    const int status = owner_killed(3, [](std::atomic<pid_t>* pids) {
      fork_workers(3, [pids](const worker& w) {
        pids[w.rank()] = ::getpid();
        for (;;)
          ::pause();
      });
    });
    CHECK(test::exited_with(status, 0));
  }
  SECTION("a pool's idle workers") {
    const int status = owner_killed(2, [](std::atomic<pid_t>* pids) {
      process_pool pool(2);
      pool.run([pids](const worker& w) { pids[w.rank()] = ::getpid(); });
      for (;;)
        ::pause();
    });
    CHECK(test::exited_with(status, 0));
  }
  CHECK(no_children());
}

TEST_CASE("a pool runs 1000 small jobs on the same workers") {
  test::names names;
  {
    manager m(names.options());
    auto counts = m.from_shape<std::int64_t>({4, 8});  // a row per worker, no false sharing
    std::int64_t* p = counts.data();
    auto v = m.from_shape<double>({1000});  // before the pool, so workers have it mapped
    double* d = v.data();
    process_pool pool(4);
    CHECK(pool.size() == 4);
    const auto pids = pool.pids();
    for (int k = 0; k < 1000; ++k)
      pool.run([p](const worker& w) { p[w.rank() * 8] += 1; });
    for (std::size_t r = 0; r < 4; ++r)
      CHECK(counts(r, 0) == 1000);
    CHECK(pool.pids() == pids);  // no fork after the first
    CHECK(std::find(pids.begin(), pids.end(), 0) == pids.end());

    // parallel_for on the pool, both schedules
    pool.parallel_for(0, 1000, [d](int i) { d[i] = 2.0 * i; });
    for_options o;
    o.sched = schedule::dynamic;
    o.chunk = 7;
    pool.parallel_for(
        0, 1000, [d](int i) { d[i] += 1; }, o);
    bool all = true;
    for (int i = 0; i < 1000; ++i)
      all = all && v(std::size_t(i)) == 2.0 * i + 1;
    CHECK(all);
    pool.parallel_for(3, 3, [d](int) { d[0] = -1; });  // empty: no job
    CHECK(v(0) == 1.0);
  }
  CHECK(no_children());
  CHECK(names.left().empty());
}

void plain_job(const worker& w);
std::int64_t* plain_job_out = nullptr;
void plain_job(const worker& w) {
  plain_job_out[w.rank()] = 100 + std::int64_t(w.rank());
}

TEST_CASE("a pool job may be a function pointer, and reach newer arrays by name") {
  test::names names;
  {
    manager m(names.options());
    auto out = m.from_shape<std::int64_t>({2});
    plain_job_out = out.data();  // set before the pool: the workers see it
    process_pool pool(2);
    pool.run(plain_job);
    pool.run(&plain_job);
    CHECK(out(0) == 100);
    CHECK(out(1) == 101);

    auto later = m.from_shape<std::int64_t>({2});  // made after the pool
    const fixed_name name = later;
    pool.run([name](const worker& w) {
      auto a = ndarray<std::int64_t>::attach(name);
      a(w.rank()) = 7;
    });
    CHECK(later(0) + later(1) == 14);
    CHECK_THROWS_AS(fixed_name(std::string(300, 'x')), invalid_name);
  }
  CHECK(names.left().empty());
}

TEST_CASE("a pool job's exception fails that job only; the pool goes on") {
  process_pool pool(2);
  const auto pids = pool.pids();
  worker_options o;
  o.failure = on_failure::finish_all;  // worker 0 is not stopped, whenever it ends
  const auto e = error_of([&] {
    pool.run(
        [](const worker& w) {
          if (w.rank() == 1) throw frames::bad_frame("in a pool");
        },
        o);
  });
  REQUIRE(e.failures().size() == 1);
  CHECK(e.failures()[0].type == "frames::bad_frame");
  CHECK(e.failures()[0].message == "in a pool");
  pool.run([] {});
  CHECK(pool.pids() == pids);  // a throwing worker is still a good worker
}

TEST_CASE("a pool worker killed mid-job fails the job and is replaced") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<std::int32_t>({2});
    std::int32_t* p = a.data();
    process_pool pool(2);
    const auto before = pool.pids();
    const pid_t victim = before[0];
    worker_options o;
    o.failure = on_failure::finish_all;  // worker 1 is not stopped, whenever it returns
    const auto e = error_of([&] {
      pool.run(
          [victim, p](const worker& w) {
            if (w.rank() == 0) {
              p[0] = 1;  // in the middle of its job ...
              ::pause();
            } else {
              while (__atomic_load_n(&p[0], __ATOMIC_ACQUIRE) == 0)
                ::usleep(100);
              ::kill(victim, SIGKILL);  // ... worker 0 is killed from outside
            }
          },
          o);
    });
    REQUIRE(!e.failures().empty());
    CHECK(e.failures()[0].rank == 0);
    CHECK(e.failures()[0].what == kind::signal);
    CHECK(e.failures()[0].code == SIGKILL);
    CHECK(e.failures()[0].pid == victim);
    pool.run([p](const worker& w) { p[w.rank()] = 10 + int(w.rank()); });
    CHECK(a(0) == 10);
    CHECK(a(1) == 11);
    const auto after = pool.pids();
    CHECK(after[0] != victim);
    CHECK(after[1] == before[1]);
    CHECK(::kill(victim, 0) != 0);  // reaped, not a zombie
  }
  CHECK(names.left().empty());
}

TEST_CASE("a pool job that touches an array made after the pool fails with a hint [segv]") {
  test::names names;
  {
    manager m(names.options());
    process_pool pool(1);
    auto later = m.from_shape<double>({1 << 16});  // not mapped in the pool's worker
    double* d = later.data();
    const auto e = error_of([&] { pool.run([d] { d[100] = 1; }); });
    REQUIRE(e.failures().size() == 1);
    CHECK(e.failures()[0].code == SIGSEGV);
    CHECK_THAT(e.what(), Contains("made after the pool") && Contains("fixed_name"));
    const fixed_name name = later;  // the way that works
    pool.run([name] { ndarray<double>::attach(name)(100) = 1; });
    CHECK(later(100) == 1);
  }
  CHECK(names.left().empty());
}

TEST_CASE("a pool worker killed between jobs is replaced quietly") {
  process_pool pool(2);
  const pid_t victim = pool.pids()[1];
  ::kill(victim, SIGKILL);
  // Until the fork server has reaped it and said so (pids() is 0 for a slot
  // not running). The process can be gone a moment before the server has
  // recorded it; a job posted in that moment meets a dead worker and fails,
  // as a job does whose worker dies under it.
  for (int i = 0; i < 5000 && pool.pids()[1] != 0; ++i)
    ::usleep(1000);
  REQUIRE(pool.pids()[1] == 0);
  pool.run([] {});
  CHECK(pool.pids()[1] != victim);
  CHECK(pool.pids()[1] != 0);
}

TEST_CASE("a pool job past its timeout is killed, and the pool goes on") {
  process_pool pool(2);
  worker_options o;
  o.timeout = std::chrono::milliseconds(150);
  const auto e = error_of([&] {
    pool.run(
        [](const worker& w) {
          if (w.rank() == 1) ::pause();
        },
        o);
  });
  REQUIRE(e.failures().size() == 1);
  CHECK(e.failures()[0].rank == 1);
  CHECK(e.failures()[0].what == kind::timeout);
  pool.run([] {}, o);
}

// Fills a stretch of the stack below the caller with addresses on the stack,
// which is what padding in a closure made later may then hold.
[[gnu::noinline]] void scribble_stack() {
  volatile std::uintptr_t junk[256];
  for (auto& j : junk)
    j = reinterpret_cast<std::uintptr_t>(&junk[0]);
}

TEST_CASE("a pool refuses jobs that capture the parent's stack, and use from another process") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<double>({2});  // before the pool, so its worker has it mapped
    process_pool pool(1);
    int local = 0;
    int* on_stack = &local;
    CHECK_THROWS_WITH(pool.run([on_stack] { *on_stack = 1; }),
                      Contains("captures a pointer into the parent's stack"));
    CHECK_THROWS_AS(pool.run([on_stack](const worker&) { *on_stack = 1; }), std::invalid_argument);
    // Padding is never taken for a capture: a valid job is never refused.
    double* d = a.data();
    for (int k = 0; k < 50; ++k) {
      scribble_stack();
      const bool flag = k % 2 == 0;
      pool.run([flag, d] { d[0] += flag ? 1 : 0; });
    }
    CHECK(a(0) == 25);
    auto shared = std::make_unique<process_pool>(2);
    const auto pids = shared->pids();
    const int status = test::in_child([&] {
      try {
        shared->run([] {});
        return 1;
      } catch (const std::logic_error&) {
      }
      shared.reset();  // a copy's destructor must leave the parent's workers alone
      return 0;
    });
    CHECK(test::exited_with(status, 0));
    shared->run([] {});
    CHECK(shared->pids() == pids);
  }
  CHECK(names.left().empty());
}

TEST_CASE("a pool's destructor stops and reaps its workers") {
  std::vector<pid_t> pids;
  {
    process_pool pool(3);
    pids = pool.pids();
  }
  for (pid_t p : pids)
    CHECK(::kill(p, 0) != 0);
  CHECK(no_children());
}

TEST_CASE("a worker whose parent died before it could ask to die with it leaves at once") {
  // The check right after PR_SET_PDEATHSIG: a parent other than the one
  // that forked it means the parent is gone.
  const int status = test::in_child([] {
    detail::die_with(::getppid() + 1);
    return 0;
  });
  CHECK(test::exited_with(status, 70));
}

namespace {
void reap_everything(int) {
  const int saved = errno;
  while (::waitpid(-1, nullptr, WNOHANG) > 0) {
  }
  errno = saved;
}
}  // namespace

TEST_CASE("a status reaped by the program's own SIGCHLD handler is reported as lost") {
  const int status = test::in_child([] {
    struct sigaction sa {};
    sa.sa_handler = reap_everything;
    ::sigaction(SIGCHLD, &sa, nullptr);
    fork_workers(2, [] {});  // fn returned: a success, whoever collected the status
    try {
      fork_workers(1, [] { ::_exit(3); });
    } catch (const worker_error& e) {
      const auto& f = e.failures()[0];
      // Either the handler got there first (lost) or the parent did (exit 3).
      if (f.what == kind::lost) return 0;
      if (f.what == kind::exit && f.code == 3) return 0;
      return 2;
    }
    return 1;
  });
  CHECK(test::exited_with(status, 0));
}

TEST_CASE("a pool's stop_all kills a running worker, and the pool goes on") {
  process_pool pool(2);
  const auto before = pool.pids();
  const auto e = error_of([&] {
    pool.run([](const worker& w) {
      if (w.rank() == 0) throw std::runtime_error("first");
      ::pause();
    });
  });
  REQUIRE(e.failures().size() == 2);
  CHECK(e.failures()[0].what == kind::exception);
  CHECK(e.failures()[1].rank == 1);
  CHECK(e.failures()[1].what == kind::stopped);
  pool.run([] {});
  CHECK(pool.pids()[0] == before[0]);  // it threw, and is still a good worker
  CHECK(pool.pids()[1] != before[1]);  // it was stopped, and replaced
}

int made_before = 1;

TEST_CASE("replacements see memory as it was when the pool was made, even with threads now") {
  test::names names;
  {
    manager m(names.options());
    auto seen = m.from_shape<int>({2});
    int* p = seen.data();
    process_pool pool(2);
    made_before = 2;  // after the pool: no worker sees this
    std::promise<void> go;
    std::thread other([f = go.get_future()]() mutable { f.wait(); });
    detail::scope_exit join([&] {
      go.set_value();
      other.join();
    });
    const pid_t victim = pool.pids()[0];
    const auto e = error_of([&] { pool.run([victim] { ::kill(victim, SIGKILL); }); });
    CHECK(e.failures()[0].code == SIGKILL);
    // The parent runs two threads now; the replacement comes from the fork
    // server, which does not.
    pool.run([p](const worker& w) { p[w.rank()] = made_before; });
    CHECK(seen(0) == 1);
    CHECK(seen(1) == 1);
    CHECK(pool.pids()[0] != victim);
  }
  CHECK(names.left().empty());
}

TEST_CASE("a pool whose fork server was killed says so, and leaves no worker") {
  auto pool = std::make_unique<process_pool>(2);
  const auto pids = pool->pids();
  ::kill(pool->server_pid(), SIGKILL);
  REQUIRE(test::ends(pool->server_pid()));
  CHECK_THROWS_WITH(pool->run([] {}), Contains("fork server died"));
  pool.reset();
  for (pid_t p : pids)
    CHECK(test::ends(p));  // they died with their parent, the server
  CHECK(no_children());
}

TEST_CASE("what a pool job prints is out when the job returns") {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const int status = test::in_child([&] {
    ::close(fds[0]);
    ::dup2(fds[1], 1);  // stdout is a pipe: fully buffered
    ::close(fds[1]);
    process_pool pool(1);
    std::printf("before the job\n");  // buffered in the parent: it must still come first
    pool.run([] { std::printf("from the job\n"); });
    // Leave without the pool's destructor: its worker is killed with this
    // process, so what it had not flushed after the job would be lost.
    return 0;
  });
  ::close(fds[1]);
  CHECK(test::exited_with(status, 0));
  std::string out = test::read_all(fds[0]);
  ::close(fds[0]);  // EOF: the worker and the fork server died with the child
  CHECK(out == "before the job\nfrom the job\n");
}

TEST_CASE("an owner that is a subreaper collects the workers orphaned by a killed fork server") {
  // Where the pool's owner is a subreaper (or PID 1 in a container), the
  // workers of a dead fork server become its children: they must not stay
  // zombies of the user's process.
  const int status = test::in_child([] {
    ::prctl(PR_SET_CHILD_SUBREAPER, 1);
    {
      process_pool pool(2);
      const pid_t server = pool.server_pid();
      ::kill(server, SIGKILL);
      if (!test::ends(server)) return 2;
      try {
        pool.run([] {});
        return 3;
      } catch (const error&) {
      }
    }
    errno = 0;
    return ::waitpid(-1, nullptr, WNOHANG) == -1 && errno == ECHILD ? 0 : 4;
  });
  CHECK(test::exited_with(status, 0));
}

namespace {
// Set (in shared memory) once the pool exists: a worker forked after that
// leaves at once, from its worker hook.
std::atomic<int>* die_at_start = nullptr;
void maybe_die_at_start() {
  if (die_at_start && die_at_start->load()) ::_exit(5);
}
const bool registered_die = add_worker_init(&maybe_die_at_start);
}  // namespace

TEST_CASE("a replacement that dies at once fails the job it missed, not the fork") {
  void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  REQUIRE(p != MAP_FAILED);
  die_at_start = new (p) std::atomic<int>(0);
  detail::scope_exit unmap([p] {
    die_at_start = nullptr;
    ::munmap(p, 4096);
  });
  process_pool pool(2);
  die_at_start->store(1);
  const pid_t victim = pool.pids()[0];
  ::kill(victim, SIGKILL);
  while (::kill(victim, 0) == 0)
    ::usleep(1000);
  worker_options o;
  o.failure = on_failure::finish_all;
  for (int k = 0; k < 3; ++k) {  // each job's replacement dies at once, and says how
    const auto e = error_of([&] { pool.run([] {}, o); });
    INFO(e.what());
    REQUIRE(e.failures().size() == 1);
    CHECK(e.failures()[0].rank == 0);
    CHECK(e.failures()[0].what == kind::exit);
    CHECK(e.failures()[0].code == 5);
  }
  die_at_start->store(0);
  pool.run([] {});  // and the pool goes on once they can start
}
