#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <shmarray/segment.hpp>
#include <string>
#include <vector>

#include "support.hpp"

using namespace shmarray;

TEST_CASE("posix_shm names take an optional leading slash and no other") {
  CHECK(posix_shm("abc").name() == "/abc");
  CHECK(posix_shm("/abc").name() == "/abc");
  CHECK(posix_shm(std::string(255, 'x')).name().size() == 256);
}

TEST_CASE("invalid names are refused before anything is created") {
  test::names names;
  for (const std::string& bad :
       {std::string(), std::string("/"), std::string("a/b"), std::string("/a/b"),
        std::string("//a"), std::string("."), std::string(".."), std::string(256, 'x'),
        std::string("a\0b", 3)}) {
    CAPTURE(bad);
    CHECK_THROWS_AS(posix_shm(bad), invalid_name);
  }
  CHECK_THROWS_AS(posix_shm(names("x/y")), invalid_name);
  CHECK_THROWS_AS(segment(create_only, posix_shm(names("x/y")), 4096), invalid_name);
  CHECK_THROWS_AS(segment(open_only, posix_shm(names("x") + std::string(300, 'y'))), invalid_name);
  CHECK_THROWS_AS(file(""), invalid_name);
  CHECK_THROWS_AS(file(std::string("/tmp/a\0b", 8)), invalid_name);
  CHECK(names.left().empty());
}

TEST_CASE("a created segment has mode 0600 whatever the umask") {
  test::names names;
  for (mode_t mask : {mode_t(0), mode_t(022), mode_t(077), mode_t(0777)}) {
    const mode_t old = ::umask(mask);
    const std::string name = names("mode" + std::to_string(mask));
    {
      segment s(create_only, posix_shm(name), 4096);
      struct stat st {};
      REQUIRE(::stat(("/dev/shm" + name).c_str(), &st) == 0);
      CHECK((st.st_mode & 07777) == 0600);
      CHECK(st.st_size == 4096);
      CHECK(remove(posix_shm(name)));
    }
    ::umask(old);
  }
  CHECK(names.left().empty());
}

TEST_CASE("creation is exclusive and leaves the existing segment intact") {
  test::names names;
  const auto name = names("excl");
  segment first(create_only, posix_shm(name), 8192);
  std::memset(first.data(), 7, 8192);
  CHECK_THROWS_AS(segment(create_only, posix_shm(name), 4096), already_exists);
  segment again(open_only, posix_shm(name));
  CHECK(again.size() == 8192);
  CHECK(again.data()[8191] == std::byte{7});
  CHECK(remove(posix_shm(name)));
  CHECK_FALSE(remove(posix_shm(name)));
  CHECK(names.left().empty());
}

TEST_CASE("opening a missing segment throws not_found") {
  test::names names;
  CHECK_THROWS_AS(segment(open_only, posix_shm(names("missing"))), not_found);
  CHECK_THROWS_WITH(segment(open_only, posix_shm(names("missing"))),
                    Catch::Contains(names("missing")) && Catch::Contains("does not exist"));
  CHECK(names.left().empty());
}

TEST_CASE("opening maps the object's real size, and an empty object is not ready") {
  test::names names;
  const auto name = names("size");
  const int fd = ::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  REQUIRE(fd >= 0);
  CHECK_THROWS_AS(segment(open_only, posix_shm(name)), not_ready);
  REQUIRE(::ftruncate(fd, 12345) == 0);
  {
    segment s(open_only, posix_shm(name));
    CHECK(s.size() == 12345);
  }
  ::close(fd);
  CHECK(remove(posix_shm(name)));
  CHECK(names.left().empty());
}

TEST_CASE("a zero-byte segment is refused and leaves nothing") {
  test::names names;
  CHECK_THROWS_AS(segment(create_only, posix_shm(names("zero")), 0), invalid_shape);
  CHECK_THROWS_AS(segment(create_only, anonymous{}, 0), invalid_shape);
  CHECK(names.left().empty());
}

