// process_pool: workers forked once, many jobs; a worker that fails or dies
// fails its job and is replaced; nothing is left behind.
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
      pool.run([](std::int64_t* c, const worker& w) { c[w.rank() * 8] += 1; }, p);
    for (std::size_t r = 0; r < 4; ++r)
      CHECK(counts(r, 0) == 1000);
    CHECK(pool.pids() == pids);  // no fork after the first
    CHECK(std::find(pids.begin(), pids.end(), 0) == pids.end());

    // parallel_for on the pool, both schedules
    pool.parallel_for(
        0, 1000, [](int i, double* x) { x[i] = 2.0 * i; }, d);
    for_options o;
    o.sched = schedule::dynamic;
    o.chunk = 7;
    pool.parallel_for(
        0, 1000, [](int i, double* x) { x[i] += 1; }, d, o);
    bool all = true;
    for (int i = 0; i < 1000; ++i)
      all = all && v(std::size_t(i)) == 2.0 * i + 1;
    CHECK(all);
    pool.parallel_for(
        3, 3, [](int, double* x) { x[0] = -1; }, d);  // empty: no job
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
    pool.run(
        [](const fixed_name& n, const worker& w) {
          auto a = ndarray<std::int64_t>::attach(n);
          a(w.rank()) = 7;
        },
        name);
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
      struct kill_arg {
        std::int32_t* p;
        std::int64_t victim;
      };
      pool.run(
          [](const kill_arg& k, const worker& w) {
            if (w.rank() == 0) {
              k.p[0] = 1;  // in the middle of its job ...
              ::pause();
            } else {
              while (__atomic_load_n(&k.p[0], __ATOMIC_ACQUIRE) == 0)
                ::usleep(100);
              ::kill(pid_t(k.victim), SIGKILL);  // ... worker 0 is killed from outside
            }
          },
          kill_arg{p, victim}, o);
    });
    REQUIRE(!e.failures().empty());
    CHECK(e.failures()[0].rank == 0);
    CHECK(e.failures()[0].what == kind::signal);
    CHECK(e.failures()[0].code == SIGKILL);
    CHECK(e.failures()[0].pid == victim);
    pool.run([](std::int32_t* x, const worker& w) { x[w.rank()] = 10 + int(w.rank()); }, p);
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
    // Where the argument check cannot see it: the address is handed over
    // in shared memory made before the pool.
    auto box = m.from_shape<std::uint64_t>({1});
    process_pool pool(1);
    auto later = m.from_shape<double>({1 << 16});  // not mapped in the pool's worker
    double* d = later.data();
    CHECK_THROWS_AS(pool.run([](double* x) { x[100] = 1; }, d), invalid_job);
    box(0) = reinterpret_cast<std::uintptr_t>(d);
    const auto e = error_of([&] {
      pool.run([](const std::uint64_t* b) { reinterpret_cast<double*>(b[0])[100] = 1; },
               box.data());
    });
    REQUIRE(e.failures().size() == 1);
    CHECK(e.failures()[0].code == SIGSEGV);
    CHECK_THAT(e.what(), Contains("made after the pool") && Contains("fixed_name"));
    const fixed_name name = later;  // the way that works
    pool.run([](const fixed_name& n) { ndarray<double>::attach(n)(100) = 1; }, name);
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
    CHECK_THROWS_WITH(pool.run([](int* s) { *s = 1; }, on_stack),
                      Contains("holds a pointer into the parent's stack"));
    CHECK_THROWS_AS(pool.run([](int* s, const worker&) { *s = 1; }, on_stack), invalid_job);
    CHECK_THROWS_AS(pool.parallel_for(
                        0, 2, [](int, int* s) { *s = 1; }, on_stack),
                    invalid_job);
    // An argument has no padding (checked at compile time): a valid job is
    // never refused, whatever the stack held before.
    struct flagged {
      double* d;
      std::uint64_t flag;
    };
    double* d = a.data();
    for (int k = 0; k < 50; ++k) {
      scribble_stack();
      pool.run([](const flagged& f) { f.d[0] += f.flag ? 1 : 0; }, flagged{d, k % 2 == 0});
    }
    CHECK(a(0) == 25);
    auto shared = std::make_unique<process_pool>(2);
    const auto pids = shared->pids();
    const int status = test::in_child([&] {
      try {
        shared->run([] {});
        return 1;
      } catch (const wrong_process&) {
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
    const auto e = error_of([&] { pool.run([](pid_t v) { ::kill(v, SIGKILL); }, victim); });
    CHECK(e.failures()[0].code == SIGKILL);
    // The parent runs two threads now; the replacement comes from the fork
    // server, which does not.
    pool.run([](int* x, const worker& w) { x[w.rank()] = made_before; }, p);
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

namespace {
struct sweep_args {
  const double* in;
  double* out;
};
}  // namespace

// The first program of issue 20, the right way: with [&] (which no longer
// compiles, tests/compile_fail/pool_job_ping_pong_by_reference.cpp) the
// workers read the buffers as they were when the pool forked: "expected 5,
// got 1". Passed as the argument, each call sees the buffers of its sweep.
TEST_CASE("ping-pong buffers swapped between pool calls are seen as they are now") {
  test::names names;
  {
    manager m(names.options());
    constexpr std::size_t n = 64;
    auto a = m.from_shape<double>({n});
    auto b = m.from_shape<double>({n});
    a.fill(1.0);
    b.fill(0.0);
    process_pool pool(2);
    double* in = a.data();
    double* out = b.data();
    for (int step = 0; step < 4; ++step) {
      pool.parallel_for(
          std::size_t(0), n, [](std::size_t i, const sweep_args& s) { s.out[i] = s.in[i] + 1; },
          sweep_args{in, out});
      std::swap(in, out);
    }
    CHECK(in == a.data());  // four swaps: the last result is in a
    for (std::size_t i = 0; i < n; ++i)
      REQUIRE(a(i) == 5.0);
  }
  CHECK(names.left().empty());
}

// The second program of issue 20, the right way: an array_ref of an array
// made before the pool (with [&], tests/compile_fail/pool_job_handle_by_reference.cpp,
// it computed nothing: a(9) stayed 0).
TEST_CASE("a pool job fills an array made before the pool through an array_ref") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<double>({10});
    process_pool pool(2);
    pool.parallel_for(
        0, 10, [](int i, const array_ref<double, 1>& r) { r(i) = 2.0 * i; }, ref<1>(a));
    CHECK(a(9) == 18.0);
    CHECK(a(0) == 0.0);
  }
  CHECK(names.left().empty());
}

TEST_CASE("a pool takes a lone double, or a worker_options, as what they are") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<double>({2});
    double* p = a.data();
    process_pool pool(2);
    worker_options o;
    o.timeout = std::chrono::seconds(20);
    pool.run([](double* x, const worker& w) { x[w.rank()] = 1.5; }, p, o);
    pool.run([] {}, o);  // options, not an argument
    pool.parallel_for(
        0, 2, [](int i, double s) { (void)i, (void)s; }, 2.5);
    CHECK(a(0) + a(1) == 3.0);
  }
  CHECK(names.left().empty());
}
