// Another local user is an attacker: what they can do to shmarray's users
// through /dev/shm and shared directories, and that none of it crashes a
// reader, forges output, or makes a write land where it must not. The
// attacker runs as nobody through setpriv (tests/hostile/actor.cpp, or
// coreutils), inside a private mount namespace with a tmpfs of its own over
// /dev/shm, so no other test's arrays are touched (root here; skipped
// elsewhere).
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <shmarray/detail/text.hpp>
#include <shmarray/shmarray.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "support.hpp"

using namespace shmarray;
using Catch::Matchers::Contains;

namespace {

const char* const cli = SHMARRAY_CLI;
const char* const actor = SHMARRAY_ACTOR;

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

// Runs `argv` as nobody to its end; its exit code (128 + signal if killed).
int nobody(const std::vector<std::string>& argv) {
  return test::run_program(test::setpriv, test::as_nobody(argv)).code;
}

// Runs fn(say) as root in a child with a private tmpfs of `size` over
// /dev/shm; the test fails with what fn said unless fn returns 0.
template <class F>
void in_private_shm(const char* size, F&& fn) {
  const auto r = test::in_small_tmpfs("/dev/shm", size, [&](auto say) {
    try {
      return fn(say);
    } catch (const std::exception& e) {
      say(std::string("threw: ") + e.what());
      return 99;
    }
  });
  if (r.skipped()) return;
  INFO(r.said);
  CHECK(r.ok());
}

}  // namespace

TEST_CASE("another user resizing a file in /dev/shm kills no ls, info, gc, attach or collection") {
  if (!test::can_act_as_nobody()) return;
  in_private_shm("64m", [&](auto say) {
    const pid_t attacker =
        test::start_program(test::setpriv, test::as_nobody({actor, "resize", "hostile"}));
    if (!test::eventually([] { return exists("/dev/shm/hostile"); })) {
      say("the attacker did not start");
      return 1;
    }
    std::map<std::string, int> runs, deaths;
    auto count = [&](const std::string& what, int status) {
      ++runs[what];
      if (status < 0 || WIFSIGNALED(status)) ++deaths[what];
    };
    for (int i = 0; i < 200; ++i)
      count("ls", test::run_program(cli, {"ls"}).status);
    for (int i = 0; i < 100; ++i)
      count("ls --json", test::run_program(cli, {"ls", "--json"}).status);
    for (int i = 0; i < 150; ++i)
      count("info", test::run_program(cli, {"info", "hostile"}).status);
    for (int i = 0; i < 100; ++i)
      count("gc", test::run_program(cli, {"gc"}).status);
    // Attaches that fail validation (the wrong dtype) and read-only ones
    // that pass it: neither touches the mapping.
    for (int c = 0; c < 20; ++c)
      count("attach", test::in_child([] {
              for (int i = 0; i < 300; ++i) {
                try {
                  (void)ndarray<float>::attach("/hostile");
                } catch (const error&) {
                }
                try {
                  (void)ndarray<const std::uint8_t>::attach("/hostile");
                } catch (const error&) {
                }
                try {  // reads every byte: a bool that is not 0 or 1 is refused
                  (void)ndarray<const bool>::attach("/hostile");
                } catch (const error&) {
                }
              }
              return 0;
            }));
    // Programs without a helper: each one's first named array runs the
    // collection pass over /dev/shm.
    for (int c = 0; c < 100; ++c)
      count("collection pass", test::in_child([] {
              test::without_helper();
              manager m;
              return m.from_shape<int>({4}).size() == 4 ? 0 : 1;
            }));
    ::kill(attacker, SIGKILL);
    test::reap(attacker);
    ::unlink("/dev/shm/hostile");
    int died = 0;
    std::ostringstream o;
    for (const auto& [what, n] : runs) {
      o << what << ": " << deaths[what] << " of " << n << " died by a signal; ";
      died += deaths[what];
    }
    say(o.str());
    return died == 0 ? 0 : 1;
  });
}

