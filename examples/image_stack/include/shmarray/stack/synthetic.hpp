// shmarray-stack: a realistic stack to work on when there is no input:
// Gaussian spots drifting over an uneven background, with shot noise, as a
// fluorescence microscope records them. Each frame depends only on its index
// and the seed, so frames made by any split of workers are the same.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

namespace shmarray::stack {

struct synthetic_spec {
  std::size_t frames = 200, height = 512, width = 512;
  std::uint32_t seed = 20261125;
  std::size_t spots = 60;
  double background = 300;  // mean background level, in counts
};

struct spot {
  double x, y, vx, vy, sigma, amplitude;
};

// The spots of a stack: positions, drifts (pixels per frame), sizes, heights.
inline std::vector<spot> make_spots(const synthetic_spec& s) {
  std::mt19937_64 rng(s.seed);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<spot> out(s.spots);
  for (auto& p : out) {
    p.x = u(rng) * double(s.width);
    p.y = u(rng) * double(s.height);
    const double angle = u(rng) * 6.283185307179586, speed = 0.2 + u(rng) * 0.8;
    p.vx = speed * std::cos(angle);
    p.vy = speed * std::sin(angle);
    p.sigma = 1.5 + u(rng) * 2.5;
    p.amplitude = 800 + u(rng) * 6000;
  }
  return out;
}

// Frame k into `out` (height x width uint16): expected counts, then shot
// noise (Gaussian with variance equal to the mean, close to Poisson at these
// counts), rounded and clamped.
inline void synthesize_frame(const synthetic_spec& s, const std::vector<spot>& spots, std::size_t k,
                             std::uint16_t* out, std::vector<double>& expected) {
  const std::size_t h = s.height, w = s.width;
  expected.resize(h * w);
  // An uneven background: a gentle gradient and a slow flicker over time.
  const double flicker = 1.0 + 0.05 * std::sin(double(k) * 0.1);
  for (std::size_t y = 0; y < h; ++y)
    for (std::size_t x = 0; x < w; ++x)
      expected[y * w + x] = s.background * flicker * (0.8 + 0.4 * double(x + y) / double(h + w));
  for (const auto& p : spots) {
    // drifting, bouncing off the edges
    auto bounce = [](double v, double n) {
      const double period = 2 * n;
      v = std::fmod(v, period);
      if (v < 0) v += period;
      return v < n ? v : period - v;
    };
    const double cx = bounce(p.x + p.vx * double(k), double(w));
    const double cy = bounce(p.y + p.vy * double(k), double(h));
    const double r = 4 * p.sigma;
    const auto x0 = std::size_t(std::max(0.0, std::floor(cx - r)));
    const auto x1 = std::size_t(std::min(double(w) - 1, std::ceil(cx + r)));
    const auto y0 = std::size_t(std::max(0.0, std::floor(cy - r)));
    const auto y1 = std::size_t(std::min(double(h) - 1, std::ceil(cy + r)));
    const double inv = -0.5 / (p.sigma * p.sigma);
    for (std::size_t y = y0; y <= y1; ++y)
      for (std::size_t x = x0; x <= x1; ++x) {
        const double dx = double(x) - cx, dy = double(y) - cy;
        expected[y * w + x] += p.amplitude * std::exp((dx * dx + dy * dy) * inv);
      }
  }
  std::mt19937_64 rng(s.seed ^ (0x9E3779B97F4A7C15ull * (k + 1)));
  std::normal_distribution<double> z(0, 1);
  for (std::size_t i = 0; i < h * w; ++i) {
    const double v = std::nearbyint(expected[i] + std::sqrt(expected[i]) * z(rng));
    out[i] = std::uint16_t(std::clamp(v, 0.0, 65535.0));
  }
}

}  // namespace shmarray::stack
