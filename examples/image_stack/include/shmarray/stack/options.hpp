// shmarray-stack's command line, shared by shmarray-stack (forked workers)
// and shmarray-stack-mpi (MPI ranks): the same options, parsed and checked
// the same way, with CLI11.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <shmarray/stack/files.hpp>
#include <shmarray/stack/stages.hpp>
#include <shmarray/stack/synthetic.hpp>
#include <shmarray/stack/tiff.hpp>
#include <stdexcept>
#include <string>

namespace shmarray::stack {

// What a job is asked to do.
struct job_options {
  std::string input;  // empty: synthetic
  synthetic_spec synthetic;
  stack_info info;
  std::string outdir = "shmarray-out";
  std::shared_ptr<const output_dir> out;  // outdir, open (prepare_directories)
  std::size_t workers = 1;
  steps todo;
  double sigma = 2;
  std::string scratch;  // a directory for file-backed arrays, or empty for /dev/shm
  // processed.tif is BigTIFF past this many bytes ($SHMARRAY_STACK_BIGTIFF_ABOVE).
  std::uint64_t bigtiff_above = write_options{}.bigtiff_above;
};

// The limits of the numeric options.
constexpr double min_sigma = 0.01, max_sigma = 1000;
constexpr unsigned long long max_frames = 1ull << 31, max_side = 65535;

// A count written in decimal digits only (no sign, space or exponent), at
// most `max`; false otherwise.
inline bool parse_count(const std::string& text, unsigned long long max, unsigned long long& out) {
  if (text.empty() || text.size() > 20) return false;
  unsigned long long v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    if (v > (std::numeric_limits<unsigned long long>::max() - 9) / 10) return false;
    v = v * 10 + static_cast<unsigned long long>(c - '0');
  }
  if (v > max) return false;
  out = v;
  return true;
}

// "F,H,W" with each a positive count (height and width at most 65535).
inline bool parse_dims(const std::string& text, synthetic_spec& s) {
  const std::size_t a = text.find(','), b = a == std::string::npos ? a : text.find(',', a + 1);
  if (b == std::string::npos) return false;
  unsigned long long f = 0, h = 0, w = 0;
  if (!parse_count(text.substr(0, a), max_frames, f) ||
      !parse_count(text.substr(a + 1, b - a - 1), max_side, h) ||
      !parse_count(text.substr(b + 1), max_side, w) || f == 0 || h == 0 || w == 0)
    return false;
  s.frames = std::size_t(f);
  s.height = std::size_t(h);
  s.width = std::size_t(w);
  return true;
}

// --sigma's value: a finite number from min_sigma to max_sigma pixels whose
// kernel is finite and sums to 1. Throws std::invalid_argument naming it.
inline double parse_sigma(const std::string& text) {
  const std::string said = "--sigma " + text + ": ";
  errno = 0;
  char* end = nullptr;
  const double v = text.empty() ? 0 : std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || std::isspace(static_cast<unsigned char>(text[0])))
    throw std::invalid_argument(said + "not a number");
  if (!std::isfinite(v) || errno == ERANGE || !(v >= min_sigma) || !(v <= max_sigma))
    throw std::invalid_argument(said +
                                "out of range: the blur's standard deviation is a number of "
                                "pixels from 0.01 to 1000");
  try {
    (void)gaussian_kernel(v);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(said + e.what());
  }
  return v;
}

// The command line's parser for `o`. `jobs` adds -j (forked workers); the
// MPI program has a worker per rank and refuses -j with a message.
class command_line {
 public:
  command_line(const std::string& program, const std::string& about, job_options& o, bool jobs,
               std::size_t max_workers)
      : app_(about, program), o_(o), program_(program), jobs_(jobs), max_workers_(max_workers) {
    app_.add_option("INPUT.tif", o.input, "a multi-page greyscale TIFF stack");
    app_.add_option("-o,--output", o.outdir, "where the results go")->capture_default_str();
    if (jobs)
      app_.add_option("-j,--jobs", jobs_text_,
                      "worker processes, 1 to " + std::to_string(max_workers) +
                          " (default: the number of cores)");
    else
      app_.add_option("-j,--jobs", refused_j_, "(refused: the workers are the MPI ranks)");
    app_.add_option("--steps", steps_,
                    "a comma-separated subset of background,blur,normalize in that order, or "
                    "none")
        ->capture_default_str();
    app_.add_option("--sigma", sigma_text_,
                    "the blur's standard deviation, in pixels (0.01 to 1000)")
        ->capture_default_str();
    app_.add_option("--synthetic", dims_,
                    "FRAMES,HEIGHT,WIDTH of the synthetic stack made when there is no INPUT "
                    "(default 200,512,512)");
    app_.add_option("--scratch", o.scratch,
                    "keep the arrays in file-backed mappings in this directory (made if "
                    "missing) instead of /dev/shm");
  }

