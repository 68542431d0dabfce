// shmarray internals: the parent's wait for a run of workers, over any set
// of workers that has the interface below (crew, fork_server, and the
// thread-backed pool of tests/test_threads.cpp).
#pragma once

#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../errors.hpp"
#include "../worker.hpp"
#include "board.hpp"
#include "failure.hpp"
#include "progress_bar.hpp"
#include "waiting.hpp"

namespace shmarray::detail {

// What wait_for needs of a set of workers, which crew (fork_workers' children),
// fork_server (a pool's workers) and tests/test_threads.cpp's thread-backed
// pool each provide:
//   bool ended(std::size_t r)    worker r has ended (and been collected)
//   bool stop(std::size_t r)     kills r and collects it; false if it had ended on its own
//   ending end_of(std::size_t r) its pid and wait status (-1: collected elsewhere)
//   int watch(std::vector<pollfd>& fds, std::vector<std::size_t>& who, std::size_t count)
//                                adds what to poll while ranks below count run, with the
//                                rank (or tag) each fd stands for; the longest sleep that
//                                still notices an end (-1: any)
//   void readied(std::size_t who) one of those descriptors is readable
//   void check_alive()           throws if the set can no longer run anything
template <class P, class = void>
struct is_worker_set : std::false_type {};
template <class P>
struct is_worker_set<P,
                     std::void_t<decltype(bool(std::declval<P&>().ended(std::size_t()))),
                                 decltype(bool(std::declval<P&>().stop(std::size_t()))),
                                 decltype(ending(std::declval<const P&>().end_of(std::size_t()))),
                                 decltype(int(std::declval<const P&>().watch(
                                     std::declval<std::vector<pollfd>&>(),
                                     std::declval<std::vector<std::size_t>&>(), std::size_t()))),
                                 decltype(std::declval<P&>().readied(std::size_t())),
                                 decltype(std::declval<P&>().check_alive())>> : std::true_type {};

// When a rank has finished its part, the other half of what wait_for needs:
// a fork_workers rank when its process ends (until_exit); a pool's rank,
// whose process lives on, when done(r) says so (until_done), and its
// workers write wake_fd when they finish while the parent sleeps.
struct until_exit {
  static constexpr bool persistent = false;
  bool done(std::size_t) const noexcept { return false; }
  int wake_fd() const noexcept { return -1; }
};
template <class Done>
struct until_done {
  static constexpr bool persistent = true;
  Done is_done;
  int wake;
  bool done(std::size_t r) const { return is_done(r); }
  int wake_fd() const noexcept { return wake; }
};
template <class Done>
until_done<Done> done_when(Done d, int wake_fd) {
  return {std::move(d), wake_fd};
}

// Waits until every rank below `count` has finished its part of job `job`
// or failed, as `finish` says (until_exit or until_done). Kills the rest on a
// failure (stop_all) or the timeout, draws progress, and returns the
// failures in rank order, the stopped last.
template <class Procs, class Finish>
std::vector<worker_failure> wait_for(Procs& procs, const board& b, std::size_t count,
                                     std::uint64_t job, const Finish& finish,
                                     const worker_options& o) {
  static_assert(is_worker_set<Procs>::value,
                "wait_for needs ended, stop, end_of, watch, readied and check_alive (see "
                "is_worker_set)");
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  constexpr bool pool = Finish::persistent;
  const int wake_fd = finish.wake_fd();
  auto done = [&finish](std::size_t r) { return finish.done(r); };
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

}  // namespace shmarray::detail
