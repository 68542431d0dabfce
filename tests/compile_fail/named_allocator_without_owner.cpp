// A named allocator needs a manager to own its memory: no default constructor.
// expect: no matching function for call to .*allocator<int, shmarray::posix_shm>::allocator\(\)
#include <shmarray/allocator.hpp>

#include <vector>

void use(shmarray::manager& m) {
  std::vector<int, shmarray::allocator<int, shmarray::posix_shm>> v{
      shmarray::allocator<int, shmarray::posix_shm>(m)};
#ifdef SHMARRAY_COMPILE_FAIL
  shmarray::allocator<int, shmarray::posix_shm> orphan;
  (void)orphan;
#endif
}
