// shmarray internals: the owner's wire protocol, both halves. The records an
// owner sends its watchdog helper, and writes to its owner token's journal,
// in one format (docs/FORMAT.md, "The owner token"). Little-endian:
//   'T' u64 token id                                the owner's token (helper only)
//   'R' kind u64 dev u64 ino u64 birth u16 len name  an object registered
//   'U' kind u64 dev u64 ino u64 birth u16 len name  that object unregistered
// and, at the start of a journal only, the header 'H' (below).
// kind 's': POSIX shared memory (name "/NAME"); 'f': a file (its absolute
// path, with no symbolic link in it). birth: the object's birth time in ns
// (statx), which tells it from a later object that reuses its inode; 0
// where the file system does not say. A name is never cut short: POSIX
// names are at most 256 bytes, and a file backing refuses a path the
// kernel could not open (PATH_MAX), so every name fits the u16 length.
#pragma once

#include <sys/types.h>

#include <climits>
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>

#include "../endian.hpp"
#include "../out_of_space.hpp"
#include "../same_object.hpp"

namespace shmarray::detail::owner::wire {

// What a record says (its first byte).
enum class op : char { header = 'H', token = 'T', add = 'R', remove = 'U' };

// What kind of object an 'R' or 'U' record names (its second byte).
enum class object_kind : char { shm = 's', file = 'f' };

// The kind of the objects a named backing makes (its `where`).
constexpr object_kind kind_of(space where) noexcept {
  return where == space::dev_shm ? object_kind::shm : object_kind::file;
}

// Where an object a record names is: /dev/shm/NAME for a POSIX object (one
// '/', at the start), a file's absolute path as it is; "" where the name
// cannot be one.
inline std::string object_path(object_kind kind, const std::string& name) {
  if (name.size() < 2 || name[0] != '/' || name.find('\0') != std::string::npos) return "";
  if (kind == object_kind::shm)
    return name.find('/', 1) == std::string::npos ? "/dev/shm" + name : "";
  return name;
}

static_assert(PATH_MAX <= 0xFFFF, "a path's length must fit the protocol's u16");

inline void put_u64(std::string& s, std::uint64_t v) {
  for (int i = 0; i < 8; ++i)
    s.push_back(char(v >> (8 * i)));
}

// A token's journal starts with a header that names the token itself: 'H',
// its id, inode and birth time. A file that another user only named like a
// token (a hard link to a file of root's holding bytes of their choosing,
// where fs.protected_hardlinks is off) cannot carry its own inode and birth
// time, which nobody knows before it exists.
inline constexpr std::size_t header_size = 1 + 8 + 8 + 8;

inline void header_record(std::string& s, std::uint64_t token, const object_id& self) {
  s.push_back(char(op::header));
  put_u64(s, token);
  put_u64(s, self.inode);
  put_u64(s, self.birth_ns);
}

// Whether p[0, n) starts with the header of token `token`, which is `self`.
inline bool header_is(const char* p, std::size_t n, std::uint64_t token, const object_id& self) {
  std::string want;
  header_record(want, token, self);
  return n >= header_size && want.compare(0, header_size, p, header_size) == 0;
}

// Appends the 'T' record of token `id`.
inline void token_record(std::string& s, std::uint64_t id) {
  s.push_back(char(op::token));
  put_u64(s, id);
}

// Appends an 'R' (register) or 'U' (unregister) record of one object.
inline void object_record(std::string& s, op what, object_kind kind, const std::string& name,
                          const object_id& id) {
  s.push_back(char(what));
  s.push_back(char(kind));
  put_u64(s, id.device);
  put_u64(s, id.inode);
  put_u64(s, id.birth_ns);
  s.push_back(char(name.size() & 0xff));
  s.push_back(char(name.size() >> 8));
  s.append(name);
}

// One record, parsed.
struct record {
  wire::op op = op::token;
  object_kind kind = object_kind::shm;  // add, remove
  std::uint64_t id = 0;                 // 'T'
  object_id object;                     // 'R', 'U'
  std::string name;
};

inline constexpr std::size_t incomplete = 0;
inline constexpr std::size_t invalid = std::size_t(-1);
inline constexpr std::size_t object_head = 1 + 1 + 8 + 8 + 8 + 2;  // the bytes before the name

// Parses the record at the start of p[0, n): the bytes it takes, or
// `incomplete` where more are needed, or `invalid` where they are not one.
inline std::size_t parse(const char* p, std::size_t n, record& out) {
  auto u64 = [p](std::size_t at) { return load_le<std::uint64_t>(p + at); };
  if (n < 1) return incomplete;
  out.op = wire::op(p[0]);
  if (out.op == op::token) {
    if (n < 9) return incomplete;
    out.id = u64(1);
    return 9;
  }
  if (out.op != op::add && out.op != op::remove) return invalid;
  if (n < object_head) return incomplete;
  out.kind = object_kind(p[1]);
  if (out.kind != object_kind::shm && out.kind != object_kind::file) return invalid;
  out.object = {u64(2), u64(10), u64(18)};
  const std::size_t len = load_le<std::uint16_t>(p + 26);
  if (n < object_head + len) return incomplete;
  out.name.assign(p + object_head, len);
  return object_head + len;
}

// The helper's half: a byte stream from the owner, cut into whole records.
class stream {
 public:
  // Takes `n` more bytes and calls f(record) for each record now whole;
  // once bytes come that are not the protocol, the rest is ignored (false).
  template <class F>
  bool feed(const char* p, std::size_t n, F&& f) {
    if (confused_) return false;
    in_.append(p, n);
    std::size_t at = 0;
    for (record r;;) {
      const std::size_t took = parse(in_.data() + at, in_.size() - at, r);
      if (took == incomplete) break;
      if (took == invalid) {
        confused_ = true;
        in_.clear();
        return false;
      }
      at += took;
      f(r);
    }
    in_.erase(0, at);
    return true;
  }

