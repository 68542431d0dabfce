// shmarray: whether the owner of a segment is alive, as its owner token
// tells (the kernel releases the token's lock when its owner dies, however
// it dies). What ndarray::owner() and the inspection API report.
#pragma once

#include "detail/owner/token.hpp"

namespace shmarray {

// Held (alive), free or missing (gone), none named (untracked: a kept or
// raw segment, or anonymous memory, never collected), or a token that
// cannot be read here (unreadable).
enum class owner_status { alive, gone, untracked, unreadable };

inline const char* to_string(owner_status s) noexcept {
  switch (s) {
    case owner_status::alive:
      return "alive";
    case owner_status::gone:
      return "gone";
    case owner_status::untracked:
      return "untracked";
    case owner_status::unreadable:
      break;
  }
  return "unreadable";
}

namespace detail::owner {

inline owner_status status_of(liveness s) noexcept {
  switch (s) {
    case liveness::alive:
      return owner_status::alive;
    case liveness::dead:
      return owner_status::gone;
    case liveness::unknown:
      return owner_status::untracked;
    case liveness::unreadable:
      break;
  }
  return owner_status::unreadable;
}

}  // namespace detail::owner

}  // namespace shmarray
