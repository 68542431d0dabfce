// shmarray internals: what the running system says of itself: page size, boot id, a mapping's
// smaps.
#pragma once

#include <unistd.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string_view>

namespace shmarray::detail {

inline std::size_t page_size() noexcept {
  static const std::size_t size = std::size_t(::sysconf(_SC_PAGESIZE));
  return size;
}

// The kernel's boot id (a UUID that changes on every boot) as 16 bytes;
// all zero where the kernel does not provide one.
inline std::array<std::uint8_t, 16> boot_id() {
  static const std::array<std::uint8_t, 16> id = [] {
    std::array<std::uint8_t, 16> out{};
    std::FILE* f = std::fopen("/proc/sys/kernel/random/boot_id", "re");
    if (!f) return out;
    char text[64] = {};
    const std::size_t n = std::fread(text, 1, sizeof text - 1, f);
    std::fclose(f);
    std::size_t k = 0;
    for (std::size_t i = 0; i + 1 < n && k < out.size(); ++i) {
      auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
      };
      const int hi = hex(text[i]), lo = hex(text[i + 1]);
      if (hi < 0) continue;
      if (lo < 0) break;
      out[k++] = std::uint8_t(hi * 16 + lo);
      ++i;
    }
    if (k != out.size()) out = {};
    return out;
  }();
  return id;
}

// The sum of the named fields (in KiB) of the mapping that starts at
// `start`, read from /proc/self/smaps; 0 where there is no such mapping.
inline std::size_t mapping_kib(const void* start, std::initializer_list<std::string_view> fields) {
  std::FILE* f = std::fopen("/proc/self/smaps", "re");
  if (!f) return 0;
  char header[32];
  const int hlen =
      std::snprintf(header, sizeof header, "%lx-", reinterpret_cast<unsigned long>(start));
  char line[512];
  bool in_mapping = false;
  std::size_t kib = 0;
  while (std::fgets(line, sizeof line, f)) {
    // A mapping's header starts with its lower-case hex address; its fields
    // start with a capitalised key.
    if ((line[0] >= '0' && line[0] <= '9') || (line[0] >= 'a' && line[0] <= 'f')) {
      in_mapping = std::strncmp(line, header, std::size_t(hlen)) == 0;
      continue;
    }
    if (!in_mapping) continue;
    const char* colon = std::strchr(line, ':');
    if (!colon) continue;
    const std::string_view key(line, std::size_t(colon - line));
    for (const auto field : fields)
      if (key == field) kib += std::strtoull(colon + 1, nullptr, 10);
  }
  std::fclose(f);
  return kib;
}

}  // namespace shmarray::detail
