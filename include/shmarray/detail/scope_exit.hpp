// shmarray internals: a guard that undoes half-done work on scope exit.
#pragma once

#include <utility>

namespace shmarray::detail {

// Runs a callable on scope exit unless dismissed: undoes half-done creation.
template <class F>
class scope_exit {
 public:
  explicit scope_exit(F f) : f_(std::move(f)) {}
  scope_exit(const scope_exit&) = delete;
  scope_exit& operator=(const scope_exit&) = delete;
  ~scope_exit() {
    if (armed_) f_();
  }
  void dismiss() noexcept { armed_ = false; }

 private:
  F f_;
  bool armed_ = true;
};

}  // namespace shmarray::detail
