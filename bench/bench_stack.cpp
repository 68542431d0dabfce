// The image-stack pipeline (shmarray-stack's stages) on the default
// synthetic stack, 200 x 512 x 512 uint16: shmarray with 1 and 2 forked
// workers against the same stages run in this process on private Eigen
// buffers, and against the same stages with OpenMP threads (in a child of
// its own: this process never runs OpenMP, so its forks stay safe). Then the
// job's peak memory summed over its processes (PSS), where the shared arrays
// count once, not once per worker. Times are the processing stages (to
// float ... projections), not making the input.
#include <sys/wait.h>
#include <unistd.h>

#include <Eigen/Core>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <shmarray/shmarray.hpp>
#include <shmarray/stack/pipeline.hpp>
#include <string>
#include <vector>

#include "harness.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace st = shmarray::stack;

namespace {

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "bench_stack: %s failed\n", what);
  std::exit(1);
}

// The same stages, one process, private buffers: each stage over all frames
// in turn (as the pool runs them), then the projections over all rows.
struct private_job {
  std::size_t F, H, W;
  Eigen::Matrix<std::uint16_t, Eigen::Dynamic, 1> processed, max;
  Eigen::VectorXf work, mean, sd;
  std::vector<float> kernel;
  private_job(std::size_t f, std::size_t h, std::size_t w)
      : F(f),
        H(h),
        W(w),
        processed(f * h * w),
        max(h * w),
        work(f * h * w),
        mean(h * w),
        sd(h * w),
        kernel(st::gaussian_kernel(2.0)) {}

  // The median's counters, each thread's own.
  static std::vector<std::uint32_t>& counts() {
    static thread_local std::vector<std::uint32_t> c;
    return c;
  }
  // Frames [b, e) of stage `which`.
  void stage(int which, const std::uint16_t* in, std::size_t b, std::size_t e,
             std::vector<float>& scratch) {
    const std::size_t n = H * W;
    for (std::size_t k = b; k < e; ++k) {
      float* f = work.data() + k * n;
      st::frame_map m(f, Eigen::Index(H), Eigen::Index(W));
      if (which == 0) st::to_work(in + k * n, f, n);
      if (which == 1) st::subtract_background<std::uint16_t>(m, scratch, counts());
      if (which == 2) st::blur(m, kernel, scratch);
      if (which == 3) st::normalize(m, 65535.f);
      if (which == 4) st::to_pixels(f, processed.data() + k * n, n);
    }
  }
  void project(std::size_t row0, std::size_t rows, std::vector<st::moments>& acc) {
    st::project_rows(processed.data(), F, H, W, row0, rows, max.data(), mean.data(), sd.data(),
                     acc);
  }
  void run(const std::uint16_t* in) {
    std::vector<float> scratch;
    for (int s = 0; s < 5; ++s)
      stage(s, in, 0, F, scratch);
    std::vector<st::moments> acc;
    project(0, H, acc);
  }
};

// Seconds for the OpenMP version (2 threads, each stage a parallel region
// over frames, the projections over rows), in a child of its own; -1
// without OpenMP.
double openmp_seconds(const std::vector<std::uint16_t>& in, std::size_t F, std::size_t H,
                      std::size_t W, int reps) {
#ifdef _OPENMP
  const double m = bench::in_own_process([&] {
    private_job j(F, H, W);
    std::vector<double> times;
    for (int r = 0; r < reps + 1; ++r) {
      const double s = bench::seconds_of([&] {
        for (int stage = 0; stage < 5; ++stage) {
#pragma omp parallel num_threads(2)
          {
            static thread_local std::vector<float> scratch;
            const auto t = std::size_t(omp_get_thread_num());
            const auto n = std::size_t(omp_get_num_threads());
            j.stage(stage, in.data(), F * t / n, F * (t + 1) / n, scratch);
          }
        }
#pragma omp parallel num_threads(2)
        {
          std::vector<st::moments> acc;
          const auto t = std::size_t(omp_get_thread_num());
          const auto n = std::size_t(omp_get_num_threads());
          j.project(H * t / n, H * (t + 1) / n - H * t / n, acc);
        }
      });
      if (r) times.push_back(s);  // the first run starts the threads and faults the pages
    }
    return bench::median(times);
  });
  if (m < 0) die("the OpenMP child");
  return m;
#else
  (void)in, (void)F, (void)H, (void)W, (void)reps;
  return -1;
#endif
}

