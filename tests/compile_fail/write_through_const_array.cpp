// Nothing can be written through ndarray<const T>.
// expect: assignment of read-only location
#include <shmarray/ndarray.hpp>

void use(const shmarray::ndarray<const double>& a, const shmarray::ndarray<double>& b) {
  b(0, 0) = 1.0;
  double x = a(0, 0);
  (void)x;
#ifdef SHMARRAY_COMPILE_FAIL
  a(0, 0) = 1.0;
#endif
}
