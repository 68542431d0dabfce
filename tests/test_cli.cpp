// The shmarray command, run as a user runs it: its output, its exit codes,
// and that it leaves alone what is not a shmarray segment.
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <shmarray/shmarray.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "ring_support.hpp"
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
  char dir[] = "/tmp/shmarray_gc_XXXXXX";
  REQUIRE(::mkdtemp(dir));
  const std::string file_path = std::string(dir) + "/array.bin";
  // In a private /dev/shm: no other process's helper collects first.
  const auto run = test::in_small_tmpfs("/dev/shm", "4m", [&](auto say) {
    test::names names;
    int code = 0;
    auto expect = [&](bool ok, const std::string& what) {
      if (!ok) {
        say(what + "; ");
        code = 1;
      }
    };
    // No helper here either: a helper that starts collects what dead owners
    // left, in the background, and could do gc's work before it.
    test::without_helper();
    manager m(names.options());
    auto mine = m.from_shape<int>({4});  // a live owner's: never removed
    const std::string other = names("not_ours");
    const int ofd = ::shm_open(other.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    if (ofd < 0 || ::ftruncate(ofd, 4096) != 0) return 2;
    ::close(ofd);

    int fds[2];
    if (::pipe(fds) != 0) return 2;
    const int status = test::in_child([&] {  // the owner that dies, with no watchdog
      manager dying(names.options());
      auto a = dying.from_shape<float>({16});
      auto b = dying.from_shape<float>({8, 8});
      auto raw = dying.from_shape<float>({8}, test::raw());    // only the token's journal names
      auto f = dying.from_shape<float>({8}, file(file_path));  // these two
      create_options keep;
      keep.keep = true;
      auto k = dying.from_shape<float>({2}, keep);
      const std::string said = a.name() + " " + b.name() + " " + raw.name() + " " + k.name() + " " +
                               detail::owner::token_name(detail::owner::token::get().id());
      (void)!::write(fds[1], said.data(), said.size());
      ::raise(SIGKILL);
      return 1;
    });
    ::close(fds[1]);
    expect(test::killed_by(status, SIGKILL), "the owner did not die");
    char buf[512] = {};
    if (::read(fds[0], buf, sizeof buf - 1) <= 0) return 3;
    ::close(fds[0]);
    std::istringstream words(buf);
    std::string a, b, raw, kept, token;
    words >> a >> b >> raw >> kept >> token;
    expect(names.exists(a) && names.exists(raw) && test::shm_names(token.substr(1)).size() == 1,
           "the owner's leftovers are not there");

    const auto listed = cli({"ls", "--json"});
    expect(
        listed.out.find("\"name\": \"" + a + "\"") != std::string::npos &&
            listed.out.find("\"owner_alive\": false, \"owner\": \"gone\"") != std::string::npos &&
            listed.out.find("\"owner_alive\": true, \"owner\": \"alive\"") != std::string::npos &&
            listed.out.find("\"owner_alive\": null, \"owner\": \"untracked\"") != std::string::npos,
        "ls --json: " + listed.out);
    expect(cli({"info", a}).out.find("owner:       gone") != std::string::npos, "info of a");
    expect(cli({"info", mine.name()}).out.find("owner:       alive") != std::string::npos,
           "info of mine");

    const auto dry = cli({"gc", "--dry-run"});
    expect(dry.code == 0 && dry.out.find("would remove " + a + " (owner ") != std::string::npos &&
               dry.out.find("would remove " + b) != std::string::npos &&
               dry.out.find("would remove " + raw + " (its owner's token " + token +
                            " says so, and nobody holds it)") != std::string::npos &&
               dry.out.find("would remove " + file_path) != std::string::npos &&
               dry.out.find("would remove owner token " + token) != std::string::npos &&
               dry.out.find(mine.name()) == std::string::npos,
           "gc -n: " + dry.out);
    struct stat st {};
    expect(names.exists(a) && ::stat(file_path.c_str(), &st) == 0, "a dry run removed something");

    const auto gc = cli({"gc"});
    expect(
        gc.code == 0 && gc.out.find("removed " + a) != std::string::npos &&
            gc.out.find("removed " + b) != std::string::npos &&
            gc.out.find("removed " + raw) != std::string::npos &&
            gc.out.find("removed " + file_path) != std::string::npos &&
            gc.out.find("removed owner token " + token + " (nobody holds it)") != std::string::npos,
        "gc: " + gc.out);
    expect(!names.exists(a) && !names.exists(b) && !names.exists(raw), "segments are left");
    expect(::stat(file_path.c_str(), &st) != 0, "the file backing is left");
    expect(test::shm_names(token.substr(1)).empty(), "the dead token is left");
    expect(names.exists(mine.name()), "a live owner's went");
    expect(names.exists(kept), "a kept one went");  // kept: meant to outlive its owner
    expect(names.exists(other), "what is not a segment went");
    posix_shm(kept).remove();
    posix_shm(other).remove();
    return code;
  });
  ::rmdir(dir);
  if (run.skipped()) return;
  INFO(run.said);
  CHECK(run.ok());
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
    const std::string token = detail::owner::token_name(detail::owner::token::get().id());
    const auto all = cli({"ls", "-a"});
    CHECK_THAT(all.out, Catch::Matches("(.|\n)*\n" + token + " .* yes .* owner token\n(.|\n)*"));
    CHECK(cli({"ls"}).out.find(token) == std::string::npos);
    CHECK_THAT(cli({"ls", "-a", "--json"}).out,
               Catch::Matches("(.|\n)*\\{\"name\": \"" + token +
                              "\", \"bytes\": [0-9]+, \"shmarray\": false, \"status\": "
                              "\"owner token\", \"owner\": \"alive\"\\}(.|\n)*"));
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

TEST_CASE("shmarray ls DIR and info PATH inspect file backings") {
  char tmpl[] = "/tmp/shmarray_cli_dir_XXXXXX";
  REQUIRE(::mkdtemp(tmpl));
  const std::string dir = tmpl;
  {
    manager m;
    auto a = m.from_shape<std::uint16_t>({4, 5}, file(dir + "/frames.shm"));
    const auto r = cli({"ls", dir});
    CHECK(r.code == 0);
    CHECK_THAT(r.out, Catch::Matches("(.|\n)*" + dir + "/frames.shm +<u2 +4x5 +C (.|\n)*"));
    const auto i = cli({"info", dir + "/frames.shm"});
    CHECK(i.code == 0);
    CHECK_THAT(i.out, Contains("<u2") && Contains("4x5"));
    const auto j = cli({"info", "--json", dir + "/frames.shm"});
    CHECK(j.code == 0);
    CHECK_THAT(j.out, Contains("\"shape\": [4, 5]"));
    const auto missing = cli({"ls", dir + "/nowhere"});
    CHECK(missing.code == 1);
    CHECK_THAT(missing.err, Contains("shmarray ls: ") && Contains("nowhere"));
    const auto gone = cli({"info", dir + "/nothing.shm"});
    CHECK(gone.code == 1);
    CHECK_THAT(gone.err, Contains("does not exist"));
    // rm takes paths too: a file that is no segment only with -f.
    const std::string notes = dir + "/notes.txt";
    const int fd = ::open(notes.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, "hello\n", 6) == 6);
    ::close(fd);
    CHECK(cli({"rm", notes}).code == 1);
    CHECK(::access(notes.c_str(), F_OK) == 0);
    CHECK(cli({"rm", "-f", notes}).code == 0);
    CHECK(::access(notes.c_str(), F_OK) != 0);
    CHECK(cli({"rm", dir + "/frames.shm"}).code == 0);
    CHECK(::access((dir + "/frames.shm").c_str(), F_OK) != 0);
    CHECK(a(3, 4) == 0);  // the mapping stays
  }
  CHECK(::rmdir(dir.c_str()) == 0);
}

