#include <catch2/catch.hpp>

#include <cstring>
#include <numeric>
#include <shmarray/array_ref.hpp>
#include <shmarray/ring.hpp>
#include <shmarray/xtensor.hpp>
#include <tuple>
#include <type_traits>
#include <xtensor/xbuilder.hpp>
#include <xtensor/xmanipulation.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xrandom.hpp>
#include <xtensor/xview.hpp>

#include "support.hpp"

using namespace shmarray;

namespace {

template <class V>
constexpr xt::layout_type layout_of = std::decay_t<V>::static_layout;

}  // namespace

TEST_CASE("adapt views a whole array with a static layout in its storage order") {
  test::names names;
  {
    manager m(names.options());
    auto c = m.from_shape<double>({3, 4});
    auto f = m.from_shape<double>({3, 4}, test::fortran());
    test::iota(c);
    test::iota(f);
    auto xc = adapt(c);
    auto xf = adapt<xt::layout_type::column_major>(f);
    auto x2 = adapt<2>(c);
    static_assert(layout_of<decltype(xc)> == xt::layout_type::row_major);
    static_assert(layout_of<decltype(xf)> == xt::layout_type::column_major);
    static_assert(layout_of<decltype(x2)> == xt::layout_type::row_major);
    static_assert(std::tuple_size<std::decay_t<decltype(x2.shape())>>::value == 2);
    CHECK(xc.data() == c.data());
    for (std::size_t i = 0; i < 3; ++i)
      for (std::size_t j = 0; j < 4; ++j) {
        CHECK(xc(i, j) == c(i, j));
        CHECK(xf(i, j) == f(i, j));
        CHECK(x2(i, j) == c(i, j));
      }
    xc(2, 3) = -1.0;
    CHECK(c(2, 3) == -1.0);
  }
  CHECK(names.left().empty());
}

TEST_CASE("frames and rows are the right elements, static-layout where contiguous") {
  test::names names;
  {
    manager m(names.options());
    const std::size_t n = 4, h = 3, w = 5;
    auto c = m.from_shape<float>({n, h, w});  // row-major: frames x height x width
    auto f =
        m.from_shape<float>({h, w, n}, test::fortran());  // column-major: height x width x frames
    test::iota(c);
    test::iota(f);
    constexpr auto F = xt::layout_type::column_major;
    auto fr = adapt_frame(c, 2);
    auto fs = adapt_frames(c, 1, 2);
    auto ffr = adapt_frame<F>(f, 2);
    auto ffs = adapt_frames<F>(f, 1, 2);
    static_assert(layout_of<decltype(fr)> == xt::layout_type::row_major);
    static_assert(layout_of<decltype(fs)> == xt::layout_type::row_major);
    static_assert(layout_of<decltype(ffr)> == F);
    static_assert(layout_of<decltype(ffs)> == F);
    CHECK(ffs.shape(2) == 2);
    for (std::size_t i = 0; i < h; ++i)
      for (std::size_t j = 0; j < w; ++j) {
        CHECK(fr(i, j) == c(2, i, j));
        CHECK(ffr(i, j) == f(i, j, 2));
        for (std::size_t k = 0; k < 2; ++k) {
          CHECK(fs(k, i, j) == c(1 + k, i, j));
          CHECK(ffs(i, j, k) == f(i, j, 1 + k));
        }
      }
    auto g = m.from_shape<float>({h, w, n}, test::fortran());
    adapt_frames<F>(g, 1, 2).fill(1.f);  // writes exactly those frames
    for (std::size_t k = 0; k < n; ++k)
      CHECK(xt::sum(adapt_frame<F>(g, k))() == (k == 1 || k == 2 ? float(h * w) : 0.f));

    auto r = m.from_shape<double>({6, 7});
    auto rf = m.from_shape<double>({6, 7}, test::fortran());
    test::iota(r);
    test::iota(rf);
    auto rows = adapt_rows(r, 2, 3);
    auto frows = adapt_rows<F>(rf, 2, 3);
    static_assert(layout_of<decltype(rows)> == xt::layout_type::row_major);
    for (std::size_t i = 0; i < 3; ++i)
      for (std::size_t j = 0; j < 7; ++j) {
        CHECK(rows(i, j) == r(2 + i, j));
        CHECK(frows(i, j) == rf(2 + i, j));
      }
    rows.fill(0.0);
    frows.fill(0.0);
    CHECK(r(4, 6) == 0.0);
    CHECK(r(5, 0) != 0.0);
    CHECK(rf(4, 6) == 0.0);
    CHECK(rf(5, 6) != 0.0);
    CHECK(rf(1, 6) != 0.0);
  }
  CHECK(names.left().empty());
}

