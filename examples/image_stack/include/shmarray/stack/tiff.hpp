// shmarray-stack: greyscale TIFF stacks in and out, with libtiff. Reads
// 8-bit and 16-bit unsigned and 32-bit float pages, stored in strips or
// tiles, classic TIFF or BigTIFF, with any compression this libtiff
// decodes, straight into memory it is given (a shared array): no private
// copy of the stack. Writes multi-page stacks, BigTIFF past a size.
#pragma once

#include <tiffio.h>

#include <shmarray/stack/files.hpp>

#include <algorithm>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace shmarray::stack {

// A TIFF that cannot be read or written, with the reason.
class tiff_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class pixel { u8, u16, f32 };

inline const char* pixel_name(pixel p) {
  return p == pixel::u8 ? "uint8" : p == pixel::u16 ? "uint16" : "float32";
}
inline std::size_t pixel_bytes(pixel p) {
  return p == pixel::u8 ? 1 : p == pixel::u16 ? 2 : 4;
}

template <class T>
constexpr pixel pixel_of() {
  static_assert(std::is_same_v<T, std::uint8_t> || std::is_same_v<T, std::uint16_t> ||
                    std::is_same_v<T, float>,
                "TIFF stacks hold uint8, uint16 or float pixels");
  return std::is_same_v<T, std::uint8_t>    ? pixel::u8
         : std::is_same_v<T, std::uint16_t> ? pixel::u16
                                            : pixel::f32;
}

// What a stack file holds, checked page by page.
struct stack_info {
  std::size_t frames = 0, height = 0, width = 0;
  pixel type = pixel::u16;
  bool tiled = false;  // (of the first page)
  bool bigtiff = false;
  std::uint16_t compression = COMPRESSION_NONE;
  // The first page stored in a codec with no bound on how much a byte can
  // decode to (none: the largest size_t): decoded once before the job
  // reserves the stack's memory, see decode_unbounded_page.
  std::size_t unbounded_page = std::numeric_limits<std::size_t>::max();
  // The stack's bytes; throws if they cannot be counted in 64 bits.
  std::size_t bytes() const {
    std::size_t n = pixel_bytes(type);
    for (std::size_t d : {frames, height, width})
      if (d != 0 && n > std::numeric_limits<std::size_t>::max() / d)
        throw std::overflow_error("the stack is too large to address");
      else
        n *= d;
    return n;
  }
};

