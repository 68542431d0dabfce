// shmarray internals: the memory a parent and its workers share, a header
// (the pool's job, the futex word, the progress counter) and one slot per
// worker, in anonymous MAP_SHARED memory.
#pragma once

#include <sys/mman.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <new>
#include <string>

#include "../errors.hpp"
#include "../worker.hpp"
#include "os_error.hpp"

namespace shmarray::detail {

// A failure of the system in the workers' machinery (not a segment's).
[[noreturn]] inline void throw_errno(int err, const std::string& doing) {
  throw system_error("shmarray: " + doing + ": " + errno_text(err), err);
}

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

inline void check_worker_count(std::size_t n) {
  if (n == 0 || n > max_workers)
    throw invalid_argument("shmarray: cannot run " + std::to_string(n) + " workers (1 to " +
                           std::to_string(max_workers) + ")");
}

}  // namespace shmarray::detail
