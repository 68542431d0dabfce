// A pool's workers were forked before the job existed: a job's argument
// that is an ndarray handle (or a std::string, a std::vector) does not
// compile.
// expect: a process_pool job's argument must be trivially copyable
#include <shmarray/shmarray.hpp>

void use(shmarray::process_pool& pool, shmarray::ndarray<double> a) {
  double* p = a.data();
  pool.run([](double* x, const shmarray::worker& w) { x[w.rank()] = 1; }, p);
#ifdef SHMARRAY_COMPILE_FAIL
  pool.run([](const shmarray::ndarray<double>& x, const shmarray::worker& w) { x(w.rank()) = 1; },
           a);
#endif
}