namespace detail {

// libtiff reports through handlers: the last error of this thread is kept
// for the exception; warnings (unknown tags and the like) are dropped.
inline std::string& last_tiff_error() {
  thread_local std::string text;
  return text;
}

inline void install_tiff_handlers() {
  static const bool done = [] {
    TIFFSetErrorHandler([](const char* module, const char* fmt, va_list ap) {
      char buf[512];
      std::vsnprintf(buf, sizeof buf, fmt, ap);
      last_tiff_error() = module ? std::string(module) + ": " + buf : std::string(buf);
    });
    TIFFSetWarningHandler(nullptr);
    return true;
  }();
  (void)done;
}

struct tiff_closer {
  void operator()(TIFF* t) const noexcept { TIFFClose(t); }
};
using tiff_ptr = std::unique_ptr<TIFF, tiff_closer>;

[[noreturn]] inline void fail(const std::string& path, const std::string& what) {
  std::string why = last_tiff_error();
  last_tiff_error().clear();
  throw tiff_error(path + ": " + what + (why.empty() ? "" : " (" + why + ")"));
}

// Opens a stack file for reading, by descriptor, after checking it is a
// regular file (files.hpp). Mode "rm": libtiff reads with read(2) and never
// maps the file, so a file that another user shrinks under the reader is a
// read error, not a SIGBUS. TIFFClose closes the descriptor.
inline tiff_ptr open_input_tiff(const std::string& path) {
  install_tiff_handlers();
  last_tiff_error().clear();
  std::string why;
  const int fd = open_regular_file(path, why);
  if (fd < 0) fail(path, why);
  TIFF* t = TIFFFdOpen(fd, path.c_str(), "rm");
  if (t) return tiff_ptr(t);
  // A failed TIFFFdOpen leaves the descriptor open. A TIFF's magic bytes,
  // but libtiff could not read on: cut short.
  unsigned char magic[4] = {};
  const ssize_t got = ::pread(fd, magic, 4, 0);
  ::close(fd);
  const bool tiff =
      got == 4 &&
      ((magic[0] == 'I' && magic[1] == 'I' && magic[3] == 0 &&
        (magic[2] == 42 || magic[2] == 43)) ||
       (magic[0] == 'M' && magic[1] == 'M' && magic[2] == 0 && (magic[3] == 42 || magic[3] == 43)));
  if (tiff) fail(path, "is truncated or damaged: its first page cannot be read");
  fail(path, "is not a TIFF file");
}

template <class V>
V field(TIFF* t, ttag_t tag, V fallback) {
  V v = fallback;
  if (!TIFFGetFieldDefaulted(t, tag, &v)) return fallback;
  return v;
}

inline std::string compression_name(std::uint16_t c) {
  const TIFFCodec* codec = TIFFFindCODEC(c);
  if (c == COMPRESSION_NONE) return "uncompressed";
  return codec && codec->name ? codec->name : "compression " + std::to_string(c);
}

// The current page's layout, checked: greyscale, one sample, a supported
// pixel type, a compression this libtiff decodes.
// Page 0 of a probe sets `out`; any other call checks the page against it.
inline void describe_page(TIFF* t, const std::string& path, std::size_t page, stack_info& out,
                          bool first_of_probe) {
  const std::string where = "page " + std::to_string(page + 1);
  std::uint32_t w = 0, h = 0;
  if (!TIFFGetField(t, TIFFTAG_IMAGEWIDTH, &w) || !TIFFGetField(t, TIFFTAG_IMAGELENGTH, &h) ||
      w == 0 || h == 0)
    fail(path, where + " has no width or height");
  const auto spp = field<std::uint16_t>(t, TIFFTAG_SAMPLESPERPIXEL, 1);
  const auto bps = field<std::uint16_t>(t, TIFFTAG_BITSPERSAMPLE, 1);
  const auto fmt = field<std::uint16_t>(t, TIFFTAG_SAMPLEFORMAT, SAMPLEFORMAT_UINT);
  const auto photometric = field<std::uint16_t>(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_MINISBLACK);
  const auto compression = field<std::uint16_t>(t, TIFFTAG_COMPRESSION, COMPRESSION_NONE);
  if (spp != 1 || photometric == PHOTOMETRIC_RGB || photometric == PHOTOMETRIC_PALETTE ||
      photometric == PHOTOMETRIC_YCBCR || photometric == PHOTOMETRIC_SEPARATED)
    fail(path, where + " is in colour (" + std::to_string(spp) +
                   " samples per pixel, photometric " + std::to_string(photometric) +
                   "); only greyscale stacks are supported");
  if (photometric != PHOTOMETRIC_MINISBLACK)
    fail(path, where + " has photometric interpretation " + std::to_string(photometric) +
                   "; only min-is-black greyscale is supported");
  pixel type;
  if (bps == 8 && fmt == SAMPLEFORMAT_UINT)
    type = pixel::u8;
  else if (bps == 16 && fmt == SAMPLEFORMAT_UINT)
    type = pixel::u16;
  else if (bps == 32 && fmt == SAMPLEFORMAT_IEEEFP)
    type = pixel::f32;
  else
    fail(path, where + " has " + std::to_string(bps) + "-bit " +
                   (fmt == SAMPLEFORMAT_INT      ? "signed integer"
                    : fmt == SAMPLEFORMAT_IEEEFP ? "floating-point"
                                                 : "unsigned") +
                   " pixels; supported are 8- and 16-bit unsigned and 32-bit float");
  if (!TIFFIsCODECConfigured(compression))
    fail(path,
         where + " uses " + compression_name(compression) + ", which this libtiff cannot decode");
  if (first_of_probe) {
    out.width = w;
    out.height = h;
    out.type = type;
    out.tiled = TIFFIsTiled(t);
    out.compression = compression;
  } else if (w != out.width || h != out.height || type != out.type) {
    fail(path, where + " is " + std::to_string(h) + " x " + std::to_string(w) + " " +
                   pixel_name(type) + ", but page 1 is " + std::to_string(out.height) + " x " +
                   std::to_string(out.width) + " " + pixel_name(out.type) +
                   " (height x width); all pages of a stack must match");
  }
}

// The most bytes one byte of `codec`'s data can decode to, or 0 where the
// codec has no such bound. A page whose strips or tiles, at this ratio,
// cannot hold the pixels it declares is damaged, and is refused before any
// memory is reserved for it.
//  - None: the data are the pixels: exactly 1.
//  - PackBits (TIFF 6.0, section 9): a header byte n of -127..-1 repeats
//    the next byte 1 - n times (at most 128 bytes from 2), one of 0..127
//    copies the next n + 1 bytes (n + 1 from n + 2), -128 is skipped: at
//    most 64 per byte.
//  - Deflate (RFC 1951, in a zlib stream): every literal/length and every
//    distance symbol is a Huffman code of at least 1 bit, and a match copies
//    at most 258 bytes: at most 258 bytes per 2 bits, 1032 per byte (zlib's
//    stated limit); block headers and the zlib wrapper only add input.
//  - LZW (TIFF 6.0, section 13, as libtiff 4.5 decodes it): a strip starts
//    with a Clear code; after a Clear the first code is a literal (1 byte)
//    and the k-th code adds table entry 256 + k, of length at most k, and
//    outputs at most k bytes (no entry longer than the one it adds exists).
//    A code has 12 bits at most, so it cannot name an entry past 4095 (of
//    at most 3839 bytes), and the table has 5119 entries, so at most 4862
//    codes follow a Clear. Codes are 9 bits wide while the table is below
//    511 entries, 10 below 1023, 11 below 2047, then 12. The most a Clear
//    and its codes give is 1 + 2 + ... + 3839 + 1023 x 3839 = 11,298,177
//    bytes, from 9 + 254 x 9 + 512 x 10 + 1024 x 11 + 3072 x 12 = 55,543
//    bits: 1627.3 bytes per byte. Fewer codes give less per bit, a later
//    Clear costs 12 bits, and old-style (bit-reversed) LZW widens its codes
//    one code later: so at most 1628 per byte. tests/test_stack.cpp writes
//    that stream (one byte value repeated) and reads it back.
//  - Others (JPEG, ZSTD, LZMA, LERC, WebP, PixarLog, ...): no bound (an
//    arithmetic-coded JPEG, a ZSTD frame of repeats, can be as small as
//    they like): 0.
inline std::uint64_t max_decoded_per_byte(std::uint16_t codec) {
  switch (codec) {
    case COMPRESSION_NONE:
      return 1;
    case COMPRESSION_PACKBITS:
      return 64;
    case COMPRESSION_ADOBE_DEFLATE:
    case COMPRESSION_DEFLATE:
      return 1032;
    case COMPRESSION_LZW:
      return 1628;
    default:
      return 0;
  }
}

// Checks that each strip (or tile) of the current page can hold what it
// must decode to: its bytes in the file (what its byte count says, cut at
// the end of the file) times the codec's bound. Returns false, checking
// nothing, for a codec without a bound.
inline bool check_page_bytes(TIFF* t, const std::string& path, std::size_t page,
                             const stack_info& s, std::uint64_t file_size) {
  const std::string where = "page " + std::to_string(page + 1);
  const auto codec = field<std::uint16_t>(t, TIFFTAG_COMPRESSION, COMPRESSION_NONE);
  const std::uint64_t ratio = max_decoded_per_byte(codec);
  if (ratio == 0) return false;
  const std::uint64_t px = pixel_bytes(s.type), row_bytes = std::uint64_t(s.width) * px;
  std::uint64_t count = 0, full = 0, rows_per_strip = 0;
  if (TIFFIsTiled(t)) {
    std::uint32_t tw = 0, th = 0;
    TIFFGetField(t, TIFFTAG_TILEWIDTH, &tw);
    TIFFGetField(t, TIFFTAG_TILELENGTH, &th);
    if (tw == 0 || th == 0) fail(path, where + " has tiles of no size");
    count = ((s.width + tw - 1) / tw) * ((s.height + th - 1) / th);
    full = std::uint64_t(tw) * th * px;
    if (TIFFNumberOfTiles(t) < count) fail(path, where + " has fewer tiles than its pixels need");
  } else {
    rows_per_strip = std::min<std::uint64_t>(
        field<std::uint32_t>(t, TIFFTAG_ROWSPERSTRIP, 0xffffffffu), s.height);
    if (rows_per_strip == 0) fail(path, where + " has strips of no rows");
    count = (s.height + rows_per_strip - 1) / rows_per_strip;
    if (TIFFNumberOfStrips(t) < count) fail(path, where + " has fewer strips than rows need");
  }
  for (std::uint64_t k = 0; k < count; ++k) {
    const std::uint64_t need =
        rows_per_strip ? std::min(rows_per_strip, s.height - k * rows_per_strip) * row_bytes : full;
    int err = 0;
    const std::uint64_t off = TIFFGetStrileOffsetWithErr(t, std::uint32_t(k), &err);
    std::uint64_t have = err ? 0 : TIFFGetStrileByteCountWithErr(t, std::uint32_t(k), &err);
    if (err || off >= file_size)
      have = 0;
    else
      have = std::min(have, file_size - off);
    if (have >= (need + ratio - 1) / ratio) continue;  // (so have * ratio < need: no overflow)
    const std::string what =
        rows_per_strip ? "strip " + std::to_string(k + 1) : "tile " + std::to_string(k + 1);
    fail(path,
         where + ", " + what + " cannot be read in full: the file is truncated or damaged (its " +
             std::to_string(have) + " bytes of " + compression_name(codec) +
             " data decode to at most " + std::to_string(have * ratio) + " bytes, and " +
             (rows_per_strip ? "its rows need " : "the tile needs ") + std::to_string(need) + ")");
  }
  return true;
}

// Where the page whose directory is at `at` says the next one is (0:
// none), read from the file itself: libtiff says neither where a chain it
// stopped on leads, nor that a link cut off by the end of the file is not
// an end. Nothing if the link is not in the file.
inline std::optional<std::uint64_t> next_page_offset(TIFF* t, std::uint64_t at) {
  const int fd = TIFFFileno(t);
  const bool big = TIFFIsBigTIFF(t), big_endian = TIFFIsBigEndian(t);
  auto get = [&](std::uint64_t off, std::size_t n) -> std::optional<std::uint64_t> {
    unsigned char b[8] = {};
    if (::pread(fd, b, n, off_t(off)) != ssize_t(n)) return std::nullopt;
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < n; ++i)
      v |= std::uint64_t(b[big_endian ? i : n - 1 - i]) << (8 * (n - 1 - i));
    return v;
  };
  const auto entries = get(at, big ? 8 : 2);
  if (!entries || *entries > (std::uint64_t(1) << 40)) return std::nullopt;
  return get(at + (big ? 8 + 20 * *entries : 2 + 12 * *entries), big ? 8 : 4);
}

