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
//
// Exit 0 when done; a message and exit 1 when something failed.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <shmarray/shmarray.hpp>
#include <string>
#include <vector>

namespace {

using namespace shmarray;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "actor: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

// The last 512 bytes of a valid segment of `size` bytes holding |u1 data.
std::vector<std::byte> record_for(std::size_t size) {
  std::vector<std::byte> seg(size);
  const std::size_t data = size - format::record_size;
  auto info = detail::new_info(dtype_of<std::uint8_t>(), {data}, order::row_major, data, 1);
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
  const auto rec = record_for(big);
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

int own(std::size_t n) {
  manager m;
  std::vector<ndarray<std::uint8_t>> arrays;
  std::string line;
  for (std::size_t i = 0; i < n; ++i) {
    arrays.push_back(m.from_shape<std::uint8_t>({std::size_t(1) << 20}));
    line += arrays.back().name() + " ";
  }
  line += std::to_string(detail::watchdog::get().helper_pid()) + "\n";
  std::fputs(line.c_str(), stdout);
  std::fflush(stdout);
  for (;;)
    ::pause();
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  try {
    if (mode == "resize" && argc == 3) return resize(argv[2]);
    if (mode == "forge" && argc == 4) return forge(argv[2], std::strtoull(argv[3], nullptr, 10));
    if (mode == "own" && argc == 3) return own(std::strtoull(argv[2], nullptr, 10));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "actor: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "usage: actor resize NAME | forge NAME BYTES | own N\n");
  return 2;
}
