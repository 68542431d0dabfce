// shmarray::xtensor containers across fork(): their storage comes from
// shmarray::allocator (MAP_SHARED memory), so a container sized before the
// fork is the same memory in parent and children. Each worker fills its own
// rows with xtensor expressions; the parent sees the result.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <shmarray/workers.hpp>
#include <shmarray/xtensor.hpp>
#include <xtensor/xbuilder.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xview.hpp>

int main() {
  try {
    // Sized before the fork: no reallocation after it (that would be private).
    shmarray::xtensor<double, 2> field = xt::zeros<double>({64, 128});
    const auto x = xt::linspace<double>(0.0, 1.0, 128);

    shmarray::fork_workers(4, [&](const shmarray::worker& w) {
      for (std::size_t r = w.rank(); r < 64; r += w.count())
        xt::noalias(xt::view(field, r, xt::all())) = xt::sin(x * double(r));  // its rows, in place
    });

    for (std::size_t r = 0; r < 64; ++r) {  // every row, as its worker wrote it
      const double expected = xt::sum(xt::sin(x * double(r)))();
      const double got = xt::sum(xt::view(field, r, xt::all()))();
      if (std::abs(got - expected) > 1e-9) {
        std::fprintf(stderr, "row %zu: %g, expected %g\n", r, got, expected);
        return 1;
      }
    }
    std::printf("ok: 4 forked workers filled an xtensor container in shared memory\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "xtensor_fork: %s\n", e.what());
    return 1;
  }
}
