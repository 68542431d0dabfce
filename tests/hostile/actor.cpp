// The other side of the hostile-user tests: what another local user (run
// as nobody through setpriv) does to shmarray's users, and an owner that
// runs as an ordinary user. Each mode runs until it is done or killed.
//
//   actor resize NAME          /dev/shm/NAME, 0644: a valid 1 MiB shmarray record, then
//                              shrunk to 4 KiB, grown and written again, for ever
//   actor forge NAME BYTES     /dev/shm/NAME, 0644: BYTES bytes, sparse (only sized), ending
//                              in a valid record of |u1 data (BYTES - 512 of them)
//   actor own N                N managed arrays of 1 MiB; prints their names and the
//                              helper's pid on one line, then waits to be killed
//   actor own-after NAME N     as own, after a creation under NAME (taken) failed, which
//                              named the owner's token and dropped it again
//   actor squat                waits for an owner token's name to go, makes it again
//                              (0644) and holds its exclusive lock, for ever
//   actor forge-token PATH...  a dead owner token (0644) whose journal names each PATH,
//                              a regular file, by its device, inode and birth time
//   actor swap DIR NAME TO     DIR/dK/NAME (K < 16) hard links of DIR/keep, named by a
//                              dead token's journal, while each dK swaps with a link to TO
//
// Exit 0 when done; a message and exit 1 when something failed.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <shmarray/detail/owner/wire.hpp>
#include <shmarray/shmarray.hpp>
#include <string>
#include <vector>

namespace {

using namespace shmarray;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "actor: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

// The last 512 bytes of a valid segment of `size` bytes holding |u1 (or
// |b1) data.
std::vector<std::byte> record_for(std::size_t size, bool bools = false) {
  std::vector<std::byte> seg(size);
  const std::size_t data = size - format::record_size;
  auto info = detail::new_info(bools ? dtype_of<bool>() : dtype_of<std::uint8_t>(), {data},
                               order::row_major, data, 1);
  detail::write_record(seg.data(), seg.size(), info, "/actor");
  return {seg.end() - std::ptrdiff_t(format::record_size), seg.end()};
}

int open_new(const std::string& name) {
  const std::string path = "/dev/shm/" + name;
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) fail("create " + path);
  ::fchmod(fd, 0644);  // readable by the victim whatever the umask
  return fd;
}

int resize(const std::string& name) {
  const std::size_t big = 1 << 20, small = 4096;
  const auto rec = record_for(big, true);  // bool data: a bool attach reads every byte
  const int fd = open_new(name);
  for (;;) {
    if (::ftruncate(fd, off_t(big)) != 0) fail("ftruncate");
    if (::pwrite(fd, rec.data(), rec.size(), off_t(big - rec.size())) != ssize_t(rec.size()))
      fail("pwrite");
    if (::ftruncate(fd, off_t(small)) != 0) fail("ftruncate");
  }
}

int forge(const std::string& name, std::size_t bytes) {
  const auto rec = record_for(bytes);
  const int fd = open_new(name);
  if (::ftruncate(fd, off_t(bytes)) != 0) fail("ftruncate");
  if (::pwrite(fd, rec.data(), rec.size(), off_t(bytes - rec.size())) != ssize_t(rec.size()))
    fail("pwrite");
  ::close(fd);
  return 0;
}

int own(std::size_t n, const std::string& taken = "") {
  manager m;
  if (!taken.empty()) {
    try {
      (void)m.from_shape<std::uint8_t>({16}, posix_shm(taken));
    } catch (const already_exists&) {  // the token was named, then dropped
    }
    ::usleep(300000);  // long enough for another user to take its name
  }
  std::vector<ndarray<std::uint8_t>> arrays;
  std::string line;
  for (std::size_t i = 0; i < n; ++i) {
    arrays.push_back(m.from_shape<std::uint8_t>({std::size_t(1) << 20}));
    line += arrays.back().name() + " ";
  }
  line += std::to_string(detail::owner::watchdog::get().helper_pid()) + "\n";
  std::fputs(line.c_str(), stdout);
  std::fflush(stdout);
  for (;;)
    ::pause();
}

// A dead owner token of this user's, at a fixed id, whose journal is
// `journal`: made as a real one is, its header naming the file itself.
void dead_token(const std::string& journal) {
  constexpr std::uint64_t id = 0xdeadbeefull;
  const std::string path = "/dev/shm" + detail::owner::token_name(id);
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) return;  // (it is there already)
  ::fchmod(fd, 0644);
  detail::object_id self;
  if (!detail::identify(fd, self)) fail("identify");
  std::string bytes;
  detail::owner::wire::header_record(bytes, id, self);
  bytes += journal;
  if (::write(fd, bytes.data(), bytes.size()) != ssize_t(bytes.size())) fail("write");
  ::close(fd);
}

