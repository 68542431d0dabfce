// shmarray: the byte layout of a segment's record (docs/FORMAT.md): its
// offsets and constants, where the record sits, and the words read in place.
#pragma once

#include <pthread.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "errors.hpp"
#include "shape.hpp"

namespace shmarray {

// Byte offsets and constants of format version 1 (docs/FORMAT.md).
namespace format {
inline constexpr char magic[8] = {'S', 'H', 'M', 'A', 'R', 'R', 'A', 'Y'};
inline constexpr std::uint32_t version = 1;
// Rings of frames (ring.hpp) are version 2, with the same magic.
inline constexpr std::uint32_t ring_version = 2;
inline constexpr std::size_t record_size = 512;
inline constexpr std::size_t record_alignment = 64;  // the record starts at a multiple of this

inline constexpr std::size_t off_magic = 0;
inline constexpr std::size_t off_version = 8;
inline constexpr std::size_t off_record_size = 12;
inline constexpr std::size_t off_data_nbytes = 16;
inline constexpr std::size_t off_dtype = 24;
inline constexpr std::size_t dtype_field = 16;
inline constexpr std::size_t off_itemsize = 40;
inline constexpr std::size_t off_rank = 44;
inline constexpr std::size_t off_order = 48;
inline constexpr std::size_t off_flags = 52;
inline constexpr std::size_t off_owner_pid = 56;
inline constexpr std::size_t off_created_ns = 64;
inline constexpr std::size_t off_boot_id = 72;
inline constexpr std::size_t off_shape = 88;
inline constexpr std::size_t off_owner_token = off_shape + 8 * max_rank;  // 344
inline constexpr std::size_t off_reserved = off_owner_token + 8;          // 352
inline constexpr std::size_t checksummed = 376;                           // bytes [0, 376)
inline constexpr std::size_t off_checksum = 376;
inline constexpr std::size_t off_ready = 380;
inline constexpr std::size_t off_lock_state = 384;
inline constexpr std::size_t off_lock_boot_id = 392;
inline constexpr std::size_t off_mutex = 448;
inline constexpr std::size_t mutex_field = 64;

// The ready word: the bytes "REDY", stored last with release semantics.
inline constexpr std::uint32_t ready_value = 0x59444552u;
// States of the lock word.
inline constexpr std::uint32_t lock_uninitialised = 0;
inline constexpr std::uint32_t lock_initialising = 1;
inline constexpr std::uint32_t lock_ready = 2;

static_assert(sizeof(pthread_mutex_t) <= mutex_field, "pthread_mutex_t does not fit the record");
static_assert(off_mutex + mutex_field == record_size);
}  // namespace format

namespace detail {

inline std::uint32_t* word(std::byte* rec, std::size_t off) {
  return reinterpret_cast<std::uint32_t*>(rec + off);
}
inline std::uint32_t load_acquire(const std::byte* rec, std::size_t off) {
  return __atomic_load_n(reinterpret_cast<const std::uint32_t*>(rec + off), __ATOMIC_ACQUIRE);
}
inline pthread_mutex_t* record_mutex(std::byte* rec) {
  return reinterpret_cast<pthread_mutex_t*>(rec + format::off_mutex);
}

// The size of a segment holding `data_nbytes` of data and a record, or false
// when it overflows.
inline bool segment_bytes(std::uint64_t data_nbytes, std::uint64_t& out) noexcept {
  const std::uint64_t a = format::record_alignment;
  if (data_nbytes > std::uint64_t(PTRDIFF_MAX) - a - format::record_size) return false;
  out = (data_nbytes + a - 1) / a * a + format::record_size;
  return true;
}

// Whether a segment of `size` bytes can end in a record.
inline bool record_fits(std::size_t size) noexcept {
  return size >= format::record_size &&
         (size - format::record_size) % format::record_alignment == 0;
}

// The record of a segment of `size` bytes: its last 512 bytes, or nullptr
// where the size cannot end in a record.
template <class Byte>
inline Byte* record_of(Byte* base, std::size_t size) noexcept {
  return record_fits(size) ? base + (size - format::record_size) : nullptr;
}

inline bool all_zero(const std::byte* p, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i)
    if (p[i] != std::byte{0}) return false;
  return true;
}

inline bool has_magic(const std::byte* rec) noexcept {
  return rec && std::memcmp(rec + format::off_magic, format::magic, sizeof format::magic) == 0;
}

// The error for a record that breaks this layout.
[[noreturn]] inline void corrupt(std::string_view name, const std::string& text) {
  throw corrupt_metadata(message(name, "has a corrupt record: " + text));
}

}  // namespace detail
}  // namespace shmarray
