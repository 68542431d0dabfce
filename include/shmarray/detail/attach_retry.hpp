// shmarray internals: how an attach waits for an object still being made,
// or for a name that a producer has not made yet (arrays and rings alike).
#pragma once

#include <algorithm>
#include <chrono>
#include <thread>

#include "../errors.hpp"
#include "waiting.hpp"

namespace shmarray::detail {

// Runs attempt() until it returns. A not_ready (an object still being
// made) is tried again for `ready_wait`, a not_found (a name that may yet
// appear) for `name_wait`, both from the first attempt; after that the
// error goes to the caller. 1 ms between looks at an object being made; up
// to 10 ms, doubling from 1, between looks for a name, so that a name that
// takes seconds costs little.
template <class F>
auto retry_attach(std::chrono::nanoseconds ready_wait, std::chrono::nanoseconds name_wait,
                  F&& attempt) -> decltype(attempt()) {
  using clock = std::chrono::steady_clock;
  const auto ready_until = deadline_after(ready_wait);
  const auto name_until = deadline_after(name_wait);
  auto pause = std::chrono::milliseconds(1);
  for (;;) {
    try {
      return attempt();
    } catch (const not_ready&) {
      if (clock::now() >= ready_until) throw;
    } catch (const not_found&) {
      const auto now = clock::now();
      if (now >= name_until) throw;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(name_until - now);
      std::this_thread::sleep_for(std::min({pause, left, std::chrono::milliseconds(10)}));
      pause *= 2;
      continue;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

}  // namespace shmarray::detail
