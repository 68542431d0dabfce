// shmarray internals: reading a descriptor without mapping it.
#pragma once

#include <unistd.h>

#include <cerrno>
#include <cstddef>

namespace shmarray::detail {

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

}  // namespace shmarray::detail
