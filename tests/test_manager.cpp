#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/syscall.h>

#include <memory>
#include <set>
#include <shmarray/manager.hpp>
#include <stdexcept>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace shmarray;

TEST_CASE("a manager's segments are gone when it is destroyed") {
  test::names names;
  std::string a_name, b_name;
  {
    manager m(names.options());
    auto a = m.from_shape<double>({10});
    auto b = m.from_shape<float>({2, 2});
    a_name = a.name();
    b_name = b.name();
    CHECK(names.exists(a_name));
    CHECK(names.exists(b_name));
    CHECK(m.names() == std::vector<std::string>{a_name, b_name});
  }
  CHECK_FALSE(names.exists(a_name));
  CHECK(names.left().empty());
}

TEST_CASE("a manager's segments are gone when an exception leaves its scope") {
  test::names names;
  CHECK_THROWS_AS(
      [&] {
        manager m(names.options());
        auto a = m.from_shape<double>({10});
        auto b = m.from_shape<double>({10}, posix_shm(names("given")));
        REQUIRE(names.left().size() == 2);
        throw std::runtime_error("user code failed");
      }(),
      std::runtime_error);
  CHECK(names.left().empty());
}

TEST_CASE("a forked child destroying its copy of the manager removes nothing of the parent's") {
  test::names names;
  {
    auto m = std::make_unique<manager>(names.options());
    auto a = m->from_shape<int>({16});
    const std::string parent_name = a.name();
    const int status = test::in_child([&] {
      // the child makes one of its own through the copy, then destroys the copy
      auto mine = m->from_shape<int>({4});
      const std::string child_name = mine.name();
      m.reset();
      if (test::shm_names(parent_name.substr(1)).size() != 1) return 1;  // parent's kept
      if (!test::shm_names(child_name.substr(1)).empty()) return 2;      // child's removed
      return 0;
    });
    CHECK(test::exited_with(status, 0));
    CHECK(names.exists(parent_name));
    CHECK(names.left().size() == 1);
  }
  CHECK(names.left().empty());
}

TEST_CASE("a segment removed behind the manager's back does not make its end fail") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<double>({10});
    auto b = m.from_shape<double>({10});
    CHECK(remove(posix_shm(a.name())));  // another tool, systemd's RemoveIPC, a resource tracker
    CHECK(names.left().size() == 1);
  }
  CHECK(names.left().empty());
}

TEST_CASE("generated names are unique, carry the pid, and fit in 28 characters") {
  manager m;
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    const auto n = m.generate_name().name();
    CHECK(n.size() <= 28);
    CHECK(n.rfind("/shmarray_" + std::to_string(::getpid()) + "_", 0) == 0);
    seen.insert(n);
  }
  CHECK(seen.size() == 1000);
  manager other;
  CHECK(seen.count(other.generate_name().name()) == 0);
}

TEST_CASE("a given name that exists is already_exists, and the existing segment is untouched") {
  test::names names;
  const auto name = names("taken");
  {
    manager first(names.options());
    auto a = first.from_shape<double>({4}, posix_shm(name));
    a.fill(2.0);
    {
      manager second(names.options());
      CHECK_THROWS_AS(second.from_shape<double>({4}, posix_shm(name)), already_exists);
      CHECK(second.names().empty());
    }
    CHECK(names.exists(name));
    CHECK(ndarray<double>::attach(name)(3) == 2.0);
  }
  CHECK(names.left().empty());
}

TEST_CASE("keep leaves a segment to outlive its manager") {
  test::names names;
  std::string name;
  {
    manager m(names.options());
    create_options keep;
    keep.keep = true;
    name = m.from_shape<double>({4}, keep).name();
  }
  CHECK(names.exists(name));
  CHECK(ndarray<double>::attach(name).size() == 4);
  CHECK(remove(posix_shm(name)));
  CHECK(names.left().empty());
}

TEST_CASE("anonymous arrays have no name to leak and are shared with children") {
  manager m;
  auto a = m.from_shape<double>({3, 3}, anonymous{});
  CHECK(a.name().empty());
  CHECK(m.names().empty());
  const int status = test::in_child([&] {
    a(1, 1) = 5.0;
    return 0;
  });
  CHECK(test::exited_with(status, 0));
  CHECK(a(1, 1) == 5.0);
  const double v[2] = {1, 2};
  CHECK(m.from_array(v, {2}, anonymous{})(1) == 2.0);
}