// A field of /proc/PID/smaps_rollup, in bytes.
std::uint64_t rollup(pid_t pid, const char* field) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/smaps_rollup");
  std::string key;
  std::uint64_t kib = 0;
  while (f >> key) {
    if (key == field) {
      f >> kib;
      return kib * 1024;
    }
    f.ignore(1 << 12, '\n');
  }
  return kib;
}

// Seconds of the processing stages (all but making the input).
double processing(const st::stage_times& t) {
  double s = 0;
  for (const auto& stage : t.stages)
    if (stage.first != "synthesize") s += stage.second;
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  st::job_config c;
  c.synthetic.frames = quick ? 50 : 200;
  c.info.frames = c.synthetic.frames;
  c.info.height = c.synthetic.height;
  c.info.width = c.synthetic.width;
  c.info.type = st::pixel::u16;
  const std::size_t F = c.info.frames, H = c.info.height, W = c.info.width, n = F * H * W;
  const int reps = quick ? 3 : 5;

  // The input, made once, privately.
  std::vector<std::uint16_t> input(n);
  {
    const auto spots = st::make_spots(c.synthetic);
    std::vector<double> expected;
    for (std::size_t k = 0; k < F; ++k)
      st::synthesize_frame(c.synthetic, spots, k, input.data() + k * H * W, expected);
  }
  auto priv = std::make_unique<private_job>(F, H, W);

  shmarray::manager m;
  auto stack = m.from_shape<std::uint16_t>({F, H, W});
  auto work = m.from_shape<float>({F, H, W});
  auto processed = m.from_shape<std::uint16_t>({F, H, W});
  auto mx = m.from_shape<std::uint16_t>({H, W});
  auto mean = m.from_shape<float>({H, W});
  auto sd = m.from_shape<float>({H, W});
  const st::job_arrays<std::uint16_t> arr{stack.data(), work.data(), processed.data(),
                                          mx.data(),    mean.data(), sd.data()};
  st::prepare_job(c);

  char title[160];
  std::snprintf(title, sizeof title,
                "shmarray-stack pipeline, %zu x %zu x %zu uint16, all steps, median of %d", F, H, W,
                reps);
  bench::header(title);
  double two_workers = 0;
  for (std::size_t workers : {1, 2}) {
    shmarray::process_pool pool(workers);
    std::vector<double> base, ours;
    for (int r = 0; r < reps + 1; ++r) {
      const double b = bench::seconds_of([&] { priv->run(input.data()); });
      const double o = processing(st::run_job(pool, arr));
      if (r) {  // the first run of each faults its pages in
        base.push_back(b);
        ours.push_back(o);
      }
    }
    // The same result, bit for bit.
    if (std::memcmp(priv->processed.data(), processed.data(), n * 2) != 0 ||
        std::memcmp(priv->max.data(), mx.data(), H * W * 2) != 0)
      die("the pipeline's result check");
    const bench::result res{bench::median(base), bench::median(ours)};
    if (workers == 2) two_workers = res.ours;
    bench::row("pipeline, process_pool, " + std::to_string(workers) + " worker" +
                   (workers == 1 ? "" : "s"),
               "same stages, 1 process, private", res);
  }
  const double omp = openmp_seconds(input, F, H, W, reps);
  if (omp > 0)
    bench::row("pipeline, process_pool, 2 workers", "OpenMP, 2 threads (own process)",
               {omp, two_workers});

  // Peak memory of the 2-worker job alone: the private buffers of the
  // comparisons freed first, and a pool forked afterwards.
  priv.reset();
  input = std::vector<std::uint16_t>();
  std::uint64_t peak_pss = 0, peak_rss = 0;
  {
    shmarray::process_pool pool(2);
    std::vector<pid_t> procs = pool.pids();
    procs.push_back(pool.server_pid());
    procs.push_back(::getpid());
    st::run_job(pool, arr, [&](const char*) {
      std::uint64_t pss = 0, rss = 0;
      for (pid_t p : procs) {
        pss += rollup(p, "Pss:");
        rss += rollup(p, "Rss:");
      }
      peak_pss = std::max(peak_pss, pss);
      peak_rss = std::max(peak_rss, rss);
    });
  }
  const std::uint64_t arrays = std::uint64_t(n) * (2 + 4 + 2) + std::uint64_t(H) * W * 10;
  std::printf(
      "\npeak memory of the 2-worker job (parent, 2 workers, fork server), summed: PSS %.0f MiB, "
      "RSS %.0f MiB (RSS counts shared pages once per process); its arrays: %.0f MiB\n",
      double(peak_pss) / (1 << 20), double(peak_rss) / (1 << 20), double(arrays) / (1 << 20));
  return 0;
}
