// shmarray: forked workers over shared arrays. fork_workers(n, fn),
// parallel_for(n, first, last, fn) and a persistent process_pool. A worker's
// exception, non-zero exit or signal comes back to the parent as
// worker_error; the parent reaps every child, whatever happens, and no worker
// outlives its parent.
#pragma once

#include <cxxabi.h>
#include <dirent.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <limits>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "detail/os.hpp"
#include "errors.hpp"
#include "worker_init.hpp"

namespace shmarray {

// What a worker knows of itself: its rank among the job's workers, and how
// many there are.
class worker {
 public:
  worker(std::size_t rank, std::size_t count, std::atomic<std::uint64_t>* progress) noexcept
      : rank_(rank), count_(count), progress_(progress) {}
  std::size_t rank() const noexcept { return rank_; }
  std::size_t count() const noexcept { return count_; }
  // Adds n to the job's shared progress counter, which the parent's progress
  // bar shows (parallel_for counts its indices itself).
  void progress(std::uint64_t n = 1) const noexcept {
    if (progress_) progress_->fetch_add(n, std::memory_order_relaxed);
  }

 private:
  std::size_t rank_;
  std::size_t count_;
  std::atomic<std::uint64_t>* progress_;
};

// What to do when the parent runs other threads (see unsafe_fork).
enum class thread_policy {
  refuse,  // throw unsafe_fork (the default)
  warn,    // say why on stderr, once per process, and fork anyway
  allow,   // fork anyway: the other threads hold nothing the workers need
};

// What the other workers do when one fails.
enum class on_failure {
  stop_all,    // kill them at once (the default)
  finish_all,  // let them finish, then report every failure
};

struct worker_options {
  on_failure failure = on_failure::stop_all;
  // Kill the job's workers that have not finished after this long, and report
  // them as timed out. Zero: no limit.
  std::chrono::milliseconds timeout{0};
  // Show progress on stderr: a bar redrawn while waiting when stderr is a
  // terminal, one plain line at the end otherwise.
  bool progress = false;
  std::string label = "workers";
  // What the progress counter counts up to (parallel_for sets its range's
  // length); zero: unknown, only the count is shown.
  std::uint64_t total = 0;
  // fork_workers and parallel_for; a process_pool keeps the policy it was made with.
  thread_policy threads = thread_policy::refuse;
};

// How parallel_for hands out its indices.
enum class schedule {
  blocks,   // static: one contiguous block per worker, sizes differing by at most one
  dynamic,  // chunks of `chunk` indices taken in turn from a shared counter, for uneven work
};

struct for_options : worker_options {
  schedule sched = schedule::blocks;
  std::size_t chunk = 1;  // dynamic: indices taken at a time
};

// A segment's name in a form a process_pool job may capture (a fixed-size,
// trivially copyable string): arrays made after the pool are reached by name.
class fixed_name {
 public:
  static constexpr std::size_t capacity = 255;
  fixed_name(std::string_view name) {  // NOLINT: implicit, as std::string is
    if (name.size() > capacity)
      throw invalid_name("shmarray: name \"" + std::string(name) + "\" is longer than " +
                         std::to_string(capacity) + " characters");
    std::memcpy(text_, name.data(), name.size());
    size_ = name.size();
  }
  fixed_name(const char* name) : fixed_name(std::string_view(name)) {}
  fixed_name(const std::string& name) : fixed_name(std::string_view(name)) {}
  // The name of an array handle (anything with name()).
  template <class A, class = decltype(std::declval<const A&>().name())>
  fixed_name(const A& array) : fixed_name(std::string_view(array.name())) {}
  std::string_view view() const noexcept { return {text_, size_}; }
  operator std::string_view() const noexcept { return view(); }
  const char* c_str() const noexcept { return text_; }