TEST_CASE("file-backed arrays are attached by path and removed unless kept") {
  char dir[] = "/tmp/shmarray_mgr_XXXXXX";
  REQUIRE(::mkdtemp(dir));
  const std::string path = std::string(dir) + "/a.shm", kept = std::string(dir) + "/kept.shm";
  {
    manager m;
    auto a = m.from_shape<std::int32_t>({5, 5}, file(path));
    a(4, 4) = 44;
    CHECK(ndarray<std::int32_t>::attach(file(path))(4, 4) == 44);
    create_options keep;
    keep.keep = true;
    const std::int32_t v[3] = {7, 8, 9};
    m.from_array(v, {3}, file(kept), keep);
    CHECK(m.names() == std::vector<std::string>{path});
  }
  CHECK(::access(path.c_str(), F_OK) != 0);
  CHECK(ndarray<const std::int32_t>::attach(file(kept))(2) == 9);
  CHECK(remove(file(kept)));
  CHECK(::rmdir(dir) == 0);
}

TEST_CASE("threads may create arrays through one manager") {
  test::names names;
  {
    manager m(names.options());
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&] {
        for (int i = 0; i < 25; ++i)
          (void)m.from_shape<int>({8});
      });
    for (auto& t : threads)
      t.join();
    CHECK(m.names().size() == 100);
    CHECK(names.left().size() == 100);
  }
  CHECK(names.left().empty());
}

TEST_CASE("a moved manager hands its segments over") {
  test::names names;
  {
    manager outer(names.options());
    {
      manager m(names.options());
      (void)m.from_shape<int>({8});
      outer = std::move(m);
    }
    CHECK(names.left().size() == 1);
    manager moved(std::move(outer));
    CHECK(moved.names().size() == 1);
  }
  CHECK(names.left().empty());
}

TEST_CASE("a full /dev/shm makes from_shape throw out_of_space and leave nothing") {
  const auto run = test::in_small_tmpfs("/dev/shm", "1m", [](auto say) {
    manager m;
    try {
      (void)m.from_shape<double>({1024, 1024});  // 8 MiB
      say("created 8 MiB in a 1 MiB /dev/shm");
      return 1;
    } catch (const out_of_space& e) {
      say(e.what());
    }
    try {
      const std::vector<double> big(1024 * 1024, 1.0);  // written, not reserved
      (void)m.from_array(big.data(), {big.size()});
      say("created 8 MiB in a 1 MiB /dev/shm");
      return 1;
    } catch (const out_of_space& e) {
      say(e.what());
      // The space as it was before this attempt, not after its own pages
      // filled /dev/shm (once "0 bytes free").
      if (e.bytes_available() < 512 * 1024) return 5;
    }
    if (!m.names().empty()) return 2;
    if (!test::shm_names("shmarray").empty()) return 3;
    auto small = m.from_shape<double>({16});  // what fits still works
    return small.size() == 16 ? 0 : 4;
  });
  if (run.skipped()) return;
  INFO(run.said);
  CHECK(run.ok());
}

TEST_CASE("a name someone else reused is left alone at the manager's end") {
  test::names names;
  const auto name = names("reused");
  {
    manager m(names.options());
    (void)m.from_shape<double>({4}, posix_shm(name));
    CHECK(remove(posix_shm(name)));
    segment theirs(create_only, posix_shm(name), 4096);  // another party, same name
  }
  CHECK(names.exists(name));
  CHECK(remove(posix_shm(name)));
  CHECK(names.left().empty());
}

