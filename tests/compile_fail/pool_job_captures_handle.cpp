// A pool's workers were forked before the job existed: a job that captures
// an ndarray handle (or a std::string, a std::vector) does not compile.
// expect: a process_pool job must be trivially copyable
#include <shmarray/shmarray.hpp>

void use(shmarray::process_pool& pool, shmarray::ndarray<double> a) {
  double* p = a.data();
  pool.run([p](const shmarray::worker& w) { p[w.rank()] = 1; });
#ifdef SHMARRAY_COMPILE_FAIL
  pool.run([a](const shmarray::worker& w) { a(w.rank()) = 1; });
#endif
}