 private:
  char text_[capacity + 1] = {};
  std::size_t size_ = 0;
};

namespace detail {

// A failure of the system in the workers' machinery (not a segment's).
[[noreturn]] inline void throw_errno(int err, const std::string& doing) {
  throw system_error("shmarray: " + doing + ": " + errno_text(err), err);
}

// ---- the memory parent and workers share: a header and one slot per worker

inline constexpr std::size_t max_workers = 4096;
inline constexpr std::size_t max_job_bytes = 2048;

struct board_header;
using job_fn = void (*)(board_header&, const worker&);

// What a process_pool hands its workers; written by the parent before it
// publishes the job's number, read-only until every worker is done.
struct job_desc {
  job_fn run = nullptr;
  std::size_t count = 0;  // workers taking part: ranks below count
  std::uint64_t first = 0, length = 0;
  schedule sched = schedule::blocks;
  std::size_t chunk = 1;
  bool count_progress = false;
  alignas(64) unsigned char callable[max_job_bytes];
};

struct alignas(64) board_header {
  std::atomic<std::uint32_t> seq{0};  // futex word: changes when a job is posted
  std::atomic<std::uint32_t> shutdown{0};
  std::atomic<std::uint32_t> parent_waiting{0};
  std::atomic<std::uint64_t> job_number{0};  // the current job; 64 bits never wrap
  alignas(64) std::atomic<std::uint64_t> progress{0};
  alignas(64) std::atomic<std::uint64_t> next{0};  // the dynamic schedule's counter
  job_desc job;
};

// Running states of a pool worker, kept by the pool's fork server.
enum : std::uint32_t { slot_empty = 0, slot_running = 1, slot_ended = 2 };

struct alignas(64) worker_slot {
  std::atomic<std::uint64_t> done_job{0};   // pool: the last job this worker finished
  std::atomic<std::uint64_t> threw_job{0};  // the job whose exception is described below
  std::atomic<std::uint32_t> returned{0};   // fork_workers: fn returned, whatever the status says
  std::atomic<std::uint32_t> sleeping{0};   // pool: asleep on the futex, to be woken
  // A pool worker's process, kept by the fork server:
  std::atomic<std::int32_t> pid{0};
  std::atomic<std::uint32_t> state{slot_empty};
  std::atomic<std::int32_t> status{0};      // its wait status, once ended
  std::atomic<std::int32_t> fork_error{0};  // errno of the last fork, if it failed
  // Requests to the fork server: the owner bumps fork_request, the server
  // answers by copying it to fork_answer once it has forked (or failed to).
  // Only the server writes state.
  std::atomic<std::uint32_t> fork_request{0};
  std::atomic<std::uint32_t> fork_answer{0};
  std::atomic<std::uint32_t> want_kill{0};
  std::atomic<std::uint32_t> killed{0};    // the server killed it, as asked
  std::atomic<std::int32_t> ready_pid{0};  // the worker's pid, once it has run its hooks
  char type[256];
  char what[1720];
};

static_assert(std::atomic<std::uint32_t>::is_always_lock_free &&
                  std::atomic<std::uint64_t>::is_always_lock_free,
              "shared counters must be lock-free to work across processes");

// The shared board: anonymous MAP_SHARED memory, so it has no name and can
// never leak; children inherit it through fork().
class board {
 public:
  explicit board(std::size_t workers)
      : bytes_(sizeof(board_header) + workers * sizeof(worker_slot)), workers_(workers) {
    void* p = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      if (errno == ENOMEM) throw std::bad_alloc();
      throw_errno(errno, "mmap of the workers' shared board");
    }
    base_ = static_cast<std::byte*>(p);
    new (base_) board_header();
    for (std::size_t r = 0; r < workers; ++r)
      new (&slot(r)) worker_slot();
  }
  board(const board&) = delete;
  board& operator=(const board&) = delete;
  ~board() { ::munmap(base_, bytes_); }

  board_header& head() const noexcept {
    return *std::launder(reinterpret_cast<board_header*>(base_));
  }
  worker_slot& slot(std::size_t r) const noexcept {
    return *std::launder(
        reinterpret_cast<worker_slot*>(base_ + sizeof(board_header) + r * sizeof(worker_slot)));
  }
  std::size_t workers() const noexcept { return workers_; }

 private:
  std::size_t bytes_;
  std::size_t workers_;
  std::byte* base_ = nullptr;
};

inline void copy_text(char* out, std::size_t cap, const char* in) noexcept {
  std::size_t n = in ? std::strlen(in) : 0;
  if (n >= cap) n = cap - 1;
  if (n) std::memcpy(out, in, n);
  out[n] = '\0';
}

// In a catch block: writes the exception's type and message into the slot,
// without allocating more than the demangler does.
inline void record_exception(worker_slot& s, std::uint64_t job) noexcept {
  const std::type_info* t = abi::__cxa_current_exception_type();
  const char* mangled = t ? t->name() : "unknown exception";
  int status = 0;
  char* demangled = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  copy_text(s.type, sizeof s.type, demangled ? demangled : mangled);
  std::free(demangled);
  try {
    throw;
  } catch (const std::exception& e) {
    copy_text(s.what, sizeof s.what, e.what());
  } catch (...) {
    copy_text(s.what, sizeof s.what, "(not derived from std::exception)");
  }
  s.threw_job.store(job);
}

// ---- signals and threads

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

// ---- the child's side

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

// ---- the parent's side: children, and waiting for them

inline bool& use_pidfd() {
  static bool use = true;  // tests turn it off to check the polling fallback
  return use;
}

inline int open_pidfd(pid_t pid) noexcept {
#ifdef SYS_pidfd_open
  if (use_pidfd()) return int(::syscall(SYS_pidfd_open, pid, 0));
#endif
  (void)pid;
  return -1;
}

// Checks ready() until it holds or `budget` has passed: with a pause between
// looks (the parent, briefly), or giving the core away (a worker: with as many
// workers as cores, the parent needs one to post the next job).
template <class Ready>
bool spin_until(Ready ready, std::chrono::nanoseconds budget, bool yield) {
  const auto until = std::chrono::steady_clock::now() + budget;
  for (unsigned i = 1;; ++i) {
    if (ready()) return true;
    if (yield)
      ::sched_yield();
    else {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
    if (i % 16 == 0 && std::chrono::steady_clock::now() >= until) return false;
  }
}

// Waits on a 32-bit shared word until it differs from `seen`: spins a little
// (giving the core away), then sleeps on the futex with its `sleeping` flag
// up, so that the parent knows to wake it.
inline std::uint32_t wait_for_change(std::atomic<std::uint32_t>& word,
                                     std::atomic<std::uint32_t>& sleeping, std::uint32_t seen) {
  std::uint32_t v = seen;
  if (spin_until([&] { return (v = word.load(std::memory_order_acquire)) != seen; },
                 std::chrono::microseconds(50), true))
    return v;
  sleeping.store(1);  // seq_cst, as the parent's store of the word and load of this flag
  while ((v = word.load()) == seen)
    ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT, seen, nullptr,
              nullptr, 0);
  sleeping.store(0);
  return v;
}

inline void wake_all(std::atomic<std::uint32_t>& word) {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE, INT_MAX, nullptr,
            nullptr, 0);
}

