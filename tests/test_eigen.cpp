#include <catch2/catch.hpp>

#include <Eigen/Dense>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <shmarray/eigen.hpp>
#include <shmarray/ring.hpp>
#include <shmarray/workers.hpp>
#include <type_traits>

#include "support.hpp"

using namespace shmarray;
namespace se = shmarray::eigen;

namespace {

// A private buffer with the alignment (and offset from it) that a shared
// view has, so that Eigen takes the same code path on both.
struct private_buffer {
  explicit private_buffer(std::size_t bytes, std::size_t offset = 0)
      : base(static_cast<std::byte*>(
            std::aligned_alloc(4096, (bytes + offset + 4095) / 4096 * 4096))),
        data(base + offset) {}
  ~private_buffer() { std::free(base); }
  private_buffer(const private_buffer&) = delete;
  private_buffer& operator=(const private_buffer&) = delete;
  template <class T>
  T* as() const {
    return reinterpret_cast<T*>(data);
  }
  std::byte* base;
  std::byte* data;
};

}  // namespace

TEST_CASE("vector, flat and matrix map the array's own memory, aligned, in its order") {
  test::names names;
  {
    manager m(names.options());
    auto v = m.from_shape<double>({6});
    auto vm = se::vector(v);
    static_assert(std::is_same_v<decltype(vm), Eigen::Map<Eigen::VectorXd, Eigen::Aligned64>>);
    CHECK(vm.data() == v.data());
    vm.setLinSpaced(6, 0.0, 5.0);
    CHECK(v(4) == 4.0);

    auto c = m.from_shape<float>({3, 4});
    test::iota(c);
    auto cm = se::matrix(c);
    static_assert(
        std::is_same_v<decltype(cm), Eigen::Map<Eigen::Matrix<float, -1, -1, Eigen::RowMajor>,
                                                Eigen::Aligned64>>);
    auto f = m.from_shape<float>({3, 4}, test::fortran());
    test::iota(f);
    auto fm = se::matrix<Eigen::ColMajor>(f);
    static_assert(std::is_same_v<decltype(fm), Eigen::Map<Eigen::MatrixXf, Eigen::Aligned64>>);
    for (std::size_t i = 0; i < 3; ++i)
      for (std::size_t j = 0; j < 4; ++j) {
        CHECK(cm(Eigen::Index(i), Eigen::Index(j)) == c(i, j));
        CHECK(fm(Eigen::Index(i), Eigen::Index(j)) == f(i, j));
      }
    CHECK(cm.rows() == 3);
    CHECK(cm.cols() == 4);

    auto s = m.from_shape<int>({2, 3, 4});
    test::iota(s);
    CHECK(se::flat(s).size() == 24);
    CHECK(se::flat(s).sum() == 276);
    CHECK(reinterpret_cast<std::uintptr_t>(se::flat(s).data()) % 64 == 0);
  }
  CHECK(names.left().empty());
}