TEST_CASE("a read-only segment is mapped without write permission", "[segv]") {
  test::names names;
  const auto name = names("ro");
  segment rw(create_only, posix_shm(name), 4096);
  rw.data()[0] = std::byte{42};
  segment ro(open_only, posix_shm(name), access_mode::read_only);
  CHECK_FALSE(ro.writable());
  CHECK(ro.data()[0] == std::byte{42});
  const int status = test::in_child([&] {
    ro.data()[0] = std::byte{1};  // must fault
    return 0;
  });
  CHECK(test::killed_by(status, SIGSEGV));
  CHECK(rw.data()[0] == std::byte{42});
  CHECK(remove(posix_shm(name)));
  CHECK(names.left().empty());
}

TEST_CASE("anonymous memory is shared with fork children") {
  segment s(create_only, anonymous{}, 4096);
  CHECK(s.name().empty());
  const int status = test::in_child([&] {
    s.data()[100] = std::byte{9};
    return 0;
  });
  CHECK(test::exited_with(status, 0));
  CHECK(s.data()[100] == std::byte{9});
}

TEST_CASE("a file backing persists, has mode 0600 and is opened by path") {
  char dir[] = "/tmp/shmarray_test_XXXXXX";
  REQUIRE(::mkdtemp(dir));
  const std::string path = std::string(dir) + "/array.shm";
  const mode_t old = ::umask(0);
  {
    segment s(create_only, file(path), 10000);
    std::memset(s.data(), 3, 10000);
  }
  ::umask(old);
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0600);
  CHECK(st.st_size == 10000);
  {
    segment s(open_only, file(path), access_mode::read_only);
    CHECK(s.size() == 10000);
    CHECK(s.data()[9999] == std::byte{3});
  }
  CHECK_THROWS_AS(segment(create_only, file(path), 100), already_exists);
  CHECK(remove(file(path)));
  CHECK_THROWS_AS(segment(open_only, file(path)), not_found);
  CHECK_THROWS_AS(segment(create_only, file(std::string(dir) + "/no/such/dir"), 100), not_found);
  CHECK(::rmdir(dir) == 0);
}

TEST_CASE("prefault populates the page tables up front") {
  test::names names;
  const std::size_t size = 64 * 4096;
  segment lazy(create_only, posix_shm(names("lazy")), size);
  map_options o;
  o.prefault = true;
  segment eager(create_only, posix_shm(names("eager")), size, o);
  segment eager_anon(create_only, anonymous{}, size, o);
  CHECK(detail::mapping_kib(lazy.data(), {"Rss"}) == 0);
  CHECK(detail::mapping_kib(eager.data(), {"Rss"}) * 1024 == size);
  CHECK(detail::mapping_kib(eager_anon.data(), {"Rss"}) * 1024 == size);
  segment eager_ro(open_only, posix_shm(names("eager")), access_mode::read_only, o);
  CHECK(detail::mapping_kib(eager_ro.data(), {"Rss"}) * 1024 == size);
  remove(posix_shm(names("lazy")));
  remove(posix_shm(names("eager")));
  CHECK(names.left().empty());
}

