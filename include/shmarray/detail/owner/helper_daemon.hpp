// shmarray internals: the watchdog helper, the other end of
// helper_client.hpp. The `shmarray` command runs it (run_helper) when the
// library starts it as `shmarray __watchdog`: it reads what its owner
// registers, and when the owner is gone, however it went, removes what is
// still registered, provided each name still names the object registered.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <string>
#include <thread>

#include "../../inspect.hpp"
#include "../same_object.hpp"
#include "token.hpp"
#include "wire.hpp"

namespace shmarray::detail::owner {

// The owner's token, as the helper watches it: through a descriptor of its
// own (a shared lock through the owner's would downgrade the owner's
// exclusive one), opened once the token has its name (the owner names it
// after telling us) and only if it is this user's own regular file (a name
// another user took after the owner dropped an older token is not it).
class watched_token {
 public:
  explicit watched_token(std::uint64_t id = 0) : id_(id) {}
  watched_token(const watched_token&) = delete;
  watched_token& operator=(const watched_token&) = delete;
  ~watched_token() { close(); }

  // Watches token `id` from now on (the owner's last word on it).
  void reset(std::uint64_t id) {
    close();
    id_ = id;
  }
  void try_open() {
    if (fd_ >= 0 || id_ == 0) return;
    const int fd = ::open(("/dev/shm" + token_name(id_)).c_str(),
                          O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return;
    struct stat st {};
    if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == ::geteuid())
      fd_ = fd;
    else
      ::close(fd);
  }
  // Waits until no process holds the token: a shared lock taken blocking,
  // granted when the owner's exclusive lock goes. Without a descriptor
  // (the owner died before naming it), by its name: a token that is not
  // there, or not this user's, is no owner's; anything else but "dead"
  // counts as alive, for removing a live owner's segment is the one thing a
  // watchdog must never do.
  void wait_until_free() {
    if (id_ == 0) return;
    try_open();
    if (fd_ >= 0) {
      while (::flock(fd_, LOCK_SH) != 0)
        if (errno != EINTR) break;
      return;
    }
    for (;;) {
      struct stat st {};
      const std::string path = "/dev/shm" + token_name(id_);
      if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != ::geteuid())
        return;
      if (token_state(id_, false) == liveness::dead) return;
      ::usleep(20000);
    }
  }
  void close() {
    if (fd_ >= 0) ::close(fd_);  // (and the shared lock with it)
    fd_ = -1;
  }
  std::uint64_t id() const { return id_; }

 private:
  std::uint64_t id_ = 0;
  int fd_ = -1;
};

// The helper's life: fd 3 is the owner's socket, fd 4 where it says it runs.
// `batched` (the C++ library's `shmarray __watchdog-batched`): fd 5 is a
// second socket the owner sends a byte on every so many records, and fd 3 is
// read only then and once the owner has hung up, so that registering an
// object costs the owner one send and never a wake-up of this process (what
// is sent waits in the socket, the kernel's, whatever happens to the owner).
// Otherwise (Python's `shmarray __watchdog`) every record is read as it comes.
[[noreturn]] inline void run_helper(bool batched = false) {
  // Everything but the descriptors it was given goes (a descriptor of
  // the owner's kept open here would keep someone's pipe from its EOF).
  const unsigned first_other = batched ? 6u : 5u;
#ifdef SYS_close_range
  if (::syscall(SYS_close_range, first_other, ~0u, 0u) != 0)
#endif
    for (int fd = int(first_other); fd < 1024; ++fd)
      ::close(fd);
  for (int sig : {SIGINT, SIGHUP, SIGTERM, SIGPIPE, SIGQUIT})
    std::signal(sig, SIG_IGN);   // a Ctrl-C to the terminal's group must not stop the cleanup
  const pid_t child = ::fork();  // the intermediate exits, so the helper is nobody's child
  if (child != 0) ::_exit(child < 0 ? 1 : 0);
  ::setsid();
  if (::chdir("/") != 0) {
  }
  const pid_t self = ::getpid();
  (void)!::write(4, &self, sizeof self);
  ::close(4);

  // What owners that died with their helper left (a cgroup killed whole, as
  // systemd, Slurm and Kubernetes stop jobs), collected in the background:
  // never on the owner's path, and this helper's owner is alive meanwhile.
  // (Where no thread can be made, there is no background pass.)
  try {
    std::thread([] {
      try {
        collect_dead(false, [](const collected&) {});
      } catch (...) {
      }
    }).detach();
  } catch (...) {
  }

  // What the owner has registered and not unregistered, by kind, name,
  // device and inode: one name may be registered for two objects of the
  // owner's at once (a creation that failed on a name it already holds
  // unregisters only its own).
  wire::live_set live;
  wire::stream in;
  watched_token token;
  auto take = [&](const wire::record& r) {
    if (r.op == wire::op::token) {
      if (r.id != token.id()) token.reset(r.id);
    } else {
      live.apply(r);
      // named by now: tokens are named before segments
      if (r.op == wire::op::add) token.try_open();
    }
  };
  // Reads what the socket holds now; true once the owner is gone (or closed its end).
  auto drain = [&] {
    for (;;) {
      char buf[4096];
      const ssize_t got = ::recv(3, buf, sizeof buf, MSG_DONTWAIT);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return false;
      if (got <= 0) return true;
      in.feed(buf, std::size_t(got), take);
    }
  };
  int kick = batched ? 5 : -1;
  for (;;) {
    // Batched: woken by a kick or a hang-up (POLLRDHUP), never by a record.
    pollfd p[2] = {{3, short(batched ? POLLRDHUP : POLLIN), 0}, {kick, POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (p[1].revents) {
      char bytes[256];
      const ssize_t n = ::read(kick, bytes, sizeof bytes);
      if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
        ::close(kick);  // the owner's end went (its socket's goes too): no more kicks
        kick = -1;
      }
    }
    if (drain()) break;
  }
  ::close(3);
  // The owner has gone. Its token is released when the last process
  // holding it is: wait for that, then clean up.
  token.wait_until_free();
  for (const auto& [key, r] : live) {
    const std::string path = wire::object_path(r.kind, r.name);
    // (the owner's own, moments after its death: device and inode do where
    // the file system keeps no birth time)
    if (!path.empty()) unlink_if_same(path, r.object, true);
  }
  token.close();
  if (token.id()) remove_token_if_dead(token.id());
  ::_exit(0);
}

}  // namespace shmarray::detail::owner
