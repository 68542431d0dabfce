// shmarray internals: errno to typed errors, and small POSIX helpers.
#pragma once

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include "../errors.hpp"

namespace shmarray::detail {

// Runs a callable on scope exit unless dismissed: undoes half-done creation.
template <class F>
class scope_exit {
 public:
  explicit scope_exit(F f) : f_(std::move(f)) {}
  scope_exit(const scope_exit&) = delete;
  scope_exit& operator=(const scope_exit&) = delete;
  ~scope_exit() {
    if (armed_) f_();
  }
  void dismiss() noexcept { armed_ = false; }

 private:
  F f_;
  bool armed_ = true;
};

inline std::string errno_text(int err) {
  char buf[256];
  // GNU strerror_r returns the text; it may or may not use buf.
  return ::strerror_r(err, buf, sizeof buf);
}

// Throws the typed error that fits an errno value from an operation on a segment.
[[noreturn]] inline void throw_os_error(int err, std::string_view name, std::string_view doing) {
  std::string what = message(name, std::string(doing) + ": " + errno_text(err));
  switch (err) {
    case ENOENT:
      throw not_found(message(name, "does not exist"));
    case EEXIST:
      throw already_exists(message(name, "already exists"));
    case EACCES:
    case EPERM:
    case EROFS:
      throw access_denied(what);
    case ENAMETOOLONG:
      throw invalid_name(what);
    case EMFILE:
      throw system_error(what +
                             " (this process has as many descriptors open as its limit, "
                             "ulimit -n, allows; shmarray keeps none per segment)",
                         err);
    case ENFILE:
      throw system_error(what + " (the system's limit on open files, fs.file-max, is reached)",
                         err);
    default:
      throw system_error(what, err);
  }
}

// Reads n bytes at `offset` into p, as many reads as it takes: the bytes
// read, fewer only at the end of the object (or on an error).
inline std::size_t pread_full(int fd, void* p, std::size_t n, off_t offset) noexcept {
  std::size_t done = 0;
  while (done < n) {
    const ssize_t got = ::pread(fd, static_cast<char*>(p) + done, n - done, offset + off_t(done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    done += std::size_t(got);
  }
  return done;
}

// Where a segment's bytes are reserved, for telling the way out when they run out.
enum class space { dev_shm, file_system, memory };

// The way out of a full file system, for the messages below.
inline std::string way_out(space where) {
  switch (where) {
    case space::dev_shm:
      return "free space in /dev/shm (ls -l /dev/shm shows what holds it), give the container more "
             "shared memory (docker run --shm-size=...), or use a file backing";
    case space::file_system:
      return "free space there or choose another directory";
    case space::memory:
      break;
  }
  return "a memory limit of this process or its cgroup?";
}

// The out_of_space error for `needed` bytes that could not be reserved on the
// file system behind `fd`, with the way out. `lead` says what needs them.
[[noreturn]] inline void throw_out_of_space(int fd, std::string_view name, std::size_t needed,
                                            space where, std::string_view lead = "needs ") {
  struct statvfs st {};
  std::size_t avail = 0;
  if (where != space::memory && ::fstatvfs(fd, &st) == 0)
    avail = std::size_t(st.f_bavail) * std::size_t(st.f_frsize);
  std::string text = std::string(lead) + std::to_string(needed) + " bytes, but ";
  switch (where) {
    case space::dev_shm:
      text += "/dev/shm has " + std::to_string(avail) + " bytes free; " + way_out(where);
      break;
    case space::file_system:
      text += "its file system has " + std::to_string(avail) + " bytes free; " + way_out(where);
      break;
    case space::memory:
      text += "that much memory could not be reserved (" + way_out(where) + ")";
      break;
  }
  throw out_of_space(message(name, text), needed, avail);
}

// The out_of_space error for an object that could not be made at all in
// `dir` (ENOSPC before any byte: no free inodes, or no free block).
[[noreturn]] inline void throw_cannot_create(const std::string& dir, std::string_view name,
                                             space where) {
  struct statvfs st {};
  std::size_t avail = 0, inodes = 0;
  if (::statvfs(dir.c_str(), &st) == 0) {
    avail = std::size_t(st.f_bavail) * std::size_t(st.f_frsize);
    inodes = std::size_t(st.f_favail);
  }
  throw out_of_space(message(name, "cannot be created: " + dir + " has room for no more files (" +
                                       std::to_string(avail) + " bytes and " +
                                       std::to_string(inodes) + " inodes free); " + way_out(where)),
                     0, avail);
}

// Unnamed files, named once they are ready: a process killed before the
// name exists leaves nothing behind (the file goes with its last
// descriptor), so creation has no window in which a name can leak.
//
// An unnamed regular file (O_TMPFILE, mode 0600) in directory `dir`; -1 with
// errno where the kernel or file system cannot make one.
inline int open_unnamed(const std::string& dir) noexcept {
#ifdef O_TMPFILE
  return ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
#else
  errno = EOPNOTSUPP;
  return -1;
#endif
}

// Gives an unnamed file the name `path`, never replacing one (EEXIST):
// 0, or -1 with errno. AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH before Linux
// 6.10; /proc/self/fd works for anyone where /proc is mounted.
inline int link_unnamed(int fd, const std::string& path) noexcept {
  if (::linkat(fd, "", AT_FDCWD, path.c_str(), AT_EMPTY_PATH) == 0) return 0;
  if (errno == EEXIST) return -1;
  char proc[40];
  std::snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
  return ::linkat(AT_FDCWD, proc, AT_FDCWD, path.c_str(), AT_SYMLINK_FOLLOW);
}

inline std::size_t page_size() noexcept {
  static const std::size_t size = std::size_t(::sysconf(_SC_PAGESIZE));
  return size;
}

// The kernel's boot id (a UUID that changes on every boot) as 16 bytes;
// all zero where the kernel does not provide one.
inline std::array<std::uint8_t, 16> boot_id() {
  static const std::array<std::uint8_t, 16> id = [] {
    std::array<std::uint8_t, 16> out{};
    std::FILE* f = std::fopen("/proc/sys/kernel/random/boot_id", "re");
    if (!f) return out;
    char text[64] = {};
    const std::size_t n = std::fread(text, 1, sizeof text - 1, f);
    std::fclose(f);
    std::size_t k = 0;
    for (std::size_t i = 0; i + 1 < n && k < out.size(); ++i) {
      auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
      };
      const int hi = hex(text[i]), lo = hex(text[i + 1]);
      if (hi < 0) continue;
      if (lo < 0) break;
      out[k++] = std::uint8_t(hi * 16 + lo);
      ++i;
    }
    if (k != out.size()) out = {};
    return out;
  }();
  return id;
}

// The sum of the named fields (in KiB) of the mapping that starts at
// `start`, read from /proc/self/smaps; 0 where there is no such mapping.
inline std::size_t mapping_kib(const void* start, std::initializer_list<std::string_view> fields) {
  std::FILE* f = std::fopen("/proc/self/smaps", "re");
  if (!f) return 0;
  char header[32];
  const int hlen =
      std::snprintf(header, sizeof header, "%lx-", reinterpret_cast<unsigned long>(start));
  char line[512];
  bool in_mapping = false;
  std::size_t kib = 0;
  while (std::fgets(line, sizeof line, f)) {
    // A mapping's header starts with its lower-case hex address; its fields
    // start with a capitalised key.
    if ((line[0] >= '0' && line[0] <= '9') || (line[0] >= 'a' && line[0] <= 'f')) {
      in_mapping = std::strncmp(line, header, std::size_t(hlen)) == 0;
      continue;
    }
    if (!in_mapping) continue;
    const char* colon = std::strchr(line, ':');
    if (!colon) continue;
    const std::string_view key(line, std::size_t(colon - line));
    for (const auto field : fields)
      if (key == field) kib += std::strtoull(colon + 1, nullptr, 10);
  }
  std::fclose(f);
  return kib;
}

// CRC-32 as zlib computes it (reflected polynomial 0xEDB88320, initial and
// final XOR 0xFFFFFFFF), so Python's zlib.crc32 gives the same value.
// Slicing by 8: eight bytes per step through eight tables.
inline std::uint32_t crc32(const void* data, std::size_t n) noexcept {
  using tables = std::array<std::array<std::uint32_t, 256>, 8>;
  static const tables t = [] {
    tables x{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k)
        c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      x[0][i] = c;
    }
    for (std::size_t k = 1; k < 8; ++k)
      for (std::size_t i = 0; i < 256; ++i)
        x[k][i] = (x[k - 1][i] >> 8) ^ x[0][x[k - 1][i] & 0xFFu];
    return x;
  }();
  const auto* p = static_cast<const std::uint8_t*>(data);
  std::uint32_t c = 0xFFFFFFFFu;
  for (; n >= 8; n -= 8, p += 8) {
    const std::uint32_t lo = c ^ (std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 |
                                  std::uint32_t(p[2]) << 16 | std::uint32_t(p[3]) << 24);
    c = t[7][lo & 0xFFu] ^ t[6][(lo >> 8) & 0xFFu] ^ t[5][(lo >> 16) & 0xFFu] ^ t[4][lo >> 24] ^
        t[3][p[4]] ^ t[2][p[5]] ^ t[1][p[6]] ^ t[0][p[7]];
  }
  for (; n > 0; --n)
    c = t[0][(c ^ *p++) & 0xFFu] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

// Little-endian loads and stores, whatever the host.
template <class U>
inline U load_le(const void* p) noexcept {
  const auto* b = static_cast<const std::uint8_t*>(p);
  U v = 0;
  for (std::size_t i = 0; i < sizeof(U); ++i)
    v = U(v | (U(b[i]) << (8 * i)));
  return v;
}
template <class U>
inline void store_le(void* p, U v) noexcept {
  auto* b = static_cast<std::uint8_t*>(p);
  for (std::size_t i = 0; i < sizeof(U); ++i)
    b[i] = std::uint8_t(v >> (8 * i));
}

}  // namespace shmarray::detail