TEST_CASE("a file backing never follows a symbolic link another user planted") {
  if (!test::can_act_as_nobody()) return;
  test::names names;
  char tmpl[] = "/tmp/shmarray-hostile-XXXXXX";
  REQUIRE(::mkdtemp(tmpl));
  const std::string dir = tmpl;
  const std::string shared = dir + "/shared", secret = dir + "/secret";
  REQUIRE(::mkdir(shared.c_str(), 0777) == 0);  // writable by all, no sticky bit
  REQUIRE(::chmod(shared.c_str(), 0777) == 0);
  REQUIRE(::chmod(dir.c_str(), 0755) == 0);
  REQUIRE(::mkdir(secret.c_str(), 0700) == 0);
  {
    manager m(names.options());
    create_options keep;
    keep.keep = true;
    auto target = m.from_shape<float>({16}, file(secret + "/data.bin"), keep);
    target.fill(3.f);
    // The attacker points a name the victim will use at the victim's own file.
    const std::string link = shared + "/frames.bin";
    REQUIRE(nobody({"/bin/ln", "-s", secret + "/data.bin", link}) == 0);
    try {
      (void)ndarray<float>::attach(file(link));
      FAIL("the attach followed the link");
    } catch (const access_denied& e) {
      CHECK_THAT(e.what(), Contains("symbolic link") && Contains(link) && Contains("realpath"));
    }
    CHECK_THROWS_AS(ndarray<const float>::attach(file(link)), access_denied);
    // Creation refuses it too, and the target is untouched.
    CHECK_THROWS_AS(m.from_shape<float>({16}, file(link)), already_exists);
    CHECK(ndarray<float>::attach(file(secret + "/data.bin"))(15) == 3.f);
    // On purpose, the documented way: resolve it, and attach what it names.
    char real[PATH_MAX];
    REQUIRE(::realpath(link.c_str(), real));
    CHECK(ndarray<const float>::attach(file(real))(0) == 3.f);
    file(secret + "/data.bin").remove();
  }
  CHECK(std::system(("rm -rf " + dir).c_str()) == 0);
  CHECK(names.left().empty());
}

TEST_CASE("a non-root owner under umask 0777 is cleaned up: its token is 0600") {
  if (!test::can_act_as_nobody()) return;
  in_private_shm("16m", [&](auto say) {
    int out[2];
    if (::pipe(out) != 0) return 1;
    const pid_t owner = test::start_program(
        test::setpriv,
        test::as_nobody({"/bin/sh", "-c", std::string("umask 0777; exec ") + actor + " own 2"}),
        out[1]);
    ::close(out[1]);
    const std::string line = test::read_line(out[0]);
    ::close(out[0]);
    std::istringstream words(line);
    std::string a, b;
    pid_t helper = 0;
    words >> a >> b >> helper;
    if (helper <= 0) {
      say("the owner said: " + line);
      ::kill(owner, SIGKILL);
      test::reap(owner);
      return 1;
    }
    int code = 0;
    for (const auto& n : test::shm_names(".shmarray-owner-")) {
      struct stat st {};
      ::stat(("/dev/shm/" + n).c_str(), &st);
      if ((st.st_mode & 07777) != 0600) {
        say("the token is mode " + std::to_string(st.st_mode & 07777) + "; ");
        code = 2;
      }
    }
    ::kill(owner, SIGKILL);
    test::reap(owner);
    // The helper, running as the owner, opens the token and removes all.
    if (!test::eventually([] { return test::in_shm().empty(); })) {
      std::string left;
      for (const auto& n : test::in_shm())
        left += n + " ";
      say("left in /dev/shm: " + left);
      code = 3;
    }
    if (!test::ends(helper)) {
      say("the helper still runs; ");
      ::kill(helper, SIGKILL);
      code = 4;
    }
    return code;
  });
}

