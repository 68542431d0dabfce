// shmarray-stack: the pipeline's stages, written once for every program
// that runs them (forked workers here, MPI ranks elsewhere). Each stage works
// on one frame, in float32, through Eigen::Map views of memory it is given;
// it reads and writes that frame only, so frames split across workers never
// race. Nothing here knows where the memory lives.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace shmarray::stack {

using frame_map = Eigen::Map<Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;
template <class T>
using pixels_map = Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;

// The stages a job runs, in this order.
struct steps {
  bool background = true;
  bool blur = true;
  bool normalize = true;

  static steps none() { return {false, false, false}; }

  // "background,blur,normalize", any subset in that order, or "none".
  static steps parse(const std::string& list) {
    if (list == "none") return none();
    steps s = none();
    static const char* const names[] = {"background", "blur", "normalize"};
    bool* flags[] = {&s.background, &s.blur, &s.normalize};
    int next = 0;
    std::size_t at = 0;
    while (at <= list.size()) {
      const std::size_t comma = std::min(list.find(',', at), list.size());
      const std::string item = list.substr(at, comma - at);
      int which = -1;
      for (int i = 0; i < 3; ++i)
        if (item == names[i]) which = i;
      if (which < 0)
        throw std::invalid_argument("--steps: unknown step '" + item +
                                    "' (choose from background,blur,normalize, or none)");
      if (which < next)
        throw std::invalid_argument("--steps: '" + item +
                                    "' is out of order or repeated (the order is "
                                    "background,blur,normalize)");
      *flags[which] = true;
      next = which + 1;
      at = comma + 1;
    }
    return s;
  }

  std::string str() const {
    std::string out;
    auto add = [&](bool on, const char* n) {
      if (!on) return;
      if (!out.empty()) out += ',';
      out += n;
    };
    add(background, "background");
    add(blur, "blur");
    add(normalize, "normalize");
    return out.empty() ? "none" : out;
  }
};

// The largest value of the input's pixel type: what `normalize` scales to
// (1 for float input).
template <class T>
constexpr float full_scale() {
  if constexpr (std::is_floating_point_v<T>)
    return 1.0f;
  else
    return float(std::numeric_limits<T>::max());
}

// ---- input to the working array, and back

template <class T>
void to_work(const T* in, float* work, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i)
    work[i] = float(in[i]);
}

// Rounded to nearest (ties to even) and clamped to T's range; float input
// is copied. With no step in between, this gives back the input exactly.
template <class T>
void to_pixels(const float* work, T* out, std::size_t n) {
  if constexpr (std::is_floating_point_v<T>) {
    for (std::size_t i = 0; i < n; ++i)
      out[i] = T(work[i]);
  } else {
    // Clamped first (NaN to 0, +inf to hi), then rounded by adding and
    // taking away 2^23: for 0 <= c < 2^23 the sum's spacing is 1, so the
    // addition rounds c to nearest, ties to even, exactly as nearbyint does
    // in the default rounding mode; and it vectorises, where a call of
    // nearbyint per pixel does not (IEEE arithmetic, no -ffast-math: the
    // compiler may not fold the two away). hi <= 65535 < 2^23.
    const float hi = full_scale<T>();
    static_assert(full_scale<T>() < 8388608.0f);
    for (std::size_t i = 0; i < n; ++i) {
      const float w = work[i];
      const float c = !(w > 0.f) ? 0.f : w >= hi ? hi : w;
      out[i] = T((c + 8388608.0f) - 8388608.0f);
    }
  }
}

// ---- background: the frame's median, subtracted, clamped at 0

// Non-finite pixels (NaN, +-inf, possible in float input) play no part in
// a frame's background or range; they stay non-finite through the stages
// (the blur spreads a NaN over its neighbourhood).

// The median of a frame's finite pixels (the mean of the two middle values
// for an even count; 0 if there are none). `scratch` is resized as needed.
inline float median(const frame_map& f, std::vector<float>& scratch) {
  scratch.clear();
  for (Eigen::Index i = 0; i < f.size(); ++i)
    if (std::isfinite(f.data()[i])) scratch.push_back(f.data()[i]);
  const std::size_t n = scratch.size();
  if (n == 0) return 0;
  const auto mid = scratch.begin() + std::ptrdiff_t(n / 2);
  std::nth_element(scratch.begin(), mid, scratch.end());
  const float upper = *mid;
  if (n % 2) return upper;
  const float lower = *std::max_element(scratch.begin(), mid);
  return lower + (upper - lower) / 2;
}

