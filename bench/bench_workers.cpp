// Fork workers benchmarks: what fork_workers and a process_pool cost per job,
// from a small parent and from one holding 2 GiB of private memory; the
// speed-up of a compute-bound job over frames; and handing 1 GiB to a worker
// and back, against a pipe. Every ratio compares two runs side by side in
// this process. The OpenMP baseline runs in a child of its own: this process
// never runs OpenMP, so its forks stay safe.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <shmarray/shmarray.hpp>
#include <string>
#include <vector>

#include "harness.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

using bench::compare;
using bench::row;

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "bench_workers: %s failed\n", what);
  std::exit(1);
}

void wait_ok(pid_t pid) {
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    die("child");
}

// The baseline for a job in forked workers: n bare fork()s of children that
// _exit at once, and their waitpid()s.
void raw_forks(std::size_t n) {
  std::vector<pid_t> pids(n);
  for (auto& p : pids)
    if ((p = ::fork()) == 0) ::_exit(0);
  for (pid_t p : pids)
    wait_ok(p);
}

// ---- the compute-bound job: a separable 9-tap blur of each frame, in place
// through a scratch row, several passes.

constexpr std::size_t frame_h = 256, frame_w = 256, n_frames = 64;

void blur_frame(float* f) {
  static const float k[9] = {0.02f, 0.05f, 0.1f, 0.15f, 0.36f, 0.15f, 0.1f, 0.05f, 0.02f};
  float tmp[frame_w > frame_h ? frame_w : frame_h];
  for (int pass = 0; pass < 6; ++pass) {
    for (std::size_t y = 0; y < frame_h; ++y) {
      float* row = f + y * frame_w;
      for (std::size_t x = 0; x < frame_w; ++x) {
        float s = 0;
        for (int t = -4; t <= 4; ++t) {
          const std::size_t xx =
              std::size_t(std::min<long>(std::max<long>(long(x) + t, 0), long(frame_w) - 1));
          s += k[t + 4] * row[xx];
        }
        tmp[x] = s;
      }
      std::memcpy(row, tmp, frame_w * sizeof(float));
    }
    for (std::size_t x = 0; x < frame_w; ++x) {
      for (std::size_t y = 0; y < frame_h; ++y) {
        float s = 0;
        for (int t = -4; t <= 4; ++t) {
          const std::size_t yy =
              std::size_t(std::min<long>(std::max<long>(long(y) + t, 0), long(frame_h) - 1));
          s += k[t + 4] * f[yy * frame_w + x];
        }
        tmp[y] = s;
      }
      for (std::size_t y = 0; y < frame_h; ++y)
        f[y * frame_w + x] = tmp[y];
    }
  }
}

// Seconds for the OpenMP version of the frames job (2 threads), measured in
// a child that is the only process here ever to run OpenMP; -1 without it.
double openmp_frames_seconds(const float* input, int reps) {
#ifdef _OPENMP
  const double m = bench::in_own_process([&] {
    std::vector<float> stack(input, input + n_frames * frame_h * frame_w);
    std::vector<double> times;
    for (int r = 0; r < reps + 1; ++r) {
      std::memcpy(stack.data(), input, stack.size() * sizeof(float));
      const double s = bench::seconds_of([&] {
#pragma omp parallel for schedule(static) num_threads(2)
        for (long i = 0; i < long(n_frames); ++i)
          blur_frame(stack.data() + i * frame_h * frame_w);
      });
      if (r) times.push_back(s);  // the first run starts the thread pool
    }
    return bench::median(times);
  });
  if (m < 0) die("the OpenMP child");
  return m;
#else
  (void)input;
  (void)reps;
  return -1;
#endif
}

}  // namespace

// One Jacobi sweep of rows [first, last) of an n x n grid: out = the mean of
// in's four neighbours (the border rows and columns stay as they are).
void jacobi_rows(const double* in, double* out, std::size_t n, std::size_t first,
                 std::size_t last) {
  for (std::size_t i = std::max<std::size_t>(first, 1); i < std::min(last, n - 1); ++i)
    for (std::size_t j = 1; j + 1 < n; ++j)
      out[i * n + j] = 0.25 * (in[(i - 1) * n + j] + in[(i + 1) * n + j] + in[i * n + j - 1] +
                               in[i * n + j + 1]);
}