// A progress display on stderr, drawn from the shared counter.
class progress_bar {
 public:
  progress_bar(const worker_options& o, const std::atomic<std::uint64_t>& counter)
      : on_(o.progress),
        tty_(on_ && ::isatty(2)),
        label_(o.label),
        total_(o.total),
        counter_(counter),
        start_(std::chrono::steady_clock::now()) {}
  bool live() const noexcept { return tty_; }
  // Redraws the bar (a terminal only).
  void draw() const {
    if (tty_) put("\r" + line(width()));
  }
  // The last word: the bar's final state and a newline, or one plain line.
  void finish() const noexcept {
    if (!on_) return;
    try {
      put((tty_ ? "\r" + line(width()) : line(0)) + "\n");
    } catch (...) {
    }
  }

 private:
  static std::size_t width() {
    winsize ws{};
    if (::ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20) return ws.ws_col;
    return 80;
  }
  static void put(const std::string& s) { (void)!::write(2, s.data(), s.size()); }
  // "label [=====>    ]  45% 450/1000 3.2 s", or "label: 450/1000 in 3.2 s"
  std::string line(std::size_t cols) const {
    const std::uint64_t done = counter_.load(std::memory_order_relaxed);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    char time[32];
    std::snprintf(time, sizeof time, "%.1f s", secs);
    std::string t = std::to_string(done);
    if (total_) t += "/" + std::to_string(total_);
    t += (cols ? " " : " in ") + std::string(time);
    if (!cols) return label_ + ": " + t;
    std::string s = label_ + " ";
    const std::size_t bar = cols > s.size() + t.size() + 14 ? cols - s.size() - t.size() - 14 : 0;
    if (total_ && bar >= 10) {
      const double f = std::min(1.0, double(done) / double(total_));
      const std::size_t full = std::size_t(f * double(bar));
      char pct[8];
      std::snprintf(pct, sizeof pct, "%3d%% ", int(f * 100));
      s += "[" + std::string(full, '=') + (full < bar ? ">" : "") +
           std::string(bar - full - (full < bar), ' ') + "] " + pct;
    }
    s += t;
    if (s.size() < cols - 1) s.append(cols - 1 - s.size(), ' ');  // over a longer old line
    return s;
  }

  bool on_, tty_;
  std::string label_;
  std::uint64_t total_;
  const std::atomic<std::uint64_t>& counter_;
  std::chrono::steady_clock::time_point start_;
};

inline void post(int eventfd) noexcept {
  const std::uint64_t one = 1;
  (void)!::write(eventfd, &one, sizeof one);
}

inline void drain(int eventfd) noexcept {
  std::uint64_t n;
  (void)!::read(eventfd, &n, sizeof n);
}

// SIGKILL through a pidfd where there is one: a pid could have been reused
// if a handler of the program's reaped the child behind our back.
inline void kill_process(pid_t pid, int pidfd) noexcept {
#ifdef SYS_pidfd_send_signal
  if (pidfd >= 0) {
    if (::syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0) == 0 || errno != ENOSYS)
      return;  // sent, or the process is gone: its pid may belong to another now
  }
#endif
  ::kill(pid, SIGKILL);
}

