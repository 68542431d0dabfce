// The fork-workers examples of README.md and docs/workers.md: their blocks are
// the doc-regions below (docs/check_examples.py keeps them equal). A stack
// processed frame by frame in forked workers through Eigen views, pools
// running iterative jobs, and a failure that comes back.
#include <Eigen/Dense>
#include <cmath>
#include <cstdio>
#include <shmarray/eigen.hpp>
#include <shmarray/workers.hpp>

namespace se = shmarray::eigen;

namespace {

int failed = 0;
void check(bool ok, const char* what) {
  if (!ok) {
    std::printf("FAILED: %s\n", what);
    ++failed;
  }
}

void fork_workers_section(shmarray::manager& m) {
  auto stack = m.from_shape<float>({64, 256, 256});  // frames x height x width
  for (std::size_t f = 0; f < 64; ++f)
    se::frame(stack, f).setConstant(float(f));

  // doc-region: parallel_for
  // Each worker takes a contiguous block of frames; Eigen runs on one thread
  // in each (the adapter's worker hook).
  shmarray::parallel_for(2, std::size_t(0), stack.shape()[0], [&](std::size_t f) {
    auto frame = se::frame(stack, f);  // Map<Matrix<float, -1, -1, RowMajor>>
    frame.array() = (frame.array() - frame.mean()).abs() + 1.f;
  });
  // doc-region-end

  // doc-region: fork_workers
  // Every worker runs the same function with its rank; any callable will do,
  // since each worker is a copy of the parent at the fork.
  auto partial = m.from_shape<double>({2});
  shmarray::fork_workers(2, [&](const shmarray::worker& w) {
    auto part = se::frames(stack, w.rank() * 32, 32);  // frames rank*32 .. +32
    partial(w.rank()) = part.cast<double>().sum();
  });
  // doc-region-end
  const double sum = partial(0) + partial(1);
  check(sum == 64.0 * 256 * 256, "every frame became ones");
}

void pool_section(shmarray::manager& m) {
  // doc-region: pool
  auto x = m.from_shape<double>({4096});  // made before the pool: the workers have it mapped
  se::vector(x).setZero();
  double* data = x.data();

  shmarray::process_pool pool(2);         // forks its two workers once
  for (int step = 0; step < 100; ++step)  // a job captures nothing: what it needs is its argument
    pool.parallel_for(
        0, 4096, [](int i, double* d) { d[i] += 0.5 * i; }, data);

  auto later = m.from_shape<double>({2});  // made after the pool: reach it by name
  shmarray::fixed_name name = later;       // trivially copyable: a job's argument
  pool.run(
      [](const shmarray::fixed_name& n, const shmarray::worker& w) {
        auto a = shmarray::ndarray<double>::attach(n);
        a(w.rank()) = 1.0 + double(w.rank());
      },
      name);
  // doc-region-end
  check(x(4095) == 100 * 0.5 * 4095, "100 pool steps");
  check(later(0) == 1.0 && later(1) == 2.0, "a job reached a newer array by name");
}

void pool_eigen_section(shmarray::manager& m) {
  // doc-region: pool_eigen
  auto stack = m.from_shape<float>({16, 128, 128});  // made before the pool
  shmarray::process_pool pool(2);                    // forks its two workers once

  for (int sweep = 0; sweep < 10; ++sweep)  // many jobs, one fork
    pool.parallel_for(
        std::size_t(0), stack.shape()[0],
        [](std::size_t f, const shmarray::array_ref<float, 3>& s) {
          auto frame = shmarray::eigen::frame(s, f);  // Eigen::Map of frame f
          frame.array() += float(f);
        },
        shmarray::ref<3>(stack));  // a trivially copyable view: the job's argument
  // doc-region-end
  check(se::frame(stack, 15)(127, 127) == 150.f && se::frame(stack, 0).sum() == 0.f,
        "ten pool sweeps over Eigen views of the frames");
}

void failure_section() {
  try {
    shmarray::parallel_for(2, 0, 8, [](int i) {
      if (i == 5) throw std::runtime_error("frame 5 is corrupt");
    });
  } catch (const shmarray::worker_error& e) {
    std::printf("%s\n", e.what());
    // shmarray: 1 worker failed
    //   worker 1 (pid 4242) threw std::runtime_error: frame 5 is corrupt
    check(e.failures()[0].rank == 1 && e.failures()[0].message == "frame 5 is corrupt",
          "the failure names the worker and the cause");
    return;
  }
  check(false, "a worker_error");
}

}  // namespace

int main() {
  {
    shmarray::manager m;
    fork_workers_section(m);
    pool_section(m);
    pool_eigen_section(m);
  }
  failure_section();
  if (failed) return 1;
  std::printf("ok: the README's fork-workers examples run\n");
  return 0;
}