 private:
  std::string in_;  // what has come and is not a whole record yet
  bool confused_ = false;
};

// The objects still registered: 'R' records less the 'U' records of the
// same kind, name, device and inode, in constant time each (a journal may
// hold hundreds of thousands, and another user may write a forged one).
class live_set {
 public:
  void apply(const record& r) {
    if (r.op == op::add) {
      if (live_.insert_or_assign(key(r), r).second) bytes_ += object_head + r.name.size();
    } else if (r.op == op::remove) {
      if (live_.erase(key(r))) bytes_ -= object_head + r.name.size();
    }
  }
  // Applies the records of p[0, n) up to the first that is not whole or
  // not an object's: the bytes taken.
  std::size_t apply_all(const char* p, std::size_t n) {
    std::size_t at = 0;
    for (record r;;) {
      const std::size_t took = parse(p + at, n - at, r);
      if (took == incomplete || took == invalid || r.op == op::token) return at;
      apply(r);
      at += took;
    }
  }
  void clear() noexcept {
    live_.clear();
    bytes_ = 0;
  }
  // The bytes of the 'R' records of what is live: a journal rewritten.
  std::size_t bytes() const noexcept { return bytes_; }
  bool empty() const noexcept { return live_.empty(); }
  std::size_t size() const noexcept { return live_.size(); }
  auto begin() const { return live_.begin(); }
  auto end() const { return live_.end(); }

 private:
  // Kind, device, inode, birth time and name: a 'U' for an object gone
  // never takes away a later object that reuses its path and inode number.
  static std::string key(const record& r) {
    std::string k;
    k.reserve(r.name.size() + 28);
    k += char(r.kind);
    put_u64(k, r.object.device);
    put_u64(k, r.object.inode);
    put_u64(k, r.object.birth_ns);
    k += r.name;
    return k;
  }
  std::unordered_map<std::string, record> live_;
  std::size_t bytes_ = 0;
};

}  // namespace shmarray::detail::owner::wire
