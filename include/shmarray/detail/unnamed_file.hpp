// shmarray internals: files made unnamed (O_TMPFILE) and named once ready.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>

namespace shmarray::detail {

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

}  // namespace shmarray::detail