  // Parses and checks; -1 to go on, else the exit code (0 after --help,
  // 2 after a usage error, said on stderr).
  int parse(int argc, char** argv) {
    try {
      app_.parse(argc, argv);
      if (!jobs_ && !refused_j_.empty())
        throw std::invalid_argument(
            "-j is not an option here: the workers are the MPI ranks (mpirun -np N)");
      if (jobs_ && !jobs_text_.empty()) {
        unsigned long long n = 0;
        if (!parse_count(jobs_text_, max_workers_, n) || n == 0)
          throw std::invalid_argument("-j " + jobs_text_ + ": give a number of workers from 1 to " +
                                      std::to_string(max_workers_));
        o_.workers = std::size_t(n);
      }
      o_.todo = steps::parse(steps_);
      o_.sigma = parse_sigma(sigma_text_);
      if (!dims_.empty() && !parse_dims(dims_, o_.synthetic))
        throw std::invalid_argument(
            "--synthetic takes FRAMES,HEIGHT,WIDTH, each a positive count "
            "(height and width at most 65535, frames at most 2147483648)"
            ", not '" +
            dims_ + "'");
      if (!dims_.empty() && !o_.input.empty())
        throw std::invalid_argument("give an INPUT file or --synthetic, not both");
      if (const char* env = std::getenv("SHMARRAY_STACK_BIGTIFF_ABOVE")) {
        unsigned long long n = 0;
        if (!parse_count(env, std::numeric_limits<unsigned long long>::max(), n))
          throw std::invalid_argument(std::string("SHMARRAY_STACK_BIGTIFF_ABOVE=") + env +
                                      ": not a number of bytes");
        o_.bigtiff_above = n;
      }
    } catch (const CLI::CallForHelp& e) {
      return app_.exit(e);
    } catch (const CLI::ParseError& e) {
      return usage(e.what());
    } catch (const std::invalid_argument& e) {
      return usage(e.what());
    }
    return -1;
  }

 private:
  int usage(const char* what) {
    std::fprintf(stderr, "%s: %s\nRun with --help for more information.\n", program_.c_str(), what);
    return 2;
  }

  CLI::App app_;
  job_options& o_;
  std::string program_;
  bool jobs_;
  std::size_t max_workers_;
  std::string steps_ = "background,blur,normalize", sigma_text_ = "2", dims_, refused_j_,
              jobs_text_;
};

// Makes the scratch directory, if any, as -o is made, and gives its
// absolute path as the kernel resolved it (the arrays' files are made by
// name: with O_EXCL|O_NOFOLLOW, so nothing there is followed or reused).
inline void check_scratch(job_options& o) {
  if (o.scratch.empty()) return;
  try {
    const auto dir = detail::open_directory(o.scratch, true);
    if (::faccessat(dir.get(), ".", W_OK | X_OK, AT_EACCESS) != 0)
      throw file_error(std::strerror(errno));
    o.scratch = detail::path_of(dir.get());
  } catch (const file_error& e) {
    throw std::runtime_error("--scratch " + o.scratch + ": cannot keep arrays there (" + e.what() +
                             ")");
  }
}

// Makes and checks the scratch directory, and makes, checks and opens the
// output directory, before any work. A symbolic link on either path is
// followed only when the caller or root owns it (open_directory). Throws
// std::runtime_error.
inline void prepare_directories(job_options& o) {
  check_scratch(o);
  try {
    auto out = std::make_shared<const output_dir>(o.outdir, true);
    if (!out->writable()) throw file_error(std::strerror(errno));
    o.out = std::move(out);
  } catch (const file_error& e) {
    throw std::runtime_error("-o " + o.outdir + ": cannot write there (" + e.what() + ")");
  }
}

// What the input holds: the TIFF's pages, or the synthetic stack's size.
inline void describe_input(job_options& o) {
  if (o.input.empty()) {
    o.info.frames = o.synthetic.frames;
    o.info.height = o.synthetic.height;
    o.info.width = o.synthetic.width;
    o.info.type = pixel::u16;
  } else {
    o.info = probe_tiff(o.input);
  }
}

// Decodes the first page of the input stored in a codec with no bound on
// its ratio (if any), into memory of its own, before the job reserves the
// stack: a small file that declares a large stack but cannot fill it fails
// here, having cost one frame. Call after the space check.
inline void decode_unbounded_page(const job_options& o) {
  if (o.input.empty() || o.info.unbounded_page >= o.info.frames) return;
  stack_info one = o.info;
  one.frames = 1;
  std::unique_ptr<unsigned char[]> frame;  // untouched until read
  try {
    frame.reset(new unsigned char[one.bytes()]);
  } catch (const std::bad_alloc&) {
    throw std::runtime_error(o.input + ": page " + std::to_string(o.info.unbounded_page + 1) +
                             " (" + std::to_string(one.bytes()) +
                             " bytes) cannot be held in memory to be checked");
  }
  read_tiff(o.input, o.info, frame.get(), o.info.unbounded_page, 1);
}

}  // namespace shmarray::stack