// Blocking or (WNOHANG) not: the child's wait status, -1 when someone else
// collected it, or nothing yet (false).
inline bool collect(pid_t pid, int options, int& status) {
  int st = 0;
  pid_t got;
  while ((got = ::waitpid(pid, &st, options)) < 0 && errno == EINTR) {
  }
  if (got == 0) return false;
  status = got < 0 ? -1 : st;
  return true;
}

// How a worker ended: its pid and wait status (-1: collected elsewhere).
struct ending {
  pid_t pid = 0;
  int status = 0;
};

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
        die_with(parent);
        run_worker_init();
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

  // The wait loop's interface (fork_server has the same).
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

// A process_pool's workers are forked by a fork server: a process forked
// when the pool is made, while the parent is single-threaded, that stays so
// for ever. It forks every worker, the first ones and their replacements, so
// that a replacement is safe even after the parent has started threads, and
// sees the parent's memory as it was when the pool was made, as the first
// workers do. It reaps them and writes how each ended into its slot, and
// kills one when asked. It dies with the parent, and the workers with it.
class fork_server {
 public:
  // `serve(rank, seq)` runs a worker's life in the forked worker.
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

  // The wait loop's interface (crew has the same).
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
            die_with(self);
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

// How worker r failed, from its slot and how it ended.
inline worker_failure failure_of(const board& b, std::size_t r, ending e, std::uint64_t job) {
  const worker_slot& s = b.slot(r);
  worker_failure f;
  f.rank = r;
  f.pid = e.pid;
  if (s.threw_job.load() == job) {
    f.what = worker_failure::kind::exception;
    f.type = s.type;
    f.message = s.what;
  } else if (e.status < 0) {
    f.what = worker_failure::kind::lost;
    f.message = "ended, but its exit status was collected elsewhere (a wait() of yours?)";
  } else if (WIFSIGNALED(e.status)) {
    f.what = worker_failure::kind::signal;
    f.code = WTERMSIG(e.status);
    f.message = "was killed by " + signal_name(f.code) + " (" + ::strsignal(f.code) + ")";
  } else {
    f.what = worker_failure::kind::exit;
    f.code = WEXITSTATUS(e.status);
    f.message = "exited with code " + std::to_string(f.code);
  }
  return f;
}

// Waits until every rank below `count` has finished its part of job `job`
// or failed: a pool's rank finishes when done(r) says so, a fork_workers
// rank when it ends. Kills the rest on a failure (stop_all) or the timeout,
// draws progress, and returns the failures in rank order, the stopped last.
// `wake_fd` (a pool's) is written by workers that finish while it sleeps.
template <class Procs, class Done>
std::vector<worker_failure> wait_for(Procs& procs, const board& b, std::size_t count,
                                     std::uint64_t job, Done done, const worker_options& o,
                                     int wake_fd = -1) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  const bool pool = wake_fd >= 0;
  board_header& h = b.head();
  progress_bar bar(o, h.progress);
  std::vector<worker_failure> failed, stopped;
  std::vector<char> finished(count, 0);
  std::size_t left = count;
  auto settle = [&](std::size_t r) {
    finished[r] = 1;
    --left;
    const worker_slot& s = b.slot(r);
    bool ok;
    if (pool && done(r))  // a pool worker may have finished just before it ended
      ok = s.threw_job.load() != job;
    else if (pool)
      ok = false;  // it ended in the middle of the job
    else
      ok = procs.end_of(r).status == 0 || (procs.end_of(r).status < 0 && s.returned.load());
    if (!ok) failed.push_back(failure_of(b, r, procs.end_of(r), job));
  };
  auto stop_rest = [&](worker_failure::kind why, const std::string& text) {
    for (std::size_t r = 0; r < count; ++r) {
      if (finished[r]) continue;
      if ((pool && done(r)) || procs.ended(r)) {
        settle(r);  // it finished, or ended, on its own
        continue;
      }
      if (!procs.stop(r)) {
        settle(r);  // it ended on its own just before
        continue;
      }
      finished[r] = 1;
      --left;
      worker_failure f = failure_of(b, r, procs.end_of(r), job);
      if (f.what != worker_failure::kind::exception) {
        f.what = why;
        f.code = 0;
        f.message = text;
      }
      (f.what == worker_failure::kind::stopped ? stopped : failed).push_back(f);
    }
  };
  auto any_news = [&] {
    for (std::size_t r = 0; r < count; ++r)
      if (!finished[r] && ((pool && done(r)) || (pool && procs.ended(r)))) return true;
    return false;
  };
  std::vector<pollfd> fds;
  std::vector<std::size_t> who;
  while (left) {
    procs.check_alive();
    for (std::size_t r = 0; r < count; ++r)
      if (!finished[r] && ((pool && done(r)) || procs.ended(r))) settle(r);
    if (!left) break;
    if (!failed.empty() && o.failure == on_failure::stop_all) {
      stop_rest(worker_failure::kind::stopped, "was stopped after another worker failed");
      break;
    }
    // Sleep until a worker ends or reports, the deadline, or the next redraw.
    int timeout = -1;
    if (o.timeout.count() > 0) {
      const auto left_ms =
          std::chrono::duration_cast<std::chrono::milliseconds>(start + o.timeout - clock::now())
              .count();
      if (left_ms <= 0) {
        stop_rest(worker_failure::kind::timeout,
                  "timed out after " + std::to_string(o.timeout.count()) + " ms and was killed");
        break;
      }
      timeout = int(std::min<long long>(left_ms, INT_MAX));
    }
    if (bar.live()) {
      bar.draw();
      timeout = timeout < 0 ? 100 : std::min(timeout, 100);
    }
    fds.clear();
    who.clear();
    if (pool) {
      // Short jobs end within microseconds: look for a while before sleeping.
      if (spin_until(any_news, std::chrono::microseconds(5), true)) continue;
      fds.push_back({wake_fd, POLLIN, 0});
      who.push_back(0);
    }
    const int cap = procs.watch(fds, who, count);
    if (cap >= 0) timeout = timeout < 0 ? cap : std::min(timeout, cap);
    if (pool) {
      h.parent_waiting.store(1);  // seq_cst, as the workers' store of done_job and load of this
      if (any_news()) {
        h.parent_waiting.store(0);
        continue;
      }
    }
    const int n = ::poll(fds.data(), fds.size(), timeout);
    if (pool) h.parent_waiting.store(0);
    if (n < 0 && errno != EINTR) throw_errno(errno, "poll for workers");
    if (n <= 0) continue;
    for (std::size_t i = 0; i < fds.size(); ++i) {
      if (!fds[i].revents) continue;
      if (pool && i == 0)
        drain(wake_fd);
      else
        procs.readied(who[i]);
    }
  }
  bar.finish();
  std::sort(failed.begin(), failed.end(),
            [](const worker_failure& a, const worker_failure& c) { return a.rank < c.rank; });
  failed.insert(failed.end(), stopped.begin(), stopped.end());
  return failed;
}

