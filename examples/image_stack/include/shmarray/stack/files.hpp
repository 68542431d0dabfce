// shmarray-stack: files that another local user cannot redirect. Outputs
// appear whole or not at all: each is written to a new file at an
// unpredictable name (O_CREAT|O_EXCL|O_NOFOLLOW) in a directory held open by
// descriptor, then renamed over its name, so a link planted at either name
// is never followed. Inputs are opened only when they are regular files.
#pragma once

#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

namespace shmarray::stack {

// A file or directory that cannot be used, with the reason.
class file_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

// A descriptor, closed when it goes.
class unique_fd {
 public:
  unique_fd() = default;
  explicit unique_fd(int fd) : fd_(fd) {}
  unique_fd(unique_fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  unique_fd& operator=(unique_fd&& o) noexcept {
    if (this != &o) reset(std::exchange(o.fd_, -1));
    return *this;
  }
  ~unique_fd() { reset(); }
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  // Gives the descriptor up: the caller closes it.
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// `bytes` random bytes from getrandom(2), as 2 x bytes lowercase hex digits.
inline std::string random_hex(std::size_t bytes) {
  unsigned char b[32];
  if (bytes > sizeof b) bytes = sizeof b;
  for (std::size_t got = 0; got < bytes;) {
    const ssize_t n = ::getrandom(b + got, bytes - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw file_error(std::string("getrandom failed: ") + std::strerror(errno));
    got += std::size_t(n);
  }
  std::string out;
  for (std::size_t i = 0; i < bytes; ++i) {
    out += "0123456789abcdef"[b[i] >> 4];
    out += "0123456789abcdef"[b[i] & 15];
  }
  return out;
}

// What kind of file a mode says, for messages.
inline const char* file_kind(mode_t m) {
  return S_ISREG(m)    ? "a regular file"
         : S_ISDIR(m)  ? "a directory"
         : S_ISFIFO(m) ? "a FIFO"
         : S_ISCHR(m)  ? "a character device"
         : S_ISBLK(m)  ? "a block device"
         : S_ISSOCK(m) ? "a socket"
         : S_ISLNK(m)  ? "a symbolic link"
                       : "a special file";
}

// The components of a path, in order ("" and "." dropped).
inline std::deque<std::string> components(const std::string& path) {
  std::deque<std::string> out;
  std::size_t at = 0;
  while (at <= path.size()) {
    const std::size_t slash = std::min(path.find('/', at), path.size());
    std::string c = path.substr(at, slash - at);
    if (!c.empty() && c != ".") out.push_back(std::move(c));
    at = slash + 1;
  }
  return out;
}

// Opens the directory `path`, making what is missing (mode 0777 less the
// umask, as mkdir -p does) when `create`. A symbolic link on the way,
// the last component included, is followed only when the caller or root
// owns it: another user's link, planted in a directory they can write, is
// refused (the rule fs.protected_symlinks applies in sticky directories,
// here applied everywhere, since a group-writable project directory is not
// sticky). Each step is taken by descriptor, so nothing is swapped between
// a check and its use. Throws file_error naming the path and the reason.
inline unique_fd open_directory(const std::string& path, bool create) {
  if (path.empty()) throw file_error("an empty path is not a directory");
  auto root = [] { return unique_fd(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC)); };
  unique_fd cur =
      path[0] == '/' ? root() : unique_fd(::open(".", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!cur) throw file_error(path + ": " + std::strerror(errno));
  std::deque<std::string> todo = components(path);
  std::string walked = path[0] == '/' ? "/" : "";  // the path as followed, for messages
  int links = 0;
  while (!todo.empty()) {
    const std::string c = std::move(todo.front());
    todo.pop_front();
    const std::string here = walked.empty()         ? c
                             : walked.back() == '/' ? walked + c
                                                    : walked + "/" + c;
    unique_fd next(::openat(cur.get(), c.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    if (!next && errno == ENOENT && create) {
      if (::mkdirat(cur.get(), c.c_str(), 0777) != 0 && errno != EEXIST)
        throw file_error(here + " cannot be made: " + std::strerror(errno));
      next.reset(::openat(cur.get(), c.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    }
    if (!next) throw file_error(here + ": " + std::strerror(errno));
    struct stat sb {};
    if (::fstat(next.get(), &sb) != 0) throw file_error(here + ": " + std::strerror(errno));
    if (S_ISLNK(sb.st_mode)) {
      if (sb.st_uid != ::geteuid() && sb.st_uid != 0)
        throw file_error(here + " is a symbolic link owned by uid " + std::to_string(sb.st_uid) +
                         ", neither you nor root: not followed (give the directory it names, "
                         "if you trust it)");
      if (++links > 40) throw file_error(here + ": too many levels of symbolic links");
      char target[PATH_MAX];
      const ssize_t n = ::readlinkat(next.get(), "", target, sizeof target);
      if (n <= 0 || std::size_t(n) >= sizeof target)
        throw file_error(here + ": its link cannot be read");
      const std::string to(target, std::size_t(n));
      auto more = components(to);
      todo.insert(todo.begin(), more.begin(), more.end());
      if (to[0] == '/') {
        cur = root();
        walked = "/";
      }
      continue;
    }
    if (!S_ISDIR(sb.st_mode))
      throw file_error(here + " is " + file_kind(sb.st_mode) + ", not a directory");
    cur = std::move(next);
    walked = here;
  }
  unique_fd dir(::openat(cur.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) throw file_error(path + ": " + std::strerror(errno));
  return dir;
}

// The absolute path of an open directory, as the kernel has it.
inline std::string path_of(int fd) {
  char buf[PATH_MAX];
  const std::string link = "/proc/self/fd/" + std::to_string(fd);
  const ssize_t n = ::readlink(link.c_str(), buf, sizeof buf);
  if (n <= 0 || std::size_t(n) >= sizeof buf) throw file_error(link + " cannot be read");
  return std::string(buf, std::size_t(n));
}

// The temporary being written, for the signal handler: removed if the job
// is interrupted. Written only with `active` clear.
struct pending_temp {
  volatile std::sig_atomic_t active = 0;
  int dir = -1;
  char name[NAME_MAX + 1] = {};
};
inline pending_temp g_pending;

// SIGINT, SIGTERM, SIGHUP: removes the temporary (unlinkat is
// async-signal-safe), then the signal's default action ends the process,
// so its exit status is the signal's and the library's watchdog, which
// sees its owner die, removes the shared arrays as for any killed job.
inline void remove_temp_and_die(int sig) {
  if (g_pending.active) ::unlinkat(g_pending.dir, g_pending.name, 0);
  ::signal(sig, SIG_DFL);
  ::raise(sig);  // blocked in the handler: delivered as it returns
}

// Installs the handler once, for each signal whose action is the default
// (an ignored signal stays ignored: a job started with `&` by a script
// ignores SIGINT; another handler is left alone).
inline void install_signal_cleanup() {
  static const bool done = [] {
    struct sigaction sa {};
    sa.sa_handler = &remove_temp_and_die;
    sigemptyset(&sa.sa_mask);
    for (int sig : {SIGINT, SIGTERM, SIGHUP})
      sigaddset(&sa.sa_mask, sig);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
      struct sigaction old {};
      if (::sigaction(sig, nullptr, &old) == 0 && !(old.sa_flags & SA_SIGINFO) &&
          old.sa_handler == SIG_DFL)
        ::sigaction(sig, &sa, nullptr);
    }
    return true;
  }();
  (void)done;
}

}  // namespace detail

// A directory that outputs are written to, held open by descriptor: the
// path is resolved once (with open_directory's rule for symbolic links),
// and every file is then made, renamed and removed relative to it.
class output_dir {
 public:
  // Opens `path`, making it (as mkdir -p) when `create`. Throws file_error.
  explicit output_dir(const std::string& path, bool create = true)
      : path_(path), fd_(detail::open_directory(path, create)) {}

  const std::string& path() const { return path_; }
  int fd() const { return fd_.get(); }
  // How a file of this directory is named in messages.
  std::string shown(const std::string& name) const {
    return path_.empty() || path_.back() == '/' ? path_ + name : path_ + "/" + name;
  }
  // Whether this process may make files here (write and search permission).
  bool writable() const { return ::faccessat(fd(), ".", W_OK | X_OK, AT_EACCESS) == 0; }

  // Writes the file `name` whole or not at all. write(fd, shown) gets the
  // descriptor of a new, empty file and owns it: it hands it to libtiff or
  // stdio, which close it, or closes it itself. When it returns, the file
  // is renamed over `name`, replacing whatever that held (a symbolic link
  // there is replaced, never followed). If write throws, or the job is
  // interrupted by SIGINT, SIGTERM or SIGHUP, the new file is removed and
  // the old `name` stays as it was.
  template <class Write>
  void write(const std::string& name, Write&& write) const {
    if (name.empty() || name.find('/') != std::string::npos || name.size() > NAME_MAX - 26)
      throw file_error(shown(name) + ": not a file name");
    detail::install_signal_cleanup();
    // The mode is what an output made by open(2) gets, 0666 less the umask
    // (or the directory's default ACL): the same as before temporaries.
    // Made and recorded with the signals blocked: none can come between.
    sigset_t block, saved;
    sigemptyset(&block);
    for (int sig : {SIGINT, SIGTERM, SIGHUP})
      sigaddset(&block, sig);
    ::pthread_sigmask(SIG_BLOCK, &block, &saved);
    std::string tmp;
    detail::unique_fd fd;
    int e = 0;
    for (int attempt = 0; !fd && attempt < 100; ++attempt) {
      tmp = name + "." + detail::random_hex(8) + ".partial";
      fd.reset(::openat(this->fd(), tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                        0666));
      e = errno;
      if (!fd && e != EEXIST) break;
    }
    auto& p = detail::g_pending;
    if (fd) {
      p.dir = this->fd();
      std::snprintf(p.name, sizeof p.name, "%s", tmp.c_str());
      std::atomic_signal_fence(std::memory_order_seq_cst);
      p.active = 1;
    }
    ::pthread_sigmask(SIG_SETMASK, &saved, nullptr);
    if (!fd) throw file_error(shown(name) + ": cannot be written (" + std::strerror(e) + ")");
    auto remove_tmp = [&] {
      ::unlinkat(this->fd(), tmp.c_str(), 0);
      p.active = 0;
    };
    try {
      // A descriptor of our own: its close is the file's last, where a
      // file system such as NFS reports a failed write.
      detail::unique_fd last(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0));
      if (!last) throw file_error(shown(name) + ": " + std::strerror(errno));
      std::forward<Write>(write)(fd.release(), shown(name));
      if (::close(last.release()) != 0)
        throw file_error(shown(name) + ": cannot be written (" + std::strerror(errno) + ")");
    } catch (...) {
      remove_tmp();
      throw;
    }
    if (::renameat(this->fd(), tmp.c_str(), this->fd(), name.c_str()) != 0) {
      const int e = errno;
      remove_tmp();
      throw file_error(shown(name) + ": cannot be put in place (" + std::strerror(e) + ")");
    }
    p.active = 0;
  }

 private:
  std::string path_;
  detail::unique_fd fd_;
};

// Opens `path` for reading if it is a regular file (a link to one is
// followed: what to read is the caller's choice). Anything else is refused
// before it is opened: opening a FIFO waits for a writer for ever, and
// opening a device may act on it. Returns the descriptor, or -1 with the
// reason in `why`.
inline int open_regular_file(const std::string& path, std::string& why) {
  struct stat sb {};
  if (::stat(path.c_str(), &sb) != 0) {
    why = std::string("cannot be opened: ") + std::strerror(errno);
    return -1;
  }
  auto refuse = [&](mode_t m) {
    why = std::string("is not a regular file (it is ") + detail::file_kind(m) +
          "); a stack is read from a regular file";
    return -1;
  };
  if (!S_ISREG(sb.st_mode)) return refuse(sb.st_mode);
  // O_NONBLOCK: a FIFO swapped in since stat does not block the open.
  detail::unique_fd fd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (!fd) {
    why = std::string("cannot be opened: ") + std::strerror(errno);
    return -1;
  }
  if (::fstat(fd.get(), &sb) != 0 || !S_ISREG(sb.st_mode)) return refuse(sb.st_mode);
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0) {
    why = std::string("cannot be opened: ") + std::strerror(errno);
    return -1;
  }
  return fd.release();
}

}  // namespace shmarray::stack
