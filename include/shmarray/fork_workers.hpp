// shmarray: fork_workers(n, fn) and parallel_for(n, first, last, fn): a
// fork per call. A worker's exception, non-zero exit or signal comes back to
// the parent as worker_error; the parent reaps every child, whatever
// happens, and no worker outlives its parent.
#pragma once

#include <cstddef>
#include <utility>

#include "detail/board.hpp"
#include "detail/crew.hpp"
#include "detail/fork_safety.hpp"
#include "detail/index_split.hpp"
#include "detail/wait_for.hpp"
#include "errors.hpp"
#include "worker.hpp"

namespace shmarray {

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
  auto failed = detail::wait_for(c, b, n, 1, detail::until_exit{}, o);
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
  auto failed =
      detail::wait_for(c, b, j.count, 1, detail::until_exit{}, detail::with_total(o, j.length));
  if (!failed.empty()) throw worker_error(std::move(failed));
}

}  // namespace shmarray