inline void check_worker_count(std::size_t n) {
  if (n == 0 || n > max_workers)
    throw std::invalid_argument("shmarray: cannot run " + std::to_string(n) + " workers (1 to " +
                                std::to_string(max_workers) + ")");
}

// ---- parallel_for's share of an index range

// Indices are offsets from `first` in 64 bits, whatever the index type.
template <class I>
std::uint64_t range_length(I first, I last) {
  static_assert(std::is_integral_v<I> && !std::is_same_v<I, bool>,
                "parallel_for takes an integer index range");
  using U = std::make_unsigned_t<I>;
  return last > first ? std::uint64_t(U(U(last) - U(first))) : 0;
}

template <class I>
I index_at(std::uint64_t first_bits, std::uint64_t k) {
  using U = std::make_unsigned_t<I>;
  return I(U(U(first_bits) + U(k)));
}

template <class I, class F>
void call_index(const F& fn, I i, const worker& w) {
  if constexpr (std::is_invocable_v<const F&, I, const worker&>)
    fn(i, w);
  else {
    static_assert(std::is_invocable_v<const F&, I>,
                  "parallel_for calls fn(i) or fn(i, const shmarray::worker&)");
    fn(i);
  }
}

// Runs the indices this worker owns: its block, or chunks from the counter.
template <class I, class F>
void run_share(const F& fn, const job_desc& j, std::atomic<std::uint64_t>& next, const worker& w) {
  auto one = [&](std::uint64_t k) {
    call_index(fn, index_at<I>(j.first, k), w);
    if (j.count_progress) w.progress(1);
  };
  if (j.sched == schedule::blocks) {
    const std::uint64_t b = j.length * w.rank() / j.count;
    const std::uint64_t e = j.length * (w.rank() + 1) / j.count;
    for (std::uint64_t k = b; k < e; ++k)
      one(k);
    return;
  }
  const std::uint64_t chunk = std::max<std::uint64_t>(1, j.chunk);
  for (;;) {
    const std::uint64_t b = next.fetch_add(chunk, std::memory_order_relaxed);
    if (b >= j.length) return;
    const std::uint64_t e = std::min(j.length, b + chunk);
    for (std::uint64_t k = b; k < e; ++k)
      one(k);
  }
}

template <class I>
job_desc for_desc(std::size_t workers, I first, I last, const for_options& o) {
  job_desc j;
  j.length = range_length(first, last);
  j.first = std::uint64_t(std::make_unsigned_t<I>(first));
  j.sched = o.sched;
  j.chunk = o.chunk;
  j.count = std::size_t(std::min<std::uint64_t>(workers, j.length));
  j.count_progress = o.progress;
  return j;
}

inline worker_options with_total(worker_options o, std::uint64_t total) {
  if (!o.total) o.total = total;
  return o;
}

