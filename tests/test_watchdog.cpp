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
#include <set>
#include <shmarray/shmarray.hpp>
#include <string>
#include <thread>

#include "support.hpp"

using namespace shmarray;

namespace {

// Skips the test where the helper is not built here (no CLI11).
bool no_helper() {
  if (!detail::owner::find_helper().empty()) return false;
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
    r->helper = detail::owner::watchdog::get().helper_pid();
    r->token = detail::owner::token::get().id();
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
  CHECK(test::shm_names(detail::owner::token_name(r->token).substr(1)).empty());
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
    r->helper = detail::owner::watchdog::get().helper_pid();
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
      r->helper = detail::owner::watchdog::get().helper_pid();
      auto job = [](report* r, const worker& w) {
        r->workers[w.rank()] = ::getpid();
        for (;;)
          ::pause();
      };
      if (pool) {
        process_pool p(2);
        r->ready = 1;
        p.run(job, r);
      } else {
        r->ready = 1;
        fork_workers(2, [&](const worker& w) { job(r, w); });
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
      r->helper = detail::owner::watchdog::get().helper_pid();
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
    return a(0) == 1 && detail::owner::watchdog::get().helper_pid() == 0 ? 0 : 1;
  });
  ::close(err[1]);
  std::string said = test::read_all(err[0]);
  ::close(err[0]);
  CHECK(test::exited_with(status, 0));
  CHECK_THAT(said, Catch::Contains("no watchdog helper found") && Catch::Contains("shmarray gc"));
  CHECK(said.find("warning", said.find("warning") + 1) == std::string::npos);  // once
  CHECK(names.left().empty());  // the manager removed them as it always does
}

TEST_CASE("a SHMARRAY_HELPER that names no program is said as such") {
  test::names names;
  int err[2];
  REQUIRE(::pipe(err) == 0);
  const int status = test::in_child([&] {
    ::setenv("SHMARRAY_HELPER", "build/tools/no-such-shmarray", 1);  // a relative slip
    ::dup2(err[1], 2);
    manager m(names.options());
    auto a = m.from_shape<int>({4});
    return detail::owner::watchdog::get().helper_pid() == 0 ? 0 : 1;
  });
  ::close(err[1]);
  const std::string said = test::read_all(err[0]);
  ::close(err[0]);
  CHECK(test::exited_with(status, 0));
  CHECK_THAT(said, Catch::Contains("SHMARRAY_HELPER=build/tools/no-such-shmarray is not an "
                                   "executable file") &&
                       Catch::Contains("absolute path"));
  CHECK(names.left().empty());
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
  // In a private /dev/shm: no other process's helper collects them first.
  const auto run = test::in_small_tmpfs("/dev/shm", "4m", [](auto say) {
    test::names names;
    // A dead owner without a watchdog leaves two segments, and a kept one.
    const int died = test::in_child([&] {
      test::without_helper();
      manager m(names.options());
      auto a = m.from_shape<int>({4});
      auto b = m.from_shape<int>({4});
      create_options keep;
      keep.keep = true;
      auto k = m.from_shape<int>({4}, keep);
      ::raise(SIGKILL);
      return 1;
    });
    if (!test::killed_by(died, SIGKILL) || names.left().size() != 3) {
      say("the owner did not leave three segments");
      return 1;
    }
    // A later process without a helper makes its first named segment.
    const int later = test::in_child([&] {
      test::without_helper();
      manager m(names.options());
      auto mine = m.from_shape<int>({4});
      // what is left: its own, and the kept one (never collected)
      return names.left().size() == 2 && names.exists(mine.name()) ? 0 : 1;
    });
    if (!test::exited_with(later, 0)) say("the later process did not collect them; ");
    // the kept one: the later process's own went with its manager
    if (names.left().size() != 1) say("left: " + std::to_string(names.left().size()));
    return test::exited_with(later, 0) && names.left().size() == 1 ? 0 : 1;
  });
  if (run.skipped()) return;
  INFO(run.said);
  CHECK(run.ok());
}