TEST_CASE("frame, frames, rows and cols are the right elements in either storage order") {
  test::names names;
  {
    manager m(names.options());
    const std::size_t n = 4, h = 3, w = 5;
    auto c = m.from_shape<double>({n, h, w});  // row-major: frames x height x width
    auto f =
        m.from_shape<double>({h, w, n}, test::fortran());  // column-major: height x width x frames
    test::iota(c);
    test::iota(f);
    for (std::size_t k = 0; k < n; ++k) {
      auto cf = se::frame(c, k);
      auto ff = se::frame<Eigen::ColMajor>(f, k);
      REQUIRE(cf.rows() == Eigen::Index(h));
      REQUIRE(ff.rows() == Eigen::Index(h));
      REQUIRE(ff.cols() == Eigen::Index(w));
      for (std::size_t i = 0; i < h; ++i)
        for (std::size_t j = 0; j < w; ++j) {
          CHECK(cf(Eigen::Index(i), Eigen::Index(j)) == c(k, i, j));
          CHECK(ff(Eigen::Index(i), Eigen::Index(j)) == f(i, j, k));
        }
    }
    // a column-major frame is packed: it binds to Eigen's default Ref, no copy
    Eigen::Ref<Eigen::MatrixXd> ref = se::frame<Eigen::ColMajor>(f, 2);
    CHECK(ref.data() == f.data() + 2 * h * w);
    auto cref = [](const Eigen::Ref<const Eigen::MatrixXd>& r) { return r.data(); };
    CHECK(cref(se::frame<Eigen::ColMajor>(f, 2)) == f.data() + 2 * h * w);  // no copy
    CHECK(cref(se::frame(c, 2)) != c.data() + 2 * h * w);  // row-major: Eigen copies, as documented
    Eigen::Ref<Eigen::Matrix<double, -1, -1, Eigen::RowMajor>> rref = se::frame(c, 2);
    CHECK(rref.data() == c.data() + 2 * h * w);
    auto cb = se::frames(c, 1, 2);
    auto fb = se::frames<Eigen::ColMajor>(f, 1, 2);
    REQUIRE(cb.rows() == 2);
    REQUIRE(cb.cols() == Eigen::Index(h * w));
    REQUIRE(fb.rows() == Eigen::Index(h * w));
    REQUIRE(fb.cols() == 2);
    for (std::size_t r = 0; r < 2; ++r)
      for (std::size_t p = 0; p < h * w; ++p) {
        // a frame per row (row-major) or per column (column-major), pixels in the stack's order
        CHECK(cb(Eigen::Index(r), Eigen::Index(p)) == c(1 + r, p / w, p % w));
        CHECK(fb(Eigen::Index(p), Eigen::Index(r)) == f(p % h, p / h, 1 + r));
      }
    CHECK_THROWS_AS(se::frame<Eigen::ColMajor>(f, n), std::out_of_range);

    auto c2 = m.from_shape<float>({6, 7});
    auto f2 = m.from_shape<float>({6, 7}, test::fortran());
    test::iota(c2);
    test::iota(f2);
    auto cr = se::rows(c2, 2, 3);
    auto fr = se::rows<Eigen::ColMajor>(f2, 2, 3);
    for (std::size_t i = 0; i < 3; ++i)
      for (std::size_t j = 0; j < 7; ++j) {
        CHECK(cr(Eigen::Index(i), Eigen::Index(j)) == c2(2 + i, j));
        CHECK(fr(Eigen::Index(i), Eigen::Index(j)) == f2(2 + i, j));
      }
    auto cc = se::cols(c2, 1, 4);
    auto fc = se::cols<Eigen::ColMajor>(f2, 1, 4);
    static_assert(std::is_same_v<decltype(fc), se::packed_map<float, Eigen::ColMajor>>);
    static_assert(std::is_same_v<decltype(cc), se::outer_strided_map<float, Eigen::RowMajor>>);
    for (std::size_t i = 0; i < 6; ++i)
      for (std::size_t j = 0; j < 4; ++j) {
        CHECK(cc(Eigen::Index(i), Eigen::Index(j)) == c2(i, 1 + j));
        CHECK(fc(Eigen::Index(i), Eigen::Index(j)) == f2(i, 1 + j));
      }
    CHECK_THROWS_AS(se::cols(c2, 5, 3), std::out_of_range);
    fr.setZero();  // writes land in the right places
    CHECK(f2(2, 6) == 0.f);
    CHECK(f2(5, 6) != 0.f);
  }
  CHECK(names.left().empty());
}

namespace {
// An array type that guarantees less: the adapter reads its own declaration.
struct sixteen_byte_array {
  static constexpr std::size_t alignment = 16;
};

// A Map's alignment option and stride type.
template <class M>
struct map_traits;
template <class P, int O, class S>
struct map_traits<Eigen::Map<P, O, S>> {
  static constexpr int options = O;
  using stride = S;
};
}  // namespace