template <class F>
void call_worker(F&& fn, const worker& w) {
  if constexpr (std::is_invocable_v<F&&, const worker&>)
    std::forward<F>(fn)(w);
  else {
    static_assert(std::is_invocable_v<F&&>,
                  "a worker's job is fn(const shmarray::worker&) or fn()");
    std::forward<F>(fn)();
  }
}

// ---- a process_pool's job protocol, on the board
//
// The parent stages a job (its callable copied into the board, and a
// trampoline that knows its type), publishes it by bumping the job number
// and the futex word, and waits until every worker's done_job says so.
// A worker waits for the word to change, runs its part and reports. The
// parent writes the next job only once every worker has reported, so a job
// is never written while a worker reads it. The ThreadSanitizer tests run
// these same functions with threads for workers (tests/test_threads.cpp).

template <class F>
const F& staged(const job_desc& j) {
  return *std::launder(reinterpret_cast<const F*>(j.callable));
}

template <class F>
void run_staged(board_header& h, const worker& w) {
  call_worker(staged<F>(h.job), w);
}

template <class I, class F>
void for_staged(board_header& h, const worker& w) {
  run_share<I>(staged<F>(h.job), h.job, h.next, w);
}

// Copies a job's callable into the board.
template <class F>
void copy_job(job_desc& j, const F& fn) {
  static_assert(std::is_trivially_copyable_v<F>,
                "a process_pool job must be trivially copyable: capture by value only "
                "indices, sizes, shmarray::fixed_name and raw pointers into arrays made "
                "before the pool; never an ndarray handle, a std::string, a std::vector or a "
                "std::function (see process_pool in workers.hpp)");
  static_assert(sizeof(F) <= max_job_bytes,
                "a process_pool job must fit in process_pool::max_job_bytes");
  static_assert(alignof(F) <= 64, "a process_pool job must not be over-aligned");
  std::memcpy(j.callable, std::addressof(fn), sizeof(F));
}

// fn(worker) on each of the board's workers.
template <class F>
void stage_run(board& b, const F& fn) {
  job_desc& j = b.head().job;
  copy_job(j, fn);
  j.run = &run_staged<F>;
  j.count = b.workers();
  j.count_progress = false;
}

// parallel_for's job; false for an empty range (nothing staged).
template <class I, class F>
bool stage_for(board& b, I first, I last, const F& fn, const for_options& o) {
  const job_desc shape = for_desc(b.workers(), first, last, o);
  if (shape.count == 0) return false;
  job_desc& j = b.head().job;
  copy_job(j, fn);
  j.run = &for_staged<I, F>;
  j.count = shape.count;
  j.first = shape.first;
  j.length = shape.length;
  j.sched = shape.sched;
  j.chunk = shape.chunk;
  j.count_progress = shape.count_progress;
  return true;
}

// Publishes the staged job and wakes the workers that sleep; its number.
inline std::uint64_t publish_job(board& b) {
  auto& h = b.head();
  flush_streams();  // what the parent printed before the job comes first
  h.progress.store(0);
  h.next.store(0);
  const std::uint64_t job = h.job_number.load() + 1;
  h.job_number.store(job);
  h.seq.store(std::uint32_t(job));  // seq_cst, as the workers' store and load of `sleeping`
  for (std::size_t r = 0; r < b.workers(); ++r)
    if (b.slot(r).sleeping.load()) {
      wake_all(h.seq);
      break;
    }
  return job;
}

// Publishes the staged job and waits for it (detail::wait_for); the
// failures. If the wait throws, no worker goes on with the job: the next
// would be written under it.
template <class Procs>
std::vector<worker_failure> run_job(Procs& procs, board& b, int wake, const worker_options& o) {
  const std::uint64_t job = publish_job(b);
  auto done = [&b, job](std::size_t r) { return b.slot(r).done_job.load() == job; };
  try {
    return wait_for(procs, b, b.workers(), job, done, o, wake);
  } catch (...) {
    try {
      for (std::size_t r = 0; r < b.workers(); ++r)
        if (!done(r)) procs.stop(r);
    } catch (...) {
    }
    throw;
  }
}

// Tells the workers to leave once they have finished what they are doing.
inline void end_jobs(board& b) {
  auto& h = b.head();
  h.shutdown.store(1);
  h.seq.fetch_add(1);
  wake_all(h.seq);
}

