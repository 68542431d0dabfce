// The same kernels through each Eigen and xtensor view of shared arrays,
// against private Eigen and xtensor containers of the same shape and layout,
// side by side in one process. The goal is 1.00 within noise for every view
// a user is steered to.
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

// axpy (y += 0.5 x), a sum and a 5-point stencil through the views `x`, `y`,
// and through private containers `px`, `py` of the same shape and layout.
template <class X, class Y, class PX, class PY>
void eigen_kernels(const std::string& view, X&& x, Y&& y, PX& px, PY& py,
                   const std::string& base = "private Eigen matrix") {
  bench::row(view + ": axpy", base,
             bench::compare(
                 reps, [&] { py.noalias() += 0.5f * px; }, [&] { y.noalias() += 0.5f * x; }));
  bench::row(view + ": sum", base,
             bench::compare(
                 reps, [&] { bench::keep(px.sum()); }, [&] { bench::keep(x.sum()); }));
  if (x.rows() < 3 || x.cols() < 3) return;
  const Eigen::Index r = x.rows() - 2, c = x.cols() - 2;
  auto stencil = [r, c](auto& in, auto& out) {
    out.block(1, 1, r, c) = in.block(0, 1, r, c) + in.block(2, 1, r, c) + in.block(1, 0, r, c) +
                            in.block(1, 2, r, c) - 4.f * in.block(1, 1, r, c);
  };
  bench::row(view + ": 5-point stencil", base,
             bench::compare(
                 reps, [&] { stencil(px, py); }, [&] { stencil(x, y); }));
}

