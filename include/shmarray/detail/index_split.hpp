// shmarray internals: parallel_for's split of an index range among
// workers, and how a worker calls the user's function.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "../worker.hpp"
#include "board.hpp"

namespace shmarray::detail {

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

}  // namespace shmarray::detail
