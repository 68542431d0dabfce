// shmarray-stack: an image-stack pipeline whose arrays live in shared memory
// and whose stages run in forked workers, frames split among them.
//
//   shmarray-stack [INPUT.tif] [-o OUTDIR] [-j N] [--steps LIST] [--sigma S]
//                  [--synthetic FRAMES,HEIGHT,WIDTH] [--scratch DIR]
//
// Reads a greyscale TIFF stack (or makes a synthetic one), runs background
// subtraction, a Gaussian blur and normalisation on every frame, projects
// the processed stack (maximum, mean, standard deviation), and writes
// OUTDIR/processed.tif, max.tif, mean.tif, std.tif and max.png.
#include <sched.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <shmarray/eigen.hpp>
#include <shmarray/shmarray.hpp>
#include <shmarray/stack/memory.hpp>
#include <shmarray/stack/options.hpp>
#include <shmarray/stack/pipeline.hpp>
#include <shmarray/stack/png.hpp>
#include <shmarray/stack/stages.hpp>
#include <shmarray/stack/synthetic.hpp>
#include <shmarray/stack/tiff.hpp>
#include <string>
#include <vector>

namespace st = shmarray::stack;
using clock_type = std::chrono::steady_clock;

namespace {

using job = st::job_options;

std::size_t cores() {
  cpu_set_t set;
  if (::sched_getaffinity(0, sizeof set, &set) == 0) return std::size_t(CPU_COUNT(&set));
  const long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? std::size_t(n) : 1;
}

// Bytes a segment of `data` bytes takes in its file system (record included).
std::uint64_t footprint(std::uint64_t data) {
  std::uint64_t total = 0;
  if (!shmarray::detail::segment_bytes(data, total))
    throw std::invalid_argument("the stack is too large to address");
  const std::uint64_t page = 4096;
  return (total + page - 1) / page * page;
}

// The arrays of a job over pixels of type T.
template <class T>
struct arrays {
  shmarray::ndarray<T> stack, processed, max;
  shmarray::ndarray<float> work, mean, sd;
};

// What the six arrays of a job take in /dev/shm (or the scratch directory).
std::uint64_t bytes_needed(const st::stack_info& info) {
  st::stack_info as = info;  // the same shape in other pixel types
  auto bytes_as = [&](st::pixel p, bool plane) {
    as.type = p;
    as.frames = plane ? 1 : info.frames;
    return footprint(as.bytes());  // throws where the count overflows
  };
  const st::pixel t = info.type, f32 = st::pixel::f32;
  return bytes_as(t, false) + bytes_as(f32, false) + bytes_as(t, false) + bytes_as(t, true) +
         2 * bytes_as(f32, true);
}

// 0 if the arrays fit where they go (and, in /dev/shm, in the memory that
// can back it); else 1, having said how to make room.
int check_space(const job& j, std::uint64_t need) {
  const std::string where = j.scratch.empty() ? "/dev/shm" : j.scratch;
  struct statvfs sv {};
  if (::statvfs(where.c_str(), &sv) != 0) {
    std::fprintf(stderr, "shmarray-stack: %s: %s\n", where.c_str(), std::strerror(errno));
    return 1;
  }
  const std::uint64_t avail = std::uint64_t(sv.f_bavail) * sv.f_frsize;
  if (need <= avail) {
    if (!j.scratch.empty()) return 0;
    const std::string short_of = st::memory_shortfall(need, avail, st::memory_for_shared_arrays());
    if (short_of.empty()) return 0;
    std::fprintf(stderr, "shmarray-stack: %s\n", short_of.c_str());
    return 1;
  }
  if (j.scratch.empty())
    std::fprintf(stderr,
                 "shmarray-stack: the job needs %" PRIu64
                 " bytes (%s) of shared memory, but "
                 "/dev/shm has %" PRIu64
                 " bytes (%s) free.\n"
                 "  Give it more: in a container, docker run --shm-size=%" PRIu64
                 "m (the job and\n"
                 "  64 MiB to spare), or a larger /dev/shm mount; or keep the arrays in\n"
                 "  file-backed mappings on disk with --scratch DIR.\n",
                 need, st::human_bytes(need).c_str(), avail, st::human_bytes(avail).c_str(),
                 need / (1 << 20) + 64);
  else
    std::fprintf(stderr,
                 "shmarray-stack: the job needs %" PRIu64 " bytes (%s) in %s, but it has %" PRIu64
                 " bytes (%s) free; choose another --scratch directory.\n",
                 need, st::human_bytes(need).c_str(), where.c_str(), avail,
                 st::human_bytes(avail).c_str());
  return 1;
}

// The random part of the job's names: 16 hex digits from getrandom(2).
// $SHMARRAY_STACK_TEST_NAMES (comma-separated) gives the first ones
// instead, so that a test can make a name collide.
std::string name_part(int attempt) {
  if (const char* env = std::getenv("SHMARRAY_STACK_TEST_NAMES")) {
    std::string list = env;
    for (int i = 0; i < attempt && !list.empty(); ++i)
      list.erase(0, list.find(',') == std::string::npos ? list.size() : list.find(',') + 1);
    const std::string part = list.substr(0, list.find(','));
    if (!part.empty() && part.size() <= 16 &&
        part.find_first_not_of("0123456789abcdef") == std::string::npos)
      return part;
  }
  return st::detail::random_hex(8);
}

// A named array: in /dev/shm, or a file in the scratch directory.
template <class T>
shmarray::ndarray<T> make_array(shmarray::manager& m, const job& j, const std::string& name,
                                const shmarray::shape_type& shape) {
  if (j.scratch.empty()) return m.from_shape<T>(shape, shmarray::posix_shm(name));
  return m.from_shape<T>(shape, shmarray::file(j.scratch + "/" + name + ".bin"));
}

template <class T>
int run(const job& j) {
  const std::size_t F = j.info.frames, H = j.info.height, W = j.info.width;
  const std::size_t frame = H * W;
  const std::uint64_t in_bytes = std::uint64_t(F) * frame * sizeof(T);
  if (const int rc = check_space(j, bytes_needed(j.info))) return rc;

  st::decode_unbounded_page(j);

  // The six arrays share a base name, /shmarray-stack-PID-RANDOM-, that
  // another user cannot guess; if any name is taken (planted, or by
  // chance), the ones made go and the job tries another base.
  std::optional<shmarray::manager> m;
  arrays<T> a;
  for (int attempt = 0;; ++attempt) {
    const std::string base =
        "shmarray-stack-" + std::to_string(::getpid()) + "-" + name_part(attempt) + "-";
    try {
      m.emplace();
      a.stack = make_array<T>(*m, j, base + "input", {F, H, W});
      a.work = make_array<float>(*m, j, base + "work", {F, H, W});
      a.processed = make_array<T>(*m, j, base + "processed", {F, H, W});
      a.max = make_array<T>(*m, j, base + "max", {H, W});
      a.mean = make_array<float>(*m, j, base + "mean", {H, W});
      a.sd = make_array<float>(*m, j, base + "std", {H, W});
      break;
    } catch (const shmarray::already_exists&) {
      a = arrays<T>{};
      m.reset();
      if (attempt == 15) throw;
    }
  }

  std::printf("shmarray-stack: %zu frames of %zu x %zu %s (%s) from %s\n", F, H, W,
              st::pixel_name(j.info.type), st::human_bytes(in_bytes).c_str(),
              j.input.empty() ? "a synthetic stack" : j.input.c_str());
  std::printf("  steps %s", j.todo.str().c_str());
  if (j.todo.blur) std::printf(", sigma %g", j.sigma);
  std::printf(", %zu worker%s; arrays ", j.workers, j.workers == 1 ? "" : "s");
  if (j.scratch.empty())
    std::printf("in /dev/shm (shmarray ls shows them):\n");
  else
    std::printf("in files in %s (on disk, not in /dev/shm: shmarray ls does not list them):\n",
                j.scratch.c_str());
  for (const auto* n : {&a.stack, &a.processed, &a.max})
    std::printf("    %s\n", n->name().c_str());
  for (const auto* n : {&a.work, &a.mean, &a.sd})
    std::printf("    %s\n", n->name().c_str());
  std::fflush(stdout);

  // What the workers read from the parent's memory is set before the pool
  // forks them.
  st::job_config c;
  c.input = j.input;
  c.info = j.info;
  c.synthetic = j.synthetic;
  c.todo = j.todo;
  c.sigma = j.sigma;
  c.progress = ::isatty(2);
  st::prepare_job(c);
  shmarray::process_pool pool(j.workers);
  T* processed = a.processed.data();
  T* mx = a.max.data();
  const st::job_arrays<T> arr{a.stack.data(), a.work.data(), processed, mx,
                              a.mean.data(),  a.sd.data()};
  st::stage_times t = st::run_job(pool, arr);
  const double processing = t.total();

  // The files, by the parent (the directory was made at the start).
  const auto t0 = clock_type::now();
  st::write_options wo;
  wo.bigtiff_above = j.bigtiff_above;
  const st::output_dir& out = *j.out;
  st::write_tiff(out, "processed.tif", processed, F, H, W, wo);
  st::write_tiff(out, "max.tif", mx, 1, H, W);
  st::write_tiff(out, "mean.tif", a.mean.data(), 1, H, W);
  st::write_tiff(out, "std.tif", a.sd.data(), 1, H, W);
  st::write_png(out, "max.png", mx, H, W);
  t.stages.emplace_back("write", std::chrono::duration<double>(clock_type::now() - t0).count());

  std::printf("  %-12s %9s\n", "stage", "seconds");
  for (const auto& [name, secs] : t.stages)
    std::printf("  %-12s %9.3f\n", name.c_str(), secs);
  std::printf("  %zu frames, %s in, %zu worker%s: %.3f s from %s to projections, %.0f MB/s\n", F,
              st::human_bytes(in_bytes).c_str(), j.workers, j.workers == 1 ? "" : "s", processing,
              j.input.empty() ? "synthesis" : "reading",
              processing > 0 ? double(in_bytes) / 1e6 / processing : 0.0);
  std::printf("wrote %s, max.tif, mean.tif, std.tif and max.png (the picture: %s)\n",
              out.shown("processed.tif").c_str(), out.shown("max.png").c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  job j;
  j.workers = cores();
  st::command_line cli(
      "shmarray-stack",
      "shmarray-stack: an image-stack pipeline in shared memory, its frames split among forked "
      "workers. Reads a greyscale TIFF stack (8/16-bit or float; without INPUT, a synthetic "
      "one), subtracts each frame's background, blurs, normalises, projects, and writes "
      "OUTDIR/processed.tif, max.tif, mean.tif, std.tif and max.png.",
      j, true, shmarray::detail::max_workers);
  if (const int rc = cli.parse(argc, argv); rc >= 0) return rc;
  try {
    st::prepare_directories(j);
    st::describe_input(j);
    switch (j.info.type) {
      case st::pixel::u8:
        return run<std::uint8_t>(j);
      case st::pixel::u16:
        return run<std::uint16_t>(j);
      case st::pixel::f32:
        return run<float>(j);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shmarray-stack: %s\n", e.what());
  }
  return 1;
}