namespace {

// A fresh cgroup v2 of this test's (removed on destruction), or none where
// cgroup v2 with cgroup.kill is not here.
struct scratch_cgroup {
  std::string dir;
  scratch_cgroup() {
    for (const char* root : {"/sys/fs/cgroup/unified", "/sys/fs/cgroup"}) {
      const std::string d = std::string(root) + "/shmarray-test-" + std::to_string(::getpid());
      if (::mkdir(d.c_str(), 0755) != 0) continue;
      if (::access((d + "/cgroup.kill").c_str(), W_OK) == 0) {
        dir = d;
        return;
      }
      ::rmdir(d.c_str());
    }
  }
  ~scratch_cgroup() {
    if (!dir.empty()) ::rmdir(dir.c_str());
  }
  bool write(const std::string& file, const std::string& text) const {
    const int fd = ::open((dir + "/" + file).c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return false;
    const bool ok = ::write(fd, text.data(), text.size()) == ssize_t(text.size());
    ::close(fd);
    return ok;
  }
  bool empty() const {
    const int fd = ::open((dir + "/cgroup.procs").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return true;
    const std::string procs = test::read_all(fd);
    ::close(fd);
    return procs.empty();
  }
};

}  // namespace

TEST_CASE(
    "a cgroup killed whole (owner and helper at once) is collected by the next helper or gc") {
  if (no_helper()) return;
  if (::geteuid() != 0) {
    std::printf("SHMARRAY-SKIP: needs root to make a cgroup\n");
    return;
  }
  for (const bool by_gc : {false, true}) {
    scratch_cgroup cg;
    if (cg.dir.empty()) {
      std::printf("SHMARRAY-SKIP: no cgroup v2 with cgroup.kill here\n");
      return;
    }
    // In a private /dev/shm: what the next helper collects is ours alone.
    const auto run = test::in_small_tmpfs("/dev/shm", "16m", [&](auto say) {
      int ready[2];
      if (::pipe(ready) != 0) return 1;
      const pid_t owner = ::fork();
      if (owner == 0) {
        // Into the cgroup before its first named array: the helper, spawned
        // then, is in it too, as under systemd, Slurm or Kubernetes.
        if (!cg.write("cgroup.procs", "0")) ::_exit(2);
        manager m;
        auto a = m.from_shape<float>({1024});
        auto b = m.from_shape<int>({16}, test::raw());
        const pid_t helper = detail::owner::watchdog::get().helper_pid();
        (void)!::write(ready[1], &helper, sizeof helper);
        for (;;)
          ::pause();
      }
      ::close(ready[1]);
      pid_t helper = 0;
      if (::read(ready[0], &helper, sizeof helper) != sizeof helper || helper <= 0) {
        say("the owner did not start its helper");
        return 1;
      }
      ::close(ready[0]);
      const auto made = test::in_shm();  // two arrays and a token
      if (!cg.write("cgroup.kill", "1")) {
        say("cgroup.kill failed");
        return 1;
      }
      test::reap(owner);
      if (!test::eventually([&] { return cg.empty(); })) {
        say("the cgroup did not empty");
        return 1;
      }
      if (test::in_shm() != made || made.size() != 3) {
        say("the leftovers are not as made");
        return 1;
      }
      if (by_gc) {
        const auto gc = test::run_program(detail::owner::find_helper().c_str(), {"gc"});
        say(gc.out);
      } else {
        // The next program: its helper collects in the background.
        const int st = test::in_child([] {
          manager m;
          auto c = m.from_shape<int>({4});
          return test::eventually([] { return test::in_shm().size() == 2; })
                     ? 0
                     : 1;  // c and its token
        });
        if (!test::exited_with(st, 0)) say("the next helper did not collect; ");
      }
      if (!test::eventually([] { return test::in_shm().empty(); })) {
        std::string left;
        for (const auto& n : test::in_shm())
          left += n + " ";
        say("left: " + left);
        return 1;
      }
      return 0;
    });
    if (run.skipped()) return;
    INFO((by_gc ? "shmarray gc: " : "the next helper: ") << run.said);
    CHECK(run.ok());
  }
}

TEST_CASE("a helper killed alone is replaced at the next array and told everything") {
  if (no_helper()) return;
  test::names names;
  char dir[] = "/tmp/shmarray_wd_XXXXXX";
  REQUIRE(::mkdtemp(dir));
  const std::string path = std::string(dir) + "/array.bin";
  report* r = shared_report();
  const int status = test::in_child([&] {
    manager m(names.options());
    auto a = m.from_shape<double>({64});
    auto f = m.from_shape<float>({8}, file(path));
    const pid_t first = detail::owner::watchdog::get().helper_pid();
    ::kill(first, SIGKILL);  // what an OOM killer or a careless pkill does
    if (!test::exited_whole(first)) return 2;
    auto b = m.from_shape<double>({64});  // notices, and starts another
    r->helper = detail::owner::watchdog::get().helper_pid();
    r->ready = r->helper > 0 && r->helper != first ? 1 : 3;
    ::raise(SIGKILL);
    return 1;
  });
  CHECK(test::killed_by(status, SIGKILL));
  CHECK(r->ready.load() == 1);
  CHECK(cleaned(names));  // a, made before the first helper died, too
  struct stat st {};
  // The file goes by the same helper, a moment apart from the names.
  CHECK(test::eventually([&] { return ::stat(path.c_str(), &st) != 0; }, 3000));
  CHECK(test::ends(r->helper));
  ::rmdir(dir);
}

TEST_CASE("a file backing with a long path is cleaned up whole; a path too long is refused") {
  if (no_helper()) return;
  char dir[] = "/tmp/shmarray_wd_XXXXXX";
  REQUIRE(::mkdtemp(dir));
  // 4,050 bytes of path in directories of 200: past the 4,000 bytes the
  // helper's protocol once cut names to.
  std::string path = dir;
  while (path.size() < 3800) {
    path += "/" + std::string(200, 'd');
    REQUIRE(::mkdir(path.c_str(), 0700) == 0);
  }
  const std::string deep = path + "/" + std::string(4050 - path.size() - 1, 'f');
  REQUIRE(deep.size() == 4050);
  const int status = test::in_child([&] {
    manager m;
    auto f = m.from_shape<float>({8}, file(deep));
    ::raise(SIGKILL);
    return 1;
  });
  CHECK(test::killed_by(status, SIGKILL));
  struct stat st {};
  CHECK(test::eventually([&] { return ::stat(deep.c_str(), &st) != 0; }, 3000));
  // A path the kernel could not open: refused before anything exists.
  const std::string too_long = path + "/" + std::string(300, 'g');
  manager m;
  CHECK_THROWS_AS(m.from_shape<float>({8}, file(too_long)), invalid_name);
  CHECK(std::system((std::string("rm -rf ") + dir).c_str()) == 0);
}

TEST_CASE(
    "where the file system keeps no birth time, file backings still go; gc says what it leaves") {
  if (no_helper()) return;
  if (::geteuid() != 0) {
    std::printf("SHMARRAY-SKIP: needs root to mount ramfs\n");
    return;
  }
  char tmpl[] = "/tmp/shmarray_ramfs_XXXXXX";
  REQUIRE(::mkdtemp(tmpl));
  const std::string dir = tmpl;
  // ramfs records no birth time; in a private /dev/shm and mount namespace.
  const auto run = test::in_small_tmpfs("/dev/shm", "4m", [&](auto say) {
    if (::mount("ramfs", dir.c_str(), "ramfs", 0, nullptr) != 0) {
      say(std::string("mount ramfs: ") + std::strerror(errno));
      return 77;
    }
    int code = 0;
    {
      manager m;
      auto a = m.from_shape<float>({8}, file(dir + "/a.bin"));
      if (a.mapped_segment().id().birth_ns != 0) {
        say("ramfs keeps birth times here");
        return 77;
      }
    }
    if (::access((dir + "/a.bin").c_str(), F_OK) == 0) {
      say("the manager left its file; ");
      code = 1;
    }
    const int killed = test::in_child([&] {
      manager m;
      auto b = m.from_shape<float>({8}, file(dir + "/b.bin"));
      ::raise(SIGKILL);
      return 1;
    });
    if (!test::killed_by(killed, SIGKILL) ||
        !test::eventually([&] { return ::access((dir + "/b.bin").c_str(), F_OK) != 0; })) {
      say("the helper left its owner's file; ");
      code = 1;
    }
    // Owner and helper at once (no helper here): only the journal is left,
    // and nothing tells the file from a later one at that path.
    const int alone = test::in_child([&] {
      test::without_helper();
      manager m;
      auto c = m.from_shape<float>({8}, file(dir + "/c.bin"));
      ::raise(SIGKILL);
      return 1;
    });
    const auto gc = test::run_program(detail::owner::find_helper().c_str(), {"gc"});
    if (!test::killed_by(alone, SIGKILL) ||
        gc.out.find("left " + dir + "/c.bin alone: its file system keeps no birth time") ==
            std::string::npos ||
        ::access((dir + "/c.bin").c_str(), F_OK) != 0) {
      say("gc: " + gc.out);
      code = 1;
    }
    ::umount(dir.c_str());
    return code;
  });
  ::rmdir(dir.c_str());
  if (run.skipped()) return;
  INFO(run.said);
  CHECK(run.ok());
}

TEST_CASE("a helper that reads only when kicked loses nothing when its socket fills") {
  if (no_helper()) return;
  test::names names;
  report* r = shared_report();
  // The owner makes far more arrays (and removes half of them: a record
  // each way) than a socket holds while its helper is stopped, so that its
  // sends meet a full socket and wait, kicking; the helper, continued,
  // reads everything and, once the owner is killed, removes what it holds.
  const pid_t owner = ::fork();
  REQUIRE(owner >= 0);
  if (owner == 0) {
    manager m(names.options());
    std::vector<ndarray<std::uint8_t>> kept;
    kept.push_back(m.from_shape<std::uint8_t>({16}));
    r->helper = detail::owner::watchdog::get().helper_pid();
    ::kill(r->helper, SIGSTOP);
    r->ready = 1;
    for (int i = 0; i < 1500; ++i) {
      manager brief(names.options());
      auto gone = brief.from_shape<std::uint8_t>({16});  // R, then U at brief's end
      kept.push_back(m.from_shape<std::uint8_t>({16}));
    }
    r->ready = 2;
    ::pause();
    ::_exit(1);
  }
  // Whatever fails below, nothing stays stopped or unreaped.
  auto cleanup = detail::scope_exit([&] {
    ::kill(owner, SIGKILL);
    if (r->helper > 0) ::kill(r->helper, SIGCONT);
    (void)test::reap(owner);
  });
  for (int i = 0; i < 500 && r->ready.load() == 0; ++i)
    ::usleep(10000);
  REQUIRE(r->ready.load() == 1);
  ::usleep(300000);  // the owner fills the socket and waits
  CHECK(r->ready.load() == 1);
  ::kill(r->helper, SIGCONT);
  for (int i = 0; i < 3000 && r->ready.load() != 2; ++i)
    ::usleep(10000);
  CHECK(r->ready.load() == 2);
  CHECK(names.left().size() == 1501);
  ::kill(owner, SIGKILL);
  CHECK(test::killed_by(test::reap(owner), SIGKILL));
  cleanup.dismiss();
  for (int i = 0; i < 1000 && !names.left().empty(); ++i)
    ::usleep(10000);
  CHECK(names.left().empty());
  CHECK(test::ends(r->helper));
}

TEST_CASE("a shmarray command older than the library (no batched mode) still watches it") {
  if (no_helper()) return;
  test::names names;
  // An installed command that knows only `__watchdog`, as before the
  // batched mode: it refuses the batched start, and the library starts it
  // the old way, telling it everything registered meanwhile.
  char dir[] = "/tmp/shmarray_oldhelper_XXXXXX";
  REQUIRE(::mkdtemp(dir));
  const std::string script = std::string(dir) + "/shmarray";
  {
    const int fd = ::open(script.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0700);
    REQUIRE(fd >= 0);
    const std::string text = "#!/bin/sh\n[ \"$1\" = __watchdog ] || exit 2\nexec " +
                             detail::owner::find_helper() + " \"$@\"\n";
    REQUIRE(::write(fd, text.data(), text.size()) == ssize_t(text.size()));
    ::close(fd);
  }
  report* r = shared_report();
  int err[2];
  REQUIRE(::pipe(err) == 0);
  const pid_t owner = ::fork();
  REQUIRE(owner >= 0);
  if (owner == 0) {
    ::dup2(err[1], 2);  // what the library says on stderr, for the test
    ::setenv("SHMARRAY_HELPER", script.c_str(), 1);
    manager m(names.options());
    auto a = m.from_shape<double>({8});
    auto b = m.from_shape<double>({8});
    r->helper = detail::owner::watchdog::get().helper_pid();
    r->ready = 1;
    ::raise(SIGKILL);
    ::_exit(1);
  }
  ::close(err[1]);
  CHECK(test::killed_by(test::reap(owner), SIGKILL));
  const std::string said = test::read_all(err[0]);
  ::close(err[0]);
  CHECK(r->ready.load() == 1);
  CHECK(r->helper > 0);
  CHECK(said.empty());  // no "did not start"
  CHECK(cleaned(names));
  if (r->helper > 0) CHECK(test::ends(r->helper));
  ::unlink(script.c_str());
  ::rmdir(dir);
}
