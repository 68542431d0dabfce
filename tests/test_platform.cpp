// The platform's traps that users of shared memory hit, each shown here as
// it happens and with what shmarray does about it (README, Reliability).
// A full /dev/shm (a container's small --shm-size) is in test_segment.cpp.
#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <shmarray/shmarray.hpp>
#include <string>
#include <vector>

#include "support.hpp"

using namespace shmarray;

namespace {

// What systemd-logind does with RemoveIPC=yes (its default) when a user's
// last session ends: it removes every file in /dev/shm that the user owns,
// whatever still uses it.
int remove_ipc_of(uid_t uid) {
  int removed = 0;
  DIR* d = ::opendir("/dev/shm");
  if (!d) return -1;
  while (const dirent* e = ::readdir(d)) {
    const std::string path = std::string("/dev/shm/") + e->d_name;
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == uid &&
        ::unlink(path.c_str()) == 0)
      ++removed;
  }
  ::closedir(d);
  return removed;
}

int count_open_fds() {
  int n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (const dirent* e = ::readdir(d))
      n += e->d_name[0] != '.';
    ::closedir(d);
  }
  return n;
}

// Runs /usr/bin/python3 on a script; its exit code, -1 where it cannot run.
int python(const std::string& script) {
  if (::access("/usr/bin/python3", X_OK) != 0) return -1;
  const std::string cmd = "/usr/bin/python3 -I -c '" + script + "' 2>/dev/null";
  const int st = std::system(cmd.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

bool no_python() {
  if (python("import multiprocessing.shared_memory") == 0) return false;
  std::printf("SHMARRAY-SKIP: /usr/bin/python3 with multiprocessing.shared_memory is not here\n");
  return true;
}

}  // namespace

TEST_CASE("systemd's RemoveIPC removes a running job's segments: the job keeps its data") {
  if (::geteuid() != 0) {
    std::printf("SHMARRAY-SKIP: needs root to act as another user\n");
    return;
  }
  constexpr uid_t user = 4242;  // a user of this test's own
  test::names names;
  int to_child[2], to_parent[2];
  REQUIRE(::pipe(to_child) == 0);
  REQUIRE(::pipe(to_parent) == 0);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int code = 0;
    try {
      ::setenv("SHMARRAY_HELPER", "", 1);  // the build tree may not be this user's to run
      if (::setresgid(user, user, user) != 0 || ::setresuid(user, user, user) != 0) ::_exit(70);
      manager m(names.options());
      auto a = m.from_shape<int>({1000});
      test::iota(a);
      const std::uint64_t before = detail::owner::token::get().id();
      char c = 0;
      (void)!::write(to_parent[1], "1", 1);
      (void)!::read(to_child[0], &c, 1);  // the user logged out: everything of theirs is gone
      code = 1;
      if (names.exists(a.name())) ::_exit(code);
      code = 2;  // the job's own arrays keep their data, and stay writable
      if (a(999) != 999) ::_exit(code);
      a(0) = 7;
      code = 3;  // a worker that attaches by name now finds nothing
      try {
        ndarray<int>::attach(a.name());
        ::_exit(code);
      } catch (const not_found&) {
      }
      // New arrays name a new token, which says their owner is alive: no
      // `shmarray gc` takes them for a dead owner's.
      auto b = m.from_shape<int>({10});
      const std::uint64_t after = detail::owner::token::get().id();
      code = 4;
      if (after == 0 || after == before) ::_exit(code);
      code = 5;
      if (detail::owner::token_state(after, false) != detail::owner::liveness::alive) ::_exit(code);
      segment sb(open_only, posix_shm(b.name()), access_mode::read_only);
      code = 6;
      if (detail::read_record(sb.data(), sb.size(), b.name()).owner_token != after) ::_exit(code);
      code = 0;
    } catch (...) {
      code = 9;
    }
    ::_exit(code);  // the manager removed b, and a's name was gone already
  }
  char c = 0;
  REQUIRE(::read(to_parent[0], &c, 1) == 1);
  CHECK(remove_ipc_of(user) >= 2);  // the array and the owner's token
  (void)!::write(to_child[1], "1", 1);
  CHECK(test::exited_with(test::reap(pid), 0));
  CHECK(remove_ipc_of(user) == 0);  // the job left nothing of its own
  CHECK(names.left().empty());
  for (int fd : {to_child[0], to_child[1], to_parent[0], to_parent[1]})
    ::close(fd);
}

TEST_CASE("the open-files limit: no descriptor is kept per segment, and EMFILE says so") {
  test::names names;
  const int status = test::in_child([&] {
    rlimit lim{64, 64};
    if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) return 1;
    manager m(names.options());
    std::vector<ndarray<float>> arrays;
    for (int i = 0; i < 300; ++i) {  // far more segments than descriptors
      arrays.push_back(m.from_shape<float>({16}));
      arrays.push_back(ndarray<float>::attach(arrays.back().name()));
    }
    if (count_open_fds() > 16) return 2;
    // Every descriptor taken: creation and attach fail with a clear message,
    // leaving nothing.
    const auto before = names.left().size();
    std::vector<int> hogs;
    for (int fd; (fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;)
      hogs.push_back(fd);
    int code = 0;
    try {
      m.from_shape<float>({16});
      code = 3;
    } catch (const system_error& e) {
      if (e.code() != EMFILE || !std::strstr(e.what(), "ulimit -n")) code = 4;
    }
    try {
      ndarray<float>::attach(arrays[0].name());
      if (!code) code = 5;
    } catch (const system_error& e) {
      if (e.code() != EMFILE && !code) code = 6;
    }
    for (int fd : hogs)
      ::close(fd);
    if (names.left().size() != before && !code) code = 7;  // (listing takes a descriptor)
    if (!code && m.from_shape<float>({16}).size() != 16) code = 8;
    return code;
  });
  INFO("exit status " << status);
  CHECK(test::exited_with(status, 0));
  CHECK(names.left().empty());
}

TEST_CASE("CPython's resource tracker removes a segment that Python merely attached to") {
  if (no_python()) return;
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<double>({100});
    test::iota(a);
    const std::string bare = a.name().substr(1);
    // Python 3.11 (python/cpython#82300): SharedMemory(name=...) registers
    // the segment with the resource tracker as if Python had made it, and
    // the tracker unlinks it when the Python process ends.
    CHECK(python("from multiprocessing import shared_memory as s\n"
                 "m = s.SharedMemory(name=\"" +
                 bare + "\")\nassert m.size >= 800\nm.close()\n") == 0);
    // The tracker, a process of Python's, unlinks it just after Python ends.
    for (int i = 0; i < 300 && names.exists(a.name()); ++i)
      ::usleep(10000);
    CHECK_FALSE(names.exists(a.name()));  // gone, while its owner still runs
    CHECK(a(99) == 99.0);                 // the owner's mapping holds the data still
    CHECK_THROWS_AS(ndarray<double>::attach(a.name()), not_found);

    // The way round it: unregister right after attaching (what shmarray's
    // Python module does).
    auto b = m.from_shape<double>({100});
    CHECK(python("from multiprocessing import shared_memory as s, resource_tracker as r\n"
                 "m = s.SharedMemory(name=\"" +
                 b.name().substr(1) +
                 "\")\nr.unregister(m._name, \"shared_memory\")\nm.close()\n") == 0);
    ::usleep(1500000);  // longer than the tracker took above
    CHECK(names.exists(b.name()));
  }  // the manager removes b, and a's name is not there to remove
  CHECK(names.left().empty());
}
