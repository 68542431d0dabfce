// shmarray internals: the records an owner sends its watchdog helper, and
// writes to its owner token's journal, in one format (docs/FORMAT.md, "The
// owner token"). Little-endian:
//   'T' u64 token id                       the owner's token (helper only)
//   'R' kind u64 dev u64 ino u16 len name  an object registered (kind 's': shm, 'f': file)
//   'U' kind u64 dev u64 ino u16 len name  that object unregistered (not another of the name)
// A name is never cut short: POSIX names are at most 256 bytes and a file
// backing refuses a path the kernel could not open (PATH_MAX), so every
// name the library creates fits the u16 length.
#pragma once

#include <sys/types.h>

#include <climits>
#include <cstddef>
#include <cstdint>
#include <string>

namespace shmarray::detail::wire {

static_assert(PATH_MAX <= 0xFFFF, "a path's length must fit the protocol's u16");

inline void put_u64(std::string& s, std::uint64_t v) {
  for (int i = 0; i < 8; ++i)
    s.push_back(char(v >> (8 * i)));
}

// Appends the 'T' record of token `id`.
inline void token_record(std::string& s, std::uint64_t id) {
  s.push_back('T');
  put_u64(s, id);
}

// Appends an 'R' (register) or 'U' (unregister) record of one object.
inline void object_record(std::string& s, char op, char kind, const std::string& name, dev_t dev,
                          ino_t ino) {
  s.push_back(op);
  s.push_back(kind);
  put_u64(s, std::uint64_t(dev));
  put_u64(s, std::uint64_t(ino));
  s.push_back(char(name.size() & 0xff));
  s.push_back(char(name.size() >> 8));
  s.append(name);
}

// One record, parsed.
struct record {
  char op = 0;           // 'T', 'R' or 'U'
  char kind = 0;         // 's' or 'f' ('R', 'U')
  std::uint64_t id = 0;  // 'T'
  std::uint64_t dev = 0, ino = 0;
  std::string name;
};

inline constexpr std::size_t incomplete = 0;
inline constexpr std::size_t invalid = std::size_t(-1);

// Parses the record at the start of p[0, n): the bytes it takes, or
// `incomplete` where more are needed, or `invalid` where they are not one.
inline std::size_t parse(const char* p, std::size_t n, record& out) {
  auto u64 = [&](std::size_t at) {
    std::uint64_t v = 0;
    for (int i = 7; i >= 0; --i)
      v = v << 8 | static_cast<unsigned char>(p[at + std::size_t(i)]);
    return v;
  };
  if (n < 1) return incomplete;
  out.op = p[0];
  if (out.op == 'T') {
    if (n < 9) return incomplete;
    out.id = u64(1);
    return 9;
  }
  if (out.op != 'R' && out.op != 'U') return invalid;
  constexpr std::size_t head = 1 + 1 + 8 + 8 + 2;
  if (n < head) return incomplete;
  out.kind = p[1];
  if (out.kind != 's' && out.kind != 'f') return invalid;
  out.dev = u64(2);
  out.ino = u64(10);
  const std::size_t len = std::size_t(static_cast<unsigned char>(p[18])) |
                          std::size_t(static_cast<unsigned char>(p[19])) << 8;
  if (n < head + len) return incomplete;
  out.name.assign(p + head, len);
  return head + len;
}

}  // namespace shmarray::detail::wire