// Reads the current page into `dst` (height x width pixels of the stack's type).
inline void read_page(TIFF* t, const std::string& path, std::size_t page, const stack_info& s,
                      unsigned char* dst) {
  const std::string where = "page " + std::to_string(page + 1);
  const std::size_t px = pixel_bytes(s.type), row_bytes = s.width * px;
  if (TIFFIsTiled(t)) {
    std::uint32_t tw = 0, th = 0;
    TIFFGetField(t, TIFFTAG_TILEWIDTH, &tw);
    TIFFGetField(t, TIFFTAG_TILELENGTH, &th);
    if (tw == 0 || th == 0) fail(path, where + " has tiles of no size");
    const tmsize_t tile_bytes = TIFFTileSize(t);
    if (tile_bytes <= 0 || std::size_t(tile_bytes) < std::size_t(tw) * th * px)
      fail(path, where + " has a tile size that does not fit its tiles");
    std::vector<unsigned char> tile(static_cast<std::size_t>(tile_bytes));
    for (std::size_t y = 0; y < s.height; y += th)
      for (std::size_t x = 0; x < s.width; x += tw) {
        const ttile_t index = TIFFComputeTile(t, std::uint32_t(x), std::uint32_t(y), 0, 0);
        if (TIFFReadEncodedTile(t, index, tile.data(), tile_bytes) < 0)
          fail(path, where + ", tile at (" + std::to_string(x) + ", " + std::to_string(y) +
                         ") cannot be read: the file is truncated or damaged");
        const std::size_t cols = std::min<std::size_t>(tw, s.width - x);
        const std::size_t rows = std::min<std::size_t>(th, s.height - y);
        for (std::size_t r = 0; r < rows; ++r)
          std::memcpy(dst + (y + r) * row_bytes + x * px, tile.data() + r * tw * px, cols * px);
      }
    return;
  }
  const auto rows_per_strip =
      std::min<std::size_t>(field<std::uint32_t>(t, TIFFTAG_ROWSPERSTRIP, 0xffffffffu), s.height);
  if (rows_per_strip == 0) fail(path, where + " has strips of no rows");
  const std::size_t strips = (s.height + rows_per_strip - 1) / rows_per_strip;
  if (TIFFNumberOfStrips(t) < strips) fail(path, where + " has fewer strips than rows need");
  for (std::size_t k = 0; k < strips; ++k) {
    const std::size_t rows = std::min(rows_per_strip, s.height - k * rows_per_strip);
    const tmsize_t want = tmsize_t(rows * row_bytes);
    // Decoded straight into the frame: a strip never writes past its rows.
    const tmsize_t got =
        TIFFReadEncodedStrip(t, std::uint32_t(k), dst + k * rows_per_strip * row_bytes, want);
    if (got < want)
      fail(path, where + ", strip " + std::to_string(k + 1) +
                     " cannot be read in full: the file is truncated or damaged");
  }
}

}  // namespace detail