// Worker r's loop: waits for each job, runs its part, reports it done.
// Returns when the pool shuts down. `seen` is the futex word's value when
// the worker started.
inline void serve_jobs(board& b, std::size_t r, int wake, std::uint32_t seen) {
  auto& h = b.head();
  auto& slot = b.slot(r);
  for (;;) {
    seen = wait_for_change(h.seq, slot.sleeping, seen);
    if (h.shutdown.load()) return;
    const std::uint64_t job = h.job_number.load();
    const job_desc& j = h.job;
    if (r < j.count) {
      try {
        j.run(h, worker(r, j.count, &h.progress));
      } catch (...) {
        record_exception(slot, job);
      }
      flush_streams();  // what a job printed is out before the job is done
    }
    slot.done_job.store(job);  // seq_cst, as the parent's store of parent_waiting
    if (h.parent_waiting.load()) post(wake);
  }
}

}  // namespace detail

// Forks n workers; worker r calls fn(worker{r, n}) (or fn()) and leaves with
// _exit, so no destructor or atexit handler of the parent's runs in it (a
// manager of the parent's removes nothing). Returns when every worker has
// ended; throws worker_error if any failed. fn may capture anything: each
// worker is a copy of the parent as it was at the fork.
template <class F>
void fork_workers(std::size_t n, F&& fn, const worker_options& o = {}) {
  detail::check_worker_count(n);
  detail::check_fork_safe(o.threads);
  detail::board b(n);
  detail::crew c(b);
  for (std::size_t r = 0; r < n; ++r)
    c.spawn(r, [&, r] { detail::call_worker(fn, worker(r, n, &b.head().progress)); });
  auto failed = detail::wait_for(
      c, b, n, 1, [](std::size_t) { return false; }, o);
  if (!failed.empty()) throw worker_error(std::move(failed));
}

// Splits [first, last) among up to n_workers forked workers (never more
// workers than indices) and calls fn(i) or fn(i, worker) for each index, once.
// schedule::blocks (the default) gives each worker one contiguous block;
// schedule::dynamic hands out chunks from a shared counter, for uneven work.
// With o.progress, the bar counts indices.
template <class I, class F>
void parallel_for(std::size_t n_workers, I first, I last, F&& fn, const for_options& o = {}) {
  detail::check_worker_count(n_workers);
  const detail::job_desc j = detail::for_desc(n_workers, first, last, o);
  if (j.count == 0) return;
  detail::check_fork_safe(o.threads);
  detail::board b(j.count);
  detail::crew c(b);
  for (std::size_t r = 0; r < j.count; ++r)
    c.spawn(r, [&, r] {
      detail::run_share<I>(fn, j, b.head().next, worker(r, j.count, &b.head().progress));
    });
  auto failed = detail::wait_for(
      c, b, j.count, 1, [](std::size_t) { return false; }, detail::with_total(o, j.length));
  if (!failed.empty()) throw worker_error(std::move(failed));
}

// Workers forked once, running many jobs: iterative algorithms do not pay for
// a fork() each step (from a parent with gigabytes of private memory, a fork
// costs tens of milliseconds).
//
// A job is copied byte for byte into shared memory and called in workers that
// were forked before it existed, so it must be trivially copyable (checked at
// compile time): a function pointer, or a lambda capturing by value only
// indices, sizes, fixed_name and raw pointers into shared arrays made before
// the pool. A pointer or reference to the parent's stack is refused when the
// job is run (where the closure has no padding to hide one); an array made
// after the pool is reached by name (capture a fixed_name and attach in the
// job). The job's code must be in the program or a library loaded before the
// pool (not a library dlopen()ed later).
//
// The workers are forked by a fork server made with the pool (see
// detail::fork_server): each sees the parent's memory as it was when the pool
// was made, and a worker that dies mid-job (failing that job with
// worker_error) is replaced before the next job, safely even if the parent
// has started threads since. Workers die with the parent; the destructor
// stops and reaps them. Use a pool from the process and thread that made it.
class process_pool {
 public:
  static constexpr std::size_t max_job_bytes = detail::max_job_bytes;

