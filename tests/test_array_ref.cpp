// array_ref<T, Rank>: the trivially copyable view a process_pool job
// carries; the adapters' views over it; and the pool's check that it refers
// to an array its workers have mapped.
#include <catch2/catch.hpp>
#include <cstdint>
#include <shmarray/eigen.hpp>
#include <shmarray/shmarray.hpp>
#include <shmarray/xtensor.hpp>
#include <type_traits>

#include "workers_support.hpp"

TEST_CASE("an array_ref is trivially copyable, without padding, and small") {
  STATIC_REQUIRE(std::is_trivially_copyable_v<array_ref<float, 3>>);
  STATIC_REQUIRE(std::has_unique_object_representations_v<array_ref<float, 3>>);
  STATIC_REQUIRE(sizeof(array_ref<float, 3>) == 8 + 3 * 8 + 3 * 8 + 8);
  STATIC_REQUIRE(sizeof(array_ref<float, 3>) <= 64);
  STATIC_REQUIRE(array_ref<double, 2>::ndim() == 2);
}

TEST_CASE("an array_ref reads and writes the array's elements") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<std::int32_t>({2, 3, 4});
    auto r = ref<3>(a);
    CHECK(r.data() == a.data());
    CHECK(r.size() == 24);
    CHECK(r.shape(0) == 2);
    CHECK(r.shape(1) == 3);
    CHECK(r.extent(2) == 4);
    CHECK(r.stride(0) == 12);
    CHECK(r.stride(2) == 1);
    CHECK(r.storage_order() == order::row_major);
    CHECK(r.name() == a.name());
    r(1, 2, 3) = 7;
    CHECK(a(1, 2, 3) == 7);
    a(0, 1, 2) = 5;
    CHECK(r(0, 1, 2) == 5);
    const array_ref<std::int32_t, 3> copy = r;  // a copy views the same memory
    CHECK(copy(1, 2, 3) == 7);
  }
  CHECK(names.left().empty());
}

TEST_CASE("an array_ref of the wrong rank is refused") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<double>({2, 3, 4});
    CHECK_THROWS_AS(ref<2>(a), rank_mismatch);
    CHECK_THROWS_WITH(ref<2>(a), Catch::Contains("is 3-d, but an array_ref of rank 2"));
    CHECK_THROWS_AS((array_ref<double, 1>(ndarray<double>())), error);
  }
  CHECK(names.left().empty());
}

TEST_CASE("Eigen and xtensor views take an array_ref") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<double>({3, 2, 4});  // 3 frames of 2 x 4
    const auto r = ref<3>(a);
    auto f = eigen::frame(r, 1);
    CHECK(f.rows() == 2);
    CHECK(f.cols() == 4);
    f(1, 3) = 9.0;
    CHECK(a(1, 1, 3) == 9.0);
    auto x = shmarray::adapt(r);
    CHECK(x.dimension() == 3);
    CHECK(x(1, 1, 3) == 9.0);
    x(2, 0, 0) = 4.0;
    CHECK(a(2, 0, 0) == 4.0);
    auto mat = m.from_shape<float>({2, 2});
    const auto r2 = ref<2>(mat);
    eigen::map(r2).setConstant(1.5f);
    CHECK(mat(1, 1) == 1.5f);
  }
  CHECK(names.left().empty());
}

TEST_CASE("a pool job over an array_ref of an array made before the pool uses Eigen's views") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<double>({4, 3, 3});
    process_pool pool(2);
    pool.parallel_for(
        0, 4,
        [](int k, const array_ref<double, 3>& s) {
          eigen::frame(s, std::size_t(k)).setConstant(k);
        },
        ref<3>(a));
    for (std::size_t k = 0; k < 4; ++k)
      CHECK(a(k, 2, 2) == double(k));
  }
  CHECK(names.left().empty());
}

TEST_CASE("a pool refuses an array_ref of an array made after the pool") {
  test::names names;
  {
    manager m(names.options());
    process_pool pool(2);
    auto late = m.from_shape<double>({8});
    const auto r = ref<1>(late);
    auto job = [](int i, const array_ref<double, 1>& x) { x(i) = 1.0; };
    CHECK_THROWS_AS(pool.parallel_for(0, 8, job, r), invalid_job);
    CHECK_THROWS_WITH(pool.parallel_for(0, 8, job, r),
                      Catch::Contains("refers to segment \"" + late.name() +
                                      "\", made after the pool was created: its workers do not "
                                      "have it mapped; create arrays before the pool, or pass a "
                                      "fixed_name and attach it in the job"));
    CHECK_THROWS_AS(pool.run([](const array_ref<double, 1>& x) { x(0) = 1.0; }, r), invalid_job);
    CHECK(late(0) == 0.0);           // nothing ran
    pool.run([](const worker&) {});  // the pool is still good
  }
  CHECK(names.left().empty());
}