// Checks every page of a stack file and says what it holds: each page's
// layout, that its strips or tiles can hold its pixels (by the codec's
// bound, where it has one), and that the chain of pages ends. Throws
// tiff_error naming the file, the page and the reason.
inline stack_info probe_tiff(const std::string& path) {
  auto t = detail::open_input_tiff(path);
  struct stat sb {};
  if (::fstat(TIFFFileno(t.get()), &sb) != 0) detail::fail(path, std::strerror(errno));
  const std::uint64_t size = std::uint64_t(sb.st_size);
  stack_info s;
  s.bigtiff = TIFFIsBigTIFF(t.get());
  std::vector<std::uint64_t> offsets;  // of each page's directory
  std::size_t page = 0;
  bool more = true;
  while (more) {
    detail::describe_page(t.get(), path, page, s, page == 0);
    if (!detail::check_page_bytes(t.get(), path, page, s, size) && s.unbounded_page > page)
      s.unbounded_page = page;
    offsets.push_back(TIFFCurrentDirOffset(t.get()));
    ++page;
    detail::last_tiff_error().clear();
    more = TIFFReadDirectory(t.get());
  }
  // The chain ends where a page points to no next one. libtiff stops with
  // an error at a page it cannot read (past the end of a truncated file),
  // quietly at a link cut off by the end of the file, and quietly (a
  // warning) at a link back to a page already read: all are damage.
  const auto next = detail::next_page_offset(t.get(), offsets.back());
  if (!detail::last_tiff_error().empty() || !next || *next != 0) {
    if (next && detail::last_tiff_error().empty())
      for (std::size_t k = 0; k < offsets.size(); ++k)
        if (offsets[k] == *next)
          detail::fail(path, "is damaged: its chain of pages loops (page " + std::to_string(page) +
                                 (k + 1 == page ? " points to itself"
                                                : " points back to page " + std::to_string(k + 1)) +
                                 ")");
    detail::fail(path, "is truncated or damaged: page " + std::to_string(page + 1) +
                           " cannot be read (pages 1 to " + std::to_string(page) + " can)");
  }
  detail::last_tiff_error().clear();
  s.frames = page;
  return s;
}