TEST_CASE("each view claims the alignment its array type guarantees, and no more") {
  static_assert(se::alignment_of<ndarray<double>> == Eigen::Aligned64);
  static_assert(se::alignment_of<ndarray<const float>> == Eigen::Aligned64);
  static_assert(se::alignment_of<sixteen_byte_array> == Eigen::Aligned16);
  static_assert(se::alignment_flag(1) == Eigen::Unaligned);
  using F = decltype(se::frame(std::declval<const ndarray<double>&>(), 0));
  using B = decltype(se::frames<Eigen::ColMajor>(std::declval<const ndarray<double>&>(), 0, 1));
  using R = decltype(se::rows<Eigen::ColMajor>(std::declval<const ndarray<double>&>(), 0, 1));
  static_assert(map_traits<F>::options == Eigen::Unaligned);
  static_assert(map_traits<B>::options == Eigen::Unaligned);
  static_assert(std::is_same_v<map_traits<R>::stride, Eigen::OuterStride<>>);
  static_assert(R::InnerStrideAtCompileTime == 1);  // vectorisation stays on
  static_assert(F::InnerStrideAtCompileTime == 1);
  test::names names;
  {
    manager m(names.options());
    // 3 x 3 frames of double are 72 bytes: frame 1 starts unaligned, and
    // Eigen works on it without complaint because nothing is claimed.
    auto s = m.from_shape<double>({3, 3, 3});
    auto f = se::frame(s, 1);
    CHECK(reinterpret_cast<std::uintptr_t>(f.data()) % 64 != 0);
    f.setConstant(1.0);
    CHECK(f.sum() == 9.0);
  }
  CHECK(names.left().empty());
}

TEST_CASE("read-only arrays give const maps") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<double>({2, 2});
    se::matrix(a).setIdentity();
    ndarray<const double> ro = ndarray<const double>::attach(a.name());
    auto cm = se::matrix(ro);
    static_assert(std::is_const_v<std::remove_pointer_t<decltype(cm.data())>>);
    static_assert(std::is_const_v<std::remove_pointer_t<decltype(se::flat(ro).data())>>);
    CHECK(cm.trace() == 2.0);
    auto t = se::tensor<2>(ro);
    CHECK(t(1, 1) == 1.0);
  }
  CHECK(names.left().empty());
}

TEST_CASE("views whose rank or order does not fit are refused") {
  test::names names;
  {
    manager m(names.options());
    auto s = m.from_shape<float>({2, 3, 4});
    auto c = m.from_shape<float>({3, 4});
    auto f = m.from_shape<float>({3, 4}, test::fortran());
    CHECK_THROWS_AS(se::matrix(s), rank_mismatch);
    CHECK_THROWS_WITH(se::matrix(s), Catch::Contains("is 3-d") && Catch::Contains("frame(a, k)"));
    CHECK_THROWS_AS(se::vector(c), rank_mismatch);
    CHECK_THROWS_AS(se::frame(c, 0), rank_mismatch);
    CHECK_THROWS_AS(se::rows(s, 0, 1), rank_mismatch);
    CHECK_THROWS_AS(se::tensor<2>(s), rank_mismatch);
    CHECK_THROWS_AS(se::matrix(f), order_mismatch);
    CHECK_THROWS_WITH(se::matrix(f), Catch::Contains("matrix<Eigen::ColMajor>"));
    CHECK_THROWS_AS(se::matrix<Eigen::ColMajor>(c), order_mismatch);
    CHECK_THROWS_AS((se::tensor<3, Eigen::ColMajor>(s)), order_mismatch);
    CHECK_THROWS_AS(se::frame(s, 2), std::out_of_range);
    CHECK_THROWS_AS(se::frames(s, 1, 2), std::out_of_range);
    CHECK_THROWS_AS(se::rows(c, 3, 1), std::out_of_range);
    CHECK_NOTHROW(se::rows(c, 3, 0));
  }
  CHECK(names.left().empty());
}

TEST_CASE("writes through a map in a forked child are seen by the parent") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<double>({8, 8});
    auto s = m.from_shape<float>({4, 8, 8});
    const int status = test::in_child([&] {
      se::matrix(a).setConstant(3.5);
      se::frame(s, 2).setConstant(1.f);
      return 0;
    });
    CHECK(test::exited_with(status, 0));
    CHECK(se::matrix(a).sum() == 3.5 * 64);
    CHECK(se::frames(s, 0, 4).rowwise().sum()(2) == 64.f);
    CHECK(se::flat(s).sum() == 64.f);
  }
  CHECK(names.left().empty());
}

