// shmarray internals: how a worker's failure is recorded (in its slot, by
// the worker) and read back (by the parent) as a worker_failure.
#pragma once

#include <cxxabi.h>
#include <sys/wait.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <typeinfo>

#include "../errors.hpp"
#include "board.hpp"
#include "fork_safety.hpp"
#include "waiting.hpp"

namespace shmarray::detail {

inline void copy_text(char* out, std::size_t cap, const char* in) noexcept {
  std::size_t n = in ? std::strlen(in) : 0;
  if (n >= cap) n = cap - 1;
  if (n) std::memcpy(out, in, n);
  out[n] = '\0';
}

// In a catch block: writes the exception's type and message into the slot,
// without allocating more than the demangler does.
inline void record_exception(worker_slot& s, std::uint64_t job) noexcept {
  const std::type_info* t = abi::__cxa_current_exception_type();
  const char* mangled = t ? t->name() : "unknown exception";
  int status = 0;
  char* demangled = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  copy_text(s.type, sizeof s.type, demangled ? demangled : mangled);
  std::free(demangled);
  try {
    throw;
  } catch (const std::exception& e) {
    copy_text(s.what, sizeof s.what, e.what());
  } catch (...) {
    copy_text(s.what, sizeof s.what, "(not derived from std::exception)");
  }
  s.threw_job.store(job);
}

// How worker r failed, from its slot and how it ended.
inline worker_failure failure_of(const board& b, std::size_t r, ending e, std::uint64_t job) {
  const worker_slot& s = b.slot(r);
  worker_failure f;
  f.rank = r;
  f.pid = e.pid;
  if (s.threw_job.load() == job) {
    f.what = worker_failure::kind::exception;
    f.type = s.type;
    f.message = s.what;
  } else if (e.status < 0) {
    f.what = worker_failure::kind::lost;
    f.message = "ended, but its exit status was collected elsewhere (a wait() of yours?)";
  } else if (WIFSIGNALED(e.status)) {
    f.what = worker_failure::kind::signal;
    f.code = WTERMSIG(e.status);
    f.message = "was killed by " + signal_name(f.code) + " (" + ::strsignal(f.code) + ")";
  } else {
    f.what = worker_failure::kind::exit;
    f.code = WEXITSTATUS(e.status);
    f.message = "exited with code " + std::to_string(f.code);
  }
  return f;
}

}  // namespace shmarray::detail
