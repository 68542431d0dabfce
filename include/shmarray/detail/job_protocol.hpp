// shmarray internals: a process_pool's job protocol on the board: the
// parent stages and publishes a job, the workers serve it and report.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>
#include <vector>

#include "../errors.hpp"
#include "../worker.hpp"
#include "board.hpp"
#include "failure.hpp"
#include "fork_safety.hpp"
#include "index_split.hpp"
#include "wait_for.hpp"
#include "waiting.hpp"

namespace shmarray::detail {

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
    return wait_for(procs, b, b.workers(), job, done_when(done, wake), o);
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

}  // namespace shmarray::detail