TEST_CASE("views whose rank or order does not fit are refused") {
  test::names names;
  {
    manager m(names.options());
    auto s = m.from_shape<float>({2, 3, 4});
    auto c = m.from_shape<float>({3, 4});
    auto f = m.from_shape<float>({3, 4, 2}, test::fortran());
    CHECK_THROWS_AS(adapt<2>(s), rank_mismatch);
    CHECK_THROWS_AS(shared_adapt<2>(s), rank_mismatch);
    CHECK_THROWS_AS(adapt_frame(c, 0), rank_mismatch);
    CHECK_THROWS_AS(adapt_rows(s, 0, 1), rank_mismatch);
    CHECK_THROWS_AS(adapt(f), order_mismatch);
    CHECK_THROWS_WITH(adapt(f), Catch::Contains("adapt<xt::layout_type::column_major>"));
    CHECK_THROWS_AS(adapt<xt::layout_type::column_major>(c), order_mismatch);
    CHECK_THROWS_AS(adapt_frame(f, 0), order_mismatch);
    CHECK_THROWS_AS(adapt_frame(s, 2), std::out_of_range);
    CHECK_THROWS_AS(adapt_frames(s, 1, 2), std::out_of_range);
    CHECK_THROWS_AS(adapt_frames<xt::layout_type::column_major>(f, 4, 1), std::out_of_range);
  }
  CHECK(names.left().empty());
}

TEST_CASE("shared_adapt keeps the memory mapped after every handle is gone") {
  test::names names;
  const void* where = nullptr;
  {
    auto view = [&] {
      manager m(names.options());
      auto a = m.from_shape<int>({4, 4});
      test::iota(a);
      where = a.data();
      return shared_adapt<2>(a);
    }();  // the manager and every ndarray handle are gone here
    CHECK(names.left().empty());
    CHECK(detail::mapping_kib(where, {"Size"}) > 0);
    CHECK(view(3, 3) == 15);
    auto copy = view;
    CHECK(xt::sum(copy)() == 120);
    auto dyn = [&] {
      manager m(names.options());
      auto a = m.from_shape<int>({2, 2});
      return shared_adapt(a);
    }();
    CHECK(dyn.dimension() == 2);
  }
  CHECK(detail::mapping_kib(where, {"Size"}) == 0);  // the last view let go
}

TEST_CASE("views compose with xt::view, reductions, broadcasting and noalias") {
  test::names names;
  {
    manager m(names.options());
    xt::random::seed(7);
    const xt::xarray<double> a0 = xt::random::rand<double>({64, 33});
    const xt::xarray<double> b0 = xt::random::rand<double>({33});
    auto a = from_array(m, a0);
    auto b = from_array(m, b0);
    auto c = m.from_shape<double>({64, 33});
    xt::noalias(adapt(c)) = adapt(a) * adapt(b) + xt::view(adapt(a), xt::all(), xt::range(0, 1));
    const xt::xarray<double> expect = a0 * b0 + xt::view(a0, xt::all(), xt::range(0, 1));
    CHECK(bool(adapt(c) == expect));  // bit for bit
    CHECK(xt::sum(adapt(a))() == xt::sum(a0)());
    CHECK(xt::amax(adapt<2>(c))() == xt::amax(expect)());
    const xt::xarray<double> colsum = xt::sum(adapt(a), {0});
    CHECK(bool(colsum == xt::xarray<double>(xt::sum(a0, {0}))));
    auto row = xt::view(adapt(c), 5, xt::all());
    CHECK(row(32) == expect(5, 32));
  }
  CHECK(names.left().empty());
}

TEST_CASE("writes through a view in a forked child are seen by the parent") {
  test::names names;
  {
    manager m(names.options());
    auto s = m.from_shape<float>({3, 8, 8});
    const int status = test::in_child([&] {
      adapt_frame(s, 1).fill(2.f);
      xt::noalias(adapt_frame(s, 2)) = adapt_frame(s, 1) * 3.f;
      return 0;
    });
    CHECK(test::exited_with(status, 0));
    CHECK(xt::sum(adapt_frame(s, 1))() == 128.f);
    CHECK(xt::sum(adapt_frame(s, 2))() == 384.f);
  }
  CHECK(names.left().empty());
}

