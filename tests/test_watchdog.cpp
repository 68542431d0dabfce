// The watchdog: segments of an owner that dies, however it dies, are removed
// within a second or two, by a helper that is nobody's child; and nothing
// that is not the owner's is ever removed.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <shmarray/shmarray.hpp>
#include <string>
#include <thread>

#include "support.hpp"

using namespace shmarray;

namespace {

// Skips the test where the helper is not built here (no CLI11).
bool no_helper() {
  if (!detail::find_helper().empty()) return false;
  std::printf("SHMARRAY-SKIP: the shmarray command (the watchdog helper) is not built here\n");
  return true;
}

// True once `names` holds nothing within 3 s.
bool cleaned(const test::names& names) {
  for (int i = 0; i < 300 && !names.left().empty(); ++i)
    ::usleep(10000);
  return names.left().empty();
}

// What an owner reports before it dies: its helper's pid and its token.
struct report {
  pid_t helper = 0;
  std::uint64_t token = 0;
  pid_t workers[4] = {};
  std::atomic<int> ready{0};
};

report* shared_report() {
  void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  REQUIRE(p != MAP_FAILED);
  return new (p) report();
}

}  // namespace

TEST_CASE("a SIGKILLed owner's segments go within seconds, by a helper that is nobody's child") {
  if (no_helper()) return;
  test::names names;
  char dir[] = "/tmp/shmarray_wd_XXXXXX";
  REQUIRE(::mkdtemp(dir));
  const std::string file = std::string(dir) + "/array.bin";
  report* r = shared_report();
  const int status = test::in_child([&] {
    manager m(names.options());
    auto a = m.from_shape<double>({64});
    auto raw = m.from_shape<int>({16}, test::raw());  // no record: the watchdog alone knows it
    auto f = m.from_shape<float>({8}, shmarray::file(file));
    r->helper = detail::watchdog::get().helper_pid();
    r->token = detail::owner_token::get().id();
    errno = 0;
    const bool childless = ::waitpid(-1, nullptr, WNOHANG) == -1 && errno == ECHILD;
    r->ready = childless ? 1 : 2;  // the helper is not the owner's child
    ::raise(SIGKILL);
    return 1;
  });
  CHECK(test::killed_by(status, SIGKILL));
  CHECK(r->ready.load() == 1);
  CHECK(r->helper > 0);
  CHECK(cleaned(names));
  struct stat st {};
  CHECK(::stat(file.c_str(), &st) != 0);  // the file backing's too
  CHECK(test::ends(r->helper));           // it exits once it has cleaned up, the token last
  CHECK(test::shm_names(detail::token_name(r->token).substr(1)).empty());
  ::rmdir(dir);
  ::munmap(r, 4096);
}

