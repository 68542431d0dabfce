// A read-only array gives a const Eigen map: nothing can be written through it.
// expect: lvalue required as left operand of assignment
#include <shmarray/eigen.hpp>

void use(const shmarray::ndarray<const double>& ro, const shmarray::ndarray<double>& rw) {
  shmarray::eigen::matrix(rw)(0, 0) = 1.0;
  double x = shmarray::eigen::matrix(ro)(0, 0);
  (void)x;
#ifdef SHMARRAY_COMPILE_FAIL
  shmarray::eigen::matrix(ro)(0, 0) = 1.0;
#endif
}
