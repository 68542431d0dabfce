// shmarray internals: errno values to shmarray's typed errors.
#pragma once

#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>

#include "../errors.hpp"

namespace shmarray::detail {

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

}  // namespace shmarray::detail