TEST_CASE("a PartialPivLU solve and a GEMM on shared memory are bit-identical to private ones") {
  test::names names;
  {
    manager m(names.options());
    const Eigen::Index n = 97;  // odd, so that no size is a multiple of a packet
    const Eigen::MatrixXd A0 = Eigen::MatrixXd::Random(n, n);
    const Eigen::MatrixXd B0 = Eigen::MatrixXd::Random(n, n);
    const Eigen::VectorXd b0 = Eigen::VectorXd::Random(n);

    Eigen::setNbThreads(1);  // the same blocking on both sides
    // shared: in place, and the GEMM computed by a forked worker
    auto A = from_array(m, A0);
    auto B = from_array(m, B0);
    auto C = m.from_shape<double>({std::size_t(n), std::size_t(n)}, test::fortran());
    auto x = m.from_shape<double>({std::size_t(n)});
    fork_workers(1, [&] {
      se::matrix<Eigen::ColMajor>(C).noalias() =
          se::matrix<Eigen::ColMajor>(A) * se::matrix<Eigen::ColMajor>(B);
    });
    auto Am = se::matrix<Eigen::ColMajor>(A);
    Eigen::PartialPivLU<Eigen::Ref<Eigen::MatrixXd>> lu(Am);  // decomposes in shared memory
    se::vector(x) = lu.solve(b0);

    // private: the same computations on page-aligned private buffers
    const std::size_t bytes = std::size_t(n * n) * sizeof(double);
    private_buffer pa(bytes), pb(bytes), pc(bytes), px(std::size_t(n) * sizeof(double));
    Eigen::Map<Eigen::MatrixXd, Eigen::Aligned64> PA(pa.as<double>(), n, n),
        PB(pb.as<double>(), n, n), PC(pc.as<double>(), n, n);
    Eigen::Map<Eigen::VectorXd, Eigen::Aligned64> PX(px.as<double>(), n);
    PA = A0;
    PB = B0;
    PC.noalias() = PA * PB;
    Eigen::PartialPivLU<Eigen::Ref<Eigen::MatrixXd>> plu(PA);
    PX = plu.solve(b0);

    CHECK(std::memcmp(C.data(), PC.data(), bytes) == 0);
    CHECK(std::memcmp(A.data(), PA.data(), bytes) == 0);  // the LU factors
    CHECK(std::memcmp(x.data(), PX.data(), std::size_t(n) * sizeof(double)) == 0);
    CHECK((A0 * se::vector(x) - b0).norm() < 1e-9);
  }
  CHECK(names.left().empty());
}

TEST_CASE("a sum over an unaligned frame matches a private buffer at the same offset") {
  test::names names;
  {
    manager m(names.options());
    auto s = m.from_shape<float>({3, 37, 29});
    Eigen::MatrixXf noise = Eigen::MatrixXf::Random(37 * 3, 29);
    std::memcpy(s.data(), noise.data(), s.nbytes());
    auto f = se::frame(s, 1);
    const std::size_t offset = (reinterpret_cast<std::uintptr_t>(f.data()) % 4096);
    private_buffer p(37 * 29 * sizeof(float), offset);
    std::memcpy(p.data, f.data(), 37 * 29 * sizeof(float));
    Eigen::Map<Eigen::Matrix<float, -1, -1, Eigen::RowMajor>> pf(p.as<float>(), 37, 29);
    const float a = f.sum(), b = pf.sum();
    CHECK(std::memcmp(&a, &b, sizeof a) == 0);
    const float c = f.squaredNorm(), d = pf.squaredNorm();
    CHECK(std::memcmp(&c, &d, sizeof c) == 0);
  }
  CHECK(names.left().empty());
}

