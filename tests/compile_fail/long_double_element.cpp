// long double has no portable NumPy dtype.
// expect: long double has no portable NumPy dtype
#include <shmarray/ndarray.hpp>

#ifdef SHMARRAY_COMPILE_FAIL
shmarray::ndarray<long double> a;
auto d = a.dtype();
#else
auto d = shmarray::ndarray<double>::dtype();
#endif