TEST_CASE("shmarray ls and info show a ring with its slots and policy and head and readers") {
  test::names names;
  {
    manager m(names.options());
    const std::string name = names("cam");
    auto [w, own, worker] = test::ring_with_two_readers(m, name, order::row_major);
    const std::string pid = std::to_string(::getpid());

    const auto r = cli({"ls"});
    CHECK(r.code == 0);
    CHECK_THAT(r.out, Catch::Matches("(.|\n)*" + name + " +<u2 +4x5 +C +197120 +" + pid +
                                     " +yes +[-0-9T:Z]+ +ok; ring: 4 slots, block, head 2, 2 "
                                     "readers, 1 group, producer alive\n(.|\n)*"));

    const auto j = cli({"ls", "--json"});
    CHECK(j.code == 0);
    const std::string fields =
        "{\"name\": \"" + name +
        "\", \"bytes\": 197120, \"shmarray\": true, \"status\": \"ok\", \"kind\": \"ring\", "
        "\"dtype\": \"<u2\", \"itemsize\": 2, \"shape\": [4, 5], \"order\": \"C\", "
        "\"frame_nbytes\": 40, \"slots\": 4, \"slot_stride\": 64, \"policy\": \"block\", "
        "\"head\": 2, \"readers\": 2, \"readers_gone\": 0, \"max_readers\": 3, "
        "\"reader_entries\": [{\"pid\": " +
        pid + ", \"group\": null, \"done\": 0, \"missed\": 0, \"alive\": true}, {\"pid\": " + pid +
        ", \"group\": \"workers\", \"claim\": 0, \"missed\": 0, \"alive\": true}], "
        "\"groups\": [{\"name\": \"workers\", \"members\": 1, \"next\": 0, \"missed\": 0}], "
        "\"max_groups\": 2, \"producer\": \"alive\", \"producer_alive\": true, \"writer_pid\": " +
        pid + ", \"owner_pid\": " + pid + ", \"created_ns\": ";
    CHECK_THAT(j.out, Contains(fields));
    // info --json is the same object as the row of ls --json.
    const auto ij = cli({"info", "--json", name});
    CHECK(ij.code == 0);
    REQUIRE(ij.out.size() > 2);
    CHECK_THAT(ij.out, Catch::StartsWith(fields) &&
                           Catch::EndsWith("\"owner_alive\": true, \"owner\": \"alive\"}\n"));
    CHECK_THAT(j.out, Contains(ij.out.substr(0, ij.out.size() - 1)));

    const auto i = cli({"info", name});
    CHECK(i.code == 0);
    CHECK_THAT(i.out, Contains("name:        " + name +
                               "\nkind:        ring of frames (format "
                               "version 2)\ndtype:       <u2 (2 bytes an "
                               "element)\nframe shape: 4x5 (rank 2)\n"));
    CHECK_THAT(i.out, Contains("strides:     10, 2 (bytes, in a frame)\n"
                               "frame:       40 bytes, in slots 64 bytes apart; segment 197120 "
                               "bytes\nslots:       4\npolicy:      block (") &&
                          Contains("head:        2 (") &&
                          Contains("readers:     2 attached (of 3)\n"
                                   "reader:      pid " +
                                   pid +
                                   " (of its own: done to 0; missed 0; alive)\n"
                                   "reader:      pid " +
                                   pid +
                                   " (of group workers: claimed 0; missed 0; alive)\n"
                                   "groups:      1 (of 2)\n"
                                   "group:       workers (1 member; last claimed 0; missed 0)\n") &&
                          Contains("producer:    alive (writer pid " + pid) &&
                          Contains("owner:       alive"));
    CHECK(i.out.find("lock:") == std::string::npos);  // a ring has none

    w.close();
    CHECK_THAT(cli({"ls"}).out, Contains("1 group, producer closed\n"));
    CHECK_THAT(cli({"info", "--json", name}).out,
               Contains("\"producer\": \"closed\", \"producer_alive\": false"));
  }
  CHECK(names.left().empty());
}

