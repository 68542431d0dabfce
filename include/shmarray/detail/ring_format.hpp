// shmarray internals: the byte layout of a ring of frames (docs/FORMAT.md,
// "Rings: format version 2"): where its areas are, the words in each, and
// its record, written and validated.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "../dtype.hpp"
#include "../errors.hpp"
#include "../format.hpp"
#include "../metadata.hpp"
#include "../shape.hpp"
#include "crc32.hpp"
#include "endian.hpp"
#include "pread.hpp"

namespace shmarray {

// What a ring's writer does when the slot it needs holds a frame a reader
// has not read: `overwrite` never waits (a reader that falls behind skips
// to what is still there, and is told how many it lost); `block` waits for
// the slowest attached reader, up to a timeout (lossless).
enum class ring_policy : char { overwrite = 'O', block = 'B' };

inline const char* to_string(ring_policy p) noexcept {
  return p == ring_policy::block ? "block" : "overwrite";
}

namespace format::ring {
// Each area starts at a multiple of this: a multiple of every page size
// Linux uses, so a reader can map the slots read-only and its own area
// read-write, apart.
inline constexpr std::uint64_t area_alignment = 65536;
inline constexpr std::uint64_t max_slots = 65536;
inline constexpr std::uint64_t max_readers = 1024;
inline constexpr std::uint64_t max_groups = 64;
inline constexpr std::uint64_t max_frame_bytes = std::uint64_t(1) << 48;

// The record: version 1's fields, and these.
inline constexpr std::size_t off_frame_nbytes = off_data_nbytes;
inline constexpr std::size_t off_policy = 49;
inline constexpr std::size_t off_slots = 352;
inline constexpr std::size_t off_max_readers = 356;
inline constexpr std::size_t off_max_groups = 360;
inline constexpr std::size_t off_slot_stride = 368;

// The writer area, from its start.
inline constexpr std::size_t w_head = 0;
inline constexpr std::size_t w_wake = 8;
inline constexpr std::size_t w_closed = 12;
inline constexpr std::size_t w_writer_pid = 16;
inline constexpr std::size_t w_slots = 64;  // slot k's header at w_slots + 64 k
inline constexpr std::size_t slot_header = 64;
inline constexpr std::size_t s_state = 0;
inline constexpr std::size_t s_publish_ns = 8;

// The reader area, from its start.
inline constexpr std::size_t r_sleepers = 0;
inline constexpr std::size_t r_progress = 4;
inline constexpr std::size_t r_writer_sleeping = 8;
inline constexpr std::size_t r_group_lock = 12;  // the byte a reader making a group locks
inline constexpr std::size_t r_groups = 64;      // group g at r_groups + 64 g, then the entries
inline constexpr std::size_t entry = 64;
inline constexpr std::size_t g_state = 0;
inline constexpr std::size_t g_name_len = 4;
inline constexpr std::size_t g_next = 8;
inline constexpr std::size_t g_missed = 16;
inline constexpr std::size_t g_name = 24;
inline constexpr std::size_t group_name_max = 40;
inline constexpr std::size_t e_state = 0;
inline constexpr std::size_t e_group = 4;
inline constexpr std::size_t e_done = 8;
inline constexpr std::size_t e_claim = 16;
inline constexpr std::size_t e_missed = 24;
inline constexpr std::size_t e_pid = 32;
inline constexpr std::size_t e_attached_ns = 40;

// States of a group or reader entry.
inline constexpr std::uint32_t entry_free = 0;
inline constexpr std::uint32_t entry_setting_up = 1;
inline constexpr std::uint32_t entry_used = 2;
}  // namespace format::ring

namespace detail {

// Where everything of one ring is, from its frame size and counts.
struct ring_layout {
  std::uint64_t frame_nbytes = 0;
  std::uint64_t stride = 0;  // align64(frame_nbytes)
  std::uint64_t slots = 0, readers = 0, groups = 0;
  std::uint64_t writer_at = 0;     // D
  std::uint64_t readers_at = 0;    // D + W
  std::uint64_t reader_bytes = 0;  // R
  std::uint64_t size = 0;          // S = D + W + R + 512

  // False where the counts are out of range or a size overflows.
  bool compute(std::uint64_t frame, std::uint64_t n, std::uint64_t m, std::uint64_t g) noexcept {
    namespace r = format::ring;
    if (frame == 0 || frame >= r::max_frame_bytes || n == 0 || n > r::max_slots || m == 0 ||
        m > r::max_readers || g > r::max_groups)
      return false;
    frame_nbytes = frame;
    stride = (frame + 63) / 64 * 64;
    slots = n;
    readers = m;
    groups = g;
    // Each step checked: n stride-sized slots of frames near 2^48 bytes
    // would pass 2^64 (a forged record must not describe a ring larger
    // than its object by wrapping around).
    std::uint64_t slot_bytes = 0, w = 0, rb = 0;
    if (__builtin_mul_overflow(n, stride, &slot_bytes) || !align(slot_bytes, writer_at) ||
        !align(r::w_slots + r::slot_header * n, w) ||
        !align(r::r_groups + r::entry * (g + m), rb) ||
        __builtin_add_overflow(writer_at, w, &readers_at))
      return false;
    reader_bytes = rb;
    if (__builtin_add_overflow(readers_at, reader_bytes, &size) ||
        __builtin_add_overflow(size, std::uint64_t(format::record_size), &size))
      return false;
    return size <= std::uint64_t(PTRDIFF_MAX);
  }
  std::uint64_t slot_offset(std::uint64_t k) const noexcept { return k * stride; }
  // Offsets in the reader area.
  std::uint64_t group_at(std::uint64_t g) const noexcept {
    return format::ring::r_groups + format::ring::entry * g;
  }
  std::uint64_t entry_at(std::uint64_t i) const noexcept {
    return format::ring::r_groups + format::ring::entry * (groups + i);
  }