TEST_CASE("read-only arrays give read-only views") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<double>({2, 3});
    adapt(a).fill(1.5);
    auto ro = ndarray<const double>::attach(a.name());
    auto v = adapt(ro);
    static_assert(std::is_const_v<std::remove_pointer_t<decltype(v.data())>>);
    CHECK(xt::sum(v)() == 9.0);
    CHECK(xt::sum(shared_adapt<2>(ro))() == 9.0);
  }
  CHECK(names.left().empty());
}

TEST_CASE("in a child, noalias writes a shared container in place; a plain += does not") {
  shmarray::xarray<double> a = xt::zeros<double>({4, 4});
  const xt::xarray<double> b = xt::ones<double>({4, 4});
  const int plain = test::in_child([&] {
    a += b;  // xtensor evaluates into a temporary, allocated after the fork, and swaps it in
    return 0;
  });
  CHECK(test::exited_with(plain, 0));
  CHECK(xt::sum(a)() == 0.0);  // the parent never sees it: as documented
  const int in_place = test::in_child([&] {
    xt::noalias(a) += b;
    return 0;
  });
  CHECK(test::exited_with(in_place, 0));
  CHECK(xt::sum(a)() == 16.0);
}

TEST_CASE("assignment through column-major views writes the right elements") {
  test::names names;
  {
    manager m(names.options());
    create_options f = test::fortran();
    auto s = m.from_shape<double>({4, 5, 3}, f);  // height x width x frames
    auto r = m.from_shape<double>({6, 4}, f);
    constexpr auto F = xt::layout_type::column_major;
    xt::noalias(adapt_frame<F>(s, 1)) = xt::ones<double>({4, 5}) * 2.0;
    adapt_rows<F>(r, 2, 3) = xt::ones<double>({3, 4});  // strided: an xt::view
    for (std::size_t k = 0; k < 3; ++k)
      for (std::size_t i = 0; i < 4; ++i)
        for (std::size_t j = 0; j < 5; ++j)
          CHECK(s(i, j, k) == (k == 1 ? 2.0 : 0.0));
    for (std::size_t i = 0; i < 6; ++i)
      for (std::size_t j = 0; j < 4; ++j)
        CHECK(r(i, j) == (i >= 2 && i < 5 ? 1.0 : 0.0));
  }
  CHECK(names.left().empty());
}

TEST_CASE("owning views of frames and rows keep the memory mapped") {
  const void* where = nullptr;
  {
    auto views = [&] {
      manager m;
      auto s = m.from_shape<int>({3, 2, 2}, anonymous{});
      std::iota(s.begin(), s.end(), 0);
      where = s.data();
      return std::make_tuple(shared_adapt_frame(s, 1), shared_adapt_frames(s, 1, 2),
                             shared_adapt_rows(s.reshape({6, 2}), 4, 2));
    }();
    auto& [frame, frames, rows] = views;
    CHECK(frame(1, 1) == 7);
    CHECK(frames(1, 0, 0) == 8);
    CHECK(rows(1, 1) == 11);
    static_assert(layout_of<decltype(frame)> == xt::layout_type::row_major);
  }
  CHECK(detail::mapping_kib(where, {"Size"}) == 0);
}

TEST_CASE("a view of an empty handle is an error") {
  ndarray<double> none;
  CHECK_THROWS_AS(adapt(none), error);
  CHECK_THROWS_WITH(shared_adapt(none), Catch::Contains("empty ndarray handle"));
  CHECK_THROWS_AS(adapt<1>(none), error);
  CHECK_THROWS_AS(adapt_frame(none, 0), error);
}

TEST_CASE("shmarray::xarray and xtensor made before fork are shared with the children") {
  shmarray::xarray<double> a = xt::zeros<double>({16, 16});
  shmarray::xtensor<float, 2> t = xt::ones<float>({8, 4});
  const int status = test::in_child([&] {
    a(3, 4) = 7.0;
    t *= 2.f;
    return 0;
  });
  CHECK(test::exited_with(status, 0));
  CHECK(a(3, 4) == 7.0);
  CHECK(xt::sum(t)() == 64.f);
  // a resize in a child moves that child's container to memory of its own
  const int resized = test::in_child([&] {
    a.resize({32, 32});
    a.fill(1.0);
    return 0;
  });
  CHECK(test::exited_with(resized, 0));
  CHECK(a.shape(0) == 16);
  CHECK(xt::sum(a)() == 7.0);
}

