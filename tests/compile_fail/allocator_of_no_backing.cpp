// The allocator takes a backing policy only: a type without create() is refused.
// expect: Backing is not a backing policy
#include <shmarray/allocator.hpp>

struct not_a_backing {};

#ifdef SHMARRAY_COMPILE_FAIL
shmarray::allocator<int, not_a_backing> a;
#else
shmarray::allocator<int> a;
#endif
