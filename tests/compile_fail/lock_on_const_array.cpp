// A read-only handle has no lock: the mutex must be written to be taken.
// expect: ndarray<const T> has no lock\(\)
#include <shmarray/ndarray.hpp>

void use(const shmarray::ndarray<const double>& a, const shmarray::ndarray<double>& b) {
  (void)b.lock();
#ifdef SHMARRAY_COMPILE_FAIL
  (void)a.lock();
#else
  (void)a;
#endif
}