TEST_CASE("a relative file path and a later chdir do not make the manager remove another file") {
  char base[] = "/tmp/shmarray_rel_XXXXXX";
  REQUIRE(::mkdtemp(base));
  const std::string d1 = std::string(base) + "/d1", d2 = std::string(base) + "/d2";
  REQUIRE(::mkdir(d1.c_str(), 0700) == 0);
  REQUIRE(::mkdir(d2.c_str(), 0700) == 0);
  char cwd[4096];
  REQUIRE(::getcwd(cwd, sizeof cwd));
  {
    manager m;
    REQUIRE(::chdir(d1.c_str()) == 0);
    (void)m.from_shape<int>({4}, file("x.shm"));
    REQUIRE(::chdir(d2.c_str()) == 0);
    segment unrelated(create_only, file("x.shm"), 4096);
  }
  REQUIRE(::chdir(cwd) == 0);
  CHECK(::access((d1 + "/x.shm").c_str(), F_OK) != 0);  // the manager's: removed
  CHECK(::access((d2 + "/x.shm").c_str(), F_OK) == 0);  // the other: kept
  CHECK(::unlink((d2 + "/x.shm").c_str()) == 0);
  CHECK(::rmdir(d1.c_str()) == 0);
  CHECK(::rmdir(d2.c_str()) == 0);
  CHECK(::rmdir(base) == 0);
}

TEST_CASE("from_array of an empty handle is an error and leaves nothing") {
  test::names names;
  {
    manager m(names.options());
    CHECK_THROWS_AS(m.from_array(ndarray<double>{}), error);
    CHECK_THROWS_AS(m.from_array(ndarray<const double>{}, anonymous{}), error);
    CHECK(m.names().empty());
  }
  CHECK(names.left().empty());
}

TEST_CASE("a moved-from manager throws instead of crashing") {
  manager m;
  manager other(std::move(m));
  CHECK_THROWS_AS(m.from_shape<int>({4}), error);  // NOLINT(bugprone-use-after-move)
  CHECK_THROWS_AS(m.names(), error);
  CHECK_THROWS_AS(m.generate_name(), error);
}

TEST_CASE("an array is complete whenever its record says it is ready") {
  test::names names;
  const auto name = names("ready");
  const std::vector<double> ones(8u << 20, 1.0);  // 64 MiB
  // A watcher attaches as early as it can and checks what it sees.
  const pid_t watcher = ::fork();
  REQUIRE(watcher >= 0);
  if (watcher == 0) {
    attach_options once;
    once.wait = std::chrono::milliseconds(0);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < deadline) {
      try {
        auto a = ndarray<const double>::attach(name, once);
        for (double x : a)
          if (x != 1.0) ::_exit(1);
        ::_exit(0);
      } catch (const not_ready&) {
      } catch (const not_found&) {
      } catch (...) {
        ::_exit(2);
      }
    }
    ::_exit(3);
  }
  {
    manager m(names.options());
    auto a = m.from_array(ones.data(), {ones.size()}, posix_shm(name));
    CHECK(test::exited_with(test::reap(watcher), 0));
  }
  CHECK(names.left().empty());
}

TEST_CASE("an owner token is held while the process owns managed segments, and only then") {
  test::names names;
  auto& token = detail::owner::token::get();
  REQUIRE(token.id() == 0);  // this process owns nothing yet
  std::uint64_t id = 0;
  std::string kept;
  {
    manager m(names.options());
    auto a = m.from_shape<double>({4});
    id = token.id();
    REQUIRE(id != 0);
    CHECK(test::shm_names(detail::owner::token_name(id).substr(1)).size() == 1);
    CHECK(detail::owner::token_state(id, false) ==
          detail::owner::liveness::alive);  // held, even for us
    {
      manager other(names.options());  // one token per process, however many managers
      auto b = other.from_shape<int>({2});
      CHECK(token.id() == id);
    }
    CHECK(token.id() == id);  // `a` is still owned
    create_options keep;
    keep.keep = true;
    auto k = m.from_shape<int>({1}, keep);  // kept: names no token, never collected
    kept = k.name();
    auto raw = m.from_shape<int>({1}, test::raw());
    (void)raw;
    // The records say so: the segment's token, and none for the kept one.
    segment sa(open_only, posix_shm(a.name()), access_mode::read_only);
    CHECK(detail::read_record(sa.data(), sa.size(), a.name()).owner_token == id);
    segment sk(open_only, posix_shm(k.name()), access_mode::read_only);
    CHECK(detail::read_record(sk.data(), sk.size(), k.name()).owner_token == 0);
  }
  CHECK(token.id() == 0);  // the last managed segment went with its manager
  CHECK(test::shm_names(detail::owner::token_name(id).substr(1)).empty());
  CHECK(detail::owner::token_state(id, false) == detail::owner::liveness::dead);
  posix_shm(kept).remove();
  CHECK(names.left().empty());
}