TEST_CASE("from_array keeps an Eigen expression's value and storage order") {
  test::names names;
  {
    manager m(names.options());
    const Eigen::MatrixXd A = Eigen::MatrixXd::Random(5, 4);  // column-major
    const Eigen::Matrix<double, -1, -1, Eigen::RowMajor> R = A;
    const Eigen::VectorXf v = Eigen::VectorXf::LinSpaced(7, 0.f, 6.f);

    auto a = from_array(m, A);
    CHECK(a.storage_order() == order::column_major);
    CHECK(a.shape() == shape_type{5, 4});
    CHECK(se::matrix<Eigen::ColMajor>(a) == A);
    auto r = from_array(m, R);
    CHECK(r.storage_order() == order::row_major);
    CHECK(se::matrix(r) == R);
    auto p = from_array(m, A * A.transpose());  // a product, evaluated into shared memory
    CHECK(p.shape() == shape_type{5, 5});
    CHECK(se::matrix<Eigen::ColMajor>(p).isApprox(A * A.transpose()));
    auto blk = from_array(m, A.block(1, 1, 3, 2));  // not packed: evaluated
    CHECK(se::matrix<Eigen::ColMajor>(blk) == A.block(1, 1, 3, 2));
    auto col = from_array(m, A.col(2));  // packed: copied in one piece
    CHECK(col.shape() == shape_type{5});
    CHECK(se::vector(col) == A.col(2));
    auto arr = from_array(m, (A.array() * 2.0 + 1.0));
    CHECK(se::matrix<Eigen::ColMajor>(arr) == (A.array() * 2.0 + 1.0).matrix());
    auto vv = from_array(m, v, anonymous{});
    CHECK(vv.name().empty());
    CHECK(se::vector(vv) == v);
    auto rowvec = from_array(m, R.row(1));
    CHECK(rowvec.shape() == shape_type{4});
    CHECK(se::vector(rowvec) == R.row(1).transpose());
    CHECK(ndarray<double>::attach(a.name()).storage_order() == order::column_major);
  }
  CHECK(names.left().empty());
}

TEST_CASE("a TensorMap views a whole N-d array in its storage order") {
  test::names names;
  {
    manager m(names.options());
    auto c = m.from_shape<double>({2, 3, 4});
    auto f = m.from_shape<double>({2, 3, 4}, test::fortran());
    test::iota(c);
    test::iota(f);
    auto tc = se::tensor<3>(c);
    auto tf = se::tensor<3, Eigen::ColMajor>(f);
    for (Eigen::Index i = 0; i < 2; ++i)
      for (Eigen::Index j = 0; j < 3; ++j)
        for (Eigen::Index k = 0; k < 4; ++k) {
          CHECK(tc(i, j, k) == c(i, j, k));
          CHECK(tf(i, j, k) == f(i, j, k));
        }
    const Eigen::Tensor<double, 0, Eigen::RowMajor> total = tc.sum();
    CHECK(total() == 276.0);
    tc = tc * 2.0;
    CHECK(c(1, 2, 3) == 46.0);
  }
  CHECK(names.left().empty());
}

TEST_CASE("forked workers run Eigen on one thread") {
#if !defined(EIGEN_HAS_OPENMP)
  test::skip("built without OpenMP, where Eigen is single-threaded anyway");
  return;
#endif
  Eigen::setNbThreads(2);
  REQUIRE(Eigen::nbThreads() == 2);
  const int status = test::in_child([] {
    if (Eigen::nbThreads() != 2) return 2;  // a child inherits its parent's setting ...
    run_worker_init();                      // ... until the worker hook runs
    return Eigen::nbThreads() == 1 ? 0 : 1;
  });
  CHECK(test::exited_with(status, 0));
  test::names names;
  {
    manager m(names.options());
    auto seen = m.from_shape<int>({3});
    fork_workers(2, [&](const worker& w) { seen(w.rank()) = Eigen::nbThreads(); });
    CHECK(seen(0) == 1);  // fork_workers runs the hook in each worker
    CHECK(seen(1) == 1);
    int* p = seen.data();
    process_pool pool(1);
    pool.run([](int* x) { x[2] = Eigen::nbThreads(); }, p);
    CHECK(seen(2) == 1);
  }
  CHECK(Eigen::nbThreads() == 2);  // the parent keeps its own
  CHECK(names.left().empty());
}