// The same median of a frame whose pixels are integers of an unsigned type
// of at most 16 bits (as to_work makes them), by counting: O(pixels), with
// at most 65,536 counters, and exact (the same value median() gives). A
// pixel that is not such an integer (a frame a step has already changed)
// falls back to median().
template <class T>
float median_of(const frame_map& f, std::vector<float>& scratch,
                std::vector<std::uint32_t>& counts) {
  if constexpr (!std::is_integral_v<T> || std::is_signed_v<T> || sizeof(T) > 2) {
    return median(f, scratch);
  } else {
    constexpr std::size_t values = std::size_t(std::numeric_limits<T>::max()) + 1;
    counts.assign(values, 0);
    const float* p = f.data();
    const std::size_t n = std::size_t(f.size());
    for (std::size_t i = 0; i < n; ++i) {
      const float v = p[i];
      if (!(v >= 0.f && v < float(values))) return median(f, scratch);
      const auto u = std::size_t(v);
      if (float(u) != v) return median(f, scratch);
      ++counts[u];
    }
    if (n == 0) return 0;
    // The value at sorted place k: where the running count passes k.
    auto at = [&](std::size_t k) {
      std::size_t seen = 0, v = 0;
      while ((seen += counts[v]) <= k)
        ++v;
      return float(v);
    };
    const float upper = at(n / 2);
    if (n % 2) return upper;
    const float lower = at(n / 2 - 1);
    return lower + (upper - lower) / 2;
  }
}

// f - bg, clamped at 0.
inline void subtract(frame_map f, float bg) {
  // max(d, 0) that keeps a NaN a NaN (Eigen's cwiseMax may not).
  f = (f.array() - bg).unaryExpr([](float d) { return d < 0.f ? 0.f : d; }).matrix();
}

inline void subtract_background(frame_map f, std::vector<float>& scratch) {
  subtract(f, median(f, scratch));
}

// The same for a frame of T pixels: the median by counting where T allows.
template <class T>
void subtract_background(frame_map f, std::vector<float>& scratch,
                         std::vector<std::uint32_t>& counts) {
  subtract(f, median_of<T>(f, scratch, counts));
}

// ---- blur: separable Gaussian, boundaries mirrored (d c b a | a b c d)

// Normalised weights of a Gaussian of `sigma` pixels, radius ceil(3 sigma).
// Throws std::invalid_argument unless the weights are finite and sum to 1
// (a sigma so small that its square underflows gives NaN weights).
inline std::vector<float> gaussian_kernel(double sigma) {
  if (!(sigma > 0) || !std::isfinite(sigma) || sigma > 1000)
    throw std::invalid_argument("--sigma must be a number of pixels above 0 (at most 1000)");
  const int r = int(std::ceil(3 * sigma));
  std::vector<double> w(std::size_t(2 * r + 1));
  double sum = 0;
  for (int k = -r; k <= r; ++k)
    sum += w[std::size_t(k + r)] = std::exp(-0.5 * (k * k) / (sigma * sigma));
  std::vector<float> out(w.size());
  double check = 0;
  bool finite = true;
  for (std::size_t i = 0; i < w.size(); ++i) {
    out[i] = float(w[i] / sum);
    finite = finite && std::isfinite(out[i]);
    check += double(out[i]);
  }
  // Each weight is rounded to float: the sum is 1 within n float roundings.
  if (!finite || !(std::fabs(check - 1) <= 1e-6 * double(out.size()) + 1e-6))
    throw std::invalid_argument("--sigma " + std::to_string(sigma) +
                                " gives a Gaussian kernel that is not finite or does not sum to 1");
  return out;
}

// Index i mirrored into [0, n): -1 -> 0, -2 -> 1, n -> n-1, n+1 -> n-2.
inline std::ptrdiff_t mirror(std::ptrdiff_t i, std::ptrdiff_t n) {
  if (n == 1) return 0;
  const std::ptrdiff_t period = 2 * n;
  i %= period;
  if (i < 0) i += period;
  return i < n ? i : period - 1 - i;
}

// The blur of one frame, rows then columns. `scratch` holds a padded row
// and a copy of the frame.
inline void blur(frame_map f, const std::vector<float>& kernel, std::vector<float>& scratch) {
  const Eigen::Index h = f.rows(), w = f.cols();
  const Eigen::Index r = Eigen::Index(kernel.size() / 2);
  scratch.resize(std::size_t(h * w + w + 2 * r));
  frame_map tmp(scratch.data(), h, w);
  Eigen::Map<Eigen::RowVectorXf> pad(scratch.data() + h * w, w + 2 * r);
  // Along rows: each row, padded by mirroring, weighted and summed into tmp.
  for (Eigen::Index y = 0; y < h; ++y) {
    for (Eigen::Index x = -r; x < w + r; ++x)
      pad[x + r] = f(y, mirror(x, w));
    tmp.row(y).setZero();
    for (Eigen::Index k = 0; k <= 2 * r; ++k)
      tmp.row(y) += kernel[std::size_t(k)] * pad.segment(k, w);
  }
  // Along columns: whole rows of tmp, weighted and summed into the frame.
  for (Eigen::Index y = 0; y < h; ++y) {
    f.row(y).setZero();
    for (Eigen::Index k = 0; k <= 2 * r; ++k)
      f.row(y) += kernel[std::size_t(k)] * tmp.row(mirror(y + k - r, h));
  }
}

