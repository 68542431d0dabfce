// A job's argument with padding could hide anything (a stale stack
// address) and cannot be checked: it does not compile.
// expect: a process_pool job's argument must have no padding
#include <shmarray/shmarray.hpp>

#include <cstdint>

struct good_args {
  double* d;
  std::uint64_t flag;
};
struct padded_args {
  double* d;
  bool flag;  // 7 bytes of padding after it
};

void use(shmarray::process_pool& pool, double* d) {
  pool.run([](const good_args& g) { g.d[0] = double(g.flag); }, good_args{d, 1});
#ifdef SHMARRAY_COMPILE_FAIL
  pool.run([](const padded_args& g) { g.d[0] = g.flag; }, padded_args{d, true});
#endif
}
