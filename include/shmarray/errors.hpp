// shmarray: one exception hierarchy, one type per kind of failure.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "detail/text.hpp"

namespace shmarray {

// The root of every error shmarray throws (besides std::bad_alloc from the
// allocator and std::out_of_range from ndarray::at, as the standard expects).
class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A segment name or file path that cannot be used.
class invalid_name : public error {
 public:
  using error::error;
};

// No segment by that name.
class not_found : public error {
 public:
  using error::error;
};

// A segment by that name exists already (creation is exclusive).
class already_exists : public error {
 public:
  using error::error;
};

// The operating system refused access, or a read-only segment was asked to
// back a writable handle.
class access_denied : public error {
 public:
  using error::error;
};

// The memory could not be reserved: /dev/shm (or the file system) is full.
class out_of_space : public error {
 public:
  out_of_space(const std::string& what, std::size_t needed, std::size_t available)
      : error(what), needed_(needed), available_(available) {}
  std::size_t bytes_needed() const noexcept { return needed_; }
  std::size_t bytes_available() const noexcept { return available_; }

 private:
  std::size_t needed_;
  std::size_t available_;
};

// A shape that no array can have: rank above the limit, a size that overflows,
// a zero extent where none is allowed, a reshape with two -1.
class invalid_shape : public error {
 public:
  using error::error;
};

// A shape that does not fit the bytes or the record it is asked to describe.
class shape_mismatch : public error {
 public:
  using error::error;
};

// A view asked of an array whose rank does not fit it (a matrix of a 3-d
// stack without choosing a frame, a rank-2 tensor of a 3-d array).
class rank_mismatch : public shape_mismatch {
 public:
  using shape_mismatch::shape_mismatch;
};

// A view whose storage order (compile-time, as in Eigen and xtensor) is not
// the array's.
class order_mismatch : public shape_mismatch {
 public:
  using shape_mismatch::shape_mismatch;
};

// The element type of a segment is not the one asked for.
class dtype_mismatch : public error {
 public:
  using error::error;
};

// A segment that is still being created: retry shortly.
class not_ready : public error {
 public:
  using error::error;
};

// A metadata record that cannot be trusted.
class metadata_error : public error {
 public:
  using error::error;
};

// The record is damaged or forged: bad magic, checksum, rank, order, sizes.
class corrupt_metadata : public metadata_error {
 public:
  using metadata_error::metadata_error;
};

// The record was written in a format version this reader does not know.
class version_mismatch : public metadata_error {
 public:
  using metadata_error::metadata_error;
};

// The segment is shorter than its record says it must be.
class truncated_segment : public metadata_error {
 public:
  using metadata_error::metadata_error;
};

// The process-shared lock could not be used.
class lock_error : public error {
 public:
  using error::error;
};

// Any other failure of the operating system, with its errno value.
class system_error : public error {
 public:
  system_error(const std::string& what, int code) : error(what), code_(code) {}
  int code() const noexcept { return code_; }

 private:
  int code_;
};

// What shmarray::allocator throws when its shared memory cannot be had
// (out_of_space, a refused name): a std::bad_alloc, as containers and
// their callers expect of an allocator, with that error's message.
class bad_alloc : public std::bad_alloc {
 public:
  explicit bad_alloc(const std::string& what) : what_(what) {}
  const char* what() const noexcept override { return what_.what(); }

 private:
  std::runtime_error what_;  // copies without throwing, as an exception must
};

// Forking workers from a process that runs other threads was refused: the
// workers would get only the calling thread, and any lock another thread
// held (an OpenMP runtime's, malloc's) would stay locked in them forever.
class unsafe_fork : public error {
 public:
  using error::error;
};

// An argument that no call can use: zero workers, or more than the limit;
// an environment setting out of range.
class invalid_argument : public error {
 public:
  using error::error;
};

// A process_pool job that its workers could not run as meant: its argument
// points into the parent's stack, or into memory mapped after the pool was
// made, which the workers do not have.
class invalid_job : public invalid_argument {
 public:
  using invalid_argument::invalid_argument;
};

// An object used from a process that may not use it: a process_pool from a
// forked copy of the process that made it.
class wrong_process : public error {
 public:
  using error::error;
};

// A ring's writer has ended (closed the ring, or its process died) and
// the reader has read every frame it left: no frame will come.
class producer_gone : public error {
 public:
  producer_gone(const std::string& what, bool died) : error(what), died_(died) {}
  // True when the writer's process died without closing the ring.
  bool died() const noexcept { return died_; }

 private:
  bool died_;
};

// A wait that ran out of time where running out is an error: a ring writer
// in `block` mode whose slowest reader kept its slot past the timeout.
class ring_timeout : public error {
 public:
  using error::error;
};

// How one forked worker failed.
struct worker_failure {
  enum class kind {
    exception,  // the job threw: type() and message() say what
    exit,       // the worker exited with a non-zero code (or at all, mid-job, in a pool)
    signal,     // the worker was killed by a signal (SIGSEGV, SIGKILL, ...): code()
    timeout,    // the job ran past its timeout and was killed
    stopped,    // killed because another worker failed first
    lost,       // its exit status was collected elsewhere (a wait() of the user's?)
  };
  std::size_t rank = 0;
  pid_t pid = 0;
  kind what = kind::exception;
  int code = 0;         // exit code, or signal number
  std::string type;     // exception: its type, demangled
  std::string message;  // exception: what(); otherwise a description

  // "worker 1 (pid 1234) threw std::runtime_error: bad frame"
  std::string describe() const {
    std::string s = "worker " + std::to_string(rank) + " (pid " + std::to_string(pid) + ") ";
    if (what == kind::exception) return s + "threw " + type + ": " + message;
    return s + message;
  }
};

// One or more forked workers failed. failures() lists each, in rank order;
// those stopped because of another's failure come last.
class worker_error : public error {
 public:
  explicit worker_error(std::vector<worker_failure> failures)
      : error(text(failures)), failures_(std::move(failures)) {}
  const std::vector<worker_failure>& failures() const noexcept { return failures_; }

 private:
  static std::string text(const std::vector<worker_failure>& fs) {
    std::size_t failed = 0;
    for (const auto& f : fs)
      failed += f.what != worker_failure::kind::stopped;
    std::string s =
        "shmarray: " + std::to_string(failed) + (failed == 1 ? " worker" : " workers") + " failed";
    for (const auto& f : fs)
      if (f.what != worker_failure::kind::stopped) s += "\n  " + f.describe();
    if (fs.size() > failed)
      s += "\n  " + std::to_string(fs.size() - failed) +
           (fs.size() - failed == 1 ? " other worker was" : " other workers were") +
           " stopped after the first failure";
    return s;
  }
  std::vector<worker_failure> failures_;
};

namespace detail {

// `segment "/name"`, or `anonymous segment` for memory without a name. The
// name is escaped (detail/text.hpp): a message can never be forged by one.
inline std::string describe(std::string_view name) {
  if (name.empty()) return "anonymous segment";
  return "segment \"" + escaped(name) + '"';
}

inline std::string message(std::string_view name, std::string_view text) {
  std::string s = "shmarray: ";
  s += describe(name);
  s += ' ';
  s.append(text.data(), text.size());
  return s;
}

}  // namespace detail
}  // namespace shmarray
