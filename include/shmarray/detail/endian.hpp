// shmarray internals: little-endian loads and stores of the record and the wire format.
#pragma once

#include <cstddef>
#include <cstdint>

namespace shmarray::detail {

// Little-endian loads and stores, whatever the host.
template <class U>
inline U load_le(const void* p) noexcept {
  const auto* b = static_cast<const std::uint8_t*>(p);
  U v = 0;
  for (std::size_t i = 0; i < sizeof(U); ++i)
    v = U(v | (U(b[i]) << (8 * i)));
  return v;
}
template <class U>
inline void store_le(void* p, U v) noexcept {
  auto* b = static_cast<std::uint8_t*>(p);
  for (std::size_t i = 0; i < sizeof(U); ++i)
    b[i] = std::uint8_t(v >> (8 * i));
}

}  // namespace shmarray::detail
