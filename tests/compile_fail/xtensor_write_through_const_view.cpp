// A read-only array gives a read-only xtensor view.
// expect: assignment of read-only location
#include <shmarray/xtensor.hpp>

void use(const shmarray::ndarray<const double>& ro, const shmarray::ndarray<double>& rw) {
  shmarray::adapt(rw)(0, 0) = 1.0;
  double x = shmarray::adapt(ro)(0, 0);
  (void)x;
#ifdef SHMARRAY_COMPILE_FAIL
  shmarray::adapt(ro)(0, 0) = 1.0;
#endif
}
