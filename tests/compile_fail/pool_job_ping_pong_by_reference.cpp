// The first program of issue 20, as a new user wrote it: Jacobi-style
// ping-pong buffers swapped between calls, read through a [&] lambda. The
// pool's workers were forked when the pool was made, so they would read `in`
// and `out` as they were then ("expected 5, got 1"): it must not compile.
// The right way passes the pointers as the argument (test_process_pool.cpp).
// expect: a process_pool job must not capture
#include <shmarray/shmarray.hpp>

#include <cstddef>
#include <utility>

struct sweep_args {
  const double* in;
  double* out;
};

void sweeps(shmarray::process_pool& pool, double* a, double* b, std::size_t n) {
  double* in = a;
  double* out = b;
  for (int step = 0; step < 4; ++step) {
    pool.parallel_for(
        std::size_t(0), n, [](std::size_t i, const sweep_args& s) { s.out[i] = s.in[i] + 1; },
        sweep_args{in, out});
#ifdef SHMARRAY_COMPILE_FAIL
    pool.parallel_for(std::size_t(0), n, [&](std::size_t i) { out[i] = in[i] + 1; });
#endif
    std::swap(in, out);
  }
}
