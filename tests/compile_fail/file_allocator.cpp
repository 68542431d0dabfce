// The allocator has no file backing: a named backing needs an owner.
// expect: shmarray::allocator supports the anonymous backing
#include <shmarray/allocator.hpp>

#ifdef SHMARRAY_COMPILE_FAIL
shmarray::allocator<int, shmarray::file> a;
#else
shmarray::allocator<int> a;
#endif
