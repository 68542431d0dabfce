// shmarray internals: fork_workers' and parallel_for's workers, children
// of the calling process.
#pragma once

#include <poll.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstddef>
#include <string>
#include <vector>

#include "board.hpp"
#include "failure.hpp"
#include "fork_safety.hpp"
#include "waiting.hpp"

namespace shmarray::detail {

// fork_workers' workers: children of this process, watched through pidfds.
// The destructor kills and reaps whatever is still running, so no way out
// of a parent's call leaves a child behind.
class crew {
 public:
  explicit crew(board& b) : board_(b), kids_(b.workers()) {}
  crew(const crew&) = delete;
  crew& operator=(const crew&) = delete;
  ~crew() {
    for (std::size_t r = 0; r < kids_.size(); ++r)
      stop(r);
  }

  // Forks worker `rank`, which runs the hooks and body(), then leaves with
  // _exit: 0 when body returns, 1 when it throws (the slot says what).
  template <class Body>
  void spawn(std::size_t rank, Body&& body) {
    flush_streams();
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) throw_errno(errno, "fork of worker " + std::to_string(rank));
    if (pid == 0) {
      worker_slot& slot = board_.slot(rank);
      int code = 0;
      try {
        start_worker(parent);
        body();
        slot.returned.store(1);
      } catch (...) {
        record_exception(slot, 1);
        code = 1;
      }
      flush_streams();
      ::_exit(code);
    }
    kids_[rank] = kid{pid, pid, open_pidfd(pid), 0, false};
  }

  // wait_for's interface (is_worker_set in wait_for.hpp).
  bool ended(std::size_t r) {
    kid& k = kids_[r];
    if (k.pid <= 0) return true;
    if (k.pidfd >= 0 && !k.ready) return false;
    if (!collect(k.pid, WNOHANG, k.status)) return false;
    forget(k);
    return true;
  }
  // Kills worker r and collects it; false if it had ended on its own.
  bool stop(std::size_t r) {
    kid& k = kids_[r];
    if (k.pid <= 0) return false;
    if (collect(k.pid, WNOHANG, k.status)) {
      forget(k);
      return false;
    }
    kill_process(k.pid, k.pidfd);
    collect(k.pid, 0, k.status);
    forget(k);
    return true;
  }
  ending end_of(std::size_t r) const { return {kids_[r].last_pid, kids_[r].status}; }
  // What to poll while ranks below `count` run; the longest sleep that still
  // notices an end (-1: any), 1 ms where there are no pidfds.
  int watch(std::vector<pollfd>& fds, std::vector<std::size_t>& who, std::size_t count) const {
    int cap = -1;
    for (std::size_t r = 0; r < count; ++r) {
      if (kids_[r].pid <= 0) continue;
      if (kids_[r].pidfd < 0) {
        cap = 1;
        continue;
      }
      fds.push_back({kids_[r].pidfd, POLLIN, 0});
      who.push_back(r);
    }
    return cap;
  }
  void readied(std::size_t r) { kids_[r].ready = true; }
  void check_alive() const noexcept {}

 private:
  struct kid {
    pid_t pid = 0;  // 0 once collected
    pid_t last_pid = 0;
    int pidfd = -1;
    int status = 0;
    bool ready = false;  // its pidfd said it ended
  };
  static void forget(kid& k) noexcept {
    if (k.pidfd >= 0) ::close(k.pidfd);
    k.pidfd = -1;
    k.pid = 0;
    k.ready = false;
  }
  board& board_;
  std::vector<kid> kids_;
};

}  // namespace shmarray::detail
