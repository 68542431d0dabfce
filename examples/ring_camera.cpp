// A camera simulator: writes synthetic 16-bit frames (bright spots circling
// over a noisy background) at a given rate into a named ring, for any
// number of readers by name (examples/ring_consumer.cpp in C++,
// examples/python/ring_viewer.py in Python). docs/rings.md shows a run.
//
//   ring_camera [--name /camera] [--fps 30] [--frames 300] [--size 512x512]
//               [--policy overwrite|block] [--slots 8] [--block-timeout-ms 1000]
//               [--wait-readers N] [--quiet]
//
// --frames 0 runs until Ctrl-C (or SIGTERM): the camera then closes the
// ring, its readers read what is left and get producer_gone, and the
// manager removes the name. --wait-readers N waits (up to 30 s) for N
// readers to attach before the first frame, so that they see them all.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <shmarray/eigen.hpp>
#include <shmarray/manager.hpp>
#include <shmarray/ring.hpp>
#include <string>
#include <thread>

namespace {

volatile std::sig_atomic_t stop = 0;
extern "C" void on_signal(int) {
  stop = 1;
}

struct options {
  std::string name = "/camera";
  double fps = 30;
  std::uint64_t frames = 300;
  std::size_t height = 512, width = 512;
  shmarray::ring_policy policy = shmarray::ring_policy::overwrite;
  std::size_t slots = 8;
  long block_timeout_ms = 1000;
  std::size_t wait_readers = 0;
  bool quiet = false;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "ring_camera: %s\nusage: ring_camera [--name /camera] [--fps 30] [--frames 300] "
               "[--size 512x512] [--policy overwrite|block] [--slots 8] "
               "[--block-timeout-ms 1000] [--wait-readers N] [--quiet]\n",
               why);
  std::exit(2);
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quiet") {
      o.quiet = true;
      continue;
    }
    if (i + 1 >= argc) usage(("no value after " + a).c_str());
    const std::string v = argv[++i];
    char* end = nullptr;
    if (a == "--name") {
      o.name = v;
    } else if (a == "--fps") {
      o.fps = std::strtod(v.c_str(), &end);
      if (*end || !(o.fps >= 0))
        usage("--fps is a rate in frames per second (0: as fast as it can)");
    } else if (a == "--frames") {
      o.frames = std::strtoull(v.c_str(), &end, 10);
      if (*end) usage("--frames is a count (0: until Ctrl-C)");
    } else if (a == "--size") {
      o.height = std::strtoull(v.c_str(), &end, 10);
      if (*end != 'x') usage("--size is HEIGHTxWIDTH");
      o.width = std::strtoull(end + 1, &end, 10);
      if (*end || o.height < 16 || o.width < 16) usage("--size is HEIGHTxWIDTH, each at least 16");
    } else if (a == "--policy") {
      if (v == "overwrite")
        o.policy = shmarray::ring_policy::overwrite;
      else if (v == "block")
        o.policy = shmarray::ring_policy::block;
      else
        usage("--policy is overwrite or block");
    } else if (a == "--slots") {
      o.slots = std::strtoull(v.c_str(), &end, 10);
      if (*end) usage("--slots is a count");
    } else if (a == "--block-timeout-ms") {
      o.block_timeout_ms = std::strtol(v.c_str(), &end, 10);
      if (*end || o.block_timeout_ms < 0) usage("--block-timeout-ms is a time in milliseconds");
    } else if (a == "--wait-readers") {
      o.wait_readers = std::strtoull(v.c_str(), &end, 10);
      if (*end) usage("--wait-readers is a count");
    } else {
      usage(("unknown option " + a).c_str());
    }
  }
  return o;
}

// A cheap, deterministic noise: a hash of the pixel and the frame.
std::uint32_t noise(std::uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return std::uint32_t(x);
}