TEST_CASE("a view of an empty handle is an error, not a null map") {
  ndarray<double> none;
  CHECK_THROWS_AS(se::tensor<0>(none), error);
  CHECK_THROWS_WITH(se::flat(none), Catch::Contains("empty ndarray handle"));
  CHECK_THROWS_AS(se::vector(none), error);
  CHECK_THROWS_AS(se::matrix(none), error);
  CHECK_THROWS_AS(se::frame(none, 0), error);
}

TEST_CASE("from_array of transposes and non-packed blocks keeps every value") {
  test::names names;
  {
    manager m(names.options());
    const Eigen::Matrix<float, -1, -1, Eigen::RowMajor> R =
        Eigen::Matrix<float, -1, -1, Eigen::RowMajor>::Random(6, 5);
    const Eigen::MatrixXf C = R;
    auto t = from_array(m, C.transpose());  // a transpose of column-major data is row-major
    CHECK(t.storage_order() == order::row_major);
    CHECK(se::matrix(t) == C.transpose());
    auto b = from_array(m, R.block(1, 2, 4, 3));  // row-major, not packed
    CHECK(b.storage_order() == order::row_major);
    CHECK(se::matrix(b) == R.block(1, 2, 4, 3));
    auto rt = from_array(m, R.transpose());
    CHECK(rt.storage_order() == order::column_major);
    CHECK(se::matrix<Eigen::ColMajor>(rt) == R.transpose());
    auto e = from_array(m, Eigen::MatrixXf(0, 3));
    CHECK(e.shape() == shape_type{0, 3});
  }
  CHECK(names.left().empty());
}

TEST_CASE(
    "a ring's frames and loans are viewed as any array: a frame goes straight to Eigen code") {
  test::names names;
  {
    manager m(names.options());
    ring_options o;
    o.slots = 2;
    auto w = m.ring<float>(names("eig"), {3, 4}, o);
    auto r = ring_reader<float>::attach(names("eig"));
    auto l = w.loan();
    auto into = se::matrix(l);  // a writable Map of the slot, in place
    STATIC_REQUIRE(!std::is_const_v<std::remove_pointer_t<decltype(into.data())>>);
    CHECK(into.data() == l.data());
    into.setConstant(2.0f);
    into(1, 2) = 5.0f;
    w.publish(std::move(l));
    auto f = r.next(std::chrono::seconds(1));
    REQUIRE(f);
    auto view = se::matrix(*f);  // read-only, the slot's own memory
    STATIC_REQUIRE(std::is_const_v<std::remove_pointer_t<decltype(view.data())>>);
    CHECK(view.data() == f->data());
    CHECK(view.rows() == 3);
    CHECK(view.cols() == 4);
    CHECK(view(1, 2) == 5.0f);
    CHECK(view.sum() == Approx(2.0f * 11 + 5.0f));
    CHECK(f->valid());
    // A column-major ring gives column-major views only.
    ring_options fo;
    fo.order = order::column_major;
    auto wf = m.ring<float>(names("eigf"), {3, 4}, fo);
    auto lf = wf.loan();
    CHECK_THROWS_AS(se::matrix(lf), order_mismatch);
    CHECK(se::matrix<Eigen::ColMajor>(lf).rows() == 3);
  }
  CHECK(names.left().empty());
}

TEST_CASE("an array_ref is viewed as its array: map and frame give Maps of the same memory") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<float>({3, 4, 5});
    for (std::size_t i = 0; i < a.size(); ++i)
      a.data()[i] = float(i);
    const auto r = ref<3>(a);
    auto f = se::frame(r, 2);  // frame 2 of the stack, through the reference
    CHECK(f.data() == a.data() + 2 * 20);
    CHECK(f.rows() == 4);
    CHECK(f.cols() == 5);
    CHECK(f(1, 3) == a(2, 1, 3));
    f(0, 0) = -1.0f;
    CHECK(a(2, 0, 0) == -1.0f);
    auto b = m.from_shape<double>({2, 3});
    const auto r2 = ref<2>(b);
    CHECK(se::map(r2).rows() == 2);
    CHECK(se::map(r2).cols() == 3);
  }
  CHECK(names.left().empty());
}
