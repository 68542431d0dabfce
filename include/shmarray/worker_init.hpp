// shmarray: what every forked worker runs first. Adapters register here what
// a child needs (the Eigen adapter makes Eigen single-threaded, so a worker
// per core does not also start a thread per core); the core's fork workers
// run it in every child. The core never includes an adapter.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>

namespace shmarray {

namespace detail {

inline constexpr std::size_t max_worker_init = 16;

struct worker_init_table {
  std::array<std::atomic<void (*)()>, max_worker_init> fns{};
  std::atomic<std::size_t> count{0};
};

inline worker_init_table& worker_inits() {
  static worker_init_table t;
  return t;
}

}  // namespace detail

// Registers fn to run in every forked worker, once per distinct fn. Safe to
// call from static initialisers. False when the table (16 entries) is full.
inline bool add_worker_init(void (*fn)()) {
  auto& t = detail::worker_inits();
  const std::size_t n = std::min(t.count.load(), detail::max_worker_init);
  for (std::size_t i = 0; i < n; ++i)
    if (t.fns[i].load() == fn) return true;
  const std::size_t i = t.count.fetch_add(1);
  if (i >= detail::max_worker_init) return false;
  t.fns[i].store(fn);
  return true;
}

// Runs every registered function; a forked worker calls this first. Plain
// loads and calls only, so it is fine right after fork().
inline void run_worker_init() {
  auto& t = detail::worker_inits();
  const std::size_t n = std::min(t.count.load(), detail::max_worker_init);
  for (std::size_t i = 0; i < n; ++i)
    if (auto fn = t.fns[i].load()) fn();
}

}  // namespace shmarray
