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
  T* stack = a.stack;
  float* work = a.work;
  T* processed = a.processed;

  if (c.input.empty()) {
    if constexpr (std::is_same_v<T, std::uint16_t>) {
      stage("synthesize", [&] {
        pool.parallel_for(
            std::size_t(0), F,
            [stack, frame](std::size_t k) {
              static std::vector<double> expected;  // each worker's own
              synthesize_frame(detail::g_job.synthetic, detail::g_spots, k, stack + k * frame,
                               expected);
            },
            opts("synthesize"));
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
          [stack, frame, F](const worker& w) {
            const std::size_t b = F * w.rank() / w.count(), e = F * (w.rank() + 1) / w.count();
            read_tiff(detail::g_job.input, detail::g_job.info, stack + b * frame, b, e - b);
            w.progress(e - b);
          },
          o);
    });
  }
  stage("to float", [&] {
    pool.parallel_for(
        std::size_t(0), F,
        [stack, work, frame](std::size_t k) {
          to_work(stack + k * frame, work + k * frame, frame);
        },
        opts("to float"));
  });
  const float full = full_scale<T>();
  auto each_frame = [&](const char* name, int which) {
    stage(name, [&] {
      pool.parallel_for(
          std::size_t(0), F,
          [work, H, W, which, full](std::size_t k) {
            static std::vector<float> scratch;  // each worker's own
            frame_map f(work + k * H * W, Eigen::Index(H), Eigen::Index(W));
            if (which == 0) subtract_background(f, scratch);
            if (which == 1) blur(f, detail::g_kernel, scratch);
            if (which == 2) normalize(f, full);
          },
          opts(name));
    });
  };
  if (c.todo.background) each_frame("background", 0);
  if (c.todo.blur) each_frame("blur", 1);
  if (c.todo.normalize) each_frame("normalize", 2);
  stage("to pixels", [&] {
    pool.parallel_for(
        std::size_t(0), F,
        [work, processed, frame](std::size_t k) {
          to_pixels(work + k * frame, processed + k * frame, frame);
        },
        opts("to pixels"));
  });
  stage("projections", [&] {
    T* mx = a.max;
    float* mean = a.mean;
    float* sd = a.sd;
    pool.run([processed, mx, mean, sd, F, H, W](const worker& w) {
      const std::size_t b = H * w.rank() / w.count(), e = H * (w.rank() + 1) / w.count();
      std::vector<moments> acc;
      if (e > b) project_rows(processed, F, H, W, b, e - b, mx, mean, sd, acc);
    });
  });
  return t;
}

}  // namespace shmarray::stack
