// libFuzzer target: any bytes, as a segment's contents, through the record
// validation every attach runs. It must throw a shmarray::error or return a
// record that describes memory inside the segment, never crash or read out
// of bounds (AddressSanitizer watches; the buffer is exactly the input's size).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <shmarray/metadata.hpp>
#include <shmarray/shape.hpp>

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
  try {
    const auto info = shmarray::detail::read_record(buf.get(), size, "/fuzz");
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
  return 0;
}
