// fork_workers and parallel_for (a fork per call): every way a worker can
// fail, and that nothing is left behind (no child, no segment).
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

#include "workers_support.hpp"

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
    pool.run([](int* x, const worker& w) { x[w.rank()] = hook_ran; }, p);
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
    CHECK_THROWS_AS(parallel_for(0, 0, 10, [](int) {}), shmarray::invalid_argument);
    CHECK_THROWS_AS(fork_workers(0, [] {}), shmarray::invalid_argument);
  }
  CHECK(no_children());
  CHECK(names.left().empty());
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
      pool.run([](std::atomic<pid_t>* ps, const worker& w) { ps[w.rank()] = ::getpid(); }, pids);
      for (;;)
        ::pause();
    });
    CHECK(test::exited_with(status, 0));
  }
  CHECK(no_children());
}
