// shmarray internals: the process that forks, reaps and kills a
// process_pool's workers.
#pragma once

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "../errors.hpp"
#include "board.hpp"
#include "fork_safety.hpp"
#include "waiting.hpp"

namespace shmarray::detail {

// A process_pool's workers are forked by a fork server: a process forked
// when the pool is made, while the parent is single-threaded, that stays so
// for ever. It forks every worker, the first ones and their replacements, so
// that a replacement is safe even after the parent has started threads, and
// sees the parent's memory as it was when the pool was made, as the first
// workers do. It reaps them and writes how each ended into its slot, and
// kills one when asked. It dies with the parent, and the workers with it.
class fork_server {
 public:
  // `serve(rank, seq)` runs a worker's life in the forked worker, after
  // start_worker.
  template <class Serve>
  fork_server(board& b, int wake, Serve serve) : board_(b), wake_(wake) {
    requests_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (requests_ < 0) throw_errno(errno, "eventfd for a process_pool");
    flush_streams();
    const pid_t owner = ::getpid();
    pid_ = ::fork();
    if (pid_ < 0) {
      const int err = errno;
      ::close(requests_);
      throw_errno(err, "fork of a process_pool's fork server");
    }
    if (pid_ == 0) run(owner, serve);
    pidfd_ = open_pidfd(pid_);
  }
  fork_server(const fork_server&) = delete;
  fork_server& operator=(const fork_server&) = delete;

  // Asks the server to leave (the workers must have been told already),
  // waits up to `grace` for it to reap them and go, then kills it, and
  // collects any worker that was orphaned to this process.
  void shut(std::chrono::milliseconds grace) noexcept {
    if (pid_ > 0) {
      post(requests_);
      const auto until = std::chrono::steady_clock::now() + grace;
      int status = 0;
      bool gone = false;
      while (!(gone = collect(pid_, WNOHANG, status)) && std::chrono::steady_clock::now() < until)
        ::usleep(200);
      if (!gone) {
        kill_process(pid_, pidfd_);
        collect(pid_, 0, status);
        reap_orphans();
      }
      pid_ = 0;
    }
    close_fds();
  }
  // In a forked copy of the owner: the server is not its child.
  void disown() noexcept {
    pid_ = 0;
    close_fds();
  }
  ~fork_server() { shut(std::chrono::milliseconds(0)); }

  pid_t pid() const noexcept { return pid_; }

  // Has the server fork the workers of `ranks` (which are not running) and
  // waits for its answer to each, and for each new worker to be ready. Throws system_error if a
  // fork failed; a worker that started and ended at once is not an error here (the job it misses
  // reports how it ended).
  void start(const std::vector<std::size_t>& ranks) {
    if (ranks.empty()) return;
    std::vector<std::uint32_t> asked(ranks.size());
    for (std::size_t i = 0; i < ranks.size(); ++i)
      asked[i] = board_.slot(ranks[i]).fork_request.fetch_add(1) + 1;
    post(requests_);
    int failed = 0;
    std::size_t which = 0;
    for (std::size_t i = 0; i < ranks.size(); ++i) {
      worker_slot& s = board_.slot(ranks[i]);
      wait_until([&] { return s.fork_answer.load() == asked[i]; });
      // Ready once it has run the worker hooks (or ended): a pool is
      // ready when its workers are.
      wait_until(
          [&] { return s.state.load() != slot_running || s.ready_pid.load() == s.pid.load(); });
      if (const int err = s.fork_error.load(); err && !failed) {
        failed = err;
        which = ranks[i];
      }
    }
    if (failed) throw_errno(failed, "fork of worker " + std::to_string(which));
  }

  // wait_for's interface (is_worker_set in wait_for.hpp).
  bool ended(std::size_t r) const noexcept { return board_.slot(r).state.load() == slot_ended; }
  // Has worker r killed and waits until it is reaped; false if it had ended
  // on its own first.
  bool stop(std::size_t r) {
    worker_slot& s = board_.slot(r);
    if (s.state.load() != slot_running) return false;
    s.want_kill.store(1);
    post(requests_);
    wait_until([&] { return s.state.load() != slot_running; });
    return s.killed.load() != 0;
  }
  ending end_of(std::size_t r) const noexcept {
    return {board_.slot(r).pid.load(), board_.slot(r).status.load()};
  }
  int watch(std::vector<pollfd>& fds, std::vector<std::size_t>& who, std::size_t) const {
    if (pidfd_ < 0) return 1;
    fds.push_back({pidfd_, POLLIN, 0});
    who.push_back(server_rank);
    return -1;
  }
  void readied(std::size_t) { check_alive(); }
  // Throws if the server has died (killed by someone): the pool cannot go on.
  void check_alive() {
    if (pid_ > 0) {
      int status = 0;
      if (!collect(pid_, WNOHANG, status)) return;
      pid_ = 0;
      reap_orphans();
    }
    throw error(
        "shmarray: the process_pool's fork server died (killed from outside?), and its workers "
        "with it; make a new pool");
  }