TEST_CASE("a dead owner's token reads as gone while one collector at a time removes it") {
  // A token nobody holds, as a killed owner leaves it.
  std::uint64_t id = 0;
  for (int i = 0; i < 8 && id == 0; ++i)
    if (::getrandom(&id, sizeof id, 0) != sizeof id) id = 0;
  REQUIRE(id != 0);
  const std::string name = detail::owner::token_name(id);
  const int fd = ::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  ::close(fd);
  REQUIRE(detail::owner::token_state(id, false) == detail::owner::liveness::dead);
  int visits = 0;
  const bool removed = detail::owner::remove_token_if_dead(id, [&](int, const struct stat&) {
    ++visits;
    // ls, info and ndarray::owner_state ask token_state: while the helper
    // or gc works, the owner is still dead to them (an exclusive lock here
    // read as alive, and failed a consumer's test once under load).
    CHECK(detail::owner::token_state(id, false) == detail::owner::liveness::dead);
    // A second collector at the same moment leaves it alone.
    CHECK_FALSE(detail::owner::remove_token_if_dead(id));
    return true;
  });
  CHECK(removed);
  CHECK(visits == 1);
  CHECK(test::shm_names(name.substr(1)).empty());
  if (!removed) ::shm_unlink(name.c_str());
}

TEST_CASE("a forked child never keeps its dead parent's token held") {
  test::names names;
  int from_p[2], from_g[2];
  REQUIRE(::pipe(from_p) == 0);
  REQUIRE(::pipe(from_g) == 0);
  // S, a subreaper, runs P, which makes a segment, forks G (which lives on),
  // reports, and is killed. G had every descriptor P had, the token's too;
  // the fork handler closes that one in G as soon as G runs, which G reports.
  const int status = test::in_child([&] {
    ::prctl(PR_SET_CHILD_SUBREAPER, 1);
    const pid_t p = ::fork();
    if (p == 0) {
      manager m(names.options());
      auto a = m.from_shape<int>({4});
      const std::uint64_t id = detail::owner::token::get().id();
      if (::fork() == 0) {
        const pid_t g = ::getpid();
        (void)!::write(from_g[1], &g, sizeof g);
        for (;;)
          ::pause();
      }
      (void)!::write(from_p[1], &id, sizeof id);
      ::raise(SIGKILL);
    }
    std::uint64_t id = 0;
    pid_t g = 0;
    if (::read(from_p[0], &id, sizeof id) != sizeof id) return 2;
    if (::read(from_g[0], &g, sizeof g) != sizeof g) return 2;
    if (!test::killed_by(test::reap(p), SIGKILL)) return 3;
    const bool g_alive = ::kill(g, 0) == 0;
    // A cleaner (P's watchdog removing the token) holds its lock for an
    // instant, which reads as held: G must not hold it for long.
    auto state = detail::owner::token_state(id, false);
    for (int i = 0; i < 200 && state == detail::owner::liveness::alive; ++i) {
      ::usleep(10000);
      state = detail::owner::token_state(id, false);
    }
    ::kill(g, SIGKILL);
    test::reap(g);  // an orphan of P: ours, as a subreaper
    ::shm_unlink(detail::owner::token_name(id).c_str());
    if (!g_alive) return 4;
    return state == detail::owner::liveness::dead ? 0 : 5;
  });
  for (int fd : {from_p[0], from_p[1], from_g[0], from_g[1]})
    ::close(fd);
  INFO("exit code " << (WIFEXITED(status) ? WEXITSTATUS(status) : -1));
  CHECK(test::exited_with(status, 0));
  // P's segment was left behind by its death: the test's names remove it
  // (or a `shmarray gc` run by a test alongside, since its owner is dead).
}

