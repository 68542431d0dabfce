// The lock and the pool's job protocol, with threads instead of processes.
//
// ThreadSanitizer sees the threads of one process only: it cannot see two
// processes race on shared memory. So these tests run the same code with
// threads: threads share one mapping of an array and its process-shared
// robust mutex, and threads serve a process_pool's board (its job slot,
// futex word, done flags and wake-up eventfd) through the library's own
// protocol functions, where the real pool has processes. CI builds this file
// alone under ThreadSanitizer (tools/run.sh test, build-tsan); it also runs
// in the plain and ASan trees.
#include <catch2/catch.hpp>

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <new>
#include <shmarray/manager.hpp>
#include <shmarray/workers.hpp>
#include <stdexcept>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace shmarray;
using namespace std::chrono_literals;

namespace {

// A process_pool's board served by threads. Staging, publishing, serving
// and waiting are the library's functions (detail::stage_run, stage_for,
// run_job, serve_jobs, end_jobs); only the workers are threads.
class thread_pool {
 public:
  explicit thread_pool(std::size_t n) : board_(n) {
    wake_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_ < 0) throw std::runtime_error("eventfd failed");
    for (std::size_t r = 0; r < n; ++r)
      threads_.emplace_back([this, r] { detail::serve_jobs(board_, r, wake_, 0); });
  }
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;
  ~thread_pool() {
    detail::end_jobs(board_);
    for (auto& t : threads_)
      t.join();
    ::close(wake_);
  }

  template <class F>
  void run(F fn, const worker_options& o = {}) {
    detail::stage_run(board_, fn);
    finish(o);
  }
  template <class I, class F>
  void parallel_for(I first, I last, F fn, const for_options& o = {}) {
    if (detail::stage_for(board_, first, last, fn, o)) finish(o);
  }
  detail::board& board() { return board_; }
  int wake() const { return wake_; }

  // detail::wait_for's view of the workers. A thread neither ends nor can
  // be killed: "stopping" one waits until it has finished the job.
  bool ended(std::size_t) const { return false; }
  bool stop(std::size_t r) {
    const auto job = board_.head().job_number.load();
    while (board_.slot(r).done_job.load() != job)
      std::this_thread::yield();
    return false;
  }
  detail::ending end_of(std::size_t) const { return {}; }
  int watch(std::vector<pollfd>&, std::vector<std::size_t>&, std::size_t) const { return -1; }
  void readied(std::size_t) {}
  void check_alive() {}

 private:
  void finish(const worker_options& o) {
    auto failed = detail::run_job(*this, board_, wake_, o);
    if (!failed.empty()) throw worker_error(std::move(failed));
  }

  detail::board board_;
  int wake_ = -1;
  std::vector<std::thread> threads_;
};

}  // namespace

TEST_CASE("the lock makes read-modify-write exact") {
  manager m;
  auto a = m.from_shape<std::int64_t>({2}, anonymous{});
  constexpr int threads = 4, rounds = 20000;
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([a] {  // one mapping, shared: the mutex has one address
      for (int i = 0; i < rounds; ++i) {
        auto g = a.lock();
        a(0) = a(0) + 1;  // plain, unsynchronised memory: only the lock orders it
        a(1) = a(0) * 2;
      }
    });
  for (auto& t : ts)
    t.join();
  auto g = a.lock();
  CHECK(a(0) == threads * rounds);
  CHECK(a(1) == 2 * threads * rounds);
}

TEST_CASE("try_lock and try_lock_for see a lock another thread holds") {
  manager m;
  auto a = m.from_shape<int>({1}, anonymous{});
  std::atomic<int> step{0};
  std::thread holder([&] {
    auto g = a.lock();
    a(0) = 42;
    step = 1;
    while (step.load() != 2)
      std::this_thread::yield();
  });
  while (step.load() != 1)
    std::this_thread::yield();
  CHECK_FALSE(a.try_lock().owns_lock());
  const auto t0 = std::chrono::steady_clock::now();
  CHECK_FALSE(a.try_lock_for(20ms).owns_lock());
  CHECK(std::chrono::steady_clock::now() - t0 >= 20ms);
  step = 2;
  auto g = a.try_lock_for(10s);
  REQUIRE(g.owns_lock());
  CHECK_FALSE(g.owner_died());
  CHECK(a(0) == 42);  // written under the holder's lock, read under ours
  g.unlock();
  holder.join();
}

TEST_CASE("a thread that ends holding the lock leaves it with owner_died") {
  manager m;
  auto a = m.from_shape<int>({1}, anonymous{});
  // The guard is built in storage that is never destroyed, so the thread
  // ends holding the lock (as a thread that died would); it keeps the
  // mapping alive until the process ends.
  alignas(scoped_lock) static unsigned char storage[sizeof(scoped_lock)];
  std::thread([&] {
    new (storage) scoped_lock(a.lock());
    a(0) = 7;
  }).join();
  auto g = a.lock();
  CHECK(g.owns_lock());
  CHECK(g.owner_died());
  CHECK(a(0) == 7);
  g.unlock();
  auto again = a.lock();
  CHECK_FALSE(again.owner_died());
}

TEST_CASE("a timed lock after a thread that ended holding it gets it, with owner_died") {
  manager m;
  auto a = m.from_shape<int>({1}, anonymous{});
  alignas(scoped_lock) static unsigned char storage[sizeof(scoped_lock)];
  std::thread([&] { new (storage) scoped_lock(a.lock()); }).join();
  auto g = a.try_lock_for(10s);
  CHECK(g.owns_lock());
  CHECK(g.owner_died());
}

