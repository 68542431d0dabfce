// The shmarray command, run as a user runs it: its output, its exit codes,
// and that it leaves alone what is not a shmarray segment.
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <shmarray/shmarray.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "support.hpp"

using namespace shmarray;
using Catch::Matchers::Contains;

namespace {

// Runs the command with `args`; its exit code, stdout and stderr.
test::program_run cli(const std::vector<std::string>& args) {
  return test::run_program(SHMARRAY_CLI, args);
}

}  // namespace

TEST_CASE("shmarray ls lists segments with dtype, shape, size and owner") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<float>({4, 5, 6});
    auto f = m.from_shape<std::int16_t>({3, 4}, test::fortran());
    const auto r = cli({"ls"});
    CHECK(r.code == 0);
    CHECK(r.err.empty());
    CHECK_THAT(r.out, Contains("NAME") && Contains("DTYPE") && Contains("OWNER"));
    CHECK_THAT(r.out, Catch::Matches("(.|\n)*" + a.name() + " +<f4 +4x5x6 +C +[0-9]+ +" +
                                     std::to_string(::getpid()) + " .*ok\n(.|\n)*"));
    CHECK_THAT(r.out, Catch::Matches("(.|\n)*" + f.name() + " +<i2 +3x4 +F (.|\n)*"));

    const auto j = cli({"ls", "--json"});
    CHECK(j.code == 0);
    CHECK_THAT(j.out, Contains("{\"name\": \"" + a.name() + "\", \"bytes\": ") &&
                          Contains("\"dtype\": \"<f4\", \"itemsize\": 4, \"shape\": [4, 5, 6], "
                                   "\"order\": \"C\", \"data_nbytes\": 480, \"owner_pid\": " +
                                   std::to_string(::getpid())));
    CHECK(j.out.front() == '[');
    CHECK(j.out.substr(j.out.size() - 2) == "]\n");
  }
  CHECK(names.left().empty());
}

TEST_CASE("shmarray info prints one segment's metadata, and fails clearly") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<double>({2, 3});
    const auto r = cli({"info", a.name()});
    CHECK(r.code == 0);
    CHECK_THAT(r.out, Contains("dtype:       <f8 (8 bytes an element)") &&
                          Contains("shape:       2x3 (rank 2)") &&
                          Contains("strides:     24, 8 (bytes)") &&
                          Contains("owner pid:   " + std::to_string(::getpid())));
    // The name without its leading slash is the same segment.
    CHECK(cli({"info", a.name().substr(1), "--json"}).out.find("\"shape\": [2, 3]") !=
          std::string::npos);

    const auto missing = cli({"info", names("missing")});
    CHECK(missing.code == 1);
    CHECK(missing.out.empty());
    CHECK(missing.err == "shmarray info: segment \"" + names("missing") + "\" does not exist\n");

    // A damaged record: the same typed error an attach gives, as a message.
    auto b = m.from_shape<double>({4});
    {
      const int fd = ::shm_open(b.name().c_str(), O_RDWR, 0);
      REQUIRE(fd >= 0);
      const char junk = 'X';
      const off_t record = off_t(64 + 0);  // the record of 32 data bytes starts at 64
      REQUIRE(::pwrite(fd, &junk, 1, record + 100) == 1);
      ::close(fd);
    }
    const auto bad = cli({"info", b.name()});
    CHECK(bad.code == 1);
    CHECK_THAT(bad.err, Contains("shmarray info: segment") && Contains("checksum"));
    const auto listed = cli({"ls"});
    CHECK_THAT(listed.out, Catch::Matches("(.|\n)*" + b.name() + " .* corrupt\n(.|\n)*"));
  }
  CHECK(names.left().empty());
}