TEST_CASE("ls as another user shows segments it cannot read, and owners whose token it cannot") {
  if (!test::can_act_as_nobody()) return;
  in_private_shm("16m", [&](auto say) {
    manager m;
    auto hidden = m.from_shape<float>({8});  // 0600: nobody cannot even read it
    auto shown = m.from_shape<float>({8});
    ::chmod(("/dev/shm" + shown.name()).c_str(), 0644);  // readable, its token is not
    const auto ls = test::run_program(test::setpriv, test::as_nobody({cli, "ls", "--json"}));
    const auto text = test::run_program(test::setpriv, test::as_nobody({cli, "ls"}));
    const auto gc = test::run_program(test::setpriv, test::as_nobody({cli, "gc"}));
    const auto info =
        test::run_program(test::setpriv, test::as_nobody({cli, "info", hidden.name()}));
    const auto rm = test::run_program(test::setpriv, test::as_nobody({cli, "rm", hidden.name()}));
    int code = 0;
    auto expect = [&](bool ok, const std::string& what) {
      if (!ok) {
        say(what + "; ");
        code = 1;
      }
    };
    const auto row = ls.out.find("{\"name\": \"" + hidden.name() + "\"");
    expect(row != std::string::npos &&
               ls.out.find("\"shmarray\": false, \"status\": \"no access\", \"error\": ", row) <
                   ls.out.find('}', row),
           "ls --json does not list the unreadable segment: " + ls.out);
    expect(ls.out.find("\"owner_alive\": null, \"owner\": \"unreadable\", \"owner_error\": \"its "
                       "owner token /.shmarray-owner-") != std::string::npos &&
               ls.out.find("cannot be read: Permission denied\"") != std::string::npos,
           "ls --json does not say the token is unreadable: " + ls.out);
    expect(text.out.find(hidden.name()) != std::string::npos &&
               text.out.find("no access") != std::string::npos &&
               text.out.find("unreadable") != std::string::npos,
           "plain ls: " + text.out);
    expect(gc.code == 0 &&
               gc.out.find("left " + shown.name() + " alone: its owner token") != std::string::npos,
           "gc: " + gc.out);
    expect(info.code == 1 && info.err == "shmarray info: segment \"" + hidden.name() +
                                             "\" cannot be read: Permission denied (it may be "
                                             "another user's segment)\n",
           "info: " + info.err);
    expect(rm.code == 1 && rm.err.find("cannot be read: Permission denied") != std::string::npos,
           "rm: " + rm.err);
    expect(ndarray<float>::attach(shown.name()).size() == 8, "the segment went");
    expect(ndarray<float>::attach(hidden.name()).size() == 8, "the segment went");
    return code;
  });
}

TEST_CASE("names with control characters or bytes that are not UTF-8 forge no output") {
  if (!test::can_act_as_nobody()) return;
  in_private_shm("16m", [&](auto say) {
    // Anyone can make these; each holds a valid record, so ls shows them.
    const std::vector<std::string> hostile = {
        "bad\xffz", "x\ny", "e\x1b[31mred", "c1\xc2\x9bq", "a b", "back\\slash", "caf\xc3\xa9"};
    int code = 0;
    auto expect = [&](bool ok, const std::string& what) {
      if (!ok) {
        say(what + "; ");
        code = 1;
      }
    };
    for (const auto& n : hostile)
      expect(nobody({actor, "forge", n, "4608"}) == 0, "the attacker could not make " + n);
    const auto ls = test::run_program(cli, {"ls"});
    expect(ls.code == 0, "ls failed");
    // One line per object and the header: a newline in a name forges no row.
    expect(std::count(ls.out.begin(), ls.out.end(), '\n') == long(hostile.size()) + 1,
           "ls printed other than one row per object: " + ls.out);
    for (const char c : ls.out)
      if ((static_cast<unsigned char>(c) < 0x20 && c != '\n') || c == 0x7f) {
        expect(false, "ls printed a raw control byte");
        break;
      }
    // The escapes are GNU ls's (--quoting-style=escape, in a UTF-8 locale).
    const auto gnu = test::run_program("/usr/bin/env", {"LC_ALL=C.UTF-8", "ls", "-b", "/dev/shm"});
    std::istringstream lines(gnu.out);
    for (std::string line; std::getline(lines, line);)
      expect(ls.out.find("\n/" + line + " ") != std::string::npos,
             "GNU ls -b writes " + line + ", shmarray ls does not");
    // --json is valid JSON whose names are os.fsdecode's, as Python lists them.
    const auto json = test::run_program(cli, {"ls", "--json"});
    const std::string check =
        "import json, os, sys\n"
        "rows = json.loads(sys.stdin.read())\n"
        "names = sorted(r['name'] for r in rows)\n"
        "want = sorted('/' + os.fsdecode(n) for n in os.listdir(b'/dev/shm'))\n"
        "sys.exit(0 if names == want else 1)\n";
    int in[2];
    if (::pipe(in) == 0) {
      (void)!::write(in[1], json.out.data(), json.out.size());
      ::close(in[1]);
      std::fflush(nullptr);
      const pid_t py = ::fork();
      if (py == 0) {
        ::dup2(in[0], 0);
        ::execl("/usr/bin/python3", "python3", "-I", "-c", check.c_str(), nullptr);
        ::_exit(127);
      }
      ::close(in[0]);
      const int st = test::reap(py);
      expect(test::exited_with(st, 0), "ls --json is not valid JSON of the names: " + json.out);
    }
    for (const auto& n : hostile) {
      // A user can still inspect and remove them, by their bytes.
      expect(test::run_program(cli, {"info", n}).code == 0, "info refused " + n);
      // Nothing attaches or creates such a name; printable UTF-8 is fine.
      const bool printable = n == "a b" || n == "back\\slash" || n == "caf\xc3\xa9";
      bool refused = false;
      try {
        (void)ndarray<std::uint8_t>::attach(n);
      } catch (const invalid_name& e) {
        refused = true;
        expect(std::string(e.what()).find('\n') == std::string::npos &&
                   std::string(e.what()).find('\x1b') == std::string::npos,
               "the message holds the raw name");
      }
      expect(refused != printable, "attach of " + detail::escaped(n));
      manager m;
      try {
        (void)m.from_shape<int>({2}, posix_shm(n + "2"));
        expect(printable, "created " + detail::escaped(n));
      } catch (const invalid_name&) {
        expect(!printable, "refused to create " + detail::escaped(n));
      }
      expect(test::run_program(cli, {"rm", n}).code == 0, "rm refused " + n);
    }
    expect(test::in_shm().empty(), "names are left");
    return code;
  });
}

