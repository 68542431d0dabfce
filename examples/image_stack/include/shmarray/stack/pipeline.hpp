// shmarray-stack: the job over forked workers. The arrays are made by the
// caller (named, before the pool); each stage is one parallel_for of a
// process_pool over frames (rows for the projections), so a stage's time is
// its wall time and frames never race.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <shmarray/stack/stages.hpp>
#include <shmarray/stack/synthetic.hpp>
#include <shmarray/stack/tiff.hpp>
#include <shmarray/workers.hpp>
#include <string>
#include <utility>
#include <vector>

namespace shmarray::stack {

// Where a job's stack comes from, and what it does to it.
struct job_config {
  std::string input;  // a TIFF file, or empty: synthetic
  stack_info info;    // what the input holds (for synthetic: its size, uint16)
  synthetic_spec synthetic;
  steps todo;
  double sigma = 2;
  bool progress = false;  // progress bars on stderr
};

// The job's arrays, all made before the pool: frames x height x width.
template <class T>
struct job_arrays {
  T* stack;
  float* work;
  T* processed;
  T* max;
  float* mean;
  float* sd;
};

// Seconds per stage, in the order run.
struct stage_times {
  std::vector<std::pair<std::string, double>> stages;
  double total() const {
    double t = 0;
    for (const auto& s : stages)
      t += s.second;
    return t;
  }
};

namespace detail {

// What the workers read from the memory they were forked with (a pool job
// holds only trivially copyable values): set by prepare_job, before the pool.
inline job_config g_job;
inline std::vector<spot> g_spots;
inline std::vector<float> g_kernel;

}  // namespace detail

// Call before making the pool that runs the job.
inline void prepare_job(const job_config& c) {
  detail::g_job = c;
  detail::g_spots = c.input.empty() ? make_spots(c.synthetic) : std::vector<spot>{};
  detail::g_kernel = c.todo.blur ? gaussian_kernel(c.sigma) : std::vector<float>{};
}

// Runs the job prepare_job described on `pool`: load (read or synthesise),
// to float, the steps, to pixels, projections. `after_stage(name)` runs in
// the parent after each stage. Throws worker_error if a worker fails.
// What a pool job gets: the arrays (made before the pool) and the sizes.
template <class T>
struct pool_args {
  T* stack;
  float* work;
  T* processed;
  T* mx;
  float* mean;
  float* sd;
  std::uint64_t F, H, W, frame, which;
};

template <class T>
stage_times run_job(process_pool& pool, const job_arrays<T>& a,
                    const std::function<void(const char*)>& after_stage = {}) {
  using clock = std::chrono::steady_clock;
  const job_config& c = detail::g_job;
  const std::size_t F = c.info.frames, H = c.info.height, W = c.info.width, frame = H * W;
  stage_times t;
  auto stage = [&](const char* name, auto&& body) {
    const auto t0 = clock::now();
    body();
    t.stages.emplace_back(name, std::chrono::duration<double>(clock::now() - t0).count());
    if (after_stage) after_stage(name);
  };
  auto opts = [&](const char* label) {
    for_options o;
    o.progress = c.progress;
    o.label = label;
    return o;
  };
  const pool_args<T> args{a.stack, a.work, a.processed, a.max, a.mean, a.sd, F, H, W, frame, 0};

  if (c.input.empty()) {
    if constexpr (std::is_same_v<T, std::uint16_t>) {
      stage("synthesize", [&] {
        pool.parallel_for(
            std::size_t(0), F,
            [](std::size_t k, const pool_args<T>& p) {
              static std::vector<double> expected;  // each worker's own
              synthesize_frame(detail::g_job.synthetic, detail::g_spots, k, p.stack + k * p.frame,
                               expected);
            },
            args, opts("synthesize"));
      });
    } else {
      throw std::logic_error("a synthetic stack is uint16");
    }
  } else {
    stage("read", [&] {
      // Each worker reads its own block of pages, straight into the stack.
      worker_options o = opts("read");
      o.total = F;
      pool.run(
          [](const pool_args<T>& p, const worker& w) {
            const std::size_t b = p.F * w.rank() / w.count(), e = p.F * (w.rank() + 1) / w.count();
            read_tiff(detail::g_job.input, detail::g_job.info, p.stack + b * p.frame, b, e - b);
            w.progress(e - b);
          },
          args, o);
    });
  }
  stage("to float", [&] {
    pool.parallel_for(
        std::size_t(0), F,
        [](std::size_t k, const pool_args<T>& p) {
          to_work(p.stack + k * p.frame, p.work + k * p.frame, p.frame);
        },
        args, opts("to float"));
  });
  auto each_frame = [&](const char* name, int which) {
    stage(name, [&] {
      pool.parallel_for(
          std::size_t(0), F,
          [](std::size_t k, const pool_args<T>& p) {
            static std::vector<float> scratch;         // each worker's own
            static std::vector<std::uint32_t> counts;  // its median's counters
            frame_map f(p.work + k * p.H * p.W, Eigen::Index(p.H), Eigen::Index(p.W));
            if (p.which == 0) subtract_background<T>(f, scratch, counts);
            if (p.which == 1) blur(f, detail::g_kernel, scratch);
            if (p.which == 2) normalize(f, full_scale<T>());
          },
          pool_args<T>{args.stack, args.work, args.processed, args.mx, args.mean, args.sd, F, H, W,
                       frame, std::uint64_t(which)},
          opts(name));
    });
  };
  if (c.todo.background) each_frame("background", 0);
  if (c.todo.blur) each_frame("blur", 1);
  if (c.todo.normalize) each_frame("normalize", 2);
  stage("to pixels", [&] {
    pool.parallel_for(
        std::size_t(0), F,
        [](std::size_t k, const pool_args<T>& p) {
          to_pixels(p.work + k * p.frame, p.processed + k * p.frame, p.frame);
        },
        args, opts("to pixels"));
  });
  stage("projections", [&] {
    pool.run(
        [](const pool_args<T>& p, const worker& w) {
          const std::size_t b = p.H * w.rank() / w.count(), e = p.H * (w.rank() + 1) / w.count();
          std::vector<moments> acc;
          if (e > b) project_rows(p.processed, p.F, p.H, p.W, b, e - b, p.mx, p.mean, p.sd, acc);
        },
        args);
  });
  return t;
}

}  // namespace shmarray::stack
