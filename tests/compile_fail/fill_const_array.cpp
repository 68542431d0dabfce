// fill() is not offered on a read-only handle.
// expect: cannot fill an ndarray<const T>
#include <shmarray/ndarray.hpp>

void use(const shmarray::ndarray<const double>& a, const shmarray::ndarray<double>& b) {
  b.fill(0.0);
#ifdef SHMARRAY_COMPILE_FAIL
  a.fill(0.0);
#else
  (void)a;
#endif
}