TEST_CASE("a new token is locked before it has a name, and named before anyone can see its id") {
  test::names names;
  const int status = test::in_child([&] {
    auto& token = detail::owner::token::get();
    const std::uint64_t id = token.acquire();
    if (id == 0) return 1;
    // locked and unnamed: nobody can find it, so nobody can take it
    if (!test::shm_names(detail::owner::token_name(id).substr(1)).empty()) return 2;
    if (token.publish(id) != id) return 3;
    if (test::shm_names(detail::owner::token_name(id).substr(1)).size() != 1) return 4;
    if (detail::owner::token_state(id, false) != detail::owner::liveness::alive) return 5;
    if (token.publish(id) != id) return 6;  // once named, publishing again changes nothing
    token.release();
    if (!test::shm_names(detail::owner::token_name(id).substr(1)).empty()) return 7;
    return 0;
  });
  CHECK(test::exited_with(status, 0));
  CHECK(names.left().empty());
}

#if defined(__x86_64__)
namespace {

// Installs a seccomp filter on this process and its children that makes
// every open with O_TMPFILE fail with EOPNOTSUPP (`tmpfile`), as a kernel or
// file system without unnamed files does, and/or every linkat fail with
// EPERM (`link`), as where /proc is missing and CAP_DAC_READ_SEARCH too.
bool refuse(bool tmpfile, bool link) {
  const unsigned tmpfile_bit = unsigned(O_TMPFILE & ~O_DIRECTORY);
  const unsigned allow = SECCOMP_RET_ALLOW;
  sock_filter f[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, allow),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_linkat, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, link ? SECCOMP_RET_ERRNO | EPERM : allow),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_openat, 0, 3),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, args[2])),  // flags, low half
      BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, tmpfile_bit, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, tmpfile ? SECCOMP_RET_ERRNO | EOPNOTSUPP : allow),
      BPF_STMT(BPF_RET | BPF_K, allow),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof f / sizeof f[0]), f};
  return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
         ::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0;
}

// Segments and the token work as ever: made, attached, exclusive, alive,
// and all removed at the end. 0, or what failed.
int segments_work(const test::names& names) {
  std::uint64_t id = 0;
  {
    manager m(names.options());
    auto a = m.from_shape<int>({100});
    a(99) = 5;
    auto b = m.from_shape<float>({3}, shmarray::file("/tmp/" + names.prefix() + "f.bin"));
    id = detail::owner::token::get().id();
    if (id == 0 || detail::owner::token_state(id, false) != detail::owner::liveness::alive)
      return 2;
    if (ndarray<int>::attach(a.name())(99) != 5) return 3;
    try {
      m.from_shape<int>({1}, posix_shm(a.name()));
      return 4;
    } catch (const already_exists&) {
    }
    segment sa(open_only, posix_shm(a.name()), access_mode::read_only);
    if (detail::read_record(sa.data(), sa.size(), a.name()).owner_token != id) return 5;
  }
  if (!test::shm_names(detail::owner::token_name(id).substr(1)).empty()) return 6;
  if (::access(("/tmp/" + names.prefix() + "f.bin").c_str(), F_OK) == 0) return 7;
  return 0;
}

}  // namespace

// Runs segments_work in a child under the filter; false if it was skipped.
void check_under_filter(bool tmpfile, bool link, int (*refused)(const test::names&)) {
  test::names names;
  const int status = test::in_child([&] {
    if (!refuse(tmpfile, link)) return 77;
    if (const int rc = refused(names)) return rc;  // the filter does what it says
    return segments_work(names);
  });
  if (test::exited_with(status, 77)) {
    std::printf("SHMARRAY-SKIP: cannot install a seccomp filter here\n");
    return;
  }
  CHECK(test::exited_with(status, 0));
  CHECK(names.left().empty());
}

TEST_CASE("where unnamed files cannot be made, segments and the token are made by name") {
  check_under_filter(true, false, [](const test::names&) {
    return detail::open_unnamed("/dev/shm") >= 0 || errno != EOPNOTSUPP ? 1 : 0;
  });
}

TEST_CASE("where unnamed files cannot be linked, segments and the token are made by name") {
  check_under_filter(false, true, [](const test::names& names) {
    const int fd = detail::open_unnamed("/dev/shm");
    const bool linked =
        fd >= 0 && detail::link_unnamed(fd, "/dev/shm/" + names.prefix() + "x") == 0;
    if (fd >= 0) ::close(fd);
    return fd < 0 || linked ? 1 : 0;
  });
}
#endif

