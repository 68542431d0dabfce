#include <catch2/catch.hpp>
#include <cstring>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <complex>
#include <cstdint>
#include <numeric>
#include <shmarray/manager.hpp>
#include <vector>

#include "support.hpp"

using namespace shmarray;

// The cases of shared_ndarray2's own test suite, in C++.

TEST_CASE("the main constructor wraps a segment whose size matches the shape exactly") {
  test::names names;
  const auto name = names("wrap");
  {
    ndarray<double> a(segment(create_only, posix_shm(name), 3 * 4 * sizeof(double)), {3, 4});
    CHECK(a.shape() == shape_type{3, 4});
    CHECK_FALSE(a.has_metadata());
    a(2, 3) = 7.0;
    // by name, as SharedNDArray(shm_name, shape, dtype)
    auto b = ndarray<double>::attach(name, {3, 4});
    CHECK(b(2, 3) == 7.0);
    auto c = ndarray<double>::attach(name, {4, 3}, order::column_major);
    CHECK(c.data() != nullptr);
    CHECK_THROWS_AS(ndarray<double>::attach(name, {3, 5}), shape_mismatch);
    CHECK_THROWS_WITH(ndarray<double>::attach(name, {3, 5}),
                      Catch::Contains("holds 96 bytes") && Catch::Contains("takes 120"));
    CHECK_THROWS_AS(ndarray<double>::attach(name, {2, 4}), shape_mismatch);
    CHECK_THROWS_AS(ndarray<float>::attach(name, {3, 4}), shape_mismatch);
    CHECK_THROWS_AS(ndarray<double>(segment(open_only, posix_shm(name)), {5}), shape_mismatch);
  }
  CHECK(remove(posix_shm(name)));
  CHECK(names.left().empty());
}

TEST_CASE("from_shape makes a zero-filled array of that shape and dtype") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<std::int32_t>({2, 3, 4});
    CHECK(a.shape() == shape_type{2, 3, 4});
    CHECK(a.ndim() == 3);
    CHECK(a.size() == 24);
    CHECK(a.nbytes() == 96);
    CHECK(a.dtype().str == "<i4");
    CHECK(a.has_metadata());
    CHECK(std::all_of(a.begin(), a.end(), [](std::int32_t x) { return x == 0; }));
    CHECK(a.name().rfind("/" + names.prefix(), 0) == 0);
    CHECK(names.exists(a.name()));
  }
  CHECK(names.left().empty());
}

TEST_CASE("from_array copies the data in") {
  test::names names;
  {
    manager m(names.options());
    std::vector<double> v(12);
    std::iota(v.begin(), v.end(), 0.5);
    auto a = m.from_array(v.data(), {3, 4});
    CHECK(std::equal(a.begin(), a.end(), v.begin()));
    CHECK(a(1, 2) == 6.5);
    v[0] = 100;  // a copy, not a view
    CHECK(a(0, 0) == 0.5);
    auto b = m.from_array(a);
    CHECK(b.name() != a.name());
    CHECK(std::equal(b.begin(), b.end(), a.begin()));
  }
  CHECK(names.left().empty());
}

TEST_CASE("reshape infers one -1 and refuses an impossible shape") {
  test::names names;
  {
    manager m(names.options());
    std::vector<std::int64_t> v(12);
    std::iota(v.begin(), v.end(), 0);
    auto a = m.from_array(v.data(), {12});
    auto b = a.reshape({2, -1});
    CHECK(b.shape() == shape_type{2, 6});
    CHECK(b.strides() == strides_type{6, 1});
    CHECK(b(1, 0) == 6);
    b(1, 1) = 70;  // the same memory
    CHECK(a(7) == 70);
    CHECK(a.reshape({-1, 3, 2}).shape() == shape_type{2, 3, 2});
    CHECK(a.reshape({3, 4}).reshape({-1}).shape() == shape_type{12});
    CHECK_THROWS_AS(a.reshape({5, -1}), shape_mismatch);
    CHECK_THROWS_WITH(a.reshape({5, -1}), Catch::Contains("size 12 into shape (5, -1)"));
    CHECK_THROWS_AS(a.reshape({5, 3}), shape_mismatch);
    CHECK_THROWS_AS(a.reshape({-1, -1}), invalid_shape);
    CHECK_THROWS_AS(a.reshape({-2, -6}), invalid_shape);
    CHECK_THROWS_AS(a.reshape({0, -1}), shape_mismatch);
    CHECK_THROWS_AS(a.reshape(std::vector<std::ptrdiff_t>(33, 1)), invalid_shape);
    CHECK_THROWS_AS(a.reshape({std::ptrdiff_t(1) << 62, std::ptrdiff_t(1) << 62}), shape_mismatch);
    CHECK(a.shape() == shape_type{12});  // the original is unchanged
  }
  CHECK(names.left().empty());
}