// Reads frames [first, first + count) of a stack that probe_tiff described
// into `dst` (count x height x width pixels of its type).
inline void read_tiff(const std::string& path, const stack_info& s, void* dst, std::size_t first,
                      std::size_t count) {
  if (first + count > s.frames || first + count < first)
    throw std::out_of_range(path + ": frames past the end of the stack");
  if (count == 0) return;
  if (first > std::numeric_limits<tdir_t>::max())
    throw tiff_error(path + ": page " + std::to_string(first + 1) +
                     " is past what this libtiff can address");
  auto t = detail::open_input_tiff(path);
  if (!TIFFSetDirectory(t.get(), tdir_t(first)))
    detail::fail(path, "page " + std::to_string(first + 1) + " cannot be found");
  auto* out = static_cast<unsigned char*>(dst);
  const std::size_t frame_bytes = s.height * s.width * pixel_bytes(s.type);
  for (std::size_t k = 0; k < count; ++k) {
    if (k > 0 && !TIFFReadDirectory(t.get()))
      detail::fail(path, "page " + std::to_string(first + k + 1) + " cannot be found");
    stack_info page = s;  // a layout check of its own, against the probe's
    detail::describe_page(t.get(), path, first + k, page, false);
    detail::read_page(t.get(), path, first + k, s, out + k * frame_bytes);
  }
}