TEST_CASE("a sparse segment another user made is reserved at a writable attach: never a SIGBUS") {
  if (!test::can_act_as_nobody()) return;
  in_private_shm("1m", [&](auto say) {
    // Sized, not filled (as multiprocessing.shared_memory makes them): far
    // larger than the 1 MiB /dev/shm that could back them.
    if (nobody({actor, "forge", "forged", std::to_string(4 * 1048576 + 512)}) != 0 ||
        nobody({"/usr/bin/truncate", "-s", "2M", "/dev/shm/raw"}) != 0 ||
        nobody({"/usr/bin/truncate", "-s", "256K", "/dev/shm/roomy"}) != 0) {
      say("the attacker could not make its segments");
      return 1;
    }
    ::chmod("/dev/shm/raw", 0666);
    ::chmod("/dev/shm/roomy", 0666);
    int code = 0;
    // Each in a child: the old way, the write below was a SIGBUS.
    auto attach_and_write = [&](const std::string& what, auto attach, bool expect_room) {
      const int st = test::in_child([&] {
        try {
          auto a = attach();
          std::fill(a.begin(), a.end(), std::uint8_t(7));
          return expect_room ? 0 : 2;  // written: there was room after all
        } catch (const out_of_space& e) {
          return expect_room || !std::strstr(e.what(), "is sparse") || e.bytes_available() == 0 ? 3
                                                                                                : 0;
        }
      });
      if (!test::exited_with(st, 0)) {
        say(what + ": status " + std::to_string(st) +
            (WIFSIGNALED(st) ? " (killed by signal " + std::to_string(WTERMSIG(st)) + ")" : "") +
            "; ");
        code = 1;
      }
    };
    attach_and_write(
        "the forged record", [] { return ndarray<std::uint8_t>::attach("/forged"); }, false);
    attach_and_write(
        "the raw one", [] { return ndarray<std::uint8_t>::attach("/raw", {std::size_t(2) << 20}); },
        false);
    attach_and_write(
        "the one that fits", [] { return ndarray<std::uint8_t>::attach("/roomy", {256 * 1024}); },
        true);
    struct stat st {};
    ::stat("/dev/shm/roomy", &st);
    if (st.st_blocks * 512 < st.st_size) {
      say("the attach did not reserve the holes; ");
      code = 1;
    }
    // A read-only attach cannot reserve (it must not write), and needs not.
    try {
      auto r = ndarray<const std::uint8_t>::attach("/raw", {std::size_t(2) << 20});
      if (r.size() != std::size_t(2) << 20) code = 1;
    } catch (const std::exception& e) {
      say(std::string("read-only attach: ") + e.what());
      code = 1;
    }
    for (const char* n : {"/dev/shm/forged", "/dev/shm/raw", "/dev/shm/roomy"})
      ::unlink(n);
    return code;
  });
}

