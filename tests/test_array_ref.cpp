// array_ref<T, Rank>: a small, trivially copyable reference with a
// compile-time rank, what a process_pool job carries; and the pool's refusal
// of one to an array made after the pool.
#include <catch2/catch.hpp>
#include <cstdint>
#include <shmarray/shmarray.hpp>
#include <type_traits>

#include "workers_support.hpp"

TEST_CASE("an array_ref is trivially copyable, has no padding and is small") {
  using r3 = array_ref<float, 3>;
  STATIC_REQUIRE(std::is_trivially_copyable_v<r3>);
  STATIC_REQUIRE(std::has_unique_object_representations_v<r3>);
  STATIC_REQUIRE(sizeof(r3) == 64);  // pointer, 3 extents, 3 strides, the order
  STATIC_REQUIRE(sizeof(r3) < process_pool::max_job_bytes / 16);
  STATIC_REQUIRE(sizeof(array_ref<double, 1>) == 32);
}

TEST_CASE("an array_ref has the array's data, shape, strides and elements") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<std::int32_t>({2, 3, 4});
    for (std::size_t i = 0; i < a.size(); ++i)
      a.data()[i] = std::int32_t(i);
    const auto r = ref<3>(a);
    CHECK(r.data() == a.data());
    CHECK(r.shape(0) == 2);
    CHECK(r.extent(1) == 3);
    CHECK(r.shape()[2] == 4);
    CHECK(r.strides()[0] == 12);
    CHECK(r.stride(2) == 1);
    CHECK(r.size() == 24);
    CHECK(r.ndim() == 3);
    CHECK(r(1, 2, 3) == a(1, 2, 3));
    CHECK(r(1, 0, 2) == 14);
    CHECK(r.name() == a.name());
    r(0, 0, 0) = 99;
    CHECK(a(0, 0, 0) == 99);
    create_options co;
    co.order = order::column_major;
    auto f = m.from_shape<double>({2, 3}, co);
    const array_ref<double, 2> rf(f);
    CHECK(rf.storage_order() == order::column_major);
    CHECK(rf.stride(0) == 1);
    CHECK(rf.stride(1) == 2);
    CHECK_THROWS_AS(ref<2>(a), rank_mismatch);
    CHECK_THROWS_WITH(ref<2>(a), Contains("array_ref of rank 2"));
    CHECK_THROWS_AS(ref<1>(ndarray<double>()), error);
    CHECK_FALSE(array_ref<double, 1>());
  }
  CHECK(names.left().empty());
}

TEST_CASE("a pool job uses an array_ref of an array made before the pool") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<double>({4, 8, 8});
    process_pool pool(2);
    pool.parallel_for(
        std::size_t(0), std::size_t(4),
        [](std::size_t k, const array_ref<double, 3>& r) {
          for (std::size_t i = 0; i < r.shape(1); ++i)
            for (std::size_t j = 0; j < r.shape(2); ++j)
              r(k, i, j) = double(k * 100 + i * 10 + j);
        },
        ref<3>(a));
    CHECK(a(3, 7, 7) == 377.0);
    CHECK(a(1, 2, 3) == 123.0);
  }
  CHECK(names.left().empty());
}

TEST_CASE("a pool refuses an array_ref of an array made after the pool, naming it") {
  test::names names;
  {
    manager m(names.options());
    process_pool pool(1);
    auto later = m.from_shape<double>({16});  // not mapped in the pool's worker
    const auto r = ref<1>(later);
    CHECK_THROWS_AS(pool.run([](const array_ref<double, 1>& x) { x(0) = 1; }, r), invalid_job);
    CHECK_THROWS_WITH(pool.parallel_for(
                          0, 4, [](int i, const array_ref<double, 1>& x) { x(i) = 1; }, r),
                      Contains(later.name()) && Contains("made after the pool was created") &&
                          Contains("create arrays before the pool"));
    auto anon = m.from_shape<double>({4}, anonymous{});  // anonymous memory, also after
    CHECK_THROWS_WITH(pool.run([](const array_ref<double, 1>&) {}, ref<1>(anon)),
                      Contains("anonymous segment") && Contains("made after the pool"));
    CHECK(later(0) == 0.0);  // nothing ran
  }
  CHECK(names.left().empty());
}