TEST_CASE("a forked child adding 10 to an int16 array is seen by the parent") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<std::int16_t>({5, 7});
    std::iota(a.begin(), a.end(), std::int16_t(0));
    const int status = test::in_child([a] {
      for (auto& x : a)
        x = std::int16_t(x + 10);
      return 0;
    });
    CHECK(test::exited_with(status, 0));
    for (std::size_t i = 0; i < a.size(); ++i)
      CHECK(a.data()[i] == std::int16_t(i + 10));
  }
  CHECK(names.left().empty());
}

// The rest of the handle's interface.

TEST_CASE("strides follow the storage order and element access uses them") {
  test::names names;
  {
    manager m(names.options());
    create_options f;
    f.order = order::column_major;
    auto c = m.from_shape<float>({2, 3, 4});
    auto fa = m.from_shape<float>({2, 3, 4}, f);
    CHECK(c.strides() == strides_type{12, 4, 1});
    CHECK(fa.strides() == strides_type{1, 2, 6});
    CHECK(fa.storage_order() == order::column_major);
    fa(1, 2, 3) = 9.f;
    CHECK(fa.data()[1 + 2 * 2 + 3 * 6] == 9.f);
    c(1, 2, 3) = 8.f;
    CHECK(c.data()[1 * 12 + 2 * 4 + 3] == 8.f);
    CHECK(c.at(1, 2, 3) == 8.f);
    CHECK(c.shape(2) == 4);
    // column-major from_array reads the input in column-major order
    const float in[6] = {1, 2, 3, 4, 5, 6};
    auto g = m.from_array(in, {2, 3}, f);
    CHECK(g(1, 0) == 2.f);
    CHECK(g(0, 1) == 3.f);
    // the order is part of the record
    CHECK(ndarray<float>::attach(g.name()).storage_order() == order::column_major);
  }
  CHECK(names.left().empty());
}

TEST_CASE("at() checks the index count and every index") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<double>({3, 4});
    a.at(2, 3) = 1.0;
    CHECK(a(2, 3) == 1.0);
    CHECK_THROWS_AS(a.at(3, 0), std::out_of_range);
    CHECK_THROWS_AS(a.at(0, 4), std::out_of_range);
    CHECK_THROWS_AS(a.at(-1, 0), std::out_of_range);
    CHECK_THROWS_AS(a.at(1), std::out_of_range);
    CHECK_THROWS_AS(a.at(1, 1, 1), std::out_of_range);
    CHECK_THROWS_WITH(a.at(0, 4), Catch::Contains("axis 1 with size 4"));
  }
  CHECK(names.left().empty());
}

TEST_CASE("fill and iteration cover every element in storage order") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<std::complex<double>>({4, 4});
    a.fill({1.0, -1.0});
    std::size_t n = 0;
    for (const auto& z : a)
      n += z == std::complex<double>(1.0, -1.0);
    CHECK(n == 16);
    CHECK(a.end() - a.begin() == 16);
  }
  CHECK(names.left().empty());
}

