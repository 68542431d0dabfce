// shmarray internals: the watchdog client. A process that owns named segments has a
// helper process (the installed `shmarray` command, in its hidden watchdog
// mode) hold one end of a socket; the owner registers each segment as it
// makes it and unregisters it when it removes it. The helper reads the
// socket only when the owner kicks it (a byte on a second socket, every so many
// records) and once the owner has hung up: a registration is one send, and
// wakes nobody. When the owner dies,
// however it dies, the helper reads end-of-file, waits until the owner's
// token is free, and unlinks what is still registered, provided each name
// still names the object registered (device and inode). Then it exits.
//
// The helper is started with posix_spawn, never by fork() of the owner (a
// forked copy of a large process pins its pages and costs what its page
// tables cost), through an intermediate that exits at once, so it is not
// the owner's child: a `while (wait(nullptr) > 0)` of the user's neither
// reaps it nor waits for it.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "../os_error.hpp"
#include "../text.hpp"
#include "token.hpp"
#include "wire.hpp"

extern char** environ;

namespace shmarray::detail::owner {

// The records sent to the helper are wire.hpp's; the helper is helper_daemon.hpp.

// Where the helper is: $SHMARRAY_HELPER (empty: no helper), the path the
// build recorded (SHMARRAY_HELPER), then `shmarray` on PATH.
inline std::string find_helper() {
  auto executable = [](const std::string& p) {
    return !p.empty() && ::access(p.c_str(), X_OK) == 0;
  };
  if (const char* env = std::getenv("SHMARRAY_HELPER")) return executable(env) ? env : "";
#ifdef SHMARRAY_HELPER
  if (executable(SHMARRAY_HELPER)) return SHMARRAY_HELPER;
#endif
  if (const char* path = std::getenv("PATH")) {
    std::string dirs = path;
    std::size_t at = 0;
    while (at <= dirs.size()) {
      const std::size_t end = std::min(dirs.find(':', at), dirs.size());
      const std::string candidate = dirs.substr(at, end - at) + "/shmarray";
      if (end > at && executable(candidate)) return candidate;
      at = end + 1;
    }
  }
  return "";
}

class watchdog {
 public:
  static watchdog& get() {
    static watchdog* w = make_once();  // never destroyed: segments outlive statics
    return *w;
  }

  // Registers a named segment (starting the helper with the first); `token`
  // is the owner's token, 0 if none. Quietly does nothing where there is no
  // helper (said once on stderr).
  void add(wire::object_kind kind, const std::string& name, const object_id& id,
           std::uint64_t token) noexcept {
    std::lock_guard<std::mutex> g(mu_);
    adopt_process();
    if (token) token_ = token;
    std::string rec;
    try {
      wire::object_record(rec, wire::op::add, kind, name, id);
      registered_.apply({wire::op::add, kind, 0, id, name});
    } catch (...) {  // out of memory: nothing more can be done
      return;
    }
    journal(rec);
    // (prepare, just before, has checked that the helper runs: one that died
    // since fails the send, and is replaced and told everything at once)
    if (fd_ < 0 && !connected()) return;
    std::string head;
    token_record(head, token);
    send(head + rec);
    if (fd_ < 0) (void)connected();
  }

  // Before a named segment is created: starts the helper if need be and
  // tells it the owner's token, so that registering the new object, the
  // moment it exists, is one send. Whether a helper watches this process.
  bool prepare(std::uint64_t token) noexcept {
    std::lock_guard<std::mutex> g(mu_);
    adopt_process();
    if (token) token_ = token;
    if (!connected()) return false;
    std::string rec;
    token_record(rec, token);
    if (!rec.empty()) send(rec);
    return fd_ >= 0;
  }

