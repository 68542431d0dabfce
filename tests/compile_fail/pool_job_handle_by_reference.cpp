// The second program of issue 20, as a new user wrote it: an ndarray made
// before the pool, filled by a [&] lambda in a pool job. It computed nothing
// (a(9) stayed 0 instead of 18), with no error: it must not compile. The
// right way passes an array_ref as the argument (test_process_pool.cpp).
// expect: a process_pool job must not capture
#include <shmarray/shmarray.hpp>

void fill(shmarray::process_pool& pool, shmarray::ndarray<double>& a) {
  pool.parallel_for(
      0, 10, [](int i, const shmarray::array_ref<double, 1>& r) { r(i) = 2.0 * i; },
      shmarray::ref<1>(a));
#ifdef SHMARRAY_COMPILE_FAIL
  pool.parallel_for(0, 10, [&](int i) { a(std::size_t(i)) = 2.0 * i; });
#endif
}