TEST_CASE("owner_state says alive while the producer lives and gone once it died") {
  test::names names;
  int up[2], down[2];
  REQUIRE(::pipe(up) == 0);
  REQUIRE(::pipe(down) == 0);
  const pid_t producer = ::fork();
  REQUIRE(producer >= 0);
  if (producer == 0) {
    ::close(up[0]);
    ::close(down[1]);
    manager m(names.options());
    auto a = m.from_shape<double>({16});
    a(3) = 7;
    const std::string name = a.name() + "\n";
    (void)!::write(up[1], name.data(), name.size());
    char c;
    (void)!::read(down[0], &c, 1);  // until the consumer has looked
    ::raise(SIGKILL);               // dies as a crashed producer dies
    ::_exit(1);
  }
  ::close(up[1]);
  ::close(down[0]);
  const std::string name = test::read_line(up[0]);
  ::close(up[0]);
  REQUIRE(!name.empty());
  auto a = ndarray<const double>::attach(name);
  CHECK(a.owner_state() == owner_status::alive);
  CHECK(a.owner_alive());
  (void)!::write(down[1], "x", 1);
  ::close(down[1]);
  CHECK(test::killed_by(test::reap(producer), SIGKILL));
  // The producer's token is free (or removed by its helper) from now on.
  CHECK(a.owner_state() == owner_status::gone);
  CHECK_FALSE(a.owner_alive());
  CHECK(a(3) == 7);  // the consumer's mapping stays
  // Its helper removes the name; without one, gc would.
  for (int i = 0; i < 200 && names.exists(name); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (names.exists(name)) {
    const auto e = inspect(name);
    CHECK(e.owner == owner_status::gone);
    remove_object(e);
  }
}

TEST_CASE("owner_state is untracked for a kept segment, anonymous memory and an empty handle") {
  test::names names;
  manager m(names.options());
  create_options keep;
  keep.keep = true;
  auto k = m.from_shape<int>({4}, keep);
  CHECK(k.owner_state() == owner_status::untracked);
  CHECK(ndarray<int>::attach(k.name()).owner_state() == owner_status::untracked);
  CHECK_FALSE(k.owner_alive());
  ::shm_unlink(k.name().c_str());
  auto mine = m.from_shape<int>({4});
  CHECK(mine.owner_state() == owner_status::alive);  // its own manager's: alive
  CHECK(m.from_shape<int>({4}, anonymous{}).owner_state() == owner_status::untracked);
  CHECK(ndarray<int>().owner_state() == owner_status::untracked);
}

TEST_CASE("attach with wait_for_name waits for a name a producer makes 100 ms later") {
  test::names names;
  const std::string name = names("late");
  int down[2];
  REQUIRE(::pipe(down) == 0);
  const pid_t producer = ::fork();
  REQUIRE(producer >= 0);
  if (producer == 0) {
    ::close(down[1]);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    {
      manager m(names.options());
      auto a = m.from_shape<int>({4}, posix_shm(name));
      a(1) = 42;
      char c;
      (void)!::read(down[0], &c, 1);  // until the consumer is done
    }
    ::_exit(0);
  }
  ::close(down[0]);
  // Without waiting for the name: not_found at once.
  CHECK_THROWS_AS(ndarray<int>::attach(name), not_found);
  // Waiting, but not long enough: not_found still, once the wait is over.
  attach_options brief;
  brief.wait = std::chrono::milliseconds(20);
  brief.wait_for_name = true;
  const auto t0 = std::chrono::steady_clock::now();
  CHECK_THROWS_AS(ndarray<int>::attach(name, brief), not_found);
  CHECK(std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(20));
  // Waiting long enough: the producer's array.
  attach_options patient;
  patient.wait = std::chrono::seconds(10);
  patient.wait_for_name = true;
  auto a = ndarray<int>::attach(name, patient);
  CHECK(a(1) == 42);
  (void)!::write(down[1], "x", 1);
  ::close(down[1]);
  CHECK(test::reap(producer) == 0);
}