std::string journal_naming(const std::vector<std::string>& paths, const detail::object_id& as) {
  std::string j;
  for (const auto& p : paths)
    detail::owner::wire::object_record(j, detail::owner::wire::op::add,
                                       detail::owner::wire::object_kind::file, p, as);
  return j;
}

int forge_token(const std::vector<std::string>& paths) {
  std::string j;
  for (const auto& p : paths) {  // anyone may learn these of a file it can reach
    struct statx sx {};
    if (::statx(AT_FDCWD, p.c_str(), AT_SYMLINK_NOFOLLOW, STATX_INO | STATX_BTIME, &sx) != 0)
      fail("statx " + p);
    detail::owner::wire::object_record(j, detail::owner::wire::op::add,
                                       detail::owner::wire::object_kind::file, p,
                                       {detail::device_of(sx), sx.stx_ino, detail::birth_of(sx)});
  }
  dead_token(j);
  return 0;
}

int swap(const std::string& dir, const std::string& name, const std::string& to) {
  const std::string keep = dir + "/keep";
  const int kfd = ::open(keep.c_str(), O_RDONLY | O_CLOEXEC);
  detail::object_id id;
  if (kfd < 0 || !detail::identify(kfd, id)) fail("identify " + keep);
  ::close(kfd);
  constexpr int k = 16;
  std::vector<std::string> paths;
  int real[k];
  for (int i = 0; i < k; ++i) {
    const std::string d = dir + "/d" + std::to_string(i), l = dir + "/l" + std::to_string(i);
    ::mkdir(d.c_str(), 0755);
    if (::symlink(to.c_str(), l.c_str()) != 0 && errno != EEXIST) fail("symlink");
    real[i] = ::open(d.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    for (int r = 0; r < 20; ++r)
      paths.push_back(d + "/" + name);
  }
  const std::string journal = journal_naming(paths, id);
  const std::string token = "/dev/shm" + detail::owner::token_name(0xdeadbeefull);
  ::setpgid(0, 0);      // one group: the test ends both at once
  if (::fork() == 0) {  // keeps the links and the token there, whatever gc removes
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    for (;;) {
      for (int i = 0; i < k; ++i)
        if (::faccessat(real[i], name.c_str(), F_OK, AT_SYMLINK_NOFOLLOW) != 0)
          ::linkat(AT_FDCWD, keep.c_str(), real[i], name.c_str(), 0);
      if (::access(token.c_str(), F_OK) != 0) dead_token(journal);
    }
  }
  for (;;)
    for (int i = 0; i < k; ++i) {
      const std::string d = dir + "/d" + std::to_string(i), l = dir + "/l" + std::to_string(i);
      ::renameat2(AT_FDCWD, d.c_str(), AT_FDCWD, l.c_str(), RENAME_EXCHANGE);
    }
}

int squat() {
  const int in = ::inotify_init1(IN_CLOEXEC);
  if (in < 0 || ::inotify_add_watch(in, "/dev/shm", IN_DELETE) < 0) fail("inotify");
  alignas(inotify_event) char buf[4096];
  for (;;) {
    const ssize_t n = ::read(in, buf, sizeof buf);
    if (n <= 0) fail("read");
    for (char* p = buf; p < buf + n;) {
      const auto* e = reinterpret_cast<const inotify_event*>(p);
      if (e->len && detail::owner::token_id_of(e->name)) {
        const std::string path = std::string("/dev/shm/") + e->name;
        const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd >= 0) {
          ::fchmod(fd, 0644);
          ::flock(fd, LOCK_EX);  // held for ever
          std::printf("squatted %s\n", e->name);
          std::fflush(stdout);
        }
      }
      p += sizeof(inotify_event) + e->len;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  try {
    if (mode == "resize" && argc == 3) return resize(argv[2]);
    if (mode == "forge" && argc == 4) return forge(argv[2], std::strtoull(argv[3], nullptr, 10));
    if (mode == "own" && argc == 3) return own(std::strtoull(argv[2], nullptr, 10));
    if (mode == "own-after" && argc == 4) return own(std::strtoull(argv[3], nullptr, 10), argv[2]);
    if (mode == "squat" && argc == 2) return squat();
    if (mode == "forge-token" && argc >= 3)
      return forge_token(std::vector<std::string>(argv + 2, argv + argc));
    if (mode == "swap" && argc == 5) return swap(argv[2], argv[3], argv[4]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "actor: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr,
               "usage: actor resize NAME | forge NAME BYTES | own N | own-after NAME N | squat | "
               "forge-token PATH... | swap DIR NAME TO\n");
  return 2;
}