TEST_CASE("shmarray gc removes the ring a killed owner left") {
  // In a private /dev/shm: no other process's helper collects first, and
  // what is left at the end is exactly what the test left (nothing).
  const auto run = test::in_small_tmpfs("/dev/shm", "4m", [&](auto say) {
    test::names names;
    int code = 0;
    auto expect = [&](bool ok, const std::string& what) {
      if (!ok) {
        say(what + "; ");
        code = 1;
      }
    };
    test::without_helper();  // (a helper would remove it before gc could)
    const std::string ring = names("ring");
    int fds[2];
    if (::pipe(fds) != 0) return 2;
    const int status = test::in_child([&] {
      manager dying(names.options());
      auto w = dying.ring<float>(ring, {2, 3});
      auto r = ring_reader<float>::attach(ring);  // dies with it: its entry stays, its lock goes
      const std::vector<float> frame(6, 2.f);
      for (int k = 0; k < 3; ++k)
        w.push(frame.data());
      const std::string said = std::to_string(::getpid()) + " " +
                               detail::owner::token_name(detail::owner::token::get().id());
      (void)!::write(fds[1], said.data(), said.size());
      ::raise(SIGKILL);
      return 1;
    });
    ::close(fds[1]);
    std::istringstream words(test::read_all(fds[0]));
    ::close(fds[0]);
    expect(test::killed_by(status, SIGKILL), "the owner did not die");
    std::string pid, token;
    words >> pid >> token;

    const auto ls = cli({"ls"});
    expect(ls.out.find(ring) != std::string::npos &&
               ls.out.find(" " + pid + " no ") != std::string::npos &&
               ls.out.find("ok; ring: 8 slots, overwrite, head 3, 1 reader (1 gone), 0 groups, "
                           "producer gone\n") != std::string::npos,
           "ls: " + ls.out);
    const auto j = cli({"info", "--json", ring});
    expect(
        j.code == 0 &&
            j.out.find("\"readers\": 1, \"readers_gone\": 1, \"max_readers\": 16, "
                       "\"reader_entries\": [{\"pid\": " +
                       pid + ", \"group\": null, \"done\": 0, \"missed\": 0, \"alive\": false}]") !=
                std::string::npos &&
            j.out.find("\"producer\": \"gone\", \"producer_alive\": false, \"writer_pid\": " +
                       pid) != std::string::npos &&
            j.out.find("\"owner_alive\": false, \"owner\": \"gone\"}") != std::string::npos,
        "info --json: " + j.out);
    const auto i = cli({"info", ring});
    expect(i.out.find("readers:     1 attached (of 16; 1 gone)\nreader:      pid " + pid +
                      " (of its own: done to 0; missed 0; gone: its liveness lock is free)\n") !=
                   std::string::npos &&
               i.out.find("producer:    gone") != std::string::npos &&
               i.out.find("owner:       gone") != std::string::npos,
           "info: " + i.out);

    const auto dry = cli({"gc", "--dry-run"});
    expect(dry.code == 0 &&
               dry.out.find("would remove " + ring + " (owner " + pid + " is gone)") !=
                   std::string::npos &&
               dry.out.find("would remove owner token " + token) != std::string::npos,
           "gc -n: " + dry.out);
    expect(names.exists(ring), "a dry run removed it");
    const auto gc = cli({"gc"});
    expect(
        gc.code == 0 &&
            gc.out.find("removed " + ring + " (owner " + pid + " is gone)") != std::string::npos &&
            gc.out.find("removed owner token " + token) != std::string::npos,
        "gc: " + gc.out);
    for (const auto& n : test::in_shm())
      expect(false, "left: " + n);
    return code;
  });
  if (run.skipped()) return;
  INFO(run.said);
  CHECK(run.ok());
}

