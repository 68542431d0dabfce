// A user's program with both views: Eigen writes, xtensor reads.
#include <cstdio>
#include <shmarray/eigen.hpp>
#include <shmarray/xtensor.hpp>
#include <xtensor/xmath.hpp>

int main() {
  shmarray::manager m;
  auto a = m.from_shape<double>({3, 4});
  shmarray::eigen::matrix(a).setConstant(2.0);
  if (xt::sum(shmarray::adapt(a))() != 24.0) return 1;
  std::printf("consumer ok\n");
  return 0;
}