TEST_CASE("a token another user forged makes gc remove nothing but what that user could") {
  if (!test::can_act_as_nobody()) return;
  char tmpl[] = "/tmp/shmarray-hostile-XXXXXX";
  REQUIRE(::mkdtemp(tmpl));
  const std::string dir = tmpl, root_dir = dir + "/root", att = dir + "/att";
  REQUIRE(::chmod(dir.c_str(), 0755) == 0);
  REQUIRE(::mkdir(root_dir.c_str(), 0755) == 0);  // nobody may look, not write
  REQUIRE(::mkdir(att.c_str(), 0755) == 0);
  REQUIRE(::chown(att.c_str(), 65534, 65534) == 0);
  auto make = [](const std::string& path, uid_t uid) {
    const int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::fchown(fd, uid, uid) == 0);
    ::close(fd);
  };
  const std::string secret = root_dir + "/secret", stuck = root_dir + "/nobodys";
  make(secret, 0);     // root's
  make(stuck, 65534);  // nobody's, where nobody cannot remove it
  // ... nor in a directory root's group may write, nor in one open to all
  // below one only root may enter (root's groups and search rights are not
  // nobody's)
  const std::string group_dir = dir + "/group", closed = dir + "/closed";
  REQUIRE(::mkdir(group_dir.c_str(), 0775) == 0);
  REQUIRE(::chmod(group_dir.c_str(), 0775) == 0);
  REQUIRE(::mkdir(closed.c_str(), 0700) == 0);
  REQUIRE(::mkdir((closed + "/open").c_str(), 0777) == 0);
  REQUIRE(::chmod((closed + "/open").c_str(), 0777) == 0);
  const std::string stuck2 = group_dir + "/nobodys", stuck3 = closed + "/open/nobodys";
  make(stuck2, 65534);
  make(stuck3, 65534);
  REQUIRE(nobody({"/usr/bin/touch", att + "/mine"}) == 0);
  in_private_shm("4m", [&](auto say) {
    int code = 0;
    auto expect = [&](bool ok, const std::string& what) {
      if (!ok) {
        say(what + "; ");
        code = 1;
      }
    };
    expect(nobody({actor, "forge-token", secret, stuck, stuck2, att + "/mine"}) == 0,
           "no token forged");
    const auto gc = test::run_program(cli, {"gc"});
    expect(exists(secret), "root's file went: " + gc.out);
    expect(exists(stuck), "nobody's file that nobody could not remove went: " + gc.out);
    expect(exists(stuck2), "nobody's file in root's group's directory went: " + gc.out);
    expect(!exists(att + "/mine"), "what nobody could remove stayed: " + gc.out);
    expect(
        gc.out.find("removed owner token /.shmarray-owner-00000000deadbeef") != std::string::npos,
        "the dead token stayed: " + gc.out);
    // nobody cannot reach stuck3 to learn what to write: root writes that
    // token for it (as if it could), and gives it to nobody
    const std::string forged = "/dev/shm/.shmarray-owner-00000000deadbeef";
    expect(test::run_program(actor, {"forge-token", stuck3}).code == 0 &&
               ::chown(forged.c_str(), 65534, 65534) == 0,
           "no second token forged");
    const auto gc3 = test::run_program(cli, {"gc"});
    expect(exists(stuck3), "nobody's file below a directory only root enters went: " + gc3.out);
    // Directories swapped for links to root's while gc reads the journal:
    // nothing is ever removed through a link.
    const std::string victim = dir + "/victim";
    ::mkdir(victim.c_str(), 0700);
    make(victim + "/secret", 0);
    make(att + "/keep", 65534);
    const pid_t swapper =
        test::start_program(test::setpriv, test::as_nobody({actor, "swap", att, "secret", victim}));
    test::eventually([] { return exists("/dev/shm/.shmarray-owner-00000000deadbeef"); });
    for (int i = 0; i < 200 && exists(victim + "/secret"); ++i)
      (void)test::run_program(cli, {"gc"});
    ::kill(-swapper, SIGKILL);
    ::kill(swapper, SIGKILL);
    test::reap(swapper);
    expect(exists(victim + "/secret"), "root's file went, through a swapped link");
    return code;
  });
  CHECK(std::system(("rm -rf " + dir).c_str()) == 0);
}

