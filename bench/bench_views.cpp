// The same kernels through each Eigen and xtensor view of shared arrays,
// against private Eigen and xtensor containers, side by side in one process.
// The goal is 1.00 within noise for every view a user is steered to.
//
//   bash tools/run.sh bench        or        build/bench/shmarray_views_bench [--quick]
#include <Eigen/Dense>
#include <cstdio>
#include <cstring>
#include <shmarray/eigen.hpp>
#include <shmarray/xtensor.hpp>
#include <string>
#include <xtensor/xmath.hpp>
#include <xtensor/xrandom.hpp>
#include <xtensor/xview.hpp>

#include "harness.hpp"

namespace se = shmarray::eigen;

namespace {

int reps = 15;

// axpy (y += 0.5 x), a sum, and a 5-point stencil, through `x`, `y` (the
// views) and `px`, `py` (private containers of the same shape).
template <class X, class Y, class PX, class PY>
void eigen_kernels(const std::string& view, X x, Y y, PX& px, PY& py,
                   const std::string& base = "private Eigen matrix") {
  bench::row(view + ": axpy", base,
             bench::compare(
                 reps, [&] { py.noalias() += 0.5f * px; }, [&] { y.noalias() += 0.5f * x; }));
  bench::row(view + ": sum", base,
             bench::compare(
                 reps, [&] { bench::keep(px.sum()); }, [&] { bench::keep(x.sum()); }));
  const Eigen::Index r = x.rows() - 2, c = x.cols() - 2;
  bench::row(view + ": 5-point stencil", base,
             bench::compare(
                 reps,
                 [&] {
                   py.block(1, 1, r, c) = px.block(0, 1, r, c) + px.block(2, 1, r, c) +
                                          px.block(1, 0, r, c) + px.block(1, 2, r, c) -
                                          4.f * px.block(1, 1, r, c);
                 },
                 [&] {
                   y.block(1, 1, r, c) = x.block(0, 1, r, c) + x.block(2, 1, r, c) +
                                         x.block(1, 0, r, c) + x.block(1, 2, r, c) -
                                         4.f * x.block(1, 1, r, c);
                 }));
}

template <class X, class Y, class PX, class PY>
void xtensor_kernels(const std::string& view, X&& x, Y&& y, PX& px, PY& py) {
  const std::string base = "private xtensor container";
  bench::row(view + ": axpy", base,
             bench::compare(
                 reps, [&] { xt::noalias(py) += 0.5f * px; }, [&] { xt::noalias(y) += 0.5f * x; }));
  bench::row(view + ": sum", base,
             bench::compare(
                 reps, [&] { bench::keep(xt::sum(px)()); }, [&] { bench::keep(xt::sum(x)()); }));
  const std::size_t n = px.shape(0), m = px.shape(1);
  auto stencil = [&](auto& in, auto& out) {
    using xt::range;
    xt::noalias(xt::view(out, range(1, n - 1), range(1, m - 1))) =
        xt::view(in, range(0, n - 2), range(1, m - 1)) +
        xt::view(in, range(2, n), range(1, m - 1)) +
        xt::view(in, range(1, n - 1), range(0, m - 2)) +
        xt::view(in, range(1, n - 1), range(2, m)) -
        4.f * xt::view(in, range(1, n - 1), range(1, m - 1));
  };
  bench::row(view + ": 5-point stencil", base,
             bench::compare(
                 reps, [&] { stencil(px, py); }, [&] { stencil(x, y); }));
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const std::size_t n = quick ? 512 : 2048;
  reps = quick ? 5 : 15;
  shmarray::manager m;
  std::printf("%zu x %zu float arrays (%zu MiB each); median of %d runs\n", n, n,
              n * n * sizeof(float) >> 20, reps);

  bench::header("Eigen views of shared arrays against private Eigen matrices");
  {
    using rmat = Eigen::Matrix<float, -1, -1, Eigen::RowMajor>;
    const rmat px0 = rmat::Random(Eigen::Index(n), Eigen::Index(n));
    rmat px = px0, py = px0;
    auto x = shmarray::from_array(m, px0), y = shmarray::from_array(m, px0);
    eigen_kernels("matrix (whole, Aligned64)", se::matrix(x), se::matrix(y), px, py);

    // frame 1 of a 3-frame row-major stack: Unaligned
    auto sx = m.from_shape<float>({3, n, n}), sy = m.from_shape<float>({3, n, n});
    se::frame(sx, 1) = px0;
    se::frame(sy, 1) = px0;
    eigen_kernels("frame of a stack (Unaligned)", se::frame(sx, 1), se::frame(sy, 1), px, py);

    // Rows of a column-major array: an outer stride and a unit inner stride.
    // The memory itself is strided (every column a run, then a gap), so the
    // baseline is the same rows of a private matrix of the same shape.
    shmarray::create_options f;
    f.order = shmarray::order::column_major;
    auto cx = m.from_shape<float>({2 * n, n}, f), cy = m.from_shape<float>({2 * n, n}, f);
    Eigen::MatrixXf pbx = Eigen::MatrixXf::Random(Eigen::Index(2 * n), Eigen::Index(n)), pby = pbx;
    se::matrix<Eigen::ColMajor>(cx) = pbx;
    se::matrix<Eigen::ColMajor>(cy) = pbx;
    auto pcx = pbx.middleRows(Eigen::Index(n / 2), Eigen::Index(n));
    auto pcy = pby.middleRows(Eigen::Index(n / 2), Eigen::Index(n));
    eigen_kernels("rows of a column-major array (OuterStride)",
                  se::rows<Eigen::ColMajor>(cx, n / 2, n), se::rows<Eigen::ColMajor>(cy, n / 2, n),
                  pcx, pcy, "the same rows, private matrix");
    // its packed counterpart: columns of a column-major array
    Eigen::MatrixXf pkx = pbx.leftCols(Eigen::Index(n / 2)), pky = pkx;
    eigen_kernels("cols of a column-major array (packed)",
                  se::cols<Eigen::ColMajor>(cx, n / 2, n / 2),
                  se::cols<Eigen::ColMajor>(cy, n / 2, n / 2), pkx, pky);

    // GEMM, whole matrices
    const Eigen::Index g = quick ? 256 : 768;
    const Eigen::MatrixXd A0 = Eigen::MatrixXd::Random(g, g), B0 = Eigen::MatrixXd::Random(g, g);
    Eigen::MatrixXd PC(g, g);
    auto a = shmarray::from_array(m, A0), b = shmarray::from_array(m, B0);
    auto c = shmarray::from_array(m, PC);
    bench::row("matrix (whole): GEMM " + std::to_string(g) + "^3 double", "private Eigen matrix",
               bench::compare(
                   reps, [&] { PC.noalias() = A0 * B0; },
                   [&] {
                     se::matrix<Eigen::ColMajor>(c).noalias() =
                         se::matrix<Eigen::ColMajor>(a) * se::matrix<Eigen::ColMajor>(b);
                   }));

    // Not a view users are steered to: a frame of a column-major stack is
    // fully strided, and Eigen cannot vectorise it.
    auto fs = m.from_shape<float>({3, n, n}, f);
    Eigen::MatrixXf pf = px0;
    bench::row("frame of a column-major stack (Stride<Dyn,Dyn>): sum", "private Eigen matrix",
               bench::compare(
                   reps, [&] { bench::keep(pf.sum()); },
                   [&] { bench::keep(se::frame<Eigen::ColMajor>(fs, 1).sum()); }));
  }

  bench::header("xtensor views of shared arrays against private xtensor containers");
  {
    xt::random::seed(1);
    const xt::xtensor<float, 2> p0 = xt::random::rand<float>({n, n});
    xt::xarray<float> pax = p0, pay = p0;
    xt::xtensor<float, 2> ptx = p0, pty = p0;
    auto x = shmarray::from_array(m, p0), y = shmarray::from_array(m, p0);
    xtensor_kernels("adapt (static row_major)", shmarray::adapt(x), shmarray::adapt(y), pax, pay);
    xtensor_kernels("adapt<2> (static row_major, rank 2)", shmarray::adapt<2>(x),
                    shmarray::adapt<2>(y), ptx, pty);
    xtensor_kernels("shared_adapt<2> (holds the mapping)", shmarray::shared_adapt<2>(x),
                    shmarray::shared_adapt<2>(y), ptx, pty);
    auto sx = m.from_shape<float>({3, n, n}), sy = m.from_shape<float>({3, n, n});
    shmarray::adapt_frame(sx, 1) = p0;
    shmarray::adapt_frame(sy, 1) = p0;
    xtensor_kernels("adapt_frame (static row_major)", shmarray::adapt_frame(sx, 1),
                    shmarray::adapt_frame(sy, 1), ptx, pty);
    // Not offered for contiguous arrays: an adaptor built from strides has a
    // dynamic layout and takes xtensor's generic path.
    const std::array<std::size_t, 2> shape{n, n};
    const std::array<std::ptrdiff_t, 2> strides{std::ptrdiff_t(n), 1};
    auto dx = xt::adapt(x.data(), x.size(), xt::no_ownership(), shape, strides);
    auto dy = xt::adapt(y.data(), y.size(), xt::no_ownership(), shape, strides);
    xtensor_kernels("xt::adapt with strides (dynamic layout)", dx, dy, ptx, pty);
  }
  return 0;
}
