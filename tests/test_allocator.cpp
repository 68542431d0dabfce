#include <boost/interprocess/anonymous_shared_memory.hpp>
#include <catch2/catch.hpp>
#include <cstring>

#include <memory>
#include <new>
#include <shmarray/allocator.hpp>
#include <type_traits>
#include <vector>

#include "support.hpp"

using namespace shmarray;

using shared_vector = std::vector<double, allocator<double>>;

TEST_CASE("a vector filled before fork is the same memory in parent and child") {
  shared_vector v(1000, 1.0);
  const int status = test::in_child([&] {
    if (v[999] != 1.0) return 1;  // the child sees the parent's data
    for (auto& x : v)
      x *= 3;
    return 0;
  });
  CHECK(test::exited_with(status, 0));
  CHECK(v[0] == 3.0);
  CHECK(v[999] == 3.0);
}

TEST_CASE("memory allocated after the fork is the allocating process's alone") {
  shared_vector v(4, 1.0);
  v.shrink_to_fit();
  REQUIRE(v.capacity() == 4);
  const int status = test::in_child([&] {
    v[0] = 10;       // shared: same allocation as the parent's
    v.push_back(5);  // reallocates: a new mapping only the child has
    v[1] = 20;       // written into the child's new copy
    return 0;
  });
  CHECK(test::exited_with(status, 0));
  CHECK(v[0] == 10.0);
  CHECK(v[1] == 1.0);
  CHECK(v.size() == 4);
  // reserve before forking, and the child's push_back stays in shared memory
  shared_vector r;
  r.reserve(8);
  r.assign(4, 1.0);
  const int status2 = test::in_child([&] {
    r.push_back(5);
    r[1] = 20;
    return 0;
  });
  CHECK(test::exited_with(status2, 0));
  CHECK(r[1] == 20.0);
  CHECK(r.data()[4] == 5.0);  // written, though the parent's size is still 4
}

TEST_CASE("the allocator meets the standard's requirements") {
  using A = allocator<int>;
  using traits = std::allocator_traits<A>;
  static_assert(std::is_same_v<traits::rebind_alloc<double>, allocator<double>>);
  static_assert(traits::is_always_equal::value);
  static_assert(traits::propagate_on_container_move_assignment::value);
  CHECK(A() == allocator<int>(allocator<double>()));
  A a;
  int* p = a.allocate(0);
  CHECK(p != nullptr);
  a.deallocate(p, 0);
  int* q = a.allocate(10000);
  CHECK(reinterpret_cast<std::uintptr_t>(q) % 4096 == 0);
  q[9999] = 1;
  a.deallocate(q, 10000);
  CHECK_THROWS_AS(a.allocate(std::size_t(-1) / 2), std::bad_array_new_length);
  // more than any address space: mmap fails whatever the overcommit policy
  try {
    (void)a.allocate((std::size_t(1) << 62) / sizeof(int));
    FAIL("a 4 EiB allocation succeeded");
  } catch (const std::bad_array_new_length&) {
    FAIL("bad_array_new_length, expected a plain bad_alloc");
  } catch (const std::bad_alloc&) {
  }

  using N = allocator<int, posix_shm>;
  using ntraits = std::allocator_traits<N>;
  static_assert(!ntraits::is_always_equal::value);
  static_assert(ntraits::propagate_on_container_copy_assignment::value);
  static_assert(ntraits::propagate_on_container_swap::value);
  static_assert(!std::is_default_constructible_v<N>);
  manager m1, m2;
  CHECK(N(m1) == N(m1));
  CHECK(N(m1) != N(m2));
  CHECK(allocator<double, posix_shm>(N(m1)) == allocator<double, posix_shm>(m1));
}

TEST_CASE("a named allocator's memory has a name its manager removes") {
  test::names names;
  {
    manager m(names.options());
    using A = allocator<int, posix_shm>;
    {
      std::vector<int, A> v{A(m)};
      v.reserve(1000);
      CHECK(names.left().size() == 1);
      v.assign(1000, 7);
      const int status = test::in_child([&] {
        v[500] = 8;
        return 0;
      });
      CHECK(test::exited_with(status, 0));
      CHECK(v[500] == 8);
      v.reserve(5000);  // reallocation frees the old segment
      CHECK(names.left().size() == 1);
      CHECK(v[500] == 8);
    }
    CHECK(names.left().empty());  // deallocated: removed at once
    std::vector<int, A> kept{A(m)};
    kept.resize(10);
    CHECK(names.left().size() == 1);
    kept.clear();
    kept.shrink_to_fit();
    std::vector<int, A> last{A(m)};
    last.resize(10);
    CHECK(m.names().size() == 1);
  }
  CHECK(names.left().empty());
}

TEST_CASE("a named allocator on a full /dev/shm throws a std::bad_alloc with the reason") {
  const auto run = test::in_small_tmpfs("/dev/shm", "1m", [](auto say) {
    manager m;
    std::vector<char, allocator<char, posix_shm>> v{allocator<char, posix_shm>(m)};
    try {
      v.reserve(std::size_t(8) << 20);
      say("reserved 8 MiB in a 1 MiB /dev/shm");
      return 1;
    } catch (const std::bad_alloc& e) {  // what containers and their callers catch
      say(e.what());
      return std::strstr(e.what(), "needs 8388608 bytes, but /dev/shm has") ? 0 : 2;
    }
  });
  if (run.skipped()) return;
  INFO(run.said);
  CHECK(run.ok());
}

namespace {
// A backing policy written by a user: Boost's anonymous shared memory.
struct boost_anonymous {
  const std::string& name() const noexcept {
    static const std::string none;
    return none;
  }
  segment create(std::size_t size, const map_options&, detail::initial_bytes init = {}) const {
    auto region = boost::interprocess::anonymous_shared_memory(size);
    if (init.size > 0) std::memcpy(region.get_address(), init.data, init.size);
    return segment(std::move(region));
  }
};
}  // namespace

TEST_CASE("the allocator takes a user-written unnamed backing policy") {
  static_assert(std::allocator_traits<allocator<int, boost_anonymous>>::is_always_equal::value);
  std::vector<int, allocator<int, boost_anonymous>> v;
  v.reserve(1000);
  for (int i = 0; i < 1000; ++i)
    v.push_back(i);
  const int status = test::in_child([&] {
    v[7] = -7;  // shared with the parent: allocated before the fork
    return 0;
  });
  CHECK(test::exited_with(status, 0));
  CHECK(v[7] == -7);
  CHECK(v[999] == 999);
  segment s(create_only, boost_anonymous{}, 4096);
  CHECK(s.name().empty());
  CHECK(s.size() == 4096);
}
