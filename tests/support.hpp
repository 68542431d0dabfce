// Test support: names private to one test, and children that report by exit status.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <shmarray/manager.hpp>

// Defined when this is a ThreadSanitizer build (GCC says so by
// __SANITIZE_THREAD__, clang by __has_feature).
#if defined(__SANITIZE_THREAD__)
#define SHMARRAY_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SHMARRAY_TSAN 1
#endif
#endif

namespace test {

// Names in /dev/shm that start with `prefix`.
inline std::set<std::string> shm_names(const std::string& prefix) {
  std::set<std::string> out;
  if (DIR* d = ::opendir("/dev/shm")) {
    while (const dirent* e = ::readdir(d)) {
      const std::string n = e->d_name;
      if (n.compare(0, prefix.size(), prefix) == 0) out.insert(n);
    }
    ::closedir(d);
  }
  return out;
}

// A prefix that no other test uses (ctest runs each case in its own
// process, in parallel), so a test checks that it left /dev/shm as it found
// it by looking at its own names only.
class names {
 public:
  names() : prefix_("shmarray_t" + std::to_string(::getpid()) + "_") {}
  names(const names&) = delete;
  names& operator=(const names&) = delete;
  // A test that failed half-way still leaves /dev/shm as it found it (its
  // own check, left().empty(), is what proves that the code cleaned up).
  ~names() {
    for (const auto& n : left())
      ::shm_unlink(("/" + n).c_str());
  }
  const std::string& prefix() const { return prefix_; }
  // A name of this test's, with its leading '/'.
  std::string operator()(const std::string& tail) const { return "/" + prefix_ + tail; }
  shmarray::manager_options options() const {
    shmarray::manager_options o;
    o.prefix = prefix_;
    return o;
  }
  // What this test's names hold in /dev/shm now: empty when it cleaned up.
  std::set<std::string> left() const { return shm_names(prefix_); }
  bool exists(const std::string& name) const {
    return left().count(name[0] == '/' ? name.substr(1) : name) == 1;
  }

 private:
  std::string prefix_;
};

// Options for a raw segment: no record, exactly the data's bytes.
inline shmarray::create_options raw() {
  shmarray::create_options o;
  o.raw = true;
  return o;
}

// Options for a column-major ('F') array.
inline shmarray::create_options fortran() {
  shmarray::create_options o;
  o.order = shmarray::order::column_major;
  return o;
}

// Fills an array with 0, 1, 2... in storage order.
template <class T>
void iota(const shmarray::ndarray<T>& a) {
  std::iota(a.begin(), a.end(), T(0));
}

// Waits for a child, whatever signals arrive meanwhile.
inline int reap(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return -1;
  return status;
}

// Runs fn in a forked child and returns its wait status. The child never
// uses Catch (a failing assertion would throw inside Catch's copy): it
// reports by exit code. fn returns the code; an exception gives 125.
template <class F>
int in_child(F&& fn) {
  std::fflush(nullptr);  // or the child would write what the parent buffered again
  const pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    // Catch's handlers for fatal signals would report a failure from the
    // child's copy of the test run: a child dies as any process would.
    for (int sig : {SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE, SIGTERM, SIGINT})
      ::signal(sig, SIG_DFL);
    int rc = 125;
    try {
      rc = fn();
    } catch (...) {
    }
    ::_exit(rc);
  }
  return reap(pid);
}

// Everything readable from fd until end-of-file.
inline std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0)
    out.append(buf, std::size_t(n));
  return out;
}

// What a child in a private mount namespace reported.
struct namespace_run {
  int status;
  std::string said;
  // Exit code 77: the namespace could not be made here. Prints the marker
  // CTest maps to "skipped".
  bool skipped() const {
    if (status < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 77) return false;
    std::printf("SHMARRAY-SKIP: cannot mount a private tmpfs here (%s)\n", said.c_str());
    return true;
  }
  bool ok() const { return status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0; }
};

// Runs fn in a child with its own mount namespace and a tmpfs of `size`
// (such as "1m") mounted over `where` (such as "/dev/shm"), so a full file
// system can be tested without touching the real one. fn gets a function to
// report text, and returns the child's exit code (0: all is well).
template <class F>
namespace_run in_small_tmpfs(const char* where, const char* size, F&& fn) {
  int fds[2];
  if (::pipe(fds) != 0) return {-1, "pipe failed"};
  const int status = in_child([&] {
    ::close(fds[0]);
    auto say = [&](const std::string& s) { (void)!::write(fds[1], s.data(), s.size()); };
    if (::unshare(CLONE_NEWNS) != 0) {
      say(std::string("unshare: ") + std::strerror(errno));
      return 77;
    }
    // Private propagation first, or the tmpfs would appear in the parent's namespace.
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::mount("tmpfs", where, "tmpfs", 0, (std::string("size=") + size).c_str()) != 0) {
      say(std::string("mount: ") + std::strerror(errno));
      return 77;
    }
    return fn(say);
  });
  ::close(fds[1]);
  namespace_run r{status, {}};
  r.said = read_all(fds[0]);
  ::close(fds[0]);
  return r;
}