  static constexpr std::size_t server_rank = std::size_t(-1);

 private:
  template <class Pred>
  void wait_until(Pred done) {
    while (!done()) {
      check_alive();
      pollfd fds[2] = {{wake_, POLLIN, 0}, {pidfd_, POLLIN, 0}};
      ::poll(fds, pidfd_ >= 0 ? 2 : 1, pidfd_ >= 0 ? 100 : 1);
      drain(wake_);
    }
  }

  // Once the server is gone: its workers die with it (PR_SET_PDEATHSIG), and
  // where this process is a subreaper (or PID 1) they become its children.
  // Collect those; a pid that is not a child of ours is left alone.
  void reap_orphans() noexcept {
    for (std::size_t r = 0; r < board_.workers(); ++r) {
      const pid_t p = board_.slot(r).pid.load();
      if (p <= 0) continue;
      int status = 0;
      const pid_t got = ::waitpid(p, &status, WNOHANG);
      if (got == 0) {  // ours now, and still dying
        ::kill(p, SIGKILL);
        collect(p, 0, status);
      }
    }
  }

  void close_fds() noexcept {
    if (pidfd_ >= 0) ::close(pidfd_);
    if (requests_ >= 0) ::close(requests_);
    pidfd_ = requests_ = -1;
  }

  // The server's life. SIGCHLD is blocked and read from a signalfd, so that
  // it sleeps in one poll() for requests and ends alike. It alone writes a
  // slot's state.
  template <class Serve>
  [[noreturn]] void run(pid_t owner, Serve& serve) noexcept {
    die_with(owner);
    sigset_t chld, old;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    ::sigprocmask(SIG_BLOCK, &chld, &old);
    const int sfd = ::signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    const pid_t self = ::getpid();
    auto& h = board_.head();
    const std::size_t n = board_.workers();
    for (;;) {
      bool changed = false;
      int status = 0;
      pid_t got;
      while ((got = ::waitpid(-1, &status, WNOHANG)) > 0)
        for (std::size_t r = 0; r < n; ++r) {
          worker_slot& s = board_.slot(r);
          if (s.pid.load() != got || s.state.load() != slot_running) continue;
          s.status.store(status);
          s.sleeping.store(0);
          s.state.store(slot_ended);
          changed = true;
        }
      for (std::size_t r = 0; r < n; ++r) {
        worker_slot& s = board_.slot(r);
        if (s.want_kill.exchange(0) && s.state.load() == slot_running) {
          s.killed.store(1);
          ::kill(s.pid.load(), SIGKILL);  // its own child, not yet reaped
        }
        const std::uint32_t asked = s.fork_request.load();
        if (asked == s.fork_answer.load()) continue;
        if (s.state.load() != slot_running) {
          // The job number now, read before the fork: the parent posts no
          // job until it has the answer, so a job posted then is new to it.
          const std::uint32_t seen = h.seq.load();
          const pid_t pid = ::fork();
          if (pid == 0) {
            ::sigprocmask(SIG_SETMASK, &old, nullptr);
            ::close(sfd);
            ::close(requests_);
            start_worker(self);
            serve(r, seen);  // does not return
          }
          if (pid < 0) {
            s.fork_error.store(errno);
          } else {
            s.fork_error.store(0);
            s.killed.store(0);
            s.pid.store(pid);
            s.status.store(0);
            s.state.store(slot_running);
          }
        }
        s.fork_answer.store(asked);
        changed = true;
      }
      if (changed) post(wake_);
      if (h.shutdown.load()) {
        bool any = false;
        for (std::size_t r = 0; r < n && !any; ++r)
          any = board_.slot(r).state.load() == slot_running;
        if (!any) ::_exit(0);
      }
      pollfd fds[2] = {{requests_, POLLIN, 0}, {sfd, POLLIN, 0}};
      ::poll(fds, sfd >= 0 ? 2 : 1, sfd >= 0 ? -1 : 10);
      drain(requests_);
      signalfd_siginfo info;
      while (sfd >= 0 && ::read(sfd, &info, sizeof info) == sizeof info) {
      }
    }
  }

  board& board_;
  int wake_;
  int requests_ = -1;
  pid_t pid_ = 0;
  int pidfd_ = -1;
};

}  // namespace shmarray::detail