TEST_CASE("a token name another user takes after the owner dropped it does not hang the helper") {
  if (!test::can_act_as_nobody()) return;
  in_private_shm("16m", [&](auto say) {
    int out[2], squat_out[2];
    if (::pipe(out) != 0 || ::pipe(squat_out) != 0) return 1;
    const pid_t squatter =
        test::start_program(test::setpriv, test::as_nobody({actor, "squat"}), squat_out[1]);
    ::close(squat_out[1]);
    ::usleep(200000);  // its watch is set
    const int planted = ::open("/dev/shm/planted", O_CREAT | O_EXCL | O_RDWR, 0600);
    if (planted < 0) return 1;
    ::close(planted);
    // The owner's first creation fails (its name is taken): its token is
    // named, then dropped, and the squatter makes the name again, locked.
    const pid_t owner = test::start_program(actor, {"own-after", "planted", "2"}, out[1]);
    ::close(out[1]);
    const std::string line = test::read_line(out[0]);
    ::close(out[0]);
    std::string squatted;
    pollfd p{squat_out[0], POLLIN, 0};
    if (::poll(&p, 1, 2000) > 0) squatted = test::read_line(squat_out[0]);
    std::istringstream words(line);
    std::string a, b;
    pid_t helper = 0;
    words >> a >> b >> helper;
    int code = 0;
    if (squatted.empty()) {
      say("the squatter took no name; ");
      code = 1;
    }
    ::kill(owner, SIGKILL);
    test::reap(owner);
    if (!test::eventually([&] { return !exists("/dev/shm" + a) && !exists("/dev/shm" + b); })) {
      say("the owner's arrays were left (the helper waits on the squatter's lock?); ");
      code = 1;
    }
    if (helper > 0 && !test::ends(helper)) {
      say("the helper still runs; ");
      ::kill(helper, SIGKILL);
      code = 1;
    }
    ::kill(squatter, SIGKILL);
    test::reap(squatter);
    ::close(squat_out[0]);
    for (const auto& n : test::in_shm())
      ::unlink(("/dev/shm/" + n).c_str());
    return code;
  });
}

TEST_CASE("a file named like a token is one only if its bytes name it; one too large is left") {
  if (!test::can_act_as_nobody()) return;
  char tmpl[] = "/tmp/shmarray-hostile-XXXXXX";
  REQUIRE(::mkdtemp(tmpl));
  const std::string dir = tmpl, victim = dir + "/victim";
  {
    const int fd = ::open(victim.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600);
    REQUIRE(fd >= 0);
    ::close(fd);
  }
  in_private_shm("4m", [&](auto say) {
    int code = 0;
    auto expect = [&](bool ok, const std::string& what) {
      if (!ok) {
        say(what + "; ");
        code = 1;
      }
    };
    // Root's own file, of bytes another user chose (a named array of their
    // pixels, say), hard-linked under a token's name (where
    // fs.protected_hardlinks is off, anyone can): a journal naming root's
    // file, with a header that cannot name a file not made yet.
    detail::object_id target;
    const int vfd = ::open(victim.c_str(), O_RDONLY);
    if (vfd < 0 || !detail::identify(vfd, target)) return 2;
    ::close(vfd);
    std::string bytes;
    detail::owner::wire::header_record(bytes, 0xfeedfaceull, {0, 12345, 678});
    detail::owner::wire::object_record(bytes, detail::owner::wire::op::add,
                                       detail::owner::wire::object_kind::file, victim, target);
    const int fd = ::open("/dev/shm/pixels", O_CREAT | O_EXCL | O_WRONLY, 0600);
    if (fd < 0 || ::write(fd, bytes.data(), bytes.size()) != ssize_t(bytes.size())) return 2;
    ::close(fd);
    const std::string token = "/dev/shm" + detail::owner::token_name(0xfeedfaceull);
    if (::link("/dev/shm/pixels", token.c_str()) != 0) return 2;
    const auto gc = test::run_program(cli, {"gc"});
    expect(exists(victim), "root's file went: " + gc.out);
    expect(exists(token), "the file named like a token went");
    expect(gc.out.find("it is not an owner token: its bytes do not name this very file") !=
               std::string::npos,
           "gc did not say so: " + gc.out);
    ::unlink(token.c_str());
    ::unlink("/dev/shm/pixels");
    // A journal larger than gc reads (sparse: it costs nothing here) keeps
    // its token, said, rather than be cut short and lost.
    const int big = ::open(token.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600);
    if (big < 0 || ::ftruncate(big, off_t(300) << 20) != 0) return 2;
    ::close(big);
    const auto gc2 = test::run_program(cli, {"gc"});
    expect(exists(token), "the large token went");
    expect(gc2.out.find("its journal is larger than gc reads") != std::string::npos,
           "gc did not say so: " + gc2.out);
    ::unlink(token.c_str());
    return code;
  });
  CHECK(std::system(("rm -rf " + dir).c_str()) == 0);
}