// In a forked child: becomes the program at `path` with `args` (exit 127
// where it cannot).
[[noreturn]] inline void exec_program(const char* path, const std::vector<std::string>& args) {
  std::vector<char*> argv{const_cast<char*>(path)};
  for (const auto& a : args)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  ::execv(path, argv.data());
  ::_exit(127);
}

// One line from fd, without its newline: what came before the newline or
// the end of file.
inline std::string read_line(int fd) {
  std::string line;
  char c;
  while (::read(fd, &c, 1) == 1 && c != '\n')
    line += c;
  return line;
}

// What a program started by run_program did.
struct program_run {
  pid_t pid = 0;
  int status = -1;
  int code = -1;  // its exit code, or 128 + the signal that ended it
  std::string out, err;
};

// Runs the program at `path` with `args` to its end; its stdout and stderr
// (read together, so that neither pipe fills up), and how it ended.
inline program_run run_program(const char* path, const std::vector<std::string>& args) {
  program_run r;
  int out[2], err[2];
  if (::pipe(out) != 0) return r;
  if (::pipe(err) != 0) {
    ::close(out[0]);
    ::close(out[1]);
    return r;
  }
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::dup2(err[1], 2);
    exec_program(path, args);
  }
  ::close(out[1]);
  ::close(err[1]);
  pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  std::string* to[2] = {&r.out, &r.err};
  for (int open = pid > 0 ? 2 : 0; open > 0;) {
    ::poll(fds, 2, -1);
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !fds[i].revents) continue;
      char buf[4096];
      const ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        to[i]->append(buf, std::size_t(n));
      } else {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open;
      }
    }
  }
  for (auto& f : fds)
    if (f.fd >= 0) ::close(f.fd);
  if (pid < 0) return r;
  r.pid = pid;
  r.status = reap(pid);
  r.code = WIFEXITED(r.status) ? WEXITSTATUS(r.status) : 128 + WTERMSIG(r.status);
  return r;
}

// What /dev/shm holds, "." and ".." aside.
inline std::set<std::string> in_shm() {
  auto all = shm_names("");
  all.erase(".");
  all.erase("..");
  return all;
}

// This process runs without a watchdog helper from now on, and its warning
// that there is none goes to /dev/null.
inline void without_helper() {
  ::setenv("SHMARRAY_HELPER", "", 1);
  const int null = ::open("/dev/null", O_WRONLY);
  ::dup2(null, 2);
}

// Starts the program at `path` with `args` and goes on: its pid (reap it).
// Its stdin and stderr are /dev/null; its stdout goes to `out` if given.
inline pid_t start_program(const char* path, const std::vector<std::string>& args, int out = -1) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int null = ::open("/dev/null", O_RDWR);
    ::dup2(null, 0);
    ::dup2(out >= 0 ? out : null, 1);
    ::dup2(null, 2);
    exec_program(path, args);
  }
  return pid;
}

// Another local user: the command `argv` run as nobody, through setpriv.
inline const char* setpriv = "/usr/bin/setpriv";
inline std::vector<std::string> as_nobody(std::vector<std::string> argv) {
  argv.insert(argv.begin(), {"--reuid=nobody", "--regid=nogroup", "--clear-groups"});
  return argv;
}

// Whether this test can act as another user (root, with setpriv); if not,
// prints the skip marker.
inline bool can_act_as_nobody() {
  if (::geteuid() == 0 && ::access(setpriv, X_OK) == 0) return true;
  std::printf("SHMARRAY-SKIP: needs root and %s to act as another user\n", setpriv);
  return false;
}

// Waits up to `ms` milliseconds for pred() to hold.
template <class P>
bool eventually(P&& pred, int ms = 5000) {
  for (int i = 0; i < ms; ++i) {
    if (pred()) return true;
    ::usleep(1000);
  }
  return pred();
}

// True while pid runs: it exists and is not a zombie waiting for its parent.
inline bool running(pid_t pid) {
  if (::kill(pid, 0) != 0) return false;
  std::FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r");
  if (!f) return false;
  char state = '?';
  const int got = std::fscanf(f, "%*d (%*[^)]) %c", &state);
  std::fclose(f);
  return got == 1 && state != 'Z' && state != 'X';
}

// Waits up to 5 s for pid to stop running.
inline bool ends(pid_t pid) {
  for (int i = 0; i < 5000 && running(pid); ++i)
    ::usleep(1000);
  return !running(pid);
}

// Waits up to 5 s until every thread of pid has exited, so that all its
// descriptors are closed: its leader may show as a zombie while another
// thread of it is still on its way out, holding them.
inline bool exited_whole(pid_t pid) {
  for (int i = 0; i < 5000; ++i, ::usleep(1000)) {
    if (running(pid)) continue;
    DIR* d = ::opendir(("/proc/" + std::to_string(pid) + "/task").c_str());
    if (!d) return true;  // reaped
    int threads = 0;
    while (const dirent* e = ::readdir(d))
      threads += e->d_name[0] != '.';
    ::closedir(d);
    if (threads <= 1) return true;
  }
  return false;
}

inline bool exited_with(int status, int code) {
  return status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == code;
}
inline bool killed_by(int status, int sig) {
  return status >= 0 && WIFSIGNALED(status) && WTERMSIG(status) == sig;
}

}  // namespace test