// A pool job's argument: the two grids of a sweep (pointers: no padding).
struct sweep_args {
  const double* in;
  double* out;
};

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int scale = quick ? 4 : 1;
  bench::header("shmarray fork workers benchmarks");

  // 1. An empty job: fork_workers and a pool against bare fork()s, from a
  // small parent, then from one holding 2 GiB of private memory.
  for (bool big : {false, true}) {
    std::vector<char> ballast;
    if (big) ballast.assign(std::size_t(2) << 30, 1);  // touched: 2 GiB of page tables
    const std::string from = big ? ", 2 GiB parent" : "";
    const int reps = (big ? 15 : 101) / (quick ? 3 : 1);
    for (std::size_t n : {std::size_t(1), std::size_t(2)}) {
      const std::string w = std::to_string(n) + (n == 1 ? " worker" : " workers");
      row("fork_workers, empty job, " + w + from, std::to_string(n) + " x fork+_exit+waitpid",
          compare(
              reps, [&] { raw_forks(n); }, [&] { shmarray::fork_workers(n, [] {}); }));
      // Per job: the bare forks run k_fork times in a timed run, the pool k_pool times.
      shmarray::process_pool pool(n);
      const int k_fork = big ? 4 : 40, k_pool = 4000 / scale;
      const auto r = compare(
          7,
          [&] {
            for (int i = 0; i < k_fork; ++i)
              raw_forks(n);
          },
          [&] {
            for (int i = 0; i < k_pool; ++i)
              pool.run([] {});
          });
      row("process_pool.run, empty job, " + w + from, std::to_string(n) + " x fork+_exit+waitpid",
          {r.base / k_fork, r.ours / k_pool});
    }
    bench::keep(ballast);
  }

  // 2. A compute-bound job over frames: 1 and 2 workers against the same
  // work in this process.
  {
    shmarray::manager m;
    auto input = m.from_shape<float>({n_frames, frame_h, frame_w}, shmarray::anonymous{});
    for (std::size_t i = 0; i < input.size(); ++i)
      input.data()[i] = float((i * 2654435761u) % 1000);
    auto stack = m.from_shape<float>({n_frames, frame_h, frame_w}, shmarray::anonymous{});
    float* s = stack.data();
    std::vector<float> priv(stack.size());
    const int reps = 7 / (quick ? 2 : 1);
    auto reset = [&] {
      std::memcpy(s, input.data(), stack.nbytes());
      std::memcpy(priv.data(), input.data(), stack.nbytes());
    };
    auto one_process = [&] {
      for (std::size_t i = 0; i < n_frames; ++i)
        blur_frame(priv.data() + i * frame_h * frame_w);
    };
    for (std::size_t n : {std::size_t(1), std::size_t(2)}) {
      const std::string w = std::to_string(n) + (n == 1 ? " worker" : " workers");
      reset();
      row("frames job, parallel_for, " + w, "same work in one process",
          compare(
              reps, one_process,
              [&] {
                shmarray::parallel_for(n, std::size_t(0), n_frames, [&](std::size_t i) {
                  blur_frame(s + i * frame_h * frame_w);
                });
              },
              reset));
      shmarray::process_pool pool(n);
      row("frames job, process_pool.parallel_for, " + w, "same work in one process",
          compare(
              reps, one_process,
              [&] {
                pool.parallel_for(
                    std::size_t(0), n_frames,
                    [](std::size_t i, float* f) { blur_frame(f + i * frame_h * frame_w); }, s);
              },
              reset));
    }
    const double omp = openmp_frames_seconds(input.data(), reps);
    if (omp > 0) {
      reset();
      shmarray::process_pool pool(2);
      const double ours = bench::median([&] {
        std::vector<double> t;
        for (int r = 0; r < reps; ++r) {
          reset();
          t.push_back(bench::seconds_of([&] {
            pool.parallel_for(
                std::size_t(0), n_frames,
                [](std::size_t i, float* f) { blur_frame(f + i * frame_h * frame_w); }, s);
          }));
        }
        return t;
      }());
      row("frames job, process_pool, 2 workers", "OpenMP, 2 threads (own process)", {omp, ours});
    }
  }

  // 3. Handing 1 GiB to a worker, which adds 1 to every element, and back:
  // in place in shared memory, against writing it down a pipe and back.
  {
    const std::size_t n = (std::size_t(1) << 30) / sizeof(float) / std::size_t(quick ? 8 : 1);
    const std::string size = quick ? "128 MiB" : "1 GiB";
    shmarray::manager m;
    auto shared = m.from_shape<float>({n}, shmarray::anonymous{});
    std::fill(shared.begin(), shared.end(), 1.0f);
    std::vector<float> priv(n, 1.0f);
    float* sh = shared.data();
    auto through_pipe = [&] {
      int down[2], up[2];
      if (::pipe(down) != 0 || ::pipe(up) != 0) die("pipe");
      const pid_t pid = ::fork();
      if (pid == 0) {
        ::close(down[1]);
        ::close(up[0]);
        std::vector<float> mine(n);
        char* p = reinterpret_cast<char*>(mine.data());
        for (std::size_t got = 0; got < n * sizeof(float);) {
          const ssize_t r = ::read(down[0], p + got, n * sizeof(float) - got);
          if (r <= 0) ::_exit(2);
          got += std::size_t(r);
        }
        for (float& v : mine)
          v += 1;
        for (std::size_t put = 0; put < n * sizeof(float);) {
          const ssize_t r = ::write(up[1], p + put, n * sizeof(float) - put);
          if (r <= 0) ::_exit(3);
          put += std::size_t(r);
        }
        ::_exit(0);
      }
      ::close(down[0]);
      ::close(up[1]);
      const char* out = reinterpret_cast<const char*>(priv.data());
      for (std::size_t put = 0; put < n * sizeof(float);) {
        const ssize_t r = ::write(down[1], out + put, n * sizeof(float) - put);
        if (r <= 0) die("write to the pipe");
        put += std::size_t(r);
      }
      ::close(down[1]);
      char* in = reinterpret_cast<char*>(priv.data());
      for (std::size_t got = 0; got < n * sizeof(float);) {
        const ssize_t r = ::read(up[0], in + got, n * sizeof(float) - got);
        if (r <= 0) die("read from the pipe");
        got += std::size_t(r);
      }
      ::close(up[0]);
      wait_ok(pid);
    };
    auto in_place = [&] {
      shmarray::fork_workers(1, [&] {
        for (std::size_t i = 0; i < n; ++i)
          sh[i] += 1;
      });
    };
    const int reps = 5;
    row(size + " to a worker and back (+1 each)", "write down a pipe and back",
        compare(reps, through_pipe, in_place));
    if (priv[n / 2] != shared(n / 2)) die("the two ways agree");
  }

  // 4. An iterative job: a 2048 x 2048 Jacobi, 20 sweeps over ping-pong
  // grids, split by rows over 2 workers: a fork per sweep (parallel_for)
  // and a pool forked once, each against the same sweeps in this process.
  {
    constexpr std::size_t n = 2048;
    const int sweeps = 20, reps = quick ? 3 : 7;
    shmarray::manager m;
    auto a = m.from_shape<double>({n, n}, shmarray::anonymous{});
    auto b = m.from_shape<double>({n, n}, shmarray::anonymous{});
    std::vector<double> pa(n * n), pb(n * n);
    auto reset = [&] {
      for (std::size_t k = 0; k < n * n; ++k)
        a.data()[k] = b.data()[k] = pa[k] = pb[k] = (k < n ? 1.0 : 0.0);  // a hot top row
    };
    auto one_process = [&] {
      for (int s = 0; s < sweeps; ++s)
        jacobi_rows(s % 2 ? pb.data() : pa.data(), s % 2 ? pa.data() : pb.data(), n, 0, n);
    };
    const std::size_t half = n / 2;
    reset();
    row("Jacobi 2048^2, 20 sweeps, parallel_for, 2 workers", "same sweeps, one process",
        compare(
            reps, one_process,
            [&] {
              for (int s = 0; s < sweeps; ++s) {
                const double* in = s % 2 ? b.data() : a.data();
                double* out = s % 2 ? a.data() : b.data();
                shmarray::parallel_for(2, std::size_t(0), std::size_t(2), [&](std::size_t w) {
                  jacobi_rows(in, out, n, w * half, (w + 1) * half);
                });
              }
            },
            reset));
    shmarray::process_pool pool(2);
    auto pool_sweeps = [&] {
      for (int s = 0; s < sweeps; ++s)
        pool.parallel_for(
            std::size_t(0), std::size_t(2),
            [](std::size_t w, const sweep_args& g) {
              jacobi_rows(g.in, g.out, n, w * (n / 2), (w + 1) * (n / 2));
            },
            sweep_args{s % 2 ? b.data() : a.data(), s % 2 ? a.data() : b.data()});
    };
    row("Jacobi 2048^2, 20 sweeps, process_pool, 2 workers", "same sweeps, one process",
        compare(reps, one_process, pool_sweeps, reset));
    one_process();  // after a reset: both from the same start
    pool_sweeps();
    if (std::memcmp(a.data(), pa.data(), a.nbytes()) != 0 || a(1, n / 2) == 0.0)
      die("the Jacobi runs agree");
  }
  return 0;
}
