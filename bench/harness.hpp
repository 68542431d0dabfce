// Benchmark harness: a baseline and a candidate run alternately in one
// process, median of many runs, printed as a ratio. The machines are shared
// and noisy: read the ratios, not the times.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace bench {

inline double seconds_of(const std::function<void()>& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct result {
  double base, ours;
};

// Runs baseline and candidate alternately `reps` times, after one untimed
// warm-up of each; `teardown` runs untimed after each call.
inline result compare(
    int reps, const std::function<void()>& base, const std::function<void()>& ours,
    const std::function<void()>& teardown = [] {}) {
  base();
  teardown();
  ours();
  teardown();
  std::vector<double> b, o;
  for (int i = 0; i < reps; ++i) {
    b.push_back(seconds_of(base));
    teardown();
    o.push_back(seconds_of(ours));
    teardown();
  }
  return {median(b), median(o)};
}

inline std::string human(double s) {
  char buf[64];
  if (s < 1e-3)
    std::snprintf(buf, sizeof buf, "%.1f us", s * 1e6);
  else if (s < 1)
    std::snprintf(buf, sizeof buf, "%.2f ms", s * 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.2f s", s);
  return buf;
}

inline void header(const char* title) {
  std::printf("\n%s: ratio = shmarray / baseline, lower is better\n\n", title);
  std::printf("| %-56s | %-32s | %10s | %10s | %6s |\n", "operation", "baseline", "baseline",
              "shmarray", "ratio");
  std::printf("|%s|%s|%s|%s|%s|\n", std::string(58, '-').c_str(), std::string(34, '-').c_str(),
              std::string(12, '-').c_str(), std::string(12, '-').c_str(),
              std::string(8, '-').c_str());
}

inline void row(const std::string& what, const std::string& baseline, const result& r) {
  std::printf("| %-56s | %-32s | %10s | %10s | %5.2fx |\n", what.c_str(), baseline.c_str(),
              human(r.base).c_str(), human(r.ours).c_str(), r.ours / r.base);
  std::fflush(stdout);
}

// Runs `measure` (which returns seconds) in a child process of its own and
// returns what it measured, or -1 if the child failed. For baselines that
// start threads (OpenMP): this process must stay single-threaded, or its
// own forks would be unsafe.
inline double in_own_process(const std::function<double()>& measure) {
  int fds[2];
  if (::pipe(fds) != 0) return -1;
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const double m = measure();
    (void)!::write(fds[1], &m, sizeof m);
    ::_exit(0);
  }
  ::close(fds[1]);
  double m = -1;
  if (pid < 0 || ::read(fds[0], &m, sizeof m) != sizeof m) m = -1;
  ::close(fds[0]);
  int status = 0;
  if (pid > 0) ::waitpid(pid, &status, 0);
  return m;
}

// Keeps a value from being optimised away.
template <class T>
inline void keep(const T& v) {
  asm volatile("" : : "g"(&v) : "memory");
}

}  // namespace bench