struct write_options {
  // Tiles of this many pixels square (a multiple of 16), or 0 for strips.
  std::uint32_t tile = 0;
  // Rows per strip; 0: about 64 KiB per strip.
  std::uint32_t rows_per_strip = 0;
  // Big-endian ("MM") instead of this machine's order.
  bool big_endian = false;
  std::uint16_t compression = COMPRESSION_NONE;
  // A file expected past this many bytes is written as BigTIFF.
  std::uint64_t bigtiff_above = 0xFFFFFFFFull - (1u << 20);
};

// The pages of write_tiff, into an open TIFF: page(k) gives page k's
// pixels, valid until the next call.
template <class T, class Page>
void write_pages(TIFF* f, const std::string& path, Page&& page, std::size_t frames,
                 std::size_t height, std::size_t width, const write_options& o) {
  const std::size_t row_bytes = width * sizeof(T);
  std::vector<unsigned char> tile, swapped;
  for (std::size_t k = 0; k < frames; ++k) {
    TIFFSetField(f, TIFFTAG_IMAGEWIDTH, std::uint32_t(width));
    TIFFSetField(f, TIFFTAG_IMAGELENGTH, std::uint32_t(height));
    TIFFSetField(f, TIFFTAG_BITSPERSAMPLE, std::uint16_t(8 * sizeof(T)));
    TIFFSetField(f, TIFFTAG_SAMPLESPERPIXEL, std::uint16_t(1));
    TIFFSetField(
        f, TIFFTAG_SAMPLEFORMAT,
        std::uint16_t(std::is_floating_point_v<T> ? SAMPLEFORMAT_IEEEFP : SAMPLEFORMAT_UINT));
    TIFFSetField(f, TIFFTAG_PHOTOMETRIC, std::uint16_t(PHOTOMETRIC_MINISBLACK));
    TIFFSetField(f, TIFFTAG_PLANARCONFIG, std::uint16_t(PLANARCONFIG_CONTIG));
    if (!TIFFSetField(f, TIFFTAG_COMPRESSION, o.compression))
      detail::fail(path, "cannot be written with " + detail::compression_name(o.compression));
    if (frames > 1) {
      TIFFSetField(f, TIFFTAG_SUBFILETYPE, std::uint32_t(FILETYPE_PAGE));
      TIFFSetField(f, TIFFTAG_PAGENUMBER, std::uint16_t(std::min<std::size_t>(k, 65535)),
                   std::uint16_t(std::min<std::size_t>(frames, 65535)));
    }
    const unsigned char* frame =
        reinterpret_cast<const unsigned char*>(static_cast<const T*>(page(k)));
    const std::string where = "page " + std::to_string(k + 1);
    if (o.tile) {
      TIFFSetField(f, TIFFTAG_TILEWIDTH, o.tile);
      TIFFSetField(f, TIFFTAG_TILELENGTH, o.tile);
      const std::size_t tb = std::size_t(o.tile) * o.tile * sizeof(T);
      tile.assign(tb, 0);
      for (std::size_t y = 0; y < height; y += o.tile)
        for (std::size_t x = 0; x < width; x += o.tile) {
          std::fill(tile.begin(), tile.end(), 0);
          const std::size_t cols = std::min<std::size_t>(o.tile, width - x);
          const std::size_t rows = std::min<std::size_t>(o.tile, height - y);
          for (std::size_t r = 0; r < rows; ++r)
            std::memcpy(tile.data() + r * o.tile * sizeof(T),
                        frame + (y + r) * row_bytes + x * sizeof(T), cols * sizeof(T));
          const ttile_t index = TIFFComputeTile(f, std::uint32_t(x), std::uint32_t(y), 0, 0);
          if (TIFFWriteEncodedTile(f, index, tile.data(), tmsize_t(tb)) < 0)
            detail::fail(path, where + " cannot be written");
        }
    } else {
      const std::size_t rows_per_strip =
          o.rows_per_strip ? o.rows_per_strip : std::max<std::size_t>(1, (64u << 10) / row_bytes);
      TIFFSetField(f, TIFFTAG_ROWSPERSTRIP, std::uint32_t(std::min(rows_per_strip, height)));
      for (std::size_t y = 0, s = 0; y < height; y += rows_per_strip, ++s) {
        const std::size_t rows = std::min(rows_per_strip, height - y);
        // libtiff modifies the buffer it is given only to byte-swap it (a
        // file in the other byte order) or for a predictor (none is set):
        // then it gets a copy of the rows.
        if (TIFFIsByteSwapped(f)) {
          swapped.assign(frame + y * row_bytes, frame + (y + rows) * row_bytes);
          if (TIFFWriteEncodedStrip(f, std::uint32_t(s), swapped.data(),
                                    tmsize_t(rows * row_bytes)) < 0)
            detail::fail(path, where + " cannot be written (disk full?)");
          continue;
        }
        if (TIFFWriteEncodedStrip(f, std::uint32_t(s),
                                  const_cast<unsigned char*>(frame + y * row_bytes),
                                  tmsize_t(rows * row_bytes)) < 0)
          detail::fail(path, where + " cannot be written (disk full?)");
      }
    }
    if (!TIFFWriteDirectory(f)) detail::fail(path, where + " cannot be written (disk full?)");
  }
  if (TIFFFlush(f) != 1) detail::fail(path, "cannot be written (disk full?)");
}

