// shmarray-stack: an 8-bit greyscale PNG of a projection, contrast-stretched
// so that a person can see it, with libpng's simplified API.
#pragma once

#include <png.h>

#include <shmarray/stack/files.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace shmarray::stack {

// The stretch: the 0.5th percentile goes to black, the 99.5th to white.
// Percentiles of the finite values only; NaN and -inf are black, +inf white.
template <class T>
std::vector<std::uint8_t> stretch_to_8bit(const T* data, std::size_t n) {
  std::vector<float> v;
  v.reserve(n);
  for (std::size_t i = 0; i < n; ++i)
    if (std::isfinite(float(data[i]))) v.push_back(float(data[i]));
  std::vector<std::uint8_t> out(n, 0);
  if (v.empty()) return out;
  auto nth = [&](double q) {
    const double last = double(v.size() - 1);
    auto it = v.begin() + std::ptrdiff_t(std::min(last, q * last));
    std::nth_element(v.begin(), it, v.end());
    return *it;
  };
  const float lo = nth(0.005), hi = nth(0.995);
  const float scale = hi > lo ? 255.f / (hi - lo) : 0.f;
  for (std::size_t i = 0; i < n; ++i) {
    const float s = std::nearbyint((float(data[i]) - lo) * scale);
    out[i] = std::uint8_t(!(s > 0.f) ? 0.f : s >= 255.f ? 255.f : s);  // NaN goes to 0
  }
  return out;
}

// Writes the file `name` of `dir` (whole or not at all): through stdio on
// the new file's descriptor, never png_image_write_to_file, which opens
// its file by name and remove()s it by name after a failure.
template <class T>
void write_png(const output_dir& dir, const std::string& name, const T* data, std::size_t height,
               std::size_t width) {
  const auto pixels = stretch_to_8bit(data, height * width);
  dir.write(name, [&](int fd, const std::string& shown) {
    std::FILE* f = ::fdopen(fd, "wb");
    if (!f) {
      ::close(fd);
      throw std::runtime_error(shown + ": cannot be written (" + std::strerror(errno) + ")");
    }
    png_image img{};
    img.version = PNG_IMAGE_VERSION;
    img.width = png_uint_32(width);
    img.height = png_uint_32(height);
    img.format = PNG_FORMAT_GRAY;
    if (!png_image_write_to_stdio(&img, f, 0, pixels.data(), 0, nullptr)) {
      const std::string why = img.message;
      png_image_free(&img);
      std::fclose(f);
      throw std::runtime_error(shown + ": cannot be written as PNG (" + why + ")");
    }
    const bool flushed = std::fflush(f) == 0 && !std::ferror(f);
    const int e = errno;
    if (std::fclose(f) != 0 || !flushed)
      throw std::runtime_error(shown + ": cannot be written (" +
                               std::strerror(flushed ? errno : e) + ")");
  });
}

}  // namespace shmarray::stack
