// A borrowing view of a temporary handle would dangle: it does not compile
// (shared_adapt, which holds the memory, does).
// expect: a borrowing view of a temporary ndarray would dangle
#include <shmarray/xtensor.hpp>

void use(shmarray::manager& m) {
  auto a = m.from_shape<double>({4, 4});
  shmarray::adapt(a).fill(0.0);
  shmarray::shared_adapt(m.from_shape<double>({4, 4})).fill(0.0);
#ifdef SHMARRAY_COMPILE_FAIL
  shmarray::adapt(m.from_shape<double>({4, 4})).fill(0.0);
#endif
}
