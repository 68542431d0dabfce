// A consumer of a camera's ring (examples/ring_camera.cpp): attaches by
// name, takes each frame in place through an Eigen view and hands it to a
// stage written against Eigen (it knows nothing of rings), checks valid()
// after reading and drops what it computed from a torn frame, reports the
// frames it missed, and ends cleanly when the producer is gone (closed, or
// its process died). docs/rings.md shows a run.
//
//   ring_consumer [--name /camera] [--group NAME] [--work-ms 0] [--every 30]
//                 [--oldest] [--quiet]
//
// --group NAME makes it one member of a reader group: the members split the
// frames, each frame to exactly one. --work-ms adds that much work per
// frame (a slow consumer: under `overwrite` it misses frames, and is told
// how many; under `block` the camera waits for it).
#include <time.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <shmarray/eigen.hpp>
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
  std::string group;
  long work_ms = 0;
  unsigned long every = 30;
  bool oldest = false, quiet = false;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "ring_consumer: %s\nusage: ring_consumer [--name /camera] [--group NAME] "
               "[--work-ms 0] [--every 30] [--oldest] [--quiet]\n",
               why);
  std::exit(2);
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--oldest") {
      o.oldest = true;
      continue;
    }
    if (a == "--quiet") {
      o.quiet = true;
      continue;
    }
    if (i + 1 >= argc) usage(("no value after " + a).c_str());
    const std::string v = argv[++i];
    char* end = nullptr;
    if (a == "--name") {
      o.name = v;
    } else if (a == "--group") {
      o.group = v;
    } else if (a == "--work-ms") {
      o.work_ms = std::strtol(v.c_str(), &end, 10);
      if (*end || o.work_ms < 0) usage("--work-ms is a time in milliseconds");
    } else if (a == "--every") {
      o.every = std::strtoul(v.c_str(), &end, 10);
      if (*end) usage("--every is a count of frames (0: no line per frame)");
    } else {
      usage(("unknown option " + a).c_str());
    }
  }
  return o;
}

std::uint64_t now_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);  // the clock of ring_frame::publish_ns()
  return std::uint64_t(ts.tv_sec) * 1000000000u + std::uint64_t(ts.tv_nsec);
}

// doc-region: stage
// A stage written against Eigen, as the image-stack stages are: it gets a
// view of any matrix of pixels (here a frame of the ring, in place) and
// knows nothing of rings.
struct frame_stats {
  double mean = 0;
  std::uint16_t max = 0;
  Eigen::Index max_row = 0, max_col = 0;
  Eigen::Index bright = 0;  // pixels above 1000 counts: the spots
};

template <class Derived>
frame_stats measure(const Eigen::MatrixBase<Derived>& img) {
  frame_stats s;
  s.mean = img.template cast<double>().mean();
  s.max = img.maxCoeff(&s.max_row, &s.max_col);
  s.bright = (img.array() > std::uint16_t(1000)).count();
  return s;
}
// doc-region-end

// What the consumer has done, and its line every `every` frames.
struct tally {
  const options& o;
  std::uint64_t read = 0, torn = 0, last = 0;

  void took(const shmarray::ring_frame<std::uint16_t>& f, const frame_stats& s,
            std::uint64_t missed) {
    ++read;
    last = f.seq();
    if (o.work_ms) std::this_thread::sleep_for(std::chrono::milliseconds(o.work_ms));
    if (o.quiet || !o.every || read % o.every) return;
    std::printf(
        "  frame %4llu: mean %6.1f, max %5u at (%3ld, %3ld), %4ld bright pixels, "
        "%.3f ms after its publish; missed so far %llu\n",
        static_cast<unsigned long long>(f.seq()), s.mean, unsigned(s.max), long(s.max_row),
        long(s.max_col), long(s.bright), double(now_ns() - f.publish_ns()) / 1e6,
        static_cast<unsigned long long>(missed));
    std::fflush(stdout);
  }
};

}  // namespace

int main(int argc, char** argv) {
  const options o = parse(argc, argv);
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  try {
    // doc-region: attach
    // By name, from another program: the record says the element type (a
    // wrong T throws dtype_mismatch) and the frame shape.
    shmarray::reader_options ro;
    ro.group = o.group;  // empty: a reader of its own, which sees every frame
    ro.start = o.oldest ? shmarray::ring_start::oldest : shmarray::ring_start::next;
    ro.wait_for_name = std::chrono::seconds(10);  // the camera may start after us
    auto ring = shmarray::ring_reader<std::uint16_t>::attach(o.name, ro);
    // doc-region-end
    const auto& shape = ring.frame_shape();
    if (shape.size() != 2 || ring.frame_order() != shmarray::order::row_major) {
      std::fprintf(stderr, "ring_consumer: %s does not hold row-major images\n",
                   ring.name().c_str());
      return 1;
    }
    std::printf("consumer: attached to %s%s%s: %zu x %zu uint16 frames, %zu slots, %s\n",
                ring.name().c_str(), o.group.empty() ? "" : " in group ", o.group.c_str(), shape[0],
                shape[1], ring.slots(), shmarray::to_string(ring.policy()));
    std::fflush(stdout);
    tally t{o};
    const char* gone = nullptr;
    // doc-region: read
    try {
      while (!stop) {
        // The next frame in order, in place (nullopt: none for 200 ms). Asking
        // for it releases the one before: under `block` the camera may reuse
        // that slot now.
        auto f = ring.next(std::chrono::milliseconds(200));
        if (!f) continue;
        const frame_stats s = measure(shmarray::eigen::matrix(*f));  // an Eigen::Map of the slot
        if (!f->valid()) {  // the camera reused the slot while we read it:
          ++t.torn;         // what we computed may be torn, so drop it
          continue;
        }
        t.took(*f, s, ring.missed());  // missed: frames overwritten before we got to them
      }
    } catch (const shmarray::producer_gone& e) {
      // The camera closed the ring, or its process died (e.died()); either
      // way every frame it published was offered first.
      gone = e.died() ? "its process died" : "closed by its writer";
    }
    // doc-region-end
    if (gone)
      std::printf("consumer: producer gone (%s) after frame %llu: ", gone,
                  static_cast<unsigned long long>(t.last));
    else
      std::printf("consumer: stopped by a signal after frame %llu: ",
                  static_cast<unsigned long long>(t.last));
    std::printf("%llu frames read, %llu torn and dropped, %llu missed",
                static_cast<unsigned long long>(t.read), static_cast<unsigned long long>(t.torn),
                static_cast<unsigned long long>(ring.missed()));
    if (!o.group.empty())
      std::printf(" (by the whole group: %llu)",
                  static_cast<unsigned long long>(ring.group_missed()));
    std::printf("\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ring_consumer: %s\n", e.what());
    return 1;
  }
}
