// shmarray internals: CRC-32 of the record, as zlib computes it.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace shmarray::detail {

// CRC-32 as zlib computes it (reflected polynomial 0xEDB88320, initial and
// final XOR 0xFFFFFFFF), so Python's zlib.crc32 gives the same value.
// Slicing by 8: eight bytes per step through eight tables.
inline std::uint32_t crc32(const void* data, std::size_t n) noexcept {
  using tables = std::array<std::array<std::uint32_t, 256>, 8>;
  static const tables t = [] {
    tables x{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k)
        c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      x[0][i] = c;
    }
    for (std::size_t k = 1; k < 8; ++k)
      for (std::size_t i = 0; i < 256; ++i)
        x[k][i] = (x[k - 1][i] >> 8) ^ x[0][x[k - 1][i] & 0xFFu];
    return x;
  }();
  const auto* p = static_cast<const std::uint8_t*>(data);
  std::uint32_t c = 0xFFFFFFFFu;
  for (; n >= 8; n -= 8, p += 8) {
    const std::uint32_t lo = c ^ (std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 |
                                  std::uint32_t(p[2]) << 16 | std::uint32_t(p[3]) << 24);
    c = t[7][lo & 0xFFu] ^ t[6][(lo >> 8) & 0xFFu] ^ t[5][(lo >> 16) & 0xFFu] ^ t[4][lo >> 24] ^
        t[3][p[4]] ^ t[2][p[5]] ^ t[1][p[6]] ^ t[0][p[7]];
  }
  for (; n > 0; --n)
    c = t[0][(c ^ *p++) & 0xFFu] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

}  // namespace shmarray::detail