// ---- normalize: the frame's range stretched to [0, full]

inline void normalize(frame_map f, float full) {
  float lo = std::numeric_limits<float>::infinity(), hi = -lo;
  for (Eigen::Index i = 0; i < f.size(); ++i) {
    const float v = f.data()[i];
    if (!std::isfinite(v)) continue;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  if (!(hi > lo)) {  // flat, or nothing finite: the finite pixels become 0
    for (Eigen::Index i = 0; i < f.size(); ++i)
      if (std::isfinite(f.data()[i])) f.data()[i] = 0;
    return;
  }
  const float scale = full / (hi - lo);
  f = ((f.array() - lo) * scale).matrix();
}

// ---- projections over frames, per pixel

// Running count, mean and sum of squared deviations of one pixel's values
// (Welford), which merge soundly (Chan et al.), so a split of the frames
// changes nothing but rounding.
struct moments {
  double n = 0, mean = 0, m2 = 0;
  void add(double x) {
    n += 1;
    const double d = x - mean;
    mean += d / n;
    m2 += d * (x - mean);
  }
  void merge(const moments& o) {
    if (o.n == 0) return;
    const double total = n + o.n;
    const double d = o.mean - mean;
    mean += d * (o.n / total);
    m2 += o.m2 + d * d * (n * o.n / total);
    n = total;
  }
  // Population standard deviation (divides by n, as NumPy's std does).
  double stddev() const { return n > 0 ? std::sqrt(m2 / n) : 0; }
};

// The maximum and the running moments over `frames` frames of rows
// [row0, row0 + rows) of a frames x height x width stack: into `max`'s
// same rows, and `acc` (one moments per pixel of those rows, which must
// start empty, or hold moments of other frames to merge with). It goes
// through the rows in blocks of about 16K pixels, all frames for each
// block, so the data it touches stays in cache whatever the frame size.
template <class T>
void accumulate_rows(const T* stack, std::size_t frames, std::size_t height, std::size_t width,
                     std::size_t row0, std::size_t rows, T* max, moments* acc) {
  using const_map =
      Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;
  const std::size_t block = std::max<std::size_t>(1, (std::size_t(1) << 14) / width);
  for (std::size_t r = row0; r < row0 + rows; r += block) {
    const std::size_t nr = std::min(block, row0 + rows - r);
    const std::size_t n = nr * width, off = r * width;
    pixels_map<T> mx(max + off, Eigen::Index(nr), Eigen::Index(width));
    moments* a = acc + (off - row0 * width);
    for (std::size_t k = 0; k < frames; ++k) {
      const T* frame = stack + k * height * width + off;
      const const_map fr(frame, Eigen::Index(nr), Eigen::Index(width));
      if (k == 0)
        mx = fr;
      else if constexpr (std::is_floating_point_v<T>)
        mx = mx.binaryExpr(fr, [](T x, T y) { return x < y || y != y ? y : x; });  // NaN wins
      else
        mx = mx.cwiseMax(fr);
      for (std::size_t i = 0; i < n; ++i)
        a[i].add(double(frame[i]));
    }
  }
}

// Mean and standard deviation (float32) from moments.
inline void finish_moments(const moments* acc, std::size_t n, float* mean, float* sd) {
  for (std::size_t i = 0; i < n; ++i) {
    mean[i] = float(acc[i].mean);
    sd[i] = float(acc[i].stddev());
  }
}

// Maximum, mean and standard deviation over `frames` frames of rows
// [row0, row0 + rows), into the projections' same rows (`acc` is scratch).
template <class T>
void project_rows(const T* stack, std::size_t frames, std::size_t height, std::size_t width,
                  std::size_t row0, std::size_t rows, T* max, float* mean, float* sd,
                  std::vector<moments>& acc) {
  const std::size_t block = std::max<std::size_t>(1, (std::size_t(1) << 14) / width);
  for (std::size_t r = row0; r < row0 + rows; r += block) {  // acc stays a block's size
    const std::size_t nr = std::min(block, row0 + rows - r);
    acc.assign(nr * width, moments{});
    accumulate_rows(stack, frames, height, width, r, nr, max, acc.data());
    finish_moments(acc.data(), nr * width, mean + r * width, sd + r * width);
  }
}

}  // namespace shmarray::stack
