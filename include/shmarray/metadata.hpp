// shmarray: the self-describing record at the end of a segment, laid out as
// docs/FORMAT.md says, and validated on every attach.
#pragma once

#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>

#include "detail/crc32.hpp"
#include "detail/endian.hpp"
#include "detail/os_error.hpp"
#include "detail/pread.hpp"
#include "detail/system.hpp"
#include "dtype.hpp"
#include "errors.hpp"
#include "format.hpp"
#include "lock.hpp"
#include "shape.hpp"

namespace shmarray {

// What a segment's record says. Strides are not stored: they follow from
// the shape, the order and the item size.
struct segment_info {
  std::string dtype;  // NumPy type string, e.g. "<f8"
  std::size_t itemsize = 0;
  shmarray::order order = order::row_major;
  shape_type shape;
  std::size_t data_nbytes = 0;   // itemsize * prod(shape)
  std::int64_t owner_pid = 0;    // the creating process
  std::uint64_t created_ns = 0;  // CLOCK_REALTIME, ns since the epoch
  std::array<std::uint8_t, 16> boot_id{};
  std::uint64_t owner_token = 0;  // the owner's token (detail/token.hpp); 0: none, never collected
};

namespace detail {

// Writes the record of a new segment whose memory is still private to its
// creator; the ready word goes last, so no reader sees a half-written record.
// Writes into a zeroed record the fields an array's record and a ring's
// share (what read_described reads): the record size, the data's bytes
// (one frame's, in a ring), dtype, item size, rank, order, owner, creation,
// boot id, shape and owner token.
inline void write_described(std::byte* rec, const segment_info& info) {
  store_le<std::uint32_t>(rec + format::off_record_size, format::record_size);
  store_le<std::uint64_t>(rec + format::off_data_nbytes, info.data_nbytes);
  std::memcpy(rec + format::off_dtype, info.dtype.data(),
              std::min(info.dtype.size(), format::dtype_field - 1));
  store_le<std::uint32_t>(rec + format::off_itemsize, std::uint32_t(info.itemsize));
  store_le<std::uint32_t>(rec + format::off_rank, std::uint32_t(info.shape.size()));
  rec[format::off_order] = std::byte(static_cast<char>(info.order));
  store_le<std::uint64_t>(rec + format::off_owner_pid, std::uint64_t(info.owner_pid));
  store_le<std::uint64_t>(rec + format::off_created_ns, info.created_ns);
  std::memcpy(rec + format::off_boot_id, info.boot_id.data(), info.boot_id.size());
  for (std::size_t i = 0; i < info.shape.size(); ++i)
    store_le<std::uint64_t>(rec + format::off_shape + 8 * i, info.shape[i]);
  store_le<std::uint64_t>(rec + format::off_owner_token, info.owner_token);
}

// The version and then the magic last among the described bytes, so that a
// reader that meets the magic early finds version 0 (not ready), never a
// version mismatch; then the checksum of them all.
inline void seal_record(std::byte* rec, std::uint32_t version) {
  store_le<std::uint32_t>(rec + format::off_version, version);
  std::memcpy(rec + format::off_magic, format::magic, sizeof format::magic);
  store_le<std::uint32_t>(rec + format::off_checksum, crc32(rec, format::checksummed));
}

inline void write_record(std::byte* base, std::size_t size, const segment_info& info,
                         std::string_view name) {
  std::byte* rec = record_of(base, size);
  std::memset(rec, 0, format::record_size);
  write_described(rec, info);
  seal_record(rec, format::version);
  init_mutex(record_mutex(rec), name);
  std::memcpy(rec + format::off_lock_boot_id, info.boot_id.data(), info.boot_id.size());
  *word(rec, format::off_lock_state) = format::lock_ready;
  __atomic_store_n(word(rec, format::off_ready), format::ready_value, __ATOMIC_RELEASE);
}

inline std::string reserved_text(std::size_t offset, std::byte value) {
  return "reserved byte " + std::to_string(offset) + " is " +
         std::to_string(std::to_integer<int>(value)) + ", expected 0";
}

// The message for a size that cannot end in a record.
[[noreturn]] inline void no_record_fits(std::string_view name, std::size_t size) {
  corrupt(name, "its " + std::to_string(size) +
                    " bytes cannot end in a shmarray record (is it a raw segment? attach it "
                    "with an explicit shape)");
}

// The checks every record passes whatever it describes (docs/FORMAT.md,
// steps 2-4, 6 and 7): the magic, `version` (which says whether the object
// is an array, version 1, or a ring, version 2: a reader of the one refuses
// the other by name), the ready word, the record size and the checksum.
inline void check_header(const std::byte* rec, std::string_view name, std::uint32_t want) {
  if (!has_magic(rec)) {
    if (all_zero(rec + format::off_magic, sizeof format::magic))
      throw not_ready(message(name,
                              "has no shmarray record yet: it is still being created, or it is "
                              "a raw segment (attach it with an explicit shape)"));
    corrupt(name, "bad magic (is it a raw segment? attach it with an explicit shape)");
  }
  const auto v = load_le<std::uint32_t>(rec + format::off_version);
  if (v == 0) throw not_ready(message(name, "is still being created (its version is not set)"));
  if (v != want) {
    if (v == format::ring_version && want == format::version)
      throw version_mismatch(
          message(name,
                  "is a ring of frames (format version 2), not an array: read it with "
                  "shmarray::ring_reader<T>::attach (Python: shmarray.RingReader)"));
    if (v == format::version && want == format::ring_version)
      throw version_mismatch(message(name,
                                     "is an array (format version 1), not a ring: attach it "
                                     "with ndarray<T>::attach (Python: shmarray.attach)"));
    throw version_mismatch(message(name, "has format version " + std::to_string(v) +
                                             ", this reader knows version " +
                                             std::to_string(want)));
  }
  if (load_le<std::uint32_t>(rec + format::off_ready) != format::ready_value)
    throw not_ready(message(name, "is still being created (its ready word is not set)"));

  if (const auto rs = load_le<std::uint32_t>(rec + format::off_record_size);
      rs != format::record_size)
    corrupt(name, "record size " + std::to_string(rs) + ", expected " +
                      std::to_string(format::record_size));
  const auto stored = load_le<std::uint32_t>(rec + format::off_checksum);
  if (const auto computed = crc32(rec, format::checksummed); computed != stored)
    corrupt(name, "checksum " + std::to_string(stored) + ", computed " + std::to_string(computed));
}

// Reserved bytes [from, to) of a record must be zero.
inline void check_reserved(const std::byte* rec, std::size_t from, std::size_t to,
                           std::string_view name) {
  for (std::size_t i = from; i < to; ++i)
    if (rec[i] != std::byte{0}) corrupt(name, reserved_text(i, rec[i]));
}

// The fields an array's record and a ring's share, checked (steps 8 and 9,
// and the size of what the shape describes): dtype and item size, rank,
// order, the shape, owner and creation. `nbytes` is the shape's bytes.
// `reserved` checks the bytes each version keeps zero, after the order and
// before the shape, as FORMAT.md's steps go.
inline segment_info read_described(const std::byte* rec, std::string_view name,
                                   std::uint64_t& nbytes,
                                   void (*reserved)(const std::byte*, std::string_view)) {
  segment_info info;
  const char* dt = reinterpret_cast<const char*>(rec + format::off_dtype);
  const std::size_t dlen = strnlen(dt, format::dtype_field);
  if (dlen == 0) corrupt(name, "the dtype field is empty");
  if (dlen == format::dtype_field)
    corrupt(name, "the dtype field has no terminating NUL in its 16 bytes");
  for (std::size_t i = 0; i < format::dtype_field; ++i) {
    const bool ok = i < dlen ? (dt[i] > ' ' && dt[i] < 0x7f) : dt[i] == 0;
    if (!ok)
      corrupt(name, "dtype byte " + std::to_string(i) + " is " +
                        std::to_string(int(static_cast<unsigned char>(dt[i]))) +
                        (i < dlen ? ", not printable ASCII" : ", expected 0 after the NUL"));
  }
  info.dtype.assign(dt, dlen);
  info.itemsize = load_le<std::uint32_t>(rec + format::off_itemsize);
  if (const auto known = find_dtype(info.dtype); known && known->itemsize != info.itemsize)
    corrupt(name, "item size " + std::to_string(info.itemsize) + " for dtype " + info.dtype +
                      ", expected " + std::to_string(known->itemsize));
  if (info.itemsize == 0) corrupt(name, "item size 0");

  const auto rank = load_le<std::uint32_t>(rec + format::off_rank);
  if (rank > max_rank)
    corrupt(name, "rank " + std::to_string(rank) + ", at most " + std::to_string(max_rank));
  const auto ord = static_cast<char>(rec[format::off_order]);
  if (ord != 'C' && ord != 'F')
    corrupt(name, "order byte " + std::to_string(int(static_cast<unsigned char>(ord))) +
                      ", expected 'C' or 'F'");
  info.order = static_cast<order>(ord);
  reserved(rec, name);
  std::uint64_t extents[max_rank] = {};
  for (std::size_t i = 0; i < max_rank; ++i) {
    extents[i] = load_le<std::uint64_t>(rec + format::off_shape + 8 * i);
    if (i >= rank && extents[i] != 0)
      corrupt(name, "shape entry " + std::to_string(i) + " is " + std::to_string(extents[i]) +
                        ", expected 0 past rank " + std::to_string(rank));
  }
  info.shape.assign(extents, extents + rank);
  if (!product_bytes(info.itemsize, extents, rank, nbytes))
    corrupt(name, "shape " + to_string(info.shape) + " of " + std::to_string(info.itemsize) +
                      "-byte elements overflows");
  info.owner_pid = std::int64_t(load_le<std::uint64_t>(rec + format::off_owner_pid));
  info.created_ns = load_le<std::uint64_t>(rec + format::off_created_ns);
  info.owner_token = load_le<std::uint64_t>(rec + format::off_owner_token);
  std::memcpy(info.boot_id.data(), rec + format::off_boot_id, info.boot_id.size());
  return info;
}

// Validates a private copy of the record (`rec`, format::record_size bytes)
// of a segment of `size` bytes, in the order docs/FORMAT.md gives. Throws
// not_ready, version_mismatch, corrupt_metadata or truncated_segment; never
// trusts a field before it is checked. The copy's ready word must be one
// read before the rest (see read_record and read_record_at).
inline segment_info validate_record(const std::byte* rec, std::size_t size, std::string_view name) {
  if (!record_fits(size)) no_record_fits(name, size);
  check_header(rec, name, format::version);
  std::uint64_t nbytes = 0;
  segment_info info = read_described(rec, name, nbytes, [](const std::byte* r, std::string_view n) {
    // bytes 49-51 pad the order; 52-55 are flags, all zero in version 1
    check_reserved(r, format::off_order + 1, format::off_owner_pid, n);
    check_reserved(r, format::off_reserved, format::checksummed, n);
  });
  const auto stated = load_le<std::uint64_t>(rec + format::off_data_nbytes);
  if (stated != nbytes)
    corrupt(name, "data size " + std::to_string(stated) + ", but shape " + to_string(info.shape) +
                      " of " + info.dtype + " takes " + std::to_string(nbytes) + " bytes");
  std::uint64_t expected = 0;
  if (!segment_bytes(nbytes, expected)) corrupt(name, "data size overflows");
  if (expected > size)
    throw truncated_segment(message(name, "holds " + std::to_string(size) +
                                              " bytes, but its record describes " +
                                              std::to_string(expected)));
  if (expected < size)
    corrupt(name, "the segment holds " + std::to_string(size) + " bytes, its record describes " +
                      std::to_string(expected));
  info.data_nbytes = std::size_t(nbytes);
  return info;
}

// Copies the record of a mapped segment of `size` bytes (one that can end
// in a record) to `rec`: the ready word first (acquire), then the rest, so
// that nothing can change between check and use and no field is older than
// the ready word.
inline void copy_record(const std::byte* base, std::size_t size, std::byte* rec) noexcept {
  const std::byte* at = record_of(base, size);
  const std::uint32_t ready = load_acquire(at, format::off_ready);
  std::memcpy(rec, at, format::record_size);
  store_le<std::uint32_t>(rec + format::off_ready, ready);
}

// Reads and validates the record of a mapped segment, from a private copy.
inline segment_info read_record(const std::byte* base, std::size_t size, std::string_view name) {
  if (!record_fits(size)) no_record_fits(name, size);
  std::byte rec[format::record_size];
  copy_record(base, size, rec);
  return validate_record(rec, size, name);
}

// Reads the record of an object of `size` bytes from its descriptor into
// `rec` (format::record_size bytes) with pread, nothing mapped: an object
// that another process shrinks meanwhile gives a short read, never a
// SIGBUS. The ready word is read on its own before the rest, as above.
// False when the object is shorter than `size` now.
inline bool read_tail(int fd, std::size_t size, std::byte* rec) noexcept {
  if (size < format::record_size) return false;
  const off_t at = off_t(size - format::record_size);
  std::byte ready[4];
  if (pread_full(fd, ready, sizeof ready, at + off_t(format::off_ready)) != sizeof ready)
    return false;
  std::atomic_thread_fence(std::memory_order_acquire);
  if (pread_full(fd, rec, format::record_size, at) != format::record_size) return false;
  std::memcpy(rec + format::off_ready, ready, sizeof ready);
  return true;
}

// read_tail, or truncated_segment where the object has shrunk meanwhile.
inline void read_tail_or_throw(int fd, std::size_t size, std::byte* rec, std::string_view name) {
  if (!read_tail(fd, size, rec))
    throw truncated_segment(message(name, "shrank to fewer than its " + std::to_string(size) +
                                              " bytes while its record was read (another "
                                              "process is resizing it)"));
}

// Reads (pread) and validates the record of the object behind `fd`, which
// held `size` bytes when it was examined; the bytes read go to `out`
// (format::record_size of them) if given.
inline segment_info read_record_at(int fd, std::size_t size, std::string_view name,
                                   std::byte* out = nullptr) {
  if (!record_fits(size)) no_record_fits(name, size);
  std::byte own[format::record_size];
  std::byte* rec = out ? out : own;
  read_tail_or_throw(fd, size, rec, name);
  return validate_record(rec, size, name);
}

// The record for a new array, stamped with this process and boot.
inline segment_info new_info(const dtype_info& dt, const shape_type& shape, order o,
                             std::size_t nbytes, pid_t owner) {
  segment_info info;
  info.dtype = std::string(dt.str);
  info.itemsize = dt.itemsize;
  info.order = o;
  info.shape = shape;
  info.data_nbytes = nbytes;
  info.owner_pid = owner;
  info.created_ns = std::uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                      std::chrono::system_clock::now().time_since_epoch())
                                      .count());
  info.boot_id = boot_id();
  return info;
}

}  // namespace detail
}  // namespace shmarray