// Writes `frames` pages of height x width pixels of T, page k from
// page(k) (a const T*, valid until the next call), one page at a time: a
// writer that streams pages holds one at a time. The file `name` of `dir`
// appears whole or not at all (output_dir::write).
template <class T, class Page>
void write_tiff_pages(const output_dir& dir, const std::string& name, std::size_t frames,
                      std::size_t height, std::size_t width, Page&& page,
                      const write_options& o = {}) {
  const std::uint64_t expected =
      std::uint64_t(frames) * height * width * sizeof(T) + std::uint64_t(frames) * 1024 + 1024;
  const bool big = expected > o.bigtiff_above;
  std::string mode = big ? "w8" : "w";
  if (o.big_endian) mode += 'b';
  detail::install_tiff_handlers();
  dir.write(name, [&](int fd, const std::string& shown) {
    detail::last_tiff_error().clear();
    TIFF* t = TIFFFdOpen(fd, shown.c_str(), mode.c_str());
    if (!t) {
      ::close(fd);  // a failed TIFFFdOpen leaves it open
      detail::fail(shown, "cannot be created");
    }
    detail::tiff_ptr f(t);  // TIFFClose closes fd, and says nothing: write_pages flushes first
    write_pages<T>(t, shown, page, frames, height, width, o);
  });
}

// Writes `frames` pages of height x width pixels of T from `data`.
template <class T>
void write_tiff(const output_dir& dir, const std::string& name, const T* data, std::size_t frames,
                std::size_t height, std::size_t width, const write_options& o = {}) {
  const std::size_t frame = height * width;
  write_tiff_pages<T>(
      dir, name, frames, height, width, [data, frame](std::size_t k) { return data + k * frame; },
      o);
}

// The same, to a path: its directory is opened (not made) under
// open_directory's rule for symbolic links.
template <class T>
void write_tiff(const std::string& path, const T* data, std::size_t frames, std::size_t height,
                std::size_t width, const write_options& o = {}) {
  const std::size_t slash = path.rfind('/');
  const output_dir dir(slash == std::string::npos ? "."
                       : slash == 0               ? "/"
                                                  : path.substr(0, slash),
                       false);
  write_tiff(dir, path.substr(slash + 1), data, frames, height, width, o);
}

}  // namespace shmarray::stack
