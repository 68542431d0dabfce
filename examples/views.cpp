// docs/views.md's Eigen and xtensor examples: each doc-region is a block of
// that page (docs/check_examples.py keeps them equal), with checks of what
// they compute.
#include <Eigen/Dense>
#include <cstdint>
#include <cstdio>
#include <shmarray/eigen.hpp>
#include <shmarray/xtensor.hpp>
#include <xtensor/xmath.hpp>

namespace {

void eigen_section(shmarray::manager& m) {
  namespace se = shmarray::eigen;
  const Eigen::MatrixXd A0 = Eigen::MatrixXd::Random(512, 512);
  const Eigen::MatrixXd B0 = Eigen::MatrixXd::Random(512, 512);

  // doc-region: eigen
  auto A = m.from_shape<double>({512, 512});  // row-major ('C') by default
  se::matrix(A).setRandom();                  // Map<Matrix<double,-1,-1,RowMajor>, Aligned64>
  auto x = shmarray::from_array(m, Eigen::VectorXd::Ones(512));
  Eigen::VectorXd y = se::matrix(A) * se::vector(x);

  auto stack = m.from_shape<float>({200, 512, 512});  // frames x height x width
  se::frame(stack, 7).array() -= 100.f;               // frame 7 as a 512 x 512 matrix
  auto block = se::frames(stack, 10, 20);             // frames 10..29 as 20 x (512*512)
  auto band = se::rows(A, 128, 128);                  // rows 128..255: one worker's share
  auto t = se::tensor<3>(stack);                      // Eigen::TensorMap of the whole stack

  auto P = shmarray::from_array(m, A0 * B0);  // any dense expression, into shared memory
  auto Pm = se::matrix<Eigen::ColMajor>(P);
  Eigen::PartialPivLU<Eigen::Ref<Eigen::MatrixXd>> lu(Pm);  // decomposes in place, in shared memory
  // doc-region-end

  if (y.size() != 512 || block.rows() != 20 || band.rows() != 128 || t.dimension(0) != 200 ||
      se::frame(stack, 7).sum() != -100.f * 512 * 512 || lu.rows() != 512) {
    std::fprintf(stderr, "the Eigen examples computed something else\n");
    std::exit(1);
  }
}

void xtensor_section(shmarray::manager& m) {
  // doc-region: xtensor
  auto a = m.from_shape<double>({1000, 1000});
  auto X = shmarray::adapt(a);     // static row_major layout, dynamic rank
  auto Y = shmarray::adapt<2>(a);  // static layout, rank 2 (checked)
  xt::noalias(X) = xt::sin(X) + 1.0;
  double total = xt::sum(Y)();
  auto s = m.from_shape<std::uint16_t>({200, 512, 512});
  auto f = shmarray::adapt_frame(s, 3);           // 512 x 512, static row_major
  auto part = shmarray::adapt_frames(s, 10, 20);  // 20 x 512 x 512
  auto keep = shmarray::shared_adapt<2>(a);       // holds the mapping: may outlive every handle

  shmarray::xarray<double> shared = xt::zeros<double>({64, 64});  // shared with fork() children
  auto z = shmarray::from_array(m, X * 2.0);  // any xtensor expression, into shared memory
  // doc-region-end

  if (total != 1e6 || f.shape(0) != 512 || part.shape(0) != 20 || keep(0, 0) != 1.0 ||
      shared.size() != 4096 || z(999, 999) != 2.0) {
    std::fprintf(stderr, "the xtensor examples computed something else\n");
    std::exit(1);
  }
}

}  // namespace

int main() {
  shmarray::manager m;
  eigen_section(m);
  xtensor_section(m);
  std::printf("ok: the Eigen and xtensor examples of docs/views.md run\n");
  return 0;
}