TEST_CASE("huge-page advice reports what the system allows and what took effect") {
  test::names names;
  map_options o;
  o.huge_pages = true;
  o.prefault = true;
  const std::size_t size = 8u << 20;
  segment s(create_only, posix_shm(names("huge")), size, o);
  segment plain(create_only, anonymous{}, 4096);
  CHECK(plain.huge_pages() == huge_pages_status::not_requested);
  // /dev/shm's own mount decides (its huge= option), not shmem_enabled.
  const int shm = ::open("/dev/shm", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  REQUIRE(shm >= 0);
  const auto setting = detail::huge_pages_setting(shm, false);
  ::close(shm);
  CHECK(s.huge_pages() == setting);
  if (setting == huge_pages_status::unavailable) CHECK(s.huge_page_bytes() == 0);
  CHECK(s.huge_page_bytes() <= size);
  remove(posix_shm(names("huge")));
  CHECK(names.left().empty());
}

namespace {

// In a private tmpfs mounted over `where` with huge=`mode`: makes an 8 MiB
// segment by `make(map_options, initial_bytes)` with and without huge pages
// asked for, writes every page, and says what each got. Exit codes: 0 as
// `expect` and the bytes (without, with) want; 77 where no tmpfs can be
// mounted or the system's shmem_enabled overrides every mount.
template <class Make>
test::namespace_run huge_pages_in(const char* where, const std::string& mode,
                                  huge_pages_status expect, bool without, bool with, Make&& make) {
  const std::string options = "64m,huge=" + mode;
  return test::in_small_tmpfs(where, options.c_str(), [&](auto say) {
    const auto system = detail::shmem_enabled_mode();
    if (system.empty() || system == "deny" || system == "force") {
      say("shmem_enabled is [" + system + "], which overrides every mount");
      return 77;
    }
    const std::size_t size = 8u << 20;
    std::vector<unsigned char> bytes(size / 2);
    for (std::size_t i = 0; i < bytes.size(); ++i)
      bytes[i] = static_cast<unsigned char>(i * 7);
    detail::initial_bytes init;
    init.data = bytes.data();
    init.size = bytes.size();
    int code = 0;
    for (const bool asked : {false, true})
      for (const bool filled : {true, false}) {  // from_array's path, and from_shape's
        map_options o;
        o.huge_pages = asked;
        segment s = make(o, filled ? init : detail::initial_bytes{}, asked ? "with" : "without");
        auto* p = reinterpret_cast<unsigned char*>(s.data());
        const std::size_t head = filled ? bytes.size() : 0;
        if (std::memcmp(p, bytes.data(), head) != 0 || p[size - 1] != 0) {
          say("the initial bytes are not what was written; ");
          code = 1;
        }
        std::memset(p + head, 1, size - head);
        const auto status = s.huge_pages();
        const std::size_t got = s.huge_page_bytes();
        say(std::string(asked ? "asked" : "not asked") + (filled ? ", filled" : ", zeros") + ": " +
            std::to_string(got >> 20) + " MiB huge; ");
        if (asked && status != expect) {
          say("status " + std::to_string(int(status)) + " not " + std::to_string(int(expect)) +
              "; ");
          code = 2;
        }
        if (!asked && status != huge_pages_status::not_requested) code = 3;
        if ((got > 0) != (asked ? with : without)) code = 4;
      }
    return code;
  });
}

}  // namespace

TEST_CASE("huge pages follow the tmpfs mount a named segment lives on") {
  struct expectation {
    const char* mode;
    huge_pages_status status;
    bool without, with;  // whether each gets huge pages
  };
  // As measured on Debian 12 (6.1): never none; advise only when advised,
  // which needs the advice before the pages are reserved; always and
  // within_size (a segment is sized before it is mapped) always.
  for (const auto& e : {expectation{"never", huge_pages_status::unavailable, false, false},
                        expectation{"advise", huge_pages_status::advised, false, true},
                        expectation{"always", huge_pages_status::always, true, true},
                        expectation{"within_size", huge_pages_status::always, true, true}}) {
    INFO("huge=" << e.mode);
    const auto run =
        huge_pages_in("/dev/shm", e.mode, e.status, e.without, e.with,
                      [](const map_options& o, detail::initial_bytes init, const char* tail) {
                        const std::string name = std::string("/huge_") + tail;
                        segment s(create_only, posix_shm(name), 8u << 20, o, init);
                        posix_shm(name).remove();
                        return s;
                      });
    if (run.skipped()) return;
    INFO(run.said);
    CHECK(run.ok());
  }
}

TEST_CASE("huge pages follow the tmpfs mount a file backing lives on") {
  char dir[] = "/tmp/shmarray_huge_XXXXXX";
  REQUIRE(::mkdtemp(dir));
  const std::string d = dir;
  const auto run =
      huge_pages_in(dir, "advise", huge_pages_status::advised, false, true,
                    [&](const map_options& o, detail::initial_bytes init, const char* tail) {
                      const std::string path = d + "/" + tail;
                      segment s(create_only, file(path), 8u << 20, o, init);
                      file(path).remove();
                      return s;
                    });
  ::rmdir(dir);
  if (run.skipped()) return;
  INFO(run.said);
  CHECK(run.ok());
}

TEST_CASE("huge pages asked for on a full huge=advise mount are out_of_space and leave nothing") {
  const auto run = test::in_small_tmpfs("/dev/shm", "4m,huge=advise", [](auto say) {
    map_options o;
    o.huge_pages = true;
    try {
      segment s(create_only, posix_shm("/shmarray_full_huge"), 8u << 20, o);
      say("created an 8 MiB segment in a 4 MiB /dev/shm");
      return 1;
    } catch (const out_of_space& e) {
      say(e.what());
      if (e.bytes_needed() != (8u << 20)) return 2;
    }
    for (const auto& n : test::in_shm())
      say("left: " + n + "; ");
    if (!test::in_shm().empty()) return 3;
    struct statvfs fs {};  // nothing left, not even unnamed pages
    if (::statvfs("/dev/shm", &fs) != 0) return 4;
    say("free " + std::to_string(fs.f_bfree) + " of " + std::to_string(fs.f_blocks));
    return fs.f_bfree == fs.f_blocks ? 0 : 5;
  });
  if (run.skipped()) return;
  INFO(run.said);
  CHECK(run.ok());
}

TEST_CASE("a full /dev/shm is out_of_space at creation, naming the sizes, leaving nothing") {
  const auto run = test::in_small_tmpfs("/dev/shm", "1m", [](auto say) {
    try {
      segment s(create_only, posix_shm("/shmarray_full"), 4u << 20);
      say("created a 4 MiB segment in a 1 MiB /dev/shm");
      return 1;
    } catch (const out_of_space& e) {
      say(e.what());
      if (e.bytes_needed() != (4u << 20) || e.bytes_available() > (1u << 20)) return 2;
      if (!std::strstr(e.what(), "--shm-size") || !std::strstr(e.what(), "file backing")) return 3;
    }
    return test::shm_names("shmarray").empty() ? 0 : 4;
  });
  if (run.skipped()) return;
  INFO(run.said);
  CHECK(run.ok());
}

TEST_CASE("a full file system is out_of_space for a file backing, leaving nothing") {
  char dir[] = "/tmp/shmarray_full_XXXXXX";
  REQUIRE(::mkdtemp(dir));
  const std::string path = std::string(dir) + "/big.shm";
  const auto run = test::in_small_tmpfs(dir, "1m", [&](auto say) {
    try {
      segment s(create_only, file(path), 4u << 20);
      say("created a 4 MiB file in a 1 MiB file system");
      return 1;
    } catch (const out_of_space& e) {
      say(e.what());
      if (!std::strstr(e.what(), "its file system has")) return 2;
      if (e.bytes_needed() != (4u << 20)) return 3;
    }
    return ::access(path.c_str(), F_OK) != 0 ? 0 : 4;
  });
  ::rmdir(dir);
  if (run.skipped()) return;
  INFO(run.said);
  CHECK(run.ok());
}

TEST_CASE("a FIFO under a segment's name is refused at once, never waited on") {
  test::names names;
  const std::string name = names("fifo");
  REQUIRE(::mkfifo(("/dev/shm" + name).c_str(), 0600) == 0);
  CHECK_THROWS_AS(segment(open_only, posix_shm(name), access_mode::read_only), access_denied);
  CHECK_THROWS_AS(segment(open_only, posix_shm(name)), access_denied);
  CHECK_THROWS_WITH(segment(open_only, posix_shm(name)), Catch::Contains("not a regular file"));
  CHECK(remove(posix_shm(name)));
  char dir[] = "/tmp/shmarray_fifo_XXXXXX";
  REQUIRE(::mkdtemp(dir));
  const std::string path = std::string(dir) + "/pipe";
  REQUIRE(::mkfifo(path.c_str(), 0600) == 0);
  CHECK_THROWS_AS(segment(open_only, file(path), access_mode::read_only), access_denied);
  CHECK(remove(file(path)));
  CHECK(::rmdir(dir) == 0);
  CHECK(names.left().empty());
}

TEST_CASE("a relative file path is made absolute when the backing is made") {
  char cwd[4096];
  REQUIRE(::getcwd(cwd, sizeof cwd));
  CHECK(file("a/b.shm").name() == std::string(cwd) + "/a/b.shm");
  CHECK(file("/x/y").name() == "/x/y");
}

TEST_CASE("remove_if_same leaves alone a name that now names another object") {
  test::names names;
  const auto name = names("reused");
  object_id gone;
  {
    segment first(create_only, posix_shm(name), 4096);
    gone = first.id();
    CHECK(gone.birth_ns != 0);  // tmpfs keeps birth times (Linux 5.x and later)
    CHECK(remove(posix_shm(name)));
    segment second(create_only, posix_shm(name), 4096);  // someone else, same name
    CHECK(second.inode() != gone.inode);
    CHECK_FALSE(posix_shm(name).remove_if_same(gone));
    CHECK(names.exists(name));
    CHECK(posix_shm(name).remove_if_same(second.id()));
  }
  CHECK_FALSE(posix_shm(name).remove_if_same(gone));
  CHECK(names.left().empty());
}

TEST_CASE("an inode number reused at the same path is not the object it was") {
  // ext4 gives a freed inode to the next file at once: the same path, device
  // and inode, another file. Its birth time tells them apart.
  char dir[] = "/tmp/shmarray_reuse_XXXXXX";
  REQUIRE(::mkdtemp(dir));
  const std::string path = std::string(dir) + "/data.bin";
  object_id first;
  {
    manager m;
    create_options keep;
    keep.keep = true;
    first = m.from_shape<float>({16}, file(path), keep).mapped_segment().id();
  }
  REQUIRE(::unlink(path.c_str()) == 0);
  // Birth times are only as fine as the file system's clock: ext4 takes the
  // kernel's coarse clock (4 ms steps on Linux 6.18 here), so a file made
  // within the same tick would have the same one. Wait out the tick.
  ::usleep(20000);
  int fd = -1;
  object_id second;
  for (int i = 0; i < 50; ++i) {  // until the file system hands the inode out again
    fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(detail::identify(fd, second));
    ::close(fd);
    if (second.inode == first.inode) break;
    ::unlink(path.c_str());
  }
  if (second.inode != first.inode) {
    std::printf("SHMARRAY-SKIP: this file system does not reuse the inode at once\n");
  } else {
    CHECK(second.birth_ns != first.birth_ns);
    CHECK_FALSE(file(path).remove_if_same(first));  // not the file it was
    CHECK(::access(path.c_str(), F_OK) == 0);
    CHECK(file(path).remove_if_same(second));
  }
  ::unlink(path.c_str());
  ::rmdir(dir);
}

TEST_CASE("anonymous memory is sealed at its size: nobody can shrink it under its mappers") {
  segment seg(create_only, anonymous{}, 3 * 4096);
  static_cast<char*>(static_cast<void*>(seg.data()))[0] = 1;
  // The memfd's descriptor is closed; only /proc/self/map_files reaches the
  // object now (root only), which is how another process would try.
  char path[128];
  const auto begin = reinterpret_cast<std::uintptr_t>(seg.data());
  std::snprintf(path, sizeof path, "/proc/self/map_files/%lx-%lx", (unsigned long)begin,
                (unsigned long)(begin + 3 * 4096));
  const int fd = ::open(path, O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    std::printf("SHMARRAY-SKIP: cannot open %s (%s): needs root\n", path, std::strerror(errno));
    return;
  }
  CHECK(::ftruncate(fd, 0) == -1);
  CHECK(errno == EPERM);
  CHECK(::ftruncate(fd, 8 * 4096) == -1);
  CHECK(errno == EPERM);
  struct stat st {};
  REQUIRE(::fstat(fd, &st) == 0);
  CHECK(st.st_size == 3 * 4096);
  ::close(fd);
  CHECK(static_cast<char*>(static_cast<void*>(seg.data()))[0] == 1);  // still mapped, no SIGBUS
}

namespace {

struct seen_at_creation {
  std::string path;
  bool named = true;  // whether the name existed when the hook ran
  dev_t dev = 0;
  ino_t ino = 0;
};

void note_creation(void* ctx, const detail::object_id& id) noexcept {
  auto* s = static_cast<seen_at_creation*>(ctx);
  struct stat st {};
  s->named = ::stat(s->path.c_str(), &st) == 0;
  s->dev = dev_t(id.device);
  s->ino = ino_t(id.inode);
}

}  // namespace

TEST_CASE("a new segment gets its name only once it is sized and filled") {
  test::names names;
  char dir[] = "/tmp/shmarray_seg_XXXXXX";
  REQUIRE(::mkdtemp(dir));
  const std::string path = std::string(dir) + "/a.bin";
  const std::string bytes(10000, 'x');
  auto check = [&](auto backing, const std::string& where) {
    seen_at_creation seen{where};
    detail::initial_bytes init{bytes.data(), bytes.size(), &note_creation, &seen};
    segment s(create_only, backing, 1 << 16, {}, init);
    // Registered (the hook) before the name exists, where the file system
    // makes unnamed files (/dev/shm does; overlayfs before Linux 6.6 does
    // not, and the name is then made first).
    const std::string dir = where.substr(0, where.rfind('/'));
    const int probe = detail::open_unnamed(dir);
    if (probe >= 0) {
      ::close(probe);
      CHECK_FALSE(seen.named);
    }
    struct stat st {};
    REQUIRE(::stat(where.c_str(), &st) == 0);
    CHECK(st.st_size == 1 << 16);  // named at its full size, never seen empty
    CHECK(st.st_ino == seen.ino);  // the object the hook was told of
    CHECK(st.st_dev == seen.dev);
    CHECK((st.st_mode & 07777) == 0600);
    CHECK(std::memcmp(s.data(), bytes.data(), bytes.size()) == 0);
    // still exclusive: a second creation under the name fails, the first stays
    CHECK_THROWS_AS(segment(create_only, backing, 4096), already_exists);
    CHECK(::stat(where.c_str(), &st) == 0);
    CHECK(st.st_ino == seen.ino);
    backing.remove();
  };
  check(posix_shm(names("unnamed")), "/dev/shm" + names("unnamed"));
  check(shmarray::file(path), path);
  ::rmdir(dir);
  CHECK(names.left().empty());
}

TEST_CASE(
    "names are printable UTF-8: control characters and bytes that are not UTF-8 are refused") {
  for (const std::string& bad :
       {std::string("x\ny"), std::string("tab\there"), std::string("esc\x1b[31m"),
        std::string("del\x7f"), std::string("bad\xff"), std::string("c1\xc2\x9b"),
        std::string("overlong\xc0\xaf"), std::string("surrogate\xed\xa0\x80"),
        std::string("cut\xe2\x82"), std::string("big\xf4\x90\x80\x80")}) {
    CAPTURE(detail::escaped(bad));
    CHECK_THROWS_AS(posix_shm(bad), invalid_name);
    CHECK_THROWS_AS(ndarray<int>::attach(bad), invalid_name);
    try {
      posix_shm p(bad);
    } catch (const invalid_name& e) {
      const std::string what = e.what();
      CHECK(detail::unprintable_at(what) == std::string::npos);  // the message is escaped
      CHECK_THAT(what, Catch::Contains("at byte"));
    }
  }
  for (const std::string& good : {std::string("caf\xc3\xa9"), std::string("a b"),
                                  std::string("\xe2\x82\xac"), std::string("\xf0\x9f\x90\x8d")})
    CHECK_NOTHROW(posix_shm(good));
  // Semaphores' names: skipped by listings, so never a segment's.
  CHECK_THROWS_AS(segment(create_only, posix_shm("/sem.frames"), 4096), invalid_name);
  // Owner tokens' names: a segment made under one would pass for a token.
  CHECK_THROWS_AS(segment(create_only, posix_shm("/.shmarray-owner-00000000deadbeef"), 4096),
                  invalid_name);
  CHECK(detail::escaped("x\ny a\\b\x1b\xff\xc2\x9b\xc3\xa9") ==
        "x\\ny\\ a\\\\b\\033\\377\\302\\233\xc3\xa9");
  CHECK(detail::json_quoted("x\ny\"\xff\x7f\xc3\xa9") == "\"x\\ny\\\"\\udcff\\u007f\xc3\xa9\"");
}

TEST_CASE("no inode left in /dev/shm is out_of_space, as no byte left is") {
  const auto run = test::in_small_tmpfs("/dev/shm", "1m,nr_inodes=8", [](auto say) {
    for (int i = 0;; ++i) {  // take every inode there is
      const int fd =
          ::open(("/dev/shm/fill" + std::to_string(i)).c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600);
      if (fd < 0) break;
      ::close(fd);
    }
    try {
      segment s(create_only, posix_shm("/no_inode"), 4096);
      say("created a segment with no inode left");
      return 1;
    } catch (const out_of_space& e) {
      say(e.what());
      return std::strstr(e.what(), "inodes free") ? 0 : 2;
    } catch (const std::exception& e) {
      say(std::string("not out_of_space: ") + e.what());
      return 3;
    }
  });
  if (run.skipped()) return;
  INFO(run.said);
  CHECK(run.ok());
}