TEST_CASE("the helper ignores a Ctrl-C and never removes a name reused by someone else") {
  if (no_helper()) return;
  test::names names;
  report* r = shared_report();
  int go[2];
  REQUIRE(::pipe(go) == 0);
  const std::string reused = names("reused");
  const pid_t owner = ::fork();
  REQUIRE(owner >= 0);
  if (owner == 0) {
    manager m(names.options());
    auto a = m.from_shape<int>({4}, posix_shm(reused));
    auto b = m.from_shape<int>({4});
    r->helper = detail::watchdog::get().helper_pid();
    r->ready = 1;
    char c;
    (void)!::read(go[0], &c, 1);
    ::pause();
  }
  while (r->ready.load() == 0)
    ::usleep(1000);
  CHECK(::kill(r->helper, SIGINT) == 0);  // as a Ctrl-C to the terminal's group would
  CHECK(::kill(r->helper, SIGTERM) == 0);
  ::usleep(50000);
  CHECK(test::running(r->helper));
  // Someone else takes the name: the owner's object goes, a new one comes.
  REQUIRE(::shm_unlink(reused.c_str()) == 0);
  const int fd = ::shm_open(reused.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  REQUIRE(fd >= 0);
  ::close(fd);
  ::kill(owner, SIGKILL);
  CHECK(test::killed_by(test::reap(owner), SIGKILL));
  CHECK(test::ends(r->helper));
  CHECK(names.left() == std::set<std::string>{reused.substr(1)});  // only the reused name is left
  ::shm_unlink(reused.c_str());
  ::close(go[0]);
  ::close(go[1]);
  ::munmap(r, 4096);
}

TEST_CASE("an owner killed while a pool or fork_workers job runs leaves no segment, no process") {
  if (no_helper()) return;
  for (const bool pool : {true, false}) {
    INFO((pool ? "process_pool" : "fork_workers"));
    test::names names;
    report* r = shared_report();
    const pid_t owner = ::fork();
    REQUIRE(owner >= 0);
    if (owner == 0) {
      manager m(names.options());
      auto a = m.from_shape<double>({1024});
      auto b = m.from_shape<double>({16, 16});
      r->helper = detail::watchdog::get().helper_pid();
      auto job = [r](const worker& w) {
        r->workers[w.rank()] = ::getpid();
        for (;;)
          ::pause();
      };
      if (pool) {
        process_pool p(2);
        r->ready = 1;
        p.run(job);
      } else {
        r->ready = 1;
        fork_workers(2, job);
      }
      ::_exit(0);
    }
    while (r->ready.load() == 0 || r->workers[0] == 0 || r->workers[1] == 0)
      ::usleep(1000);
    REQUIRE(names.left().size() == 2);
    ::kill(owner, SIGKILL);
    CHECK(test::killed_by(test::reap(owner), SIGKILL));
    CHECK(cleaned(names));  // the workers, which held the socket and token, closed them
    CHECK(test::ends(r->workers[0]));
    CHECK(test::ends(r->workers[1]));
    CHECK(test::ends(r->helper));
    ::munmap(r, 4096);
  }
}

TEST_CASE("a child that outlives its killed parent does not keep the parent's segments") {
  if (no_helper()) return;
  test::names names;
  report* r = shared_report();
  const int status = test::in_child([&] {
    ::prctl(PR_SET_CHILD_SUBREAPER, 1);
    const pid_t p = ::fork();
    if (p == 0) {
      manager m(names.options());
      auto a = m.from_shape<int>({4});
      r->helper = detail::watchdog::get().helper_pid();
      if (const pid_t g = ::fork(); g == 0) {
        r->workers[0] = ::getpid();  // G runs: its fork handlers have run
        for (;;)
          ::pause();
      }
      while (r->workers[0] == 0)
        ::usleep(1000);
      ::raise(SIGKILL);
    }
    test::reap(p);
    const bool gone = cleaned(names);
    const bool g_alive = test::running(r->workers[0]);
    ::kill(r->workers[0], SIGKILL);
    test::reap(r->workers[0]);
    return gone && g_alive ? 0 : 1;
  });
  CHECK(test::exited_with(status, 0));
  CHECK(test::ends(r->helper));
  ::munmap(r, 4096);
}

TEST_CASE("leaving by _exit without the manager's destructor leaks nothing either") {
  if (no_helper()) return;
  test::names names;
  const int status = test::in_child([&] {
    auto* m = new manager(names.options());  // never destroyed
    auto a = m->from_shape<int>({4});
    return 0;  // in_child leaves with _exit
  });
  CHECK(test::exited_with(status, 0));
  CHECK(cleaned(names));
}

TEST_CASE("without a helper: one warning, and segments work as before") {
  test::names names;
  int err[2];
  REQUIRE(::pipe(err) == 0);
  const int status = test::in_child([&] {
    ::setenv("SHMARRAY_HELPER", "", 1);  // no helper
    ::dup2(err[1], 2);
    manager m(names.options());
    auto a = m.from_shape<int>({4});
    auto b = m.from_shape<int>({4});
    a(0) = 1;
    return a(0) == 1 && detail::watchdog::get().helper_pid() == 0 ? 0 : 1;
  });
  ::close(err[1]);
  std::string said = test::read_all(err[0]);
  ::close(err[0]);
  CHECK(test::exited_with(status, 0));
  CHECK_THAT(said, Catch::Contains("no watchdog helper found") && Catch::Contains("shmarray gc"));
  CHECK(said.find("warning", said.find("warning") + 1) == std::string::npos);  // once
  CHECK(names.left().empty());  // the manager removed them as it always does
}

TEST_CASE("an owner killed while a large array is being filled leaks nothing") {
  if (no_helper()) return;
  test::names names;
  const std::size_t n = std::size_t(64) << 20;  // 256 MiB of float: the fill takes a while
  std::vector<float> data(n, 1.5f);
  const pid_t owner = ::fork();
  REQUIRE(owner >= 0);
  if (owner == 0) {
    manager m(names.options());
    auto a = m.from_array(data.data(), {n});  // killed during this
    ::pause();
  }
  // The object appears, then is sized and filled (about 100 ms for 256 MiB
  // here): kill the owner during the fill.
  while (names.left().empty())
    ::usleep(50);
  ::usleep(5000);
  ::kill(owner, SIGKILL);
  CHECK(test::killed_by(test::reap(owner), SIGKILL));
  CHECK(cleaned(names));
}

TEST_CASE("without a helper, a process's first named segment collects what dead owners left") {
  test::names names;
  auto no_helper_here = [] {
    ::setenv("SHMARRAY_HELPER", "", 1);
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 2);  // the warning that there is no helper
  };
  // A dead owner without a watchdog leaves two segments, and a kept one.
  const int died = test::in_child([&] {
    no_helper_here();
    manager m(names.options());
    auto a = m.from_shape<int>({4});
    auto b = m.from_shape<int>({4});
    create_options keep;
    keep.keep = true;
    auto k = m.from_shape<int>({4}, keep);
    ::raise(SIGKILL);
    return 1;
  });
  CHECK(test::killed_by(died, SIGKILL));
  REQUIRE(names.left().size() == 3);
  // A later process without a helper makes its first named segment.
  const int later = test::in_child([&] {
    no_helper_here();
    manager m(names.options());
    auto mine = m.from_shape<int>({4});
    // what is left: its own, and the kept one (never collected)
    return names.left().size() == 2 && names.exists(mine.name()) ? 0 : 1;
  });
  CHECK(test::exited_with(later, 0));
  CHECK(names.left().size() == 1);  // the kept one: the later process's own went with its manager
}