  explicit process_pool(std::size_t workers, thread_policy threads = thread_policy::refuse)
      : owner_(::getpid()) {
    detail::check_worker_count(workers);
    detail::check_fork_safe(threads);
    board_ = std::make_unique<detail::board>(workers);
    wake_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_ < 0) detail::throw_errno(errno, "eventfd for a process_pool");
    detail::scope_exit close_wake([this] { ::close(wake_); });
    stack_ = stack_range();
    detail::board* b = board_.get();
    const int wake = wake_;
    server_ = std::make_unique<detail::fork_server>(
        *b, wake, [b, wake](std::size_t r, std::uint32_t seen) { serve(*b, r, wake, seen); });
    detail::scope_exit stop_server([this] { server_->shut(std::chrono::milliseconds(0)); });
    std::vector<std::size_t> all(workers);
    for (std::size_t r = 0; r < workers; ++r)
      all[r] = r;
    server_->start(all);
    stop_server.dismiss();
    close_wake.dismiss();
  }
  process_pool(const process_pool&) = delete;
  process_pool& operator=(const process_pool&) = delete;

  ~process_pool() {
    if (::getpid() != owner_) {  // a forked copy: the workers are not its to stop
      server_->disown();
      ::close(wake_);
      return;
    }
    detail::end_jobs(*board_);
    server_->shut(std::chrono::seconds(2));  // idle workers leave at once
    ::close(wake_);
  }

  std::size_t size() const noexcept { return board_->workers(); }
  // The workers' process ids, by rank (0 for one not running now).
  std::vector<pid_t> pids() const {
    std::vector<pid_t> out(size());
    for (std::size_t r = 0; r < size(); ++r)
      out[r] =
          board_->slot(r).state.load() == detail::slot_running ? board_->slot(r).pid.load() : 0;
    return out;
  }
  // The fork server's process id (a child of this process while the pool lives).
  pid_t server_pid() const noexcept { return server_->pid(); }

  // Calls fn(worker) (or fn()) on every worker once; returns when all have.
  template <class F>
  void run(F fn, const worker_options& o = {}) {
    check_job(fn);
    detail::stage_run(*board_, fn);
    post_and_wait(o);
  }

  // parallel_for over the pool's workers: fn(i) or fn(i, worker) for each index.
  template <class I, class F>
  void parallel_for(I first, I last, F fn, const for_options& o = {}) {
    if (detail::range_length(first, last) == 0) return;  // nothing to run, nothing to check
    check_job(fn);
    if (detail::stage_for(*board_, first, last, fn, o))
      post_and_wait(detail::with_total(o, detail::range_length(first, last)));
  }

 private:
  static std::pair<std::uintptr_t, std::uintptr_t> stack_range() {
    pthread_attr_t a;
    void* base = nullptr;
    std::size_t size = 0;
    if (::pthread_getattr_np(::pthread_self(), &a) == 0) {
      ::pthread_attr_getstack(&a, &base, &size);
      ::pthread_attr_destroy(&a);
    }
    const auto b = reinterpret_cast<std::uintptr_t>(base);
    return {b, b + size};
  }

  // Checks a job before it is copied into the shared slot.
  template <class F>
  void check_job(const F& fn) const {
    if (::getpid() != owner_)
      throw std::logic_error("shmarray: a process_pool is used only by the process that made it");
    unsigned char bytes[sizeof(F)];
    std::memcpy(bytes, std::addressof(fn), sizeof(F));
    // A word that points into the parent's stack: a pointer to a local; the
    // workers' stacks are their own. Only where every byte of the closure is
    // a value: padding holds whatever was on the stack before, which may
    // look like anything, and a closure with a reference member ([&]) does
    // not qualify, so reference captures are not caught (C++17 cannot tell
    // them at compile time).
    if constexpr (sizeof(F) >= sizeof(std::uintptr_t) &&
                  std::has_unique_object_representations_v<F>) {
      for (std::size_t at = 0; at + sizeof(std::uintptr_t) <= sizeof(F);
           at += alignof(std::uintptr_t)) {
        std::uintptr_t word;
        std::memcpy(&word, bytes + at, sizeof word);
        if (word >= stack_.first && word < stack_.second)
          throw std::invalid_argument(
              "shmarray: a process_pool job captures a pointer into the parent's stack (a "
              "pointer to a local variable); a worker has a stack of its own, where that address "
              "means nothing. Capture values, and pointers into shared arrays made before the "
              "pool");
      }
    }
  }

  // A worker's life: run the hooks, say it is ready, serve jobs, leave.
  [[noreturn]] static void serve(detail::board& b, std::size_t r, int wake, std::uint32_t seen) {
    run_worker_init();
    b.slot(r).ready_pid.store(::getpid());
    detail::post(wake);
    detail::serve_jobs(b, r, wake, seen);
    detail::flush_streams();
    ::_exit(0);
  }

  void post_and_wait(const worker_options& o) {
    server_->check_alive();
    // Replace the workers that ended since the last job (killed, timed out).
    std::vector<std::size_t> ended;
    for (std::size_t r = 0; r < size(); ++r)
      if (board_->slot(r).state.load() != detail::slot_running) ended.push_back(r);
    server_->start(ended);
    std::vector<worker_failure> failed = detail::run_job(*server_, *board_, wake_, o);
    for (auto& f : failed)
      if (f.what == worker_failure::kind::signal && (f.code == SIGSEGV || f.code == SIGBUS))
        f.message +=
            "; in a pool job, is it a pointer into an array made after the pool, or a "
            "reference to the parent's stack? Capture a fixed_name and attach in the job";
    if (!failed.empty()) throw worker_error(std::move(failed));
  }

  pid_t owner_;
  std::unique_ptr<detail::board> board_;
  int wake_ = -1;
  std::unique_ptr<detail::fork_server> server_;
  std::pair<std::uintptr_t, std::uintptr_t> stack_{0, 0};
};

}  // namespace shmarray
