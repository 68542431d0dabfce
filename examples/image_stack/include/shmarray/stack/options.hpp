// shmarray-stack's command line, shared by shmarray-stack (forked workers)
// and shmarray-stack-mpi (MPI ranks): the same options, parsed and checked
// the same way, with CLI11.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
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
  std::size_t workers = 1;
  steps todo;
  double sigma = 2;
  std::string scratch;  // a directory for file-backed arrays, or empty for /dev/shm
};

// "F,H,W" with each a positive count.
inline bool parse_dims(const std::string& text, synthetic_spec& s) {
  unsigned long long f = 0, h = 0, w = 0;
  char tail = 0;
  if (std::sscanf(text.c_str(), "%llu,%llu,%llu%c", &f, &h, &w, &tail) != 3) return false;
  if (f == 0 || h == 0 || w == 0 || h > 65535 || w > 65535 || f > (1ull << 31)) return false;
  s.frames = std::size_t(f);
  s.height = std::size_t(h);
  s.width = std::size_t(w);
  return true;
}

// The command line's parser for `o`. `jobs` adds -j (forked workers); the
// MPI program has a worker per rank and refuses -j with a message.
class command_line {
 public:
  command_line(const std::string& program, const std::string& about, job_options& o, bool jobs,
               std::size_t max_workers)
      : app_(about, program), o_(o), program_(program), jobs_(jobs) {
    app_.add_option("INPUT.tif", o.input, "a multi-page greyscale TIFF stack");
    app_.add_option("-o,--output", o.outdir, "where the results go")->capture_default_str();
    if (jobs)
      app_.add_option("-j,--jobs", o.workers, "worker processes (default: the number of cores)")
          ->check(CLI::Range(std::size_t(1), max_workers));
    else
      app_.add_option("-j,--jobs", refused_j_, "(refused: the workers are the MPI ranks)");
    app_.add_option("--steps", steps_,
                    "a comma-separated subset of background,blur,normalize in that order, or "
                    "none")
        ->capture_default_str();
    app_.add_option("--sigma", o.sigma, "the blur's standard deviation, in pixels")
        ->capture_default_str();
    app_.add_option("--synthetic", dims_,
                    "FRAMES,HEIGHT,WIDTH of the synthetic stack made when there is no INPUT "
                    "(default 200,512,512)");
    app_.add_option("--scratch", o.scratch,
                    "keep the arrays in file-backed mappings in this directory instead of "
                    "/dev/shm");
  }

  // Parses and checks; -1 to go on, else the exit code (0 after --help,
  // 2 after a usage error, said on stderr).
  int parse(int argc, char** argv) {
    try {
      app_.parse(argc, argv);
      if (!jobs_ && !refused_j_.empty())
        throw std::invalid_argument(
            "-j is not an option here: the workers are the MPI ranks (mpirun -np N)");
      o_.todo = steps::parse(steps_);
      if (o_.todo.blur) (void)gaussian_kernel(o_.sigma);
      if (!dims_.empty() && !parse_dims(dims_, o_.synthetic))
        throw std::invalid_argument(
            "--synthetic takes FRAMES,HEIGHT,WIDTH, each a positive count "
            "(height and width at most 65535)");
      if (!dims_.empty() && !o_.input.empty())
        throw std::invalid_argument("give an INPUT file or --synthetic, not both");
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
  std::string steps_ = "background,blur,normalize", dims_, refused_j_;
};

// Checks the scratch directory, if any, and makes its path absolute.
inline void check_scratch(job_options& o) {
  if (o.scratch.empty()) return;
  struct stat sb {};
  if (::stat(o.scratch.c_str(), &sb) != 0 || !S_ISDIR(sb.st_mode))
    throw std::runtime_error("--scratch " + o.scratch + ": not a directory");
  o.scratch = std::filesystem::absolute(o.scratch).lexically_normal().string();
  if (o.scratch.size() > 1 && o.scratch.back() == '/') o.scratch.pop_back();
}

// Checks the scratch directory (made absolute), and makes and checks the
// output directory, before any work. Throws std::runtime_error.
inline void prepare_directories(job_options& o) {
  check_scratch(o);
  std::error_code ec;
  std::filesystem::create_directories(o.outdir, ec);
  if (ec || !std::filesystem::is_directory(o.outdir) ||
      ::access(o.outdir.c_str(), W_OK | X_OK) != 0)
    throw std::runtime_error("-o " + o.outdir + ": cannot write there (" +
                             (ec ? ec.message() : std::string(std::strerror(errno))) + ")");
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

}  // namespace shmarray::stack
