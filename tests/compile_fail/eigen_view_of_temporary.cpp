// A view of a temporary handle would dangle at once: it does not compile.
// expect: a view of a temporary ndarray would dangle
#include <shmarray/eigen.hpp>

void use(shmarray::manager& m) {
  auto a = m.from_shape<double>({4, 4});
  shmarray::eigen::matrix(a).setZero();
#ifdef SHMARRAY_COMPILE_FAIL
  shmarray::eigen::matrix(m.from_shape<double>({4, 4})).setZero();
#endif
}