TEST_CASE("shmarray rm removes segments, and leaves what is not one alone") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<int>({8});
    auto b = m.from_shape<int>({8});
    a(0) = 42;
    CHECK(cli({"rm", a.name(), b.name()}).code == 0);
    CHECK(!names.exists(a.name()));
    CHECK(!names.exists(b.name()));
    CHECK(a(0) == 42);  // mappings stay valid

    // An object that is not a shmarray segment: refused without --force.
    const std::string other = names("not_ours");
    const int fd = ::shm_open(other.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::ftruncate(fd, 4096) == 0);
    ::close(fd);
    const auto refused = cli({"rm", other});
    CHECK(refused.code == 1);
    CHECK_THAT(refused.err, Contains("is not a shmarray segment (its 4096 bytes do not end in a "
                                     "shmarray record); not removed"));
    CHECK(names.exists(other));
    CHECK(cli({"ls"}).out.find(other) == std::string::npos);  // ls shows shmarray's only
    CHECK(cli({"ls", "--all"}).out.find(other) != std::string::npos);
    CHECK(cli({"rm", "--force", other}).code == 0);
    CHECK(!names.exists(other));

    const auto missing = cli({"rm", names("missing")});
    CHECK(missing.code == 1);
    CHECK_THAT(missing.err, Contains("does not exist"));
  }
  CHECK(names.left().empty());
}

TEST_CASE("shmarray: usage errors exit 2, --help and --version exit 0") {
  CHECK(cli({}).code == 2);
  const auto unknown = cli({"frobnicate"});
  CHECK(unknown.code == 2);
  CHECK(unknown.err ==
        "shmarray: unknown command \"frobnicate\" (the commands are ls, info, rm and gc; "
        "shmarray --help says more)\n");
  CHECK(cli({"info"}).code == 2);
  CHECK(cli({"ls", "--bogus"}).code == 2);
  const auto help = cli({"--help"});
  CHECK(help.code == 0);
  CHECK_THAT(help.out,
             Contains("Usage: shmarray") && Contains("ls") && Contains("info") && Contains("rm"));
  const auto version = cli({"--version"});
  CHECK(version.code == 0);
  CHECK_THAT(version.out, Contains("0.1.0"));
}

TEST_CASE("shmarray gc removes what a killed owner left, and nothing else") {
  test::names names;
  {
    manager m(names.options());
    auto mine = m.from_shape<int>({4});  // a live owner's: never removed
    const std::string other = names("not_ours");
    const int ofd = ::shm_open(other.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    REQUIRE(ofd >= 0);
    REQUIRE(::ftruncate(ofd, 4096) == 0);
    ::close(ofd);

    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    const int status = test::in_child([&] {  // the owner that dies, with no watchdog
      ::setenv("SHMARRAY_HELPER", "", 1);    // (which would clean up before gc could)
      const int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, 2);  // its warning that there is no helper
      manager dying(names.options());
      auto a = dying.from_shape<float>({16});
      auto b = dying.from_shape<float>({8, 8});
      create_options keep;
      keep.keep = true;
      auto k = dying.from_shape<float>({2}, keep);
      const std::string said = a.name() + " " + b.name() + " " + k.name() + " " +
                               detail::token_name(detail::owner_token::get().id());
      (void)!::write(fds[1], said.data(), said.size());
      ::raise(SIGKILL);
      return 1;
    });
    ::close(fds[1]);
    CHECK(test::killed_by(status, SIGKILL));
    char buf[512] = {};
    REQUIRE(::read(fds[0], buf, sizeof buf - 1) > 0);
    ::close(fds[0]);
    std::istringstream words(buf);
    std::string a, b, kept, token;
    words >> a >> b >> kept >> token;
    REQUIRE(names.exists(a));
    REQUIRE(test::shm_names(token.substr(1)).size() == 1);

    const auto listed = cli({"ls", "--json"});
    CHECK_THAT(listed.out,
               Contains("\"name\": \"" + a + "\"") && Contains("\"owner_alive\": false") &&
                   Contains("\"owner_alive\": true") && Contains("\"owner_alive\": null"));
    CHECK_THAT(cli({"info", a}).out, Contains("owner:       gone"));
    CHECK_THAT(cli({"info", mine.name()}).out, Contains("owner:       alive"));

    const auto dry = cli({"gc", "--dry-run"});
    CHECK(dry.code == 0);
    CHECK_THAT(dry.out, Contains("would remove " + a) && Contains("would remove " + b));
    CHECK(dry.out.find(mine.name()) == std::string::npos);
    CHECK(names.exists(a));  // a dry run removes nothing

    const auto gc = cli({"gc"});
    CHECK(gc.code == 0);
    CHECK_THAT(gc.out, Contains("removed " + a) && Contains("removed " + b) &&
                           Contains("removed owner token " + token + " (nobody holds it)"));
    CHECK(!names.exists(a));
    CHECK(!names.exists(b));
    CHECK(test::shm_names(token.substr(1)).empty());  // the dead token went too
    CHECK(names.exists(mine.name()));                 // a live owner's
    CHECK(names.exists(kept));                        // kept: meant to outlive its owner
    CHECK(names.exists(other));                       // not a shmarray segment
    posix_shm(kept).remove();
    posix_shm(other).remove();
  }
  CHECK(names.left().empty());
}

