// Plain char has no fixed signedness, so it has no dtype.
// expect: plain char has no fixed signedness
#include <shmarray/dtype.hpp>

#ifdef SHMARRAY_COMPILE_FAIL
auto d = shmarray::dtype_of<char>();
#else
auto d = shmarray::dtype_of<signed char>();
#endif
