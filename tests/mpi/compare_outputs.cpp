// compare_outputs A B: shmarray-stack's outputs in directories A and B are
// the same: processed.tif and max.tif byte for byte, mean.tif and std.tif
// within float rounding. Prints "same" and exits 0, or says what differs.
// compare_outputs --make-nan-stack | --make-loop-stack | --make-lzw-bomb
// FILE writes a stack for the scripts beside it.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <shmarray/stack/tiff.hpp>
#include <string>
#include <vector>

namespace st = shmarray::stack;

namespace {

std::vector<char> bytes(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

std::vector<float> floats(const std::string& p) {
  const auto info = st::probe_tiff(p);
  std::vector<float> v(info.frames * info.height * info.width);
  st::read_tiff(p, info, v.data(), 0, info.frames);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--make-nan-stack") {
    // a float stack with a NaN and an infinity, for the maximum's rule
    std::vector<float> v(6 * 8 * 10);
    for (std::size_t i = 0; i < v.size(); ++i)
      v[i] = float(i % 37) - 5.f;
    v[3] = std::nanf("");
    v[8 * 10 * 4 + 5] = INFINITY;
    st::write_tiff(argv[2], v.data(), 6, 8, 10);
    return 0;
  }
  if (argc == 3 && std::string(argv[1]) == "--make-loop-stack") {
    // three pages, the last pointing back to the first
    std::vector<std::uint16_t> v(3 * 8 * 8, 5);
    st::write_tiff(argv[2], v.data(), 3, 8, 8);
    auto b = bytes(argv[2]);
    std::uint32_t first, at;
    std::memcpy(&first, b.data() + 4, 4);
    for (at = first;;) {
      std::uint16_t n;
      std::memcpy(&n, b.data() + at, 2);
      std::uint32_t next;
      std::memcpy(&next, b.data() + at + 2 + 12 * n, 4);
      if (next == 0) {
        std::memcpy(b.data() + at + 2 + 12 * n, &first, 4);
        break;
      }
      at = next;
    }
    std::ofstream(argv[2], std::ios::binary).write(b.data(), std::streamsize(b.size()));
    return 0;
  }
  if (argc == 3 && std::string(argv[1]) == "--make-lzw-bomb") {
    // a page of 12000 x 12000 8-bit pixels in one LZW strip of 4 bytes
    // (Clear, a literal 0, end of information)
    TIFF* t = TIFFOpen(argv[2], "w");
    if (!t) return 1;
    TIFFSetField(t, TIFFTAG_IMAGEWIDTH, std::uint32_t(12000));
    TIFFSetField(t, TIFFTAG_IMAGELENGTH, std::uint32_t(12000));
    TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, std::uint16_t(8));
    TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, std::uint16_t(1));
    TIFFSetField(t, TIFFTAG_PHOTOMETRIC, std::uint16_t(PHOTOMETRIC_MINISBLACK));
    TIFFSetField(t, TIFFTAG_COMPRESSION, std::uint16_t(COMPRESSION_LZW));
    TIFFSetField(t, TIFFTAG_ROWSPERSTRIP, std::uint32_t(12000));
    unsigned char lzw[4] = {0x80, 0x00, 0x20, 0x20};
    const bool ok = TIFFWriteRawStrip(t, 0, lzw, 4) == 4;
    TIFFClose(t);
    return ok ? 0 : 1;
  }
  if (argc != 3) return 2;
  const std::string a = argv[1], b = argv[2];
  for (const char* f : {"/processed.tif", "/max.tif"})
    if (bytes(a + f).empty() || bytes(a + f) != bytes(b + f)) {
      std::printf("%s differs\n", f + 1);
      return 1;
    }
  for (const char* f : {"/mean.tif", "/std.tif"}) {
    const auto x = floats(a + f), y = floats(b + f);
    if (x.size() != y.size()) {
      std::printf("%s: sizes differ\n", f + 1);
      return 1;
    }
    for (std::size_t i = 0; i < x.size(); ++i)
      if (std::fabs(x[i] - y[i]) > 1e-5f * std::max(1.f, std::fabs(x[i]))) {
        std::printf("%s: pixel %zu: %g against %g\n", f + 1, i, double(x[i]), double(y[i]));
        return 1;
      }
  }
  std::printf("same\n");
  return 0;
}