TEST_CASE("attach by name alone checks the dtype and names both") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<std::uint16_t>({10});
    CHECK_THROWS_AS(ndarray<double>::attach(a.name()), dtype_mismatch);
    CHECK_THROWS_WITH(ndarray<double>::attach(a.name()),
                      "shmarray: segment \"" + a.name() + "\" holds <u2, expected <f8");
    CHECK_THROWS_AS(ndarray<std::int16_t>::attach(a.name()), dtype_mismatch);
    CHECK_THROWS_AS(ndarray<double>::attach(a.name(), {10}), dtype_mismatch);
    CHECK_THROWS_AS(ndarray<std::uint16_t>::attach(a.name(), {5, 2}), shape_mismatch);
    CHECK_THROWS_AS(ndarray<std::uint16_t>::attach(a.name(), {10}, order::column_major),
                    shape_mismatch);
    CHECK(ndarray<std::uint16_t>::attach(a.name(), {10}).has_metadata());
    CHECK_THROWS_AS(ndarray<double>::attach(names("nothing")), not_found);
    CHECK_THROWS_AS(ndarray<double>::attach("bad/name"), invalid_name);
  }
  CHECK(names.left().empty());
}

TEST_CASE("handle copies share one mapping that outlives the manager's names") {
  test::names names;
  ndarray<int> kept;
  {
    manager m(names.options());
    auto a = m.from_shape<int>({100});
    kept = a;
    a(5) = 55;
    CHECK(kept(5) == 55);
  }
  CHECK(names.left().empty());  // the name is gone ...
  CHECK(kept(5) == 55);         // ... the memory stays while a handle holds it
  kept(6) = 66;
  CHECK(kept.size() == 100);
  // the mapping goes with the last copy
  const void* where = kept.data();
  CHECK(detail::mapping_kib(where, {"Size"}) > 0);
  ndarray<const int> view = kept;
  kept = {};
  CHECK(detail::mapping_kib(where, {"Size"}) > 0);  // the view still holds it
  view = {};
  CHECK(detail::mapping_kib(where, {"Size"}) == 0);
  ndarray<int> empty;
  CHECK(empty.size() == 0);
  CHECK(empty.data() == nullptr);
  CHECK(empty.name().empty());
}

TEST_CASE("a read-only handle reads the same memory and cannot write it", "[segv]") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<double>({8});
    a(3) = 3.0;
    ndarray<const double> view = a;  // from a writable handle
    CHECK(view(3) == 3.0);
    auto ro = ndarray<const double>::attach(a.name());  // mapped PROT_READ
    CHECK_FALSE(ro.mapped_segment().writable());
    CHECK(ro(3) == 3.0);
    a(3) = 4.0;
    CHECK(ro(3) == 4.0);
    const int status = test::in_child([&] {
      const_cast<double&>(ro(0)) = 1.0;  // must fault: the mapping has no write permission
      return 0;
    });
    CHECK(test::killed_by(status, SIGSEGV));
    // a read-only mapping cannot back a writable handle
    CHECK_THROWS_AS(
        ndarray<double>(segment(open_only, posix_shm(a.name()), access_mode::read_only)),
        access_denied);
  }
  CHECK(names.left().empty());
}

TEST_CASE("a raw segment of zero bytes is refused and leaves nothing") {
  test::names names;
  {
    manager m(names.options());
    const auto raw = test::raw();
    CHECK_THROWS_AS(m.from_shape<double>({0}, raw), invalid_shape);
    CHECK_THROWS_AS(m.from_shape<double>({4, 0}, raw), invalid_shape);
    CHECK_THROWS_AS(m.from_shape<double>({0}, posix_shm(names("zero")), raw), invalid_shape);
    CHECK(m.names().empty());
  }
  CHECK(names.left().empty());
}

TEST_CASE("overflowing shapes and ranks past 32 are refused and leave nothing") {
  test::names names;
  {
    manager m(names.options());
    const std::size_t big = std::size_t(1) << 62;
    CHECK_THROWS_AS(m.from_shape<double>({big, 4}), invalid_shape);
    CHECK_THROWS_AS(m.from_shape<double>({big}), invalid_shape);  // 2^65 bytes
    CHECK_THROWS_AS(m.from_shape<double>({0, big, big}), invalid_shape);
    CHECK_THROWS_AS(m.from_shape<double>({std::size_t(PTRDIFF_MAX) / 8 + 1}), invalid_shape);
    CHECK_THROWS_AS(m.from_shape<std::uint8_t>(shape_type(33, 1)), invalid_shape);
    CHECK_THROWS_WITH(m.from_shape<std::uint8_t>(shape_type(33, 1)), Catch::Contains("rank 33"));
    CHECK(m.from_shape<std::uint8_t>(shape_type(32, 1)).size() == 1);
  }
  CHECK(names.left().empty());
}

