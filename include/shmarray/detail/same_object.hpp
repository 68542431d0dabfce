// shmarray internals: removing a name only while it names the object meant.
// A name can be reused, and so can an inode number (ext4 gives a freed one
// to the next file at once); a directory on the way can be swapped for a
// link by whoever can write its parent. So an object is known by its
// device, inode and birth time, and removed through a descriptor of its
// directory reached without following any link.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <string_view>

namespace shmarray::detail {

// What tells one object apart from any other, even one that later takes its
// name and its inode number.
struct object_id {
  std::uint64_t device = 0;
  std::uint64_t inode = 0;
  std::uint64_t birth_ns = 0;  // 0: the file system does not record it
};

inline std::uint64_t birth_of(const struct statx& sx) noexcept {
  if (!(sx.stx_mask & STATX_BTIME)) return 0;
  return std::uint64_t(sx.stx_btime.tv_sec) * 1000000000u + sx.stx_btime.tv_nsec;
}

inline std::uint64_t device_of(const struct statx& sx) noexcept {
  return std::uint64_t(makedev(sx.stx_dev_major, sx.stx_dev_minor));
}

// The identity of the open object `fd`; false where it cannot be examined.
// Where statx is refused (a seccomp profile that predates it), fstat says
// the device and inode, and the birth time is unknown.
// With `mode`, also its type and mode bits (st_mode), in the same call.
inline bool identify(int fd, object_id& out, mode_t* mode = nullptr) noexcept {
  struct statx sx {};
  if (::statx(fd, "", AT_EMPTY_PATH, STATX_INO | STATX_BTIME | STATX_TYPE | STATX_MODE, &sx) == 0) {
    out = {device_of(sx), sx.stx_ino, birth_of(sx)};
    if (mode) *mode = mode_t(sx.stx_mode);
    return true;
  }
  if (errno != EPERM && errno != ENOSYS) return false;
  struct stat st {};
  if (::fstat(fd, &st) != 0) return false;
  out = {std::uint64_t(st.st_dev), std::uint64_t(st.st_ino), 0};
  if (mode) *mode = st.st_mode;
  return true;
}

// A descriptor (O_PATH) of the directory `dir`, an absolute path, reached
// one component at a time without following a symbolic link; -1 with errno
// where a component is a link (ELOOP or ENOTDIR), missing, not a directory,
// "." or ".." (EINVAL), or cannot be reached.
inline int open_dir_nofollow(std::string_view dir) noexcept {
  if (dir.empty() || dir[0] != '/') {
    errno = EINVAL;
    return -1;
  }
  int fd = ::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
  for (std::size_t at = 1; fd >= 0 && at < dir.size();) {
    std::size_t end = dir.find('/', at);
    if (end == dir.npos) end = dir.size();
    const std::string part(dir.substr(at, end - at));
    at = end + 1;
    if (part.empty()) continue;
    int next = -1;
    if (part != "." && part != "..")
      next = ::openat(fd, part.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    else
      errno = EINVAL;
    const int err = errno;
    ::close(fd);
    errno = err;
    fd = next;
  }
  return fd;
}

// What came of unlink_if_same: removed; not there as the object meant (gone,
// another object, reached only through a link, not this user's); or not
// known, because something failed (no descriptor or memory left, an I/O
// error), so whatever named it must be kept for another try.
enum class removal { removed, not_there, failed };

inline bool transient(int err) noexcept {
  return err == EMFILE || err == ENFILE || err == ENOMEM || err == EIO || err == EINTR ||
         err == EAGAIN;
}

// Unlinks the regular file at `path` (absolute) only while it is `id`: the
// same device and inode, and the same birth time where `id` has one
// (without one, only where `birth_optional`); where `owner` is given, only
// a file of that user's. Never follows a link, in the path or at its end:
// the directory is reached without following any, and the name unlinked
// through it. With `dry_run`, says what it would do and does nothing.
inline removal unlink_if_same(const std::string& path, const object_id& id, bool birth_optional,
                              const uid_t* owner = nullptr, bool dry_run = false) noexcept {
  try {
    const auto slash = path.rfind('/');
    if (slash == std::string::npos || slash + 1 == path.size()) return removal::not_there;
    const std::string base = path.substr(slash + 1);
    const int dir = open_dir_nofollow(slash == 0 ? std::string_view("/")
                                                 : std::string_view(path).substr(0, slash));
    if (dir < 0) return transient(errno) ? removal::failed : removal::not_there;
    struct statx sx {};
    removal r = removal::not_there;
    if (::statx(dir, base.c_str(), AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS | STATX_BTIME, &sx) !=
        0) {
      if (transient(errno)) r = removal::failed;
    } else if (S_ISREG(sx.stx_mode) && device_of(sx) == id.device && sx.stx_ino == id.inode &&
               (id.birth_ns ? birth_of(sx) == id.birth_ns : birth_optional) &&
               (!owner || sx.stx_uid == *owner)) {
      if (dry_run || ::unlinkat(dir, base.c_str(), 0) == 0)
        r = removal::removed;
      else if (transient(errno))
        r = removal::failed;
    }
    ::close(dir);
    return r;
  } catch (...) {  // out of memory
    return removal::failed;
  }
}

}  // namespace shmarray::detail
