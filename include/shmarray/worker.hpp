// shmarray: what fork_workers, parallel_for and a process_pool share: the
// worker a job is given, the options of a run, and fixed_name.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>

#include "errors.hpp"

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

}  // namespace shmarray