// Frame n into img, an Eigen view of the slot: a background that flickers
// slowly, with noise, and six Gaussian spots circling the middle at their
// own speeds.
template <class Image>
void draw(Image&& img, std::uint64_t n) {
  const auto h = img.rows(), w = img.cols();
  const auto level = std::uint32_t(200 + 20 * std::sin(double(n) * 0.05));
  for (Eigen::Index y = 0; y < h; ++y)
    for (Eigen::Index x = 0; x < w; ++x) {
      const std::uint64_t pixel = (n * std::uint64_t(h) + std::uint64_t(y)) * std::uint64_t(w);
      img(y, x) = std::uint16_t(level + noise(pixel + std::uint64_t(x)) % 32);
    }
  for (int s = 0; s < 6; ++s) {
    const double angle = double(n) * 0.02 * (1 + s) + s;
    const double radius = (0.12 + 0.06 * s) * double(std::min(h, w));
    const double cx = double(w) / 2 + radius * std::cos(angle);
    const double cy = double(h) / 2 + radius * std::sin(angle);
    const double sigma = 3 + s, amplitude = 1500 + 600 * s;
    const auto r = Eigen::Index(4 * sigma);
    for (Eigen::Index y = std::max<Eigen::Index>(0, Eigen::Index(cy) - r);
         y <= std::min<Eigen::Index>(h - 1, Eigen::Index(cy) + r); ++y)
      for (Eigen::Index x = std::max<Eigen::Index>(0, Eigen::Index(cx) - r);
           x <= std::min<Eigen::Index>(w - 1, Eigen::Index(cx) + r); ++x) {
        const double dx = double(x) - cx, dy = double(y) - cy;
        const double v =
            double(img(y, x)) + amplitude * std::exp(-(dx * dx + dy * dy) / (2 * sigma * sigma));
        img(y, x) = std::uint16_t(std::min(v, 65535.0));
      }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const options o = parse(argc, argv);
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  try {
    // doc-region: make
    shmarray::manager m;  // its end removes the ring's name
    shmarray::ring_options ro;
    ro.slots = o.slots;
    ro.policy = o.policy;  // overwrite: never wait; block: wait for the slowest reader
    ro.block_timeout = std::chrono::milliseconds(o.block_timeout_ms);
    auto ring = m.ring<std::uint16_t>(o.name, {o.height, o.width}, ro);
    // doc-region-end
    char rate[32] = "as fast as it can";
    if (o.fps > 0) std::snprintf(rate, sizeof rate, "%g fps", o.fps);
    std::printf("camera: %s: %zu x %zu uint16 frames, %zu slots, %s, %s\n", ring.name().c_str(),
                o.height, o.width, ring.slots(), shmarray::to_string(ring.policy()), rate);
    std::fflush(stdout);

    if (o.wait_readers) {
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
      while (ring.readers() < o.wait_readers && !stop) {
        if (std::chrono::steady_clock::now() >= until) {
          std::fprintf(stderr, "camera: %zu of %zu readers came within 30 s\n", ring.readers(),
                       o.wait_readers);
          return 1;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    }

    const auto start = std::chrono::steady_clock::now();
    const auto period =
        o.fps > 0 ? std::chrono::duration<double>(1.0 / o.fps) : std::chrono::duration<double>(0);
    std::uint64_t published = 0, dropped = 0;
    auto last = start;
    for (std::uint64_t k = 0; (o.frames == 0 || k < o.frames) && !stop; ++k) {
      std::this_thread::sleep_until(
          start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(period * k));
      try {
        // doc-region: publish
        // The next slot, lent in place: fill it through an Eigen view (no
        // copy), then publish it. In `block` loan() waits for the slowest
        // reader, at most ro.block_timeout.
        auto loan = ring.loan();
        draw(shmarray::eigen::matrix(loan), loan.seq());
        ring.publish(std::move(loan));
        // doc-region-end
        ++published;
        last = std::chrono::steady_clock::now();
      } catch (const shmarray::ring_timeout& e) {
        // A camera cannot wait for ever: a reader that holds its slot past
        // the timeout (alive, but not reading) costs it this frame.
        ++dropped;
        if (!o.quiet) std::fprintf(stderr, "camera: frame dropped: %s\n", e.what());
      }
    }
    const std::chrono::duration<double> took = last - start;  // first to last publish
    // doc-region: close
    ring.close();  // readers read what is left, then get producer_gone
    // doc-region-end
    std::printf("camera: published %llu frames in %.1f s (%.1f fps), %llu dropped%s; closed\n",
                static_cast<unsigned long long>(published), took.count(),
                took.count() > 0 ? double(published - 1) / took.count() : 0.0,
                static_cast<unsigned long long>(dropped), stop ? " (stopped by a signal)" : "");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "camera: %s\n", e.what());
    return 1;
  }
}