TEST_CASE("shmarray gc says when there is nothing to do") {
  // Nothing dead here: every owner of this test's is alive, and gc says so
  // rather than nothing (other tests' dead leftovers may be there to remove).
  const auto gc = cli({"gc", "-n"});
  CHECK(gc.code == 0);
  CHECK_FALSE(gc.out.empty());
  const auto run = test::in_small_tmpfs("/dev/shm", "1m", [](auto say) {
    const auto r = cli({"gc"});
    const auto dry = cli({"gc", "--dry-run"});
    say(r.out + "|" + dry.out);
    return r.out == "nothing to remove\n" && dry.out == "nothing would be removed\n" ? 0 : 1;
  });
  if (run.skipped()) return;
  INFO(run.said);
  CHECK(run.ok());
}

TEST_CASE("shmarray ls -a lists the owner tokens, and rm keeps a live owner's") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<int>({4});
    const std::string token = detail::token_name(detail::owner_token::get().id());
    const auto all = cli({"ls", "-a"});
    CHECK_THAT(all.out, Catch::Matches("(.|\n)*\n" + token + " .* yes .* owner token\n(.|\n)*"));
    CHECK(cli({"ls"}).out.find(token) == std::string::npos);
    CHECK_THAT(cli({"ls", "-a", "--json"}).out,
               Contains("{\"name\": \"" + token +
                        "\", \"bytes\": 0, \"shmarray\": false, \"status\": \"owner token\", "
                        "\"owner\": \"alive\"}"));
    CHECK_THAT(cli({"info", token}).out, Contains("owner token: of a process that is alive"));
    const auto rm = cli({"rm", "-f", token});
    CHECK(rm.code == 1);
    CHECK_THAT(rm.err, Contains("is the owner token of a live process; not removed"));
    CHECK(test::shm_names(token.substr(1)).size() == 1);
  }
  CHECK(names.left().empty());
}

TEST_CASE("shmarray info and rm say what an empty object or a FIFO is") {
  test::names names;
  const std::string empty = names("empty");
  const int fd = ::shm_open(empty.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  REQUIRE(fd >= 0);
  ::close(fd);
  const auto info = cli({"info", empty});
  CHECK(info.code == 1);
  CHECK(info.err == "shmarray info: segment \"" + empty +
                        "\" is empty (0 bytes): not a shmarray segment, or one still being "
                        "created\n");
  const auto rm = cli({"rm", empty});
  CHECK(rm.code == 1);
  CHECK_THAT(rm.err, Contains("is empty (0 bytes)") && Contains("not removed"));
  CHECK(cli({"rm", "-f", empty}).code == 0);
  CHECK(names.left().empty());
  // A FIFO where a segment might be: not opened (it would block), said.
  const std::string fifo = "/dev/shm/" + names("fifo").substr(1);
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  const auto f = cli({"info", names("fifo")});
  CHECK(f.code == 1);
  CHECK_THAT(f.err, Contains("is a FIFO, not a regular file"));
  CHECK(cli({"ls", "-a"}).out.find(names("fifo")) == std::string::npos);  // regular files only
  ::unlink(fifo.c_str());
}
