// The ring benchmark's ping-pong machinery, shared by bench_ring.cpp and its
// iceoryx baseline (ring_iceoryx.cpp): a pair of forked processes, a leader
// and a follower, parked on a control pipe between batches (so that no pair
// spins while another is measured), which do a batch of round trips when
// told; the leader times each round trip and sends the times back.
#pragma once

#include <poll.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <initializer_list>
#include <shmarray/detail/waiting.hpp>
#include <thread>
#include <vector>

namespace bench::pingpong {

using clock_type = std::chrono::steady_clock;

[[noreturn]] inline void die(const char* what) {
  std::fprintf(stderr, "bench_ring: %s failed\n", what);
  std::exit(1);
}

// The spin-wait hint the ring's own waits use.
using shmarray::detail::cpu_relax;

inline bool write_all(int fd, const void* p, std::size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n) {
    const ssize_t r = ::write(fd, c, n);
    if (r <= 0) return false;
    c += r;
    n -= std::size_t(r);
  }
  return true;
}

// Reads n bytes, at most `timeout_s` seconds of waiting for each part
// (a child that hangs must not hang the benchmark).
inline bool read_all(int fd, void* p, std::size_t n, int timeout_s = 120) {
  char* c = static_cast<char*>(p);
  while (n) {
    pollfd pf{fd, POLLIN, 0};
    if (::poll(&pf, 1, timeout_s * 1000) != 1) return false;
    const ssize_t r = ::read(fd, c, n);
    if (r <= 0) return false;
    c += r;
    n -= std::size_t(r);
  }
  return true;
}

// Forks a child that runs fn with only stdin, stdout, stderr and `keep`
// open (a sibling's copy of another child's pipe would hide that child's
// death), then exits: 0, or 1 if fn threw.
inline pid_t spawn(std::initializer_list<int> keep, const std::function<void()>& fn) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) die("fork");
  if (pid > 0) return pid;
  std::vector<int> k(keep);
  std::sort(k.begin(), k.end());
  unsigned from = 3;
  for (int fd : k) {
    if (unsigned(fd) > from) ::close_range(from, unsigned(fd) - 1, 0);
    from = std::max(from, unsigned(fd) + 1);
  }
  ::close_range(from, ~0U, 0);
  int code = 0;
  try {
    fn();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_ring: a child failed: %s\n", e.what());
    code = 1;
  }
  std::fflush(nullptr);
  ::_exit(code);
}

inline bool exited_ok(pid_t pid) {
  int st = 0;
  return ::waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

// A child's end of its pipes to the coordinator.
class control {
 public:
  control(int in, int out) : in_(in), out_(out) {}
  // Set up: the coordinator may start batches.
  void ready() {
    const char c = 1;
    if (!write_all(out_, &c, 1)) die("ready");
  }
  // The round trips of the next batch; 0: the end.
  int batch() {
    std::int32_t n = 0;
    if (!read_all(in_, &n, sizeof n, 3600)) return 0;
    return n;
  }
  // The leader: each round trip's nanoseconds.
  void report(const std::vector<std::uint32_t>& ns) {
    if (!write_all(out_, ns.data(), ns.size() * sizeof ns[0])) die("report");
  }
  // The follower: the batch is answered, and it is parked again.
  void done() { ready(); }

 private:
  int in_, out_;
};

// The leader's loop: `trip()` does one round trip; each is timed with one
// clock read (the end of one trip is the start of the next). A `gap`
// (untimed) before each trip lets the follower fall asleep first.
template <class Trip>
void lead(control& c, Trip&& trip, std::chrono::nanoseconds gap = std::chrono::nanoseconds(0)) {
  c.ready();
  for (int n; (n = c.batch()) > 0;) {
    std::vector<std::uint32_t> ns(static_cast<std::size_t>(n));
    auto t = clock_type::now();
    for (auto& v : ns) {
      if (gap.count() > 0) {
        std::this_thread::sleep_for(gap);
        t = clock_type::now();
      }
      trip();
      const auto t1 = clock_type::now();
      v = std::uint32_t(std::min<std::int64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t).count(), UINT32_MAX));
      t = t1;
    }
    c.report(ns);
  }
}

// The follower's loop: `reply()` answers one round trip.
template <class Reply>
void follow(control& c, Reply&& reply) {
  c.ready();
  for (int n; (n = c.batch()) > 0;) {
    for (int i = 0; i < n; ++i)
      reply();
    c.done();
  }
}

// A leader and a follower, forked from the coordinator, each running its
// role with a control and a page of anonymous shared memory made before
// the fork (for baselines that need nothing else).
class ping_pong {
 public:
  using role = std::function<void(control&, void* shared)>;

  ping_pong(const role& leader, const role& follower) {
    shared_ = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared_ == MAP_FAILED) die("mmap");
    leader_ = start(leader);
    follower_ = start(follower);
    char c;
    if (!read_all(leader_.from, &c, 1) || !read_all(follower_.from, &c, 1))
      die("setting up a ping-pong pair");
  }
  ping_pong(const ping_pong&) = delete;
  ping_pong& operator=(const ping_pong&) = delete;
  ~ping_pong() {
    const std::int32_t end = 0;
    for (auto* s : {&follower_, &leader_}) {
      (void)write_all(s->to, &end, sizeof end);
      ::close(s->to);
      ::close(s->from);
    }
    const bool follower_ok = exited_ok(follower_.pid);
    const bool leader_ok = exited_ok(leader_.pid);
    ::munmap(shared_, 4096);
    if (!follower_ok || !leader_ok) die("a ping-pong pair's end");
  }

  // n round trips: each one's nanoseconds.
  std::vector<std::uint32_t> run(int n) {
    const std::int32_t k = n;
    if (!write_all(follower_.to, &k, sizeof k) || !write_all(leader_.to, &k, sizeof k))
      die("starting a batch");
    std::vector<std::uint32_t> ns(static_cast<std::size_t>(n));
    char c;
    if (!read_all(leader_.from, ns.data(), ns.size() * sizeof ns[0]) ||
        !read_all(follower_.from, &c, 1))
      die("a batch of round trips");
    return ns;
  }

 private:
  struct side {
    pid_t pid = -1;
    int to = -1, from = -1;
  };
  side start(const role& r) {
    int down[2], up[2];
    if (::pipe(down) != 0 || ::pipe(up) != 0) die("pipe");
    side s;
    void* shared = shared_;
    s.pid = spawn({down[0], up[1]}, [&] {
      control c(down[0], up[1]);
      r(c, shared);
    });
    ::close(down[0]);
    ::close(up[1]);
    s.to = down[1];
    s.from = up[0];
    return s;
  }
  void* shared_ = nullptr;
  side leader_, follower_;
};

}  // namespace bench::pingpong