TEST_CASE("an explicit-shape attach during creation is not_ready, never raw data") {
  test::names names;
  const auto name = names("creating");
  // what a creator has made before it writes the record: the full size, all zero
  const int fd = ::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  REQUIRE(fd >= 0);
  REQUIRE(::ftruncate(fd, 64 + 512) == 0);
  ::close(fd);
  attach_options once;
  once.wait = std::chrono::milliseconds(0);
  CHECK_THROWS_AS(ndarray<double>::attach(name, {8}, order::row_major, once), not_ready);
  CHECK_THROWS_AS(ndarray<double>::attach(name, once), not_ready);
  CHECK_THROWS_WITH(ndarray<double>::attach(name, once), Catch::Contains(name));
  CHECK(remove(posix_shm(name)));
  CHECK(names.left().empty());
}

TEST_CASE("reshape keeps every stride representable and takes a shape() as it is") {
  test::names names;
  {
    manager m(names.options());
    auto e = m.from_shape<double>({0, 4});
    const std::ptrdiff_t big = std::ptrdiff_t(1) << 62;
    CHECK_THROWS_AS(e.reshape({0, big, big}), invalid_shape);
    CHECK(e.reshape({4, 0, 7}).size() == 0);
    auto a = m.from_shape<int>({2, 6});
    auto b = m.from_shape<int>({3, 4});
    CHECK(a.reshape(b.shape()).shape() == b.shape());
    CHECK_THROWS_WITH(a.reshape({5, -1}), Catch::Contains(a.name()));
  }
  CHECK(names.left().empty());
}

TEST_CASE("shapes are taken from any integers: literals, Eigen-style indices, containers") {
  test::names names;
  {
    manager m(names.options());
    const long rows = 3, cols = 4;  // what Eigen's rows() and cols() return
    CHECK(m.from_shape<float>({rows, cols}).shape() == shape_type{3, 4});
    const std::size_t n = 5;
    CHECK(m.from_shape<float>({n, 2}).shape() == shape_type{5, 2});
    CHECK(m.from_shape<float>(std::array<int, 3>{2, 3, 4}).size() == 24);
    CHECK(m.from_shape<float>(std::vector<long>{7}).size() == 7);
    CHECK_THROWS_AS(m.from_shape<float>({rows, -cols}), invalid_shape);
    CHECK_THROWS_WITH(m.from_shape<float>({-1}), Catch::Contains("negative extent -1"));
  }
  CHECK(names.left().empty());
}

TEST_CASE("attaches racing creations see a complete array, or not_found / not_ready, never less") {
  test::names names;
  constexpr int n = 40;
  constexpr std::size_t len = 64 * 1024;  // large enough that creation takes a while
  std::vector<std::int32_t> data(len);
  for (std::size_t i = 0; i < len; ++i)
    data[i] = std::int32_t(i * 7 + 1);
  // The child attaches each name as soon as it can while the parent creates it.
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    attach_options once;
    once.wait = std::chrono::milliseconds(0);
    int code = 0;
    for (int k = 0; k < n && code == 0; ++k) {
      const std::string name = names("race_" + std::to_string(k));
      for (;;) {
        try {
          auto a = ndarray<const std::int32_t>::attach(name, once);
          if (a.shape() != shape_type{len}) code = 2;
          for (std::size_t i = 0; i < len && code == 0; ++i)
            if (a(i) != std::int32_t(i * 7 + 1)) code = 3;
          break;
        } catch (const not_found&) {
        } catch (const not_ready&) {
        } catch (...) {
          code = 4;  // corrupt, truncated: a half-made segment was trusted
          break;
        }
      }
    }
    ::_exit(code);
  }
  {
    manager m(names.options());
    std::vector<ndarray<std::int32_t>> made;
    for (int k = 0; k < n; ++k)
      made.push_back(
          m.from_array(data.data(), {len}, posix_shm(names("race_" + std::to_string(k)))));
    CHECK(test::exited_with(test::reap(pid), 0));
  }
  CHECK(names.left().empty());
}