 private:
  static bool align(std::uint64_t n, std::uint64_t& out) noexcept {
    const std::uint64_t a = format::ring::area_alignment;
    if (n > UINT64_MAX - (a - 1)) return false;
    out = (n + a - 1) / a * a;
    return true;
  }
};

// What a ring's record says.
struct ring_info {
  segment_info frame;  // dtype, item size, order, frame shape, owner; data_nbytes = one frame
  ring_policy policy = ring_policy::overwrite;
  ring_layout layout;
};

// Writes the record of a new ring whose memory is still private to its
// creator; the ready word last.
inline void write_ring_record(std::byte* base, const ring_info& info) {
  namespace r = format::ring;
  std::byte* rec = base + (info.layout.size - format::record_size);
  std::memset(rec, 0, format::record_size);
  write_described(rec, info.frame);  // its data bytes (frame_nbytes): one frame's
  rec[r::off_policy] = std::byte(static_cast<char>(info.policy));
  store_le<std::uint32_t>(rec + r::off_slots, std::uint32_t(info.layout.slots));
  store_le<std::uint32_t>(rec + r::off_max_readers, std::uint32_t(info.layout.readers));
  store_le<std::uint32_t>(rec + r::off_max_groups, std::uint32_t(info.layout.groups));
  store_le<std::uint64_t>(rec + r::off_slot_stride, info.layout.stride);
  seal_record(rec, format::ring_version);
  __atomic_store_n(word(rec, format::off_ready), format::ready_value, __ATOMIC_RELEASE);
}

// Validates a private copy of a ring's record (read as read_record_at
// reads an array's) of an object of `size` bytes: FORMAT.md's checks for
// version 2, in order. Throws as validate_record does.
inline ring_info validate_ring_record(const std::byte* rec, std::size_t size,
                                      std::string_view name) {
  namespace r = format::ring;
  if (!record_fits(size)) no_record_fits(name, size);
  check_header(rec, name, format::ring_version);
  std::uint64_t nbytes = 0;
  ring_info info;
  info.frame = read_described(rec, name, nbytes, [](const std::byte* p, std::string_view n) {
    const auto pol = static_cast<char>(p[r::off_policy]);
    if (pol != 'O' && pol != 'B')
      corrupt(n, "policy byte " + std::to_string(int(static_cast<unsigned char>(pol))) +
                     ", expected 'O' (overwrite) or 'B' (block)");
    check_reserved(p, r::off_policy + 1, format::off_owner_pid, n);
    check_reserved(p, r::off_max_groups + 4, r::off_slot_stride, n);
  });
  info.policy = static_cast<ring_policy>(static_cast<char>(rec[r::off_policy]));
  for (std::size_t i = 0; i < info.frame.shape.size(); ++i)
    if (info.frame.shape[i] == 0)
      corrupt(name, "frame shape " + to_string(info.frame.shape) + " has a zero extent");
  const auto stated = load_le<std::uint64_t>(rec + r::off_frame_nbytes);
  if (stated != nbytes)
    corrupt(name, "frame size " + std::to_string(stated) + ", but frame shape " +
                      to_string(info.frame.shape) + " of " + info.frame.dtype + " takes " +
                      std::to_string(nbytes) + " bytes");
  const std::uint64_t n = load_le<std::uint32_t>(rec + r::off_slots);
  const std::uint64_t m = load_le<std::uint32_t>(rec + r::off_max_readers);
  const std::uint64_t g = load_le<std::uint32_t>(rec + r::off_max_groups);
  if (!info.layout.compute(nbytes, n, m, g))
    corrupt(name, std::to_string(n) + " slots of " + std::to_string(nbytes) + " bytes, " +
                      std::to_string(m) + " readers and " + std::to_string(g) +
                      " groups: out of range (1 to " + std::to_string(r::max_slots) +
                      " slots, frames under 2^48 bytes, 1 to " + std::to_string(r::max_readers) +
                      " readers, at most " + std::to_string(r::max_groups) + " groups)");
  if (const auto st = load_le<std::uint64_t>(rec + r::off_slot_stride); st != info.layout.stride)
    corrupt(name, "slot stride " + std::to_string(st) + ", expected " +
                      std::to_string(info.layout.stride));
  if (info.layout.size > size)
    throw truncated_segment(message(name, "holds " + std::to_string(size) +
                                              " bytes, but its record describes a ring of " +
                                              std::to_string(info.layout.size)));
  if (info.layout.size < size)
    corrupt(name, "the segment holds " + std::to_string(size) +
                      " bytes, its record describes a ring of " + std::to_string(info.layout.size));
  info.frame.data_nbytes = std::size_t(nbytes);
  return info;
}

// Reads (pread, nothing mapped) and validates a ring's record.
inline ring_info read_ring_record_at(int fd, std::size_t size, std::string_view name) {
  if (!record_fits(size)) no_record_fits(name, size);
  std::byte rec[format::record_size];
  read_tail_or_throw(fd, size, rec, name);
  return validate_ring_record(rec, size, name);
}

}  // namespace detail
}  // namespace shmarray