template <class X, class Y, class PX, class PY>
void xtensor_kernels(const std::string& view, X&& x, Y&& y, PX& px, PY& py,
                     const std::string& base = "private xtensor container") {
  bench::row(view + ": axpy", base,
             bench::compare(
                 reps, [&] { xt::noalias(py) += 0.5f * px; }, [&] { xt::noalias(y) += 0.5f * x; }));
  bench::row(view + ": sum", base,
             bench::compare(
                 reps, [&] { bench::keep(xt::sum(px)()); }, [&] { bench::keep(xt::sum(x)()); }));
  if (px.dimension() != 2) return;
  const std::size_t n = px.shape(0), m = px.shape(1);
  auto stencil = [n, m](auto& in, auto& out) {
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

using rmat = Eigen::Matrix<float, -1, -1, Eigen::RowMajor>;

void eigen_views(shmarray::manager& m, std::size_t n, bool quick) {
  bench::header("Eigen views of shared arrays against private Eigen containers");
  const auto N = Eigen::Index(n);
  shmarray::create_options fortran;
  fortran.order = shmarray::order::column_major;

  // whole arrays: Aligned64
  const rmat p0 = rmat::Random(N, N);
  rmat px = p0, py = p0;
  {  // the noise floor: a private matrix against another
    rmat qx = p0, qy = p0;
    eigen_kernels("A/A: another private matrix", Eigen::Ref<rmat>(qx), Eigen::Ref<rmat>(qy), px,
                  py);
  }
  auto x = shmarray::from_array(m, p0), y = shmarray::from_array(m, p0);
  eigen_kernels("matrix (whole, Aligned64)", se::matrix(x), se::matrix(y), px, py);
  Eigen::VectorXf pv = Eigen::VectorXf::Random(N * N), pw = pv;
  eigen_kernels("flat (whole, Aligned64)", se::flat(x), se::flat(y), pv, pw);

  // frame 1 of a stack of (n+1) x (n+3) frames: it starts 4 bytes past a
  // multiple of 64, so Unaligned is the truth
  const rmat q0 = rmat::Random(N + 1, N + 3);
  rmat qx = q0, qy = q0;
  auto sx = m.from_shape<float>({3, n + 1, n + 3}), sy = m.from_shape<float>({3, n + 1, n + 3});
  se::frame(sx, 1) = q0;
  se::frame(sy, 1) = q0;
  eigen_kernels("frame of a stack (Unaligned)", se::frame(sx, 1), se::frame(sy, 1), qx, qy);
  rmat fx = rmat::Random(2, (N + 1) * (N + 3)), fy = fx;
  eigen_kernels("frames of a stack (2 frames, one per row)", se::frames(sx, 1, 2),
                se::frames(sy, 1, 2), fx, fy);

  // Rows of a column-major array: an outer stride, a unit inner stride. The
  // memory itself is strided (every column a run, then a gap), so the
  // baseline is the same rows of a private matrix of the same shape.
  auto cx = m.from_shape<float>({2 * n, n}, fortran), cy = m.from_shape<float>({2 * n, n}, fortran);
  Eigen::MatrixXf bx = Eigen::MatrixXf::Random(2 * N, N), by = bx;
  se::matrix<Eigen::ColMajor>(cx) = bx;
  se::matrix<Eigen::ColMajor>(cy) = bx;
  auto brx = bx.middleRows(N / 2, N), bry = by.middleRows(N / 2, N);
  eigen_kernels("rows of a column-major array (OuterStride)",
                se::rows<Eigen::ColMajor>(cx, n / 2, n), se::rows<Eigen::ColMajor>(cy, n / 2, n),
                brx, bry, "the same rows of a private matrix");
  Eigen::MatrixXf kx = bx.leftCols(N / 2), ky = kx;
  eigen_kernels("cols of a column-major array (packed)",
                se::cols<Eigen::ColMajor>(cx, n / 2, n / 2),
                se::cols<Eigen::ColMajor>(cy, n / 2, n / 2), kx, ky);

  // a TensorMap of a whole 3-d stack
  Eigen::Tensor<float, 3, Eigen::RowMajor> pt(3, N + 1, N + 3);
  pt.setRandom();
  const Eigen::Tensor<float, 0, Eigen::RowMajor> warm = pt.sum();
  bench::keep(warm);
  bench::row("tensor<3> (whole, Aligned): sum", "private Eigen::Tensor",
             bench::compare(
                 reps,
                 [&] {
                   const Eigen::Tensor<float, 0, Eigen::RowMajor> s = pt.sum();
                   bench::keep(s);
                 },
                 [&] {
                   const Eigen::Tensor<float, 0, Eigen::RowMajor> s = se::tensor<3>(sx).sum();
                   bench::keep(s);
                 }));

  // GEMM of whole matrices
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

  // a frame of a column-major stack (height x width x frames): packed
  auto fs = m.from_shape<float>({n, n, 3}, fortran), ft = m.from_shape<float>({n, n, 3}, fortran);
  Eigen::MatrixXf cf = Eigen::MatrixXf::Random(N, N), cg = cf;
  se::frame<Eigen::ColMajor>(fs, 1) = cf;
  se::frame<Eigen::ColMajor>(ft, 1) = cf;
  eigen_kernels("frame<ColMajor> of a column-major stack", se::frame<Eigen::ColMajor>(fs, 1),
                se::frame<Eigen::ColMajor>(ft, 1), cf, cg);

  // Not offered: a fully strided map (frame 1 along the first axis of a
  // column-major 3 x n x n array). Eigen cannot vectorise it.
  auto fa = m.from_shape<float>({3, n, n}, fortran);
  Eigen::Map<Eigen::MatrixXf, Eigen::Unaligned, Eigen::Stride<-1, -1>> strided(
      fa.data() + 1, N, N, Eigen::Stride<-1, -1>(3 * N, 3));
  bench::row("Map with Stride<Dynamic, Dynamic> (not offered): sum", "private Eigen matrix",
             bench::compare(
                 reps, [&] { bench::keep(cf.sum()); }, [&] { bench::keep(strided.sum()); }));
}

void xtensor_views(shmarray::manager& m, std::size_t n) {
  bench::header("xtensor views of shared arrays against private xtensor containers");
  constexpr auto F = xt::layout_type::column_major;
  xt::random::seed(1);
  const xt::xtensor<float, 2> p0 = xt::random::rand<float>({n, n});
  xt::xarray<float> ax = p0, ay = p0;
  xt::xtensor<float, 2> tx = p0, ty = p0;
  auto x = shmarray::from_array(m, p0), y = shmarray::from_array(m, p0);
  {  // the noise floor: a private container against another
    xt::xtensor<float, 2> qx = p0, qy = p0;
    xtensor_kernels("A/A: another private xt::xtensor<T, 2>", qx, qy, tx, ty,
                    "private xt::xtensor<T, 2>");
  }
  xtensor_kernels("adapt (static row_major)", shmarray::adapt(x), shmarray::adapt(y), ax, ay,
                  "private xt::xarray");
  xtensor_kernels("adapt<2> (static row_major)", shmarray::adapt<2>(x), shmarray::adapt<2>(y), tx,
                  ty, "private xt::xtensor<T, 2>");
  xtensor_kernels("shared_adapt (holds the mapping)", shmarray::shared_adapt(x),
                  shmarray::shared_adapt(y), ax, ay, "private xt::xarray");
  xtensor_kernels("shared_adapt<2> (holds the mapping)", shmarray::shared_adapt<2>(x),
                  shmarray::shared_adapt<2>(y), tx, ty, "private xt::xtensor<T, 2>");

  auto sx = m.from_shape<float>({3, n, n}), sy = m.from_shape<float>({3, n, n});
  shmarray::adapt_frame(sx, 1) = p0;
  shmarray::adapt_frame(sy, 1) = p0;
  xtensor_kernels("adapt_frame (static row_major)", shmarray::adapt_frame(sx, 1),
                  shmarray::adapt_frame(sy, 1), tx, ty, "private xt::xtensor<T, 2>");
  xt::xtensor<float, 3> t3x = shmarray::adapt_frames(sx, 1, 2);
  xt::xtensor<float, 3> t3y = t3x;
  xtensor_kernels("adapt_frames (static row_major)", shmarray::adapt_frames(sx, 1, 2),
                  shmarray::adapt_frames(sy, 1, 2), t3x, t3y, "private xt::xtensor<T, 3>");
  xt::xtensor<float, 2> rx = xt::view(p0, xt::range(0, n / 2), xt::all()), ry = rx;
  xtensor_kernels("adapt_rows (static row_major)", shmarray::adapt_rows(x, n / 4, n / 2),
                  shmarray::adapt_rows(y, n / 4, n / 2), rx, ry, "private xt::xtensor<T, 2>");

  // a shared container, written with noalias as a worker would
  shmarray::xarray<float> shx = p0, shy = p0;
  xtensor_kernels("shmarray::xarray (noalias)", shx, shy, ax, ay, "private xt::xarray");

  // a frame of a column-major stack (height x width x frames): static column_major
  shmarray::create_options fo;
  fo.order = shmarray::order::column_major;
  auto cx = m.from_shape<float>({n, n, 3}, fo), cy = m.from_shape<float>({n, n, 3}, fo);
  xt::xtensor<float, 2, F> fx = p0, fy = p0;
  shmarray::adapt_frame<F>(cx, 1) = fx;
  shmarray::adapt_frame<F>(cy, 1) = fx;
  xtensor_kernels("adapt_frame<column_major> (static column_major)",
                  shmarray::adapt_frame<F>(cx, 1), shmarray::adapt_frame<F>(cy, 1), fx, fy,
                  "private column-major xt::xtensor<T, 2>");

  // rows of a column-major array are an xt::view, strided: against the same
  // view of a private column-major array
  auto rows_fx = m.from_shape<float>({2 * n, n}, fo);
  xt::xtensor<float, 2, F> pr = xt::ones<float>({2 * n, n});
  auto prv = xt::view(pr, xt::range(n / 2, n / 2 + n), xt::all());
  bench::row("adapt_rows<column_major> (strided xt::view): sum", "the same view, private",
             bench::compare(
                 reps, [&] { bench::keep(xt::sum(prv)()); },
                 [&] { bench::keep(xt::sum(shmarray::adapt_rows<F>(rows_fx, n / 2, n))()); }));

  // Not offered: an adaptor built from strides has a dynamic layout and
  // takes xtensor's generic path, even over contiguous memory.
  const std::array<std::size_t, 2> shape{n, n};
  const std::array<std::ptrdiff_t, 2> strides{std::ptrdiff_t(n), 1};
  auto dx = xt::adapt(x.data(), x.size(), xt::no_ownership(), shape, strides);
  auto dy = xt::adapt(y.data(), y.size(), xt::no_ownership(), shape, strides);
  xtensor_kernels("xt::adapt with strides (dynamic layout)", dx, dy, tx, ty,
                  "private xt::xtensor<T, 2>");
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const std::size_t n = quick ? 512 : 2048;
  reps = quick ? 5 : 15;
  shmarray::manager m;
  Eigen::setNbThreads(1);
  std::printf("%zu x %zu float arrays (%zu MiB each); median of %d runs after a warm-up\n", n, n,
              n * n * sizeof(float) >> 20, reps);
  eigen_views(m, n, quick);
  xtensor_views(m, n);
  return 0;
}
