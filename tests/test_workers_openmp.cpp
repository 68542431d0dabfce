// Fork workers and OpenMP: an `omp parallel` region in the parent before a
// fork makes the child's next region hang (libgomp). Every case that runs
// OpenMP in the parent does so in a child of its own, so that the test
// process stays single-threaded.
#include <omp.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <csignal>
#include <shmarray/shmarray.hpp>
#include <string>

#include "support.hpp"

using namespace shmarray;

namespace {

int threads_in_a_region() {
  int n = 0;
#pragma omp parallel reduction(+ : n)
  n += 1;
  return n;
}

}  // namespace

TEST_CASE("after an OpenMP region, the parent is refused, and the message says why") {
  const int status = test::in_child([] {
    if (threads_in_a_region() < 2) return 77;  // a single-core machine: nothing to test
    if (detail::thread_count() < 2) return 3;  // libgomp keeps its threads between regions
    try {
      fork_workers(1, [] {});
    } catch (const unsafe_fork& e) {
      return std::string(e.what()).find("omp parallel") != std::string::npos ? 0 : 2;
    }
    return 1;
  });
  if (test::exited_with(status, 77)) {
    std::printf("SHMARRAY-SKIP: OpenMP runs one thread here\n");
    return;
  }
  CHECK(test::exited_with(status, 0));
}

TEST_CASE("allowed anyway, the child's OpenMP region hangs, and the timeout reports it") {
  const int status = test::in_child([] {
    if (threads_in_a_region() < 2) return 77;
    worker_options o;
    o.threads = thread_policy::allow;
    o.timeout = std::chrono::milliseconds(1500);
    try {
      fork_workers(
          1, [] { threads_in_a_region(); }, o);
    } catch (const worker_error& e) {
      return e.failures().size() == 1 && e.failures()[0].what == worker_failure::kind::timeout ? 0
                                                                                               : 2;
    }
    return 1;  // it did not hang: the rule in the README would be wrong
  });
  if (test::exited_with(status, 77)) {
    std::printf("SHMARRAY-SKIP: OpenMP runs one thread here\n");
    return;
  }
  CHECK(test::exited_with(status, 0));
}

TEST_CASE("OpenMP inside workers of a parent that never ran it works") {
  test::names names;
  {
    manager m(names.options());
    auto threads = m.from_shape<int>({2});
    fork_workers(2, [&](const worker& w) { threads(w.rank()) = threads_in_a_region(); });
    CHECK(threads(0) == omp_get_max_threads());
    CHECK(threads(1) == omp_get_max_threads());
  }
  CHECK(names.left().empty());
}

TEST_CASE("a pool made before OpenMP: jobs and the parent may use it, and workers are replaced") {
  test::names names;
  {
    manager m(names.options());
    auto threads = m.from_shape<int>({2});
    int* t = threads.data();
    const int status = test::in_child([&] {  // OpenMP in the parent: in a child of the test's
      process_pool pool(2);
      if (threads_in_a_region() != omp_get_max_threads()) return 2;  // the parent uses it now
      pool.run([](int* x, const worker& w) { x[w.rank()] = 10 + threads_in_a_region(); }, t);
      // A worker killed: its replacement comes from the pool's fork server,
      // which never ran OpenMP, so its OpenMP works too.
      const pid_t victim = pool.pids()[0];
      try {
        pool.run([](pid_t v) { ::kill(v, SIGKILL); }, victim);
      } catch (const worker_error&) {
      }
      worker_options o;
      o.timeout = std::chrono::seconds(20);  // a hang would be a failure, not a stuck test
      pool.run([](int* x, const worker& w) { x[w.rank()] += 100 + threads_in_a_region(); }, t, o);
      return 0;
    });
    CHECK(test::exited_with(status, 0));
    CHECK(threads(0) == 110 + 2 * omp_get_max_threads());
    CHECK(threads(1) == 110 + 2 * omp_get_max_threads());
  }
  CHECK(names.left().empty());
}
