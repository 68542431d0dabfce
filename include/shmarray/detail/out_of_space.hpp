// shmarray internals: the out_of_space errors of a full file system, with the way out.
#pragma once

#include <sys/statvfs.h>

#include <cstddef>
#include <string>
#include <string_view>

#include "../errors.hpp"

namespace shmarray::detail {

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

}  // namespace shmarray::detail
