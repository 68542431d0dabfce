// shmarray: tags for intent, so that a call site reads as a sentence, as
// Boost.Interprocess's creation_tags.hpp.
#pragma once

namespace shmarray {

// Create a new object; fail if the name exists.
struct create_only_t {
  explicit create_only_t() = default;
};
// Open an existing object; fail if there is none.
struct open_only_t {
  explicit open_only_t() = default;
};
inline constexpr create_only_t create_only{};
inline constexpr open_only_t open_only{};

}  // namespace shmarray