TEST_CASE("a segment removed while others map it stays theirs; a new attach finds nothing") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<double>({16});
    auto b = ndarray<double>::attach(a.name());  // a second mapping
    const std::string name = a.name();
    CHECK(remove(posix_shm(name)));
    CHECK(names.left().empty());
    a(3) = 2.5;  // both mappings still work, and are still one memory
    CHECK(b(3) == 2.5);
    const int status = test::in_child([&] { return b(3) == 2.5 ? 0 : 1; });
    CHECK(test::exited_with(status, 0));
    CHECK_THROWS_AS(ndarray<double>::attach(name), not_found);
  }  // the manager's end finds the name gone, and leaves it so
  CHECK(names.left().empty());
}

TEST_CASE("a segment of exactly the shape's bytes is raw with that shape, whatever it holds") {
  test::names names;
  {
    manager m(names.options());
    // User data whose last 512 bytes look like a record (its magic first).
    auto a = m.from_shape<std::uint8_t>({4096}, test::raw());
    std::memcpy(a.data() + 4096 - 512, "SHMARRAY", 8);
    auto raw = ndarray<std::uint8_t>::attach(a.name(), {4096});
    CHECK_FALSE(raw.has_metadata());
    CHECK(raw.size() == 4096);
    CHECK(raw(4096 - 512) == 'S');
    auto wrapped = ndarray<const std::uint8_t>(
        segment(open_only, posix_shm(a.name()), access_mode::read_only), {64, 64});
    CHECK_FALSE(wrapped.has_metadata());
    // Any other shape of its bytes' size is raw too; another size is not.
    CHECK(ndarray<std::uint8_t>::attach(a.name(), {2048, 2}).size() == 4096);
    // Another size: not raw, so its tail is read as a record (one in the
    // making, here, with its magic and no version yet).
    attach_options once;
    once.wait = std::chrono::milliseconds(0);
    CHECK_THROWS_AS(ndarray<std::uint8_t>::attach(a.name(), {4000}, order::row_major, once),
                    not_ready);
    std::memset(a.data() + 4096 - 512, 0, 8);
    CHECK_THROWS_AS(ndarray<std::uint8_t>::attach(a.name(), {4000}), shape_mismatch);
  }
  CHECK(names.left().empty());
}

TEST_CASE("a bool array holding a byte that is not 0 or 1 is refused as bool, read as uint8_t") {
  test::names names;
  {
    manager m(names.options());
    auto b = m.from_shape<bool>({64});
    b(3) = true;
    CHECK(ndarray<const bool>::attach(b.name())(3));
    // Another writer (Python, C, a bug) puts a 2 where a bool must be 0 or 1:
    // reading it as bool would be undefined behaviour.
    auto bytes = ndarray<std::uint8_t>::attach(b.name());  // |b1 seen as its bytes
    CHECK(bytes(3) == 1);
    bytes(17) = 2;
    CHECK_THROWS_AS(ndarray<bool>::attach(b.name()), dtype_mismatch);
    CHECK_THROWS_WITH(
        ndarray<const bool>::attach(b.name()),
        Catch::Contains("byte 2 at offset 17") && Catch::Contains("attach it as std::uint8_t"));
    CHECK_THROWS_AS(ndarray<std::int8_t>::attach(b.name()), dtype_mismatch);  // |i1 is not |b1
    bytes(17) = 1;
    CHECK(ndarray<bool>::attach(b.name())(17));
    // Raw segments viewed as bool are checked the same way.
    auto r = m.from_shape<std::uint8_t>({8}, test::raw());
    r(7) = 255;
    CHECK_THROWS_AS(ndarray<bool>::attach(r.name(), {8}), dtype_mismatch);
  }
  CHECK(names.left().empty());
}
