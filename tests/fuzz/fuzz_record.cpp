// libFuzzer target: any bytes, as a segment's contents, through the record
// validation every attach runs: an array's (version 1) and a ring's
// (version 2). It must throw a shmarray::error or return a record that
// describes memory inside the segment, never crash or read out of bounds
// (AddressSanitizer watches; the buffer is exactly the input's size).
//
// A ring is read as an inspector and a reader's attach read it: from a
// descriptor (here a memfd holding the input), with pread, nothing mapped;
// then, as `shmarray ls` does, its head and reader table.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <shmarray/detail/ring_format.hpp>
#include <shmarray/inspect.hpp>
#include <shmarray/metadata.hpp>
#include <shmarray/shape.hpp>

namespace {

// The array reader, over a mapping-like buffer (read_record copies the
// record out of memory, as an attach of a mapped segment does).
void fuzz_array(const std::byte* buf, std::size_t size) {
  try {
    const auto info = shmarray::detail::read_record(buf, size, "/fuzz");
    // Accepted: the array must lie inside the segment, before its record.
    const auto strides = shmarray::detail::packed_strides(info.shape, info.order);
    std::size_t last = 0, count = 1;
    for (std::size_t k = 0; k < info.shape.size(); ++k) {
      count *= info.shape[k];
      if (info.shape[k]) last += (info.shape[k] - 1) * std::size_t(strides[k]);
    }
    if (count && info.data_nbytes) {
      volatile std::byte first = buf[0];
      volatile std::byte end = buf[(last + 1) * info.itemsize - 1];
      (void)first;
      (void)end;
      if ((last + 1) * info.itemsize > size - shmarray::format::record_size) __builtin_trap();
    }
  } catch (const shmarray::error&) {
  }
}

// One descriptor for every input: what the ring readers read through.
int input_fd() {
  static const int fd = ::memfd_create("fuzz_record", MFD_CLOEXEC);
  if (fd < 0) __builtin_trap();
  return fd;
}

// The ring reader, through a descriptor: the record with pread, then (what
// inspection adds) the live words.
void fuzz_ring(const std::byte* buf, std::size_t size) {
  const int fd = input_fd();
  if (::ftruncate(fd, 0) != 0 || ::ftruncate(fd, off_t(size)) != 0 ||
      (size && ::pwrite(fd, buf, size, 0) != ssize_t(size)))
    __builtin_trap();
  namespace rf = shmarray::format::ring;
  try {
    const auto r = shmarray::detail::read_ring_record_at(fd, size, "/fuzz");
    // Accepted: every area inside the segment, in order, none overlapping,
    // in arithmetic that cannot wrap (a forged count must not make a huge
    // frame fit a small object).
    const auto& l = r.layout;
    const std::uint64_t end = size - shmarray::format::record_size;
    std::uint64_t frame = r.frame.itemsize, slots_end = 0;
    for (const auto e : r.frame.shape)
      if (__builtin_mul_overflow(frame, e, &frame)) __builtin_trap();
    if (l.size != size || l.frame_nbytes != frame || r.frame.data_nbytes != frame ||
        l.stride < frame || l.stride % 64 != 0 || l.slots == 0 ||
        __builtin_mul_overflow(l.slots, l.stride, &slots_end) || slots_end > l.writer_at ||
        l.writer_at > end || l.readers_at < l.writer_at ||
        rf::w_slots + rf::slot_header * l.slots > l.readers_at - l.writer_at ||
        l.readers_at > end || l.entry_at(l.readers) > end - l.readers_at ||
        l.reader_bytes != end - l.readers_at)
      __builtin_trap();
  } catch (const shmarray::error&) {
  }
  try {
    shmarray::object_entry e;
    e.name = "/fuzz";
    shmarray::detail::inspect_fd(fd, e, 0);
    if (e.kind == shmarray::segment_kind::ring) {
      const auto& s = e.ring;
      if (s.readers > s.max_readers || s.attached.size() != s.readers ||
          s.readers_gone > s.readers || s.groups.size() > s.max_groups)
        __builtin_trap();
      std::size_t members = 0;
      for (const auto& g : s.groups) {
        if (g.name.size() > rf::group_name_max) __builtin_trap();
        members += g.members;
      }
      if (members > s.readers) __builtin_trap();
    }
  } catch (const shmarray::error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // A copy of exactly `size` bytes (16-byte aligned; a record, when there is
  // one, starts at a multiple of 64 from it), so that ASan sees every byte
  // read past the segment's end.
  std::unique_ptr<std::byte[]> buf(new std::byte[size ? size : 1]);
  if (size) std::memcpy(buf.get(), data, size);
  // A mutation almost never has a valid CRC-32, which would keep the checks
  // behind the checksum (dtype, rank, shape, sizes) out of reach: when the
  // input's first byte is odd, the record's checksum is made right.
  if (size && (data[0] & 1))
    if (std::byte* rec = shmarray::detail::record_of(buf.get(), size))
      shmarray::detail::store_le<std::uint32_t>(
          rec + shmarray::format::off_checksum,
          shmarray::detail::crc32(rec, shmarray::format::checksummed));
  fuzz_array(buf.get(), size);
  fuzz_ring(buf.get(), size);
  return 0;
}