TEST_CASE("shmarray ls and info give a damaged ring record a clean error row") {
  test::names names;
  {
    manager m(names.options());
    const std::string bad = names("bad"), odd = names("odd");
    auto w = m.ring<std::uint8_t>(bad, {16});
    auto v = m.ring<std::uint8_t>(odd, {16});
    auto edit = [](const std::string& name, auto&& change) {
      const int fd = ::shm_open(name.c_str(), O_RDWR, 0);
      REQUIRE(fd >= 0);
      struct stat st {};
      REQUIRE(::fstat(fd, &st) == 0);
      change(fd, off_t(st.st_size) - off_t(format::record_size));
      ::close(fd);
    };
    // A policy byte that is none, under a checksum made right.
    edit(bad, [](int fd, off_t at) {
      std::byte rec[format::record_size];
      REQUIRE(::pread(fd, rec, sizeof rec, at) == ssize_t(sizeof rec));
      rec[format::ring::off_policy] = std::byte('X');
      detail::store_le<std::uint32_t>(rec + format::off_checksum,
                                      detail::crc32(rec, format::checksummed));
      REQUIRE(::pwrite(fd, rec, sizeof rec, at) == ssize_t(sizeof rec));
    });
    // A valid ring whose group table names a group with a terminal's escapes.
    edit(odd, [](int fd, off_t at) {
      namespace rf = format::ring;
      const off_t group = at - off_t(rf::area_alignment) + off_t(rf::r_groups);
      std::byte g[rf::entry] = {};
      detail::store_le<std::uint32_t>(g + rf::g_state, rf::entry_used);
      detail::store_le<std::uint32_t>(g + rf::g_name_len, 9);
      std::memcpy(g + rf::g_name, "a\nb\033[2Jcd", 9);
      REQUIRE(::pwrite(fd, g, sizeof g, group) == ssize_t(sizeof g));
    });

    const auto ls = cli({"ls"});
    CHECK(ls.code == 0);
    CHECK_THAT(ls.out,
               Catch::Matches("(.|\n)*\n" + bad + " +- +- +- +[0-9]+ +- +- +- +corrupt\n(.|\n)*"));
    CHECK_THAT(ls.out, Contains("ok; ring: 8 slots, overwrite, head 0, 0 readers, 1 group, "));
    CHECK(ls.out.find('\033') == std::string::npos);
    const auto j = cli({"ls", "--json"});
    CHECK_THAT(j.out,
               Contains("\"status\": \"corrupt\", \"kind\": \"ring\", \"error\": \"segment "
                        "\\\"" +
                        bad + "\\\" has a corrupt record: policy byte 88") &&
                   Contains("\"groups\": [{\"name\": \"a\\nb\\u001b[2Jcd\", \"members\": 0"));
    const auto info = cli({"info", bad});
    CHECK(info.code == 1);
    CHECK(info.out.empty());
    CHECK_THAT(info.err, Contains("shmarray info: segment \"" + bad + "\"") &&
                             Contains("policy byte 88, expected 'O' (overwrite) or 'B' (block)"));
    CHECK(cli({"info", "--json", bad}).code == 1);
    CHECK_THAT(cli({"info", odd}).out, Contains("group:       a\\nb\\033[2Jcd (0 members;"));
    // gc leaves what does not validate, whoever made it.
    CHECK(cli({"gc", "-n"}).out.find(bad) == std::string::npos);
  }
  CHECK(names.left().empty());
}