TEST_CASE("pool jobs run back to back on one board, each seeing its own closure") {
  manager m;
  constexpr std::size_t workers = 3;
  auto out = m.from_shape<std::uint64_t>({workers}, anonymous{});
  thread_pool pool(workers);
  std::uint64_t* o = out.data();
  for (std::uint64_t k = 1; k <= 2000; ++k) {
    pool.run([o, k](const worker& w) { o[w.rank()] = k * 10 + w.rank(); });
    for (std::size_t r = 0; r < workers; ++r)
      REQUIRE(o[r] == k * 10 + r);  // written by a worker, read after the job
  }
}

TEST_CASE("parallel_for gives each index to one worker, both schedules") {
  manager m;
  constexpr std::size_t n = 5000;
  auto hits = m.from_shape<std::uint32_t>({n}, anonymous{});
  auto rank_of = m.from_shape<std::uint32_t>({n}, anonymous{});
  thread_pool pool(3);
  std::uint32_t* h = hits.data();
  std::uint32_t* who = rank_of.data();
  for (auto sched : {schedule::blocks, schedule::dynamic}) {
    std::fill(hits.begin(), hits.end(), 0u);
    for_options o;
    o.sched = sched;
    o.chunk = 7;
    pool.parallel_for(
        std::size_t(0), n,
        [h, who](std::size_t i, const worker& w) {
          ++h[i];  // a plain increment: two workers on one index would race
          who[i] = std::uint32_t(w.rank());
        },
        o);
    CHECK(std::count(hits.begin(), hits.end(), 1u) == std::ptrdiff_t(n));
  }
  // blocks: contiguous, in rank order
  pool.parallel_for(std::size_t(0), n,
                    [who](std::size_t i, const worker& w) { who[i] = std::uint32_t(w.rank()); });
  CHECK(std::is_sorted(rank_of.begin(), rank_of.end()));
  CHECK(rank_of(0) == 0);
  CHECK(rank_of(n - 1) == 2);
}

TEST_CASE("workers asleep on the futex are woken for the next job") {
  manager m;
  auto out = m.from_shape<std::uint64_t>({2}, anonymous{});
  thread_pool pool(2);
  std::uint64_t* o = out.data();
  for (std::uint64_t k = 1; k <= 40; ++k) {
    // long enough for both to stop spinning and sleep on the futex
    for (int i = 0; i < 200; ++i) {
      bool both = pool.board().slot(0).sleeping.load() && pool.board().slot(1).sleeping.load();
      if (both) break;
      std::this_thread::sleep_for(50us);
    }
    pool.run([o, k](const worker& w) { o[w.rank()] += k; });
  }
  CHECK(out(0) == 40 * 41 / 2);
  CHECK(out(1) == 40 * 41 / 2);
}

TEST_CASE("a worker's exception is reported, the others finish, the next job runs") {
  manager m;
  auto out = m.from_shape<int>({3}, anonymous{});
  thread_pool pool(3);
  int* o = out.data();
  try {
    pool.run([o](const worker& w) {
      if (w.rank() == 1) throw std::out_of_range("row 17 is past the end");
      o[w.rank()] = 1;
    });
    FAIL("no worker_error");
  } catch (const worker_error& e) {
    REQUIRE(e.failures().size() == 1);
    CHECK(e.failures()[0].rank == 1);
    CHECK(e.failures()[0].what == worker_failure::kind::exception);
    CHECK(e.failures()[0].type == "std::out_of_range");
    CHECK(e.failures()[0].message == "row 17 is past the end");
  }
  CHECK(o[0] == 1);
  CHECK(o[2] == 1);
  pool.run([o](const worker& w) { o[w.rank()] = 2; });
  CHECK(out(0) + out(1) + out(2) == 6);
}

TEST_CASE("progress counts every index of a parallel_for") {
  thread_pool pool(2);
  std::atomic<std::uint64_t> sum{0};
  auto* s = &sum;
  for_options o;
  o.progress = true;  // counted; drawn only on a terminal, printed once otherwise
  o.label = "threads";
  pool.parallel_for(
      0, 1000, [s](int i) { s->fetch_add(std::uint64_t(i)); }, o);
  CHECK(sum.load() == 999 * 1000 / 2);
  CHECK(pool.board().head().progress.load() == 1000);
}

#if defined(SHMARRAY_TSAN)
// A report ends the process with exit code 66, however this is run.
extern "C" const char* __tsan_default_options() {
  return "halt_on_error=1";
}

// Proof that the tests above can fail: a parent that writes the next job
// while workers still read this one is a race, and ThreadSanitizer says so.
TEST_CASE("ThreadSanitizer reports a job written while workers read the last one") {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const int status = test::in_child([&] {
    ::dup2(fds[1], 2);  // the report, for the parent to read
    ::close(fds[0]);
    thread_pool pool(2);
    int k = 1;
    auto fn = [k](const worker&) {
      volatile int x = k;
      (void)x;
    };
    detail::stage_run(pool.board(), fn);
    detail::publish_job(pool.board());
    detail::stage_run(pool.board(), fn);  // the bug: no wait for the last job
    for (std::size_t r = 0; r < 2; ++r)
      pool.stop(r);
    return 0;
  });
  ::close(fds[1]);
  const std::string report = test::read_all(fds[0]);
  ::close(fds[0]);
  CHECK(test::exited_with(status, 66));
  CHECK(report.find("WARNING: ThreadSanitizer: data race") != std::string::npos);
  CHECK(report.find("stage_run") != std::string::npos);
}
#endif