  // Unregisters the object `dev`/`ino` registered under `name`: the owner
  // removed it, or its creation failed. Another object registered under
  // the same name stays registered.
  void remove(wire::object_kind kind, const std::string& name, const object_id& id) noexcept {
    std::lock_guard<std::mutex> g(mu_);
    if (pid_ != ::getpid()) return;
    std::string rec;
    try {
      wire::object_record(rec, wire::op::remove, kind, name, id);
      registered_.apply({wire::op::remove, kind, 0, id, name});
    } catch (...) {
      return;
    }
    journal(rec);
    if (fd_ < 0) return;
    settle(false);
    if (fd_ < 0) return;
    send(rec);
  }

  // The helper's pid (0: none started by this process).
  pid_t helper_pid() {
    std::lock_guard<std::mutex> g(mu_);
    adopt_process();
    settle(true);
    return helper_;
  }

 private:
  watchdog() : pid_(::getpid()) {}
  static watchdog* make_once() {
    // Its mutex is held when the token's is taken (journal): the fork
    // handlers take it first (see fork_reset).
    static const fork_reset::hooks hooks{[]() noexcept { get().mu_.lock(); },
                                         []() noexcept { get().mu_.unlock(); },
                                         []() noexcept { get().forget_parent(true); }};
    (void)token::get();
    auto* w = new watchdog;
    fork_reset::join(fork_reset::watchdog_part, hooks);
    return w;
  }

  // The parent's helper is not ours: a forked child does not keep it
  // waiting (its copy of the socket goes); a child of vfork or clone may
  // share the parent's descriptors, and closes nothing.
  void forget_parent(bool close_descriptors) noexcept {
    disconnect(close_descriptors);
    mid_ = 0;
    token_ = journaled_ = 0;
    registered_.clear();
    tried_ = lost_ = false;
    pid_ = ::getpid();
  }

  void adopt_process() noexcept {
    if (pid_ != ::getpid()) forget_parent(false);
  }

