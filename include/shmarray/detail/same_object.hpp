// shmarray internals: removing a name only while it names the object meant.
// A name can be reused, and so can an inode number (ext4 gives a freed one
// to the next file at once); a directory on the way can be swapped for a
// link by whoever can write its parent. So an object is known by its
// device, inode and birth time, and removed through a descriptor of its
// directory reached without following any link.
#pragma once

#include <fcntl.h>
#include <sys/fsuid.h>
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
inline bool identify(int fd, object_id& out) noexcept {
  struct statx sx {};
  if (::statx(fd, "", AT_EMPTY_PATH, STATX_INO | STATX_BTIME, &sx) != 0) return false;
  out = {device_of(sx), sx.stx_ino, birth_of(sx)};
  return true;
}

// A descriptor (O_PATH) of the directory `dir`, an absolute path, reached
// one component at a time without following a symbolic link; -1 where a
// component is a link, missing, not a directory, "." or "..".
inline int open_dir_nofollow(std::string_view dir) noexcept {
  if (dir.empty() || dir[0] != '/') return -1;
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
    ::close(fd);
    fd = next;
  }
  return fd;
}

// Acts with another user's file-system rights (as root only): what is
// removed for that user's sake is what that user could remove.
class as_file_user {
 public:
  explicit as_file_user(uid_t uid) noexcept {
    if (::geteuid() != 0 || uid == 0) return;
    before_ = uid_t(::setfsuid(uid));
    changed_ = uid_t(::setfsuid(uid_t(-1))) == uid;
    if (!changed_) (void)::setfsuid(before_);
  }
  as_file_user(const as_file_user&) = delete;
  as_file_user& operator=(const as_file_user&) = delete;
  ~as_file_user() {
    if (changed_) (void)::setfsuid(before_);
  }

 private:
  uid_t before_ = 0;
  bool changed_ = false;
};

// Whose a name's removal is done for: any user (the caller's own records),
// or only objects of `uid`, with that user's rights (a record from a file
// another user could have written).
struct on_behalf {
  bool any = true;
  uid_t uid = 0;
};

// Unlinks the regular file at `path` (absolute) only while it is `id`:
// the same device and inode, and the same birth time where `id` has one
// (without one, only where `birth_optional`: tmpfs, whose inode numbers are
// not reused); for `who`, only a file of that user's. Never follows a link,
// in the path or at its end. True if removed.
inline bool unlink_if_same(const std::string& path, const object_id& id, on_behalf who = {},
                           bool birth_optional = false) noexcept {
  try {
    const auto slash = path.rfind('/');
    if (slash == std::string::npos || slash + 1 == path.size()) return false;
    const std::string base = path.substr(slash + 1);
    const int dir = open_dir_nofollow(slash == 0 ? std::string_view("/")
                                                 : std::string_view(path).substr(0, slash));
    if (dir < 0) return false;
    struct statx sx {};
    bool same = ::statx(dir, base.c_str(), AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS | STATX_BTIME,
                        &sx) == 0 &&
                S_ISREG(sx.stx_mode) && device_of(sx) == id.device && sx.stx_ino == id.inode &&
                (id.birth_ns ? birth_of(sx) == id.birth_ns : birth_optional) &&
                (who.any || sx.stx_uid == who.uid);
    if (same) {
      const as_file_user rights(who.any ? ::geteuid() : who.uid);
      same = ::unlinkat(dir, base.c_str(), 0) == 0;
    }
    ::close(dir);
    return same;
  } catch (...) {  // out of memory: nothing removed
    return false;
  }
}

}  // namespace shmarray::detail
