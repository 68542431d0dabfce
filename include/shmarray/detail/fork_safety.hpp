// shmarray internals: when forking is safe (threads, SIGCHLD), signal
// names, and what a forked worker does first.
#pragma once

#include <dirent.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstddef>
#include <cstdio>
#include <iostream>
#include <string>
#include <utility>

#include "../errors.hpp"
#include "../worker.hpp"
#include "../worker_init.hpp"

namespace shmarray::detail {

inline std::string signal_name(int sig) {
  static const std::pair<int, const char*> names[] = {
      {SIGHUP, "SIGHUP"},   {SIGINT, "SIGINT"},   {SIGQUIT, "SIGQUIT"}, {SIGILL, "SIGILL"},
      {SIGTRAP, "SIGTRAP"}, {SIGABRT, "SIGABRT"}, {SIGBUS, "SIGBUS"},   {SIGFPE, "SIGFPE"},
      {SIGKILL, "SIGKILL"}, {SIGUSR1, "SIGUSR1"}, {SIGSEGV, "SIGSEGV"}, {SIGUSR2, "SIGUSR2"},
      {SIGPIPE, "SIGPIPE"}, {SIGALRM, "SIGALRM"}, {SIGTERM, "SIGTERM"}, {SIGXCPU, "SIGXCPU"},
      {SIGXFSZ, "SIGXFSZ"}, {SIGSYS, "SIGSYS"}};
  for (const auto& [n, text] : names)
    if (n == sig) return text;
  return "signal " + std::to_string(sig);
}

// The number of threads of this process, from /proc/self/task; 0 if unknown.
inline std::size_t thread_count() {
  DIR* d = ::opendir("/proc/self/task");
  if (!d) return 0;
  std::size_t n = 0;
  while (const dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') ++n;
  ::closedir(d);
  return n;
}

inline void check_fork_safe(thread_policy policy) {
  // Not a thread matter, but checked at the same moments: the kernel throws
  // away the exit status of children while SIGCHLD is ignored.
  struct sigaction sa {};
  if (::sigaction(SIGCHLD, nullptr, &sa) == 0 &&
      (sa.sa_handler == SIG_IGN || (sa.sa_flags & SA_NOCLDWAIT)))
    throw unsafe_fork(
        "shmarray: refusing to fork: SIGCHLD is ignored in this process (SIG_IGN or "
        "SA_NOCLDWAIT), so the kernel discards the workers' exit statuses and a crashed worker "
        "could not be told from a finished one. Restore it first: signal(SIGCHLD, SIG_DFL)");
  if (policy == thread_policy::allow) return;
  const std::size_t n = thread_count();
  if (n <= 1) return;
  const std::string why =
      "this process runs " + std::to_string(n) +
      " threads. A forked worker gets only the thread that forks it, and a lock that another "
      "thread holds stays locked in the worker forever: after an OpenMP `omp parallel` region in "
      "the parent, the worker's next `omp parallel` hangs. Fork workers (or make a "
      "process_pool) before starting threads, run OpenMP inside the workers rather than before "
      "forking, or pass thread_policy::allow if the other threads hold nothing the workers use";
  if (policy == thread_policy::refuse) throw unsafe_fork("shmarray: refusing to fork: " + why);
  static std::atomic<bool> warned{false};
  if (!warned.exchange(true)) {
    const std::string text = "shmarray: warning: forking anyway, but " + why + "\n";
    (void)!::write(2, text.data(), text.size());
  }
}

// Flushes what this process has buffered: the parent before it forks (or the
// child would write it again), a child before _exit (which flushes nothing).
inline void flush_streams() noexcept {
  try {
    std::cout.flush();
    std::cerr.flush();
    std::clog.flush();
  } catch (...) {
  }
  std::fflush(nullptr);
}

// What a forked child does first: die with its parent. The parent may have
// died before the prctl(): then nobody will signal, so look.
inline void die_with(pid_t parent) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(70);
}

// What every forked worker does first, here only (crew's children and a
// pool's alike): die with its parent, then run the worker hooks
// (worker_init.hpp). A per-process reset a child needs belongs here.
inline void start_worker(pid_t parent) {
  die_with(parent);
  run_worker_init();
}

}  // namespace shmarray::detail