  // Whether the helper has gone: it never writes, so a readable socket (end
  // of file) or a hang-up means it died (killed alone, say).
  bool helper_gone() const noexcept {
    pollfd p{fd_, POLLIN | POLLRDHUP, 0};
    return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLRDHUP | POLLHUP | POLLERR));
  }

  // This process's helper, started if need be; false where there is none.
  // A helper that died is replaced, and the new one told the token and
  // everything still registered: without that, the owner's death would
  // leak every segment it still owns.
  bool connected() noexcept {  // (the caller has called adopt_process)
    if (fd_ >= 0 && helper_gone()) lose();
    if (fd_ < 0 && lost_) {
      lost_ = false;
      tried_ = false;
      if (start()) resend();
      return fd_ >= 0;
    }
    if (fd_ < 0 && !start()) return false;
    settle(false);
    return fd_ >= 0;
  }

  // Forgets a helper that is gone (the next named segment starts another).
  void lose() noexcept {
    // One that died before it said it runs may be an older command that
    // refused the batched start: the next is started the old way.
    if (ack_ >= 0) batched_ = false;
    disconnect(true);
    lost_ = true;
  }

  // Lets go of the helper's descriptors (closing them unless they may be a
  // parent's, shared by vfork or clone) and of what it was told.
  void disconnect(bool close_descriptors) noexcept {
    if (close_descriptors)
      for (int fd : {fd_, ack_, kick_})
        if (fd >= 0) ::close(fd);
    fd_ = ack_ = kick_ = -1;
    unkicked_ = 0;
    ack_got_ = 0;
    helper_ = 0;
    token_sent_ = 0;
  }

  // Tells a new helper what its predecessor knew.
  void resend() noexcept {
    try {
      std::string rec;
      token_record(rec, token_);
      rec += all_registered();
      if (!rec.empty()) send(rec);
    } catch (...) {  // out of memory: the token remains, for shmarray gc
    }
  }

  // Every object still registered, as 'R' records.
  std::string all_registered() const {
    std::string all;
    for (const auto& [key, r] : registered_)
      wire::object_record(all, wire::op::add, r.kind, r.name, r.object);
    return all;
  }

  // Appends the 'T' record for `token` unless the helper has it already.
  void token_record(std::string& rec, std::uint64_t token) {
    if (!token || token == token_sent_) return;
    wire::token_record(rec, token);
    token_sent_ = token;
  }

  // Keeps the owner token's journal in step with what is registered (see
  // token::journal): appends `rec`; writes it whole to a new token,
  // and rewrites it when it has grown to four times what is still live.
  void journal(const std::string& rec) noexcept {
    if (!token_) return;
    try {
      token& t = token::get();
      if (journaled_ == token_ && t.journal(token_, rec, false)) {
        const std::size_t bytes = t.journal_bytes();
        if (bytes < (64u << 10) || bytes < 4 * registered_.bytes()) return;
      }
      journaled_ = t.journal(token_, all_registered(), true) ? token_ : 0;
    } catch (...) {  // out of memory: the helper still knows
    }
  }

  // Sends without waking the helper; every kick_every sends, and whenever
  // the socket is full, kicks it to read what has piled up.
  void send(const std::string& rec) noexcept {
    const char* p = rec.data();
    std::size_t left = rec.size();
    while (left) {
      const ssize_t n = ::send(fd_, p, left, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        kick();
        pollfd w{fd_, POLLOUT, 0};
        if (::poll(&w, 1, -1) >= 0 || errno == EINTR) continue;
      }
      if (n <= 0) {  // the helper is gone: the next named segment starts another
        lose();
        return;
      }
      p += n;
      left -= std::size_t(n);
    }
    if (++unkicked_ >= kick_every) kick();
  }

  // Has the helper read the socket. A full kick socket means kicks are
  // pending. (A socket, not a pipe: a helper killed meanwhile must not
  // SIGPIPE the owner.)
  void kick() noexcept {
    unkicked_ = 0;
    if (kick_ >= 0) (void)::send(kick_, "k", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  // Sends between kicks: far fewer than a socket holds (each send is its
  // own buffer in the kernel, about 1 KiB of the 208 KiB a socket may hold
  // by default), so that a kick usually comes before the socket is full.
  static constexpr std::size_t kick_every = 64;

  // Spawns the helper; true once it has said it runs.
  bool start() noexcept {
    if (tried_) return false;  // one attempt per process
    tried_ = true;
    const std::string helper = find_helper();
    if (helper.empty()) {
      const char* env = std::getenv("SHMARRAY_HELPER");
      if (env && *env)
        say_once(("no watchdog helper found: SHMARRAY_HELPER=" + escaped(env) +
                  " is not an executable file (give it the absolute path of the shmarray "
                  "command)")
                     .c_str());
      else
        say_once(
            "no watchdog helper found (the shmarray command: install it, put it on PATH, or "
            "set SHMARRAY_HELPER to its absolute path)");
      return false;
    }
    int sv[2], ack[2], kick[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return fail("socketpair");
    if (::pipe2(ack, O_CLOEXEC) != 0) {
      ::close(sv[0]);
      ::close(sv[1]);
      return fail("pipe");
    }
    kick[0] = kick[1] = -1;
    if (batched_ && ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, kick) != 0) {
      for (int fd : {sv[0], sv[1], ack[0], ack[1]})
        ::close(fd);
      return fail("socketpair");
    }
    posix_spawn_file_actions_t fa;
    ::posix_spawn_file_actions_init(&fa);
    ::posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    ::posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    ::posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    ::posix_spawn_file_actions_adddup2(&fa, sv[1], 3);  // dup2 clears close-on-exec
    ::posix_spawn_file_actions_adddup2(&fa, ack[1], 4);
    if (batched_) ::posix_spawn_file_actions_adddup2(&fa, kick[0], 5);
    posix_spawnattr_t at;
    ::posix_spawnattr_init(&at);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    ::posix_spawnattr_setsigmask(&at, &none);
    ::posix_spawnattr_setsigdefault(&at, &all);
    ::posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    char arg0[] = "shmarray", batched[] = "__watchdog-batched", eager[] = "__watchdog";
    char* arg1 = batched_ ? batched : eager;
    char* argv[] = {arg0, arg1, nullptr};
    pid_t mid = 0;
    const int rc = ::posix_spawn(&mid, helper.c_str(), &fa, &at, argv, environ);
    ::posix_spawn_file_actions_destroy(&fa);
    ::posix_spawnattr_destroy(&at);
    ::close(sv[1]);
    ::close(ack[1]);
    if (kick[0] >= 0) ::close(kick[0]);
    if (rc != 0) {
      ::close(sv[0]);
      ::close(ack[0]);
      if (kick[1] >= 0) ::close(kick[1]);
      errno = rc;
      return fail(("posix_spawn of " + helper).c_str());
    }
    // The intermediate forks the helper and exits at once: collect it now,
    // so that it is never left a zombie child of the program's. The
    // helper's hello is not waited for (the socket keeps what is sent until
    // the helper reads it); it is read at the next call (settle).
    int status = 0;
    while (::waitpid(mid, &status, 0) < 0 && errno == EINTR) {
    }
    fd_ = sv[0];
    mid_ = 0;
    ack_ = ack[0];
    kick_ = kick[1];
    unkicked_ = 0;
    helper_path_ = helper;
    return true;
  }

  // Collects the intermediate once it has exited, and the helper's pid once
  // it has said it runs; `wait`: up to 2 s for the pid. A helper that ends
  // its hello without a pid (a program of that name that is not ours) is
  // given up, said once.
  void settle(bool wait) noexcept {
    if (mid_ > 0) {
      int status = 0;
      const pid_t got = ::waitpid(mid_, &status, wait ? 0 : WNOHANG);
      if (got != 0) mid_ = 0;  // collected, or by a wait() of the program's: either way gone
    }
    if (ack_ < 0) return;
    pollfd p{ack_, POLLIN, 0};
    while (ack_got_ < sizeof ack_pid_) {
      if (::poll(&p, 1, wait ? 2000 : 0) <= 0) return;
      const ssize_t n =
          ::read(ack_, reinterpret_cast<char*>(&ack_pid_) + ack_got_, sizeof ack_pid_ - ack_got_);
      if (n <= 0) {
        const bool retry = batched_;
        lose();  // (and, never having said it runs, no batched helper again)
        lost_ = false;
        if (retry) {
          // An older `shmarray` that knows only `__watchdog` (the library
          // newer than the installed command): start it so, and tell it all.
          tried_ = false;
          if (start()) resend();
          settle(wait);
          return;
        }
        say_once(("the watchdog helper " + helper_path_ + " did not start").c_str());
        return;
      }
      ack_got_ += std::size_t(n);
    }
    helper_ = ack_pid_;
    ::close(ack_);
    ack_ = -1;
  }

  bool fail(const char* what) noexcept {
    say_once((std::string(what) + ": " + errno_text(errno)).c_str());
    return false;
  }

  void say_once(const char* why) noexcept {
    if (said_) return;
    said_ = true;
    const std::string text = std::string("shmarray: warning: ") + why +
                             "; segments of this process that outlive it are left to "
                             "`shmarray gc`\n";
    (void)!::write(2, text.data(), text.size());
  }

  std::mutex mu_;
  pid_t pid_ = 0;
  int fd_ = -1;
  pid_t helper_ = 0;
  pid_t mid_ = 0;             // the intermediate, until collected
  int ack_ = -1;              // where the helper says its pid
  int kick_ = -1;             // the socket that has the helper read its socket
  bool batched_ = true;       // the helper reads only when kicked (false: an older one)
  std::size_t unkicked_ = 0;  // sends since the last kick
  pid_t ack_pid_ = 0;
  std::size_t ack_got_ = 0;
  std::string helper_path_;
  std::uint64_t token_sent_ = 0;
  std::uint64_t token_ = 0;      // the owner's token, for a new helper
  std::uint64_t journaled_ = 0;  // the token whose journal holds registered_
  wire::live_set registered_;    // what this process registered and not yet unregistered
  bool tried_ = false;
  bool lost_ = false;  // the helper died: start another at the next segment
  bool said_ = false;
};

}  // namespace shmarray::detail::owner
