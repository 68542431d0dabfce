// shmarray: process_pool, workers forked once that run many jobs.
#pragma once

#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "detail/board.hpp"
#include "detail/fork_safety.hpp"
#include "detail/fork_server.hpp"
#include "detail/index_split.hpp"
#include "detail/job_protocol.hpp"
#include "detail/mapping_registry.hpp"
#include "detail/pool_job.hpp"
#include "detail/scope_exit.hpp"
#include "errors.hpp"
#include "worker.hpp"
#include "worker_init.hpp"

namespace shmarray {

// Workers forked once, running many jobs: iterative algorithms do not pay for
// a fork() each step (from a parent with gigabytes of private memory, a fork
// costs tens of milliseconds).
//
// The workers were forked when the pool was made, so a job cannot see the
// parent's memory as it is now, only shared memory made before the pool. So
// a job is a callable that captures nothing (a captureless lambda or a
// function pointer: checked at compile time) and, optionally, one argument,
// copied into shared memory for the call: a trivially copyable value with
// no padding (indices, sizes, pointers and array_refs into arrays made
// before the pool, fixed_name). The argument is checked when the job is run:
// a pointer into the parent's stack, or into an array made after the pool,
// is refused (invalid_job). An array made after the pool is reached by name
// (pass a fixed_name and attach in the job). The job's code must be in the
// program or a library loaded before the pool (not a library dlopen()ed
// later).
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
    const auto stack = stack_range();
    mem_ = {stack.first, stack.second, detail::mapping_registry::instance().last()};
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
    detail::check_callable<F>();
    check_owner();
    detail::stage_run(*board_, detail::plain_job<F>{fn});
    post_and_wait(o);
  }
  // Calls fn(arg, worker) (or fn(arg)) on every worker once, with a copy of arg.
  template <class F, class Arg, class = detail::if_job_argument<Arg>>
  void run(F fn, const Arg& arg, const worker_options& o = {}) {
    detail::check_callable<F>();
    detail::check_argument_type<Arg>();
    check_owner();
    detail::check_argument(arg, mem_);
    detail::stage_run(*board_, detail::arg_job<F, Arg>{fn, arg});
    post_and_wait(o);
  }

  // parallel_for over the pool's workers: fn(i) or fn(i, worker) for each index.
  template <class I, class F>
  void parallel_for(I first, I last, F fn, const for_options& o = {}) {
    detail::check_callable<F>();
    if (detail::range_length(first, last) == 0) return;  // nothing to run, nothing to check
    check_owner();
    if (detail::stage_for(*board_, first, last, fn, o))
      post_and_wait(detail::with_total(o, detail::range_length(first, last)));
  }
  // fn(i, arg, worker) or fn(i, arg) for each index, with a copy of arg.
  template <class I, class F, class Arg, class = detail::if_job_argument<Arg>>
  void parallel_for(I first, I last, F fn, const Arg& arg, const for_options& o = {}) {
    detail::check_callable<F>();
    detail::check_argument_type<Arg>();
    if (detail::range_length(first, last) == 0) return;
    check_owner();
    detail::check_argument(arg, mem_);
    if (detail::stage_for(*board_, first, last, detail::arg_for_job<F, Arg>{fn, arg}, o))
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

  void check_owner() const {
    if (::getpid() != owner_)
      throw wrong_process("shmarray: a process_pool is used only by the process that made it");
  }

  // A worker's life (after detail::start_worker): say it is ready, serve
  // jobs, leave.
  [[noreturn]] static void serve(detail::board& b, std::size_t r, int wake, std::uint32_t seen) {
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
            "; in a pool job, is it a pointer into an array made after the pool? Create arrays "
            "before the pool, or pass a fixed_name and attach in the job";
    if (!failed.empty()) throw worker_error(std::move(failed));
  }

  pid_t owner_;
  std::unique_ptr<detail::board> board_;
  int wake_ = -1;
  std::unique_ptr<detail::fork_server> server_;
  detail::pool_memory mem_;  // what the workers do not share
};

}  // namespace shmarray