TEST_CASE("from_array keeps an xtensor expression's value and layout") {
  test::names names;
  {
    manager m(names.options());
    const xt::xarray<double> r = xt::arange<double>(12).reshape({3, 4});
    xt::xarray<double, xt::layout_type::column_major> f = r;
    auto ar = from_array(m, r);
    auto af = from_array(m, f);
    CHECK(ar.storage_order() == order::row_major);
    CHECK(af.storage_order() == order::column_major);
    CHECK(bool(adapt(ar) == r));
    CHECK(bool(adapt<xt::layout_type::column_major>(af) == r));
    auto e = from_array(m, r * 2.0 + 1.0);  // an expression, evaluated into shared memory
    CHECK(bool(adapt(e) == xt::xarray<double>(r * 2.0 + 1.0)));
    auto v = from_array(m, xt::view(r, xt::range(1, 3), xt::all()));  // contiguous: copied
    CHECK(v.shape() == shape_type{2, 4});
    CHECK(bool(adapt(v) == xt::view(r, xt::range(1, 3), xt::all())));
    const auto tr = xt::transpose(r);                          // strided
    const auto kept = xt::view(r, xt::keep(0, 2), xt::all());  // no data interface
    const auto rs = xt::reshape_view(r, {4, 3});
    const auto strided = xt::view(r, xt::all(), xt::range(0, 4, 2));
    const xt::xarray<double> fv = xt::view(f, 1, xt::all());  // of a column-major array
    auto a_tr = from_array(m, tr), a_kept = from_array(m, kept), a_rs = from_array(m, rs),
         a_strided = from_array(m, strided), a_fv = from_array(m, xt::view(f, 1, xt::all()));
    CHECK(a_tr.storage_order() == order::column_major);  // the transpose's own layout
    CHECK(bool(adapt<xt::layout_type::column_major>(a_tr) == tr));
    CHECK(bool(adapt(a_kept) == kept));
    CHECK(bool(adapt(a_rs) == rs));
    CHECK(bool(adapt(a_strided) == strided));
    CHECK(bool(adapt(a_fv) == fv));
    auto anon = from_array(m, xt::xtensor<int, 1>{1, 2, 3}, anonymous{});
    CHECK(anon.name().empty());
    CHECK(anon(2) == 3);
    auto copy = from_array(m, shared_adapt(ar));  // another shared array's view
    CHECK(copy.name() != ar.name());
    CHECK(bool(adapt(copy) == r));
  }
  CHECK(names.left().empty());
}

TEST_CASE("a ring's frames and loans are viewed by adapt as any array") {
  test::names names;
  {
    manager m(names.options());
    auto w = m.ring<double>(names("xt"), {2, 3}, {});
    auto r = ring_reader<double>::attach(names("xt"));
    auto l = w.loan();
    auto into = adapt(l);
    into = xt::arange<double>(6.0).reshape({2, 3});
    w.publish(std::move(l));
    auto f = r.next(std::chrono::seconds(1));
    REQUIRE(f);
    auto view = adapt(*f);
    CHECK(view.shape()[0] == 2);
    CHECK(view(1, 2) == 5.0);
    CHECK(xt::sum(view)() == 15.0);
    CHECK(&view(0, 0) == f->data());
    CHECK(f->valid());
  }
  CHECK(names.left().empty());
}

TEST_CASE("adapt views an array_ref as its array: the same memory in its order") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<double>({2, 3});
    test::iota(a);
    const auto r = shmarray::ref<2>(a);
    auto x = adapt(r);
    CHECK(x.shape()[0] == 2);
    CHECK(x.shape()[1] == 3);
    CHECK(x(1, 2) == 5.0);
    CHECK(&x(0, 0) == a.data());
    x(0, 1) = 7.0;
    CHECK(a(0, 1) == 7.0);
    auto f = m.from_shape<double>({2, 3}, test::fortran());
    const auto rf = shmarray::ref<2>(f);
    CHECK_THROWS_AS(adapt(rf), order_mismatch);
    CHECK(&adapt<xt::layout_type::column_major>(rf)(1, 0) == f.data() + 1);
  }
  CHECK(names.left().empty());
}
