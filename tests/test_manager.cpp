#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <memory>
#include <set>
#include <shmarray/manager.hpp>
#include <stdexcept>
#include <thread>

#include "support.hpp"

using namespace shmarray;

TEST_CASE("a manager's segments are gone when it is destroyed") {
  test::names names;
  std::string a_name, b_name;
  {
    manager m(names.options());
    auto a = m.from_shape<double>({10});
    auto b = m.from_shape<float>({2, 2});
    a_name = a.name();
    b_name = b.name();
    CHECK(names.exists(a_name));
    CHECK(names.exists(b_name));
    CHECK(m.names() == std::vector<std::string>{a_name, b_name});
  }
  CHECK_FALSE(names.exists(a_name));
  CHECK(names.left().empty());
}

TEST_CASE("a manager's segments are gone when an exception leaves its scope") {
  test::names names;
  CHECK_THROWS_AS(
      [&] {
        manager m(names.options());
        auto a = m.from_shape<double>({10});
        auto b = m.from_shape<double>({10}, posix_shm(names("given")));
        REQUIRE(names.left().size() == 2);
        throw std::runtime_error("user code failed");
      }(),
      std::runtime_error);
  CHECK(names.left().empty());
}

TEST_CASE("a forked child destroying its copy of the manager removes nothing of the parent's") {
  test::names names;
  {
    auto m = std::make_unique<manager>(names.options());
    auto a = m->from_shape<int>({16});
    const std::string parent_name = a.name();
    const int status = test::in_child([&] {
      // the child makes one of its own through the copy, then destroys the copy
      auto mine = m->from_shape<int>({4});
      const std::string child_name = mine.name();
      m.reset();
      if (test::shm_names(parent_name.substr(1)).size() != 1) return 1;  // parent's kept
      if (!test::shm_names(child_name.substr(1)).empty()) return 2;      // child's removed
      return 0;
    });
    CHECK(test::exited_with(status, 0));
    CHECK(names.exists(parent_name));
    CHECK(names.left().size() == 1);
  }
  CHECK(names.left().empty());
}

TEST_CASE("a segment removed behind the manager's back does not make its end fail") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<double>({10});
    auto b = m.from_shape<double>({10});
    CHECK(remove(posix_shm(a.name())));  // another tool, systemd's RemoveIPC, a resource tracker
    CHECK(names.left().size() == 1);
  }
  CHECK(names.left().empty());
}

TEST_CASE("generated names are unique, carry the pid, and fit in 30 characters") {
  manager m;
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    const auto n = m.generate_name().name();
    CHECK(n.size() <= 30);
    CHECK(n.rfind("/shmarray_" + std::to_string(::getpid()) + "_", 0) == 0);
    seen.insert(n);
  }
  CHECK(seen.size() == 1000);
  manager other;
  CHECK(seen.count(other.generate_name().name()) == 0);
}

TEST_CASE("a given name that exists is already_exists, and the existing segment is untouched") {
  test::names names;
  const auto name = names("taken");
  {
    manager first(names.options());
    auto a = first.from_shape<double>({4}, posix_shm(name));
    a.fill(2.0);
    {
      manager second(names.options());
      CHECK_THROWS_AS(second.from_shape<double>({4}, posix_shm(name)), already_exists);
      CHECK(second.names().empty());
    }
    CHECK(names.exists(name));
    CHECK(ndarray<double>::attach(name)(3) == 2.0);
  }
  CHECK(names.left().empty());
}

TEST_CASE("keep leaves a segment to outlive its manager") {
  test::names names;
  std::string name;
  {
    manager m(names.options());
    create_options keep;
    keep.keep = true;
    name = m.from_shape<double>({4}, keep).name();
  }
  CHECK(names.exists(name));
  CHECK(ndarray<double>::attach(name).size() == 4);
  CHECK(remove(posix_shm(name)));
  CHECK(names.left().empty());
}

TEST_CASE("anonymous arrays have no name to leak and are shared with children") {
  manager m;
  auto a = m.from_shape<double>({3, 3}, anonymous{});
  CHECK(a.name().empty());
  CHECK(m.names().empty());
  const int status = test::in_child([&] {
    a(1, 1) = 5.0;
    return 0;
  });
  CHECK(test::exited_with(status, 0));
  CHECK(a(1, 1) == 5.0);
  const double v[2] = {1, 2};
  CHECK(m.from_array(v, {2}, anonymous{})(1) == 2.0);
}

TEST_CASE("file-backed arrays are attached by path and removed unless kept") {
  char dir[] = "/tmp/shmarray_mgr_XXXXXX";
  REQUIRE(::mkdtemp(dir));
  const std::string path = std::string(dir) + "/a.shm", kept = std::string(dir) + "/kept.shm";
  {
    manager m;
    auto a = m.from_shape<std::int32_t>({5, 5}, file(path));
    a(4, 4) = 44;
    CHECK(ndarray<std::int32_t>::attach(file(path))(4, 4) == 44);
    create_options keep;
    keep.keep = true;
    const std::int32_t v[3] = {7, 8, 9};
    m.from_array(v, {3}, file(kept), keep);
    CHECK(m.names() == std::vector<std::string>{path});
  }
  CHECK(::access(path.c_str(), F_OK) != 0);
  CHECK(ndarray<const std::int32_t>::attach(file(kept))(2) == 9);
  CHECK(remove(file(kept)));
  CHECK(::rmdir(dir) == 0);
}

TEST_CASE("threads may create arrays through one manager") {
  test::names names;
  {
    manager m(names.options());
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&] {
        for (int i = 0; i < 25; ++i)
          (void)m.from_shape<int>({8});
      });
    for (auto& t : threads)
      t.join();
    CHECK(m.names().size() == 100);
    CHECK(names.left().size() == 100);
  }
  CHECK(names.left().empty());
}

TEST_CASE("a moved manager hands its segments over") {
  test::names names;
  {
    manager outer(names.options());
    {
      manager m(names.options());
      (void)m.from_shape<int>({8});
      outer = std::move(m);
    }
    CHECK(names.left().size() == 1);
    manager moved(std::move(outer));
    CHECK(moved.names().size() == 1);
  }
  CHECK(names.left().empty());
}

TEST_CASE("a full /dev/shm makes from_shape throw out_of_space and leave nothing") {
  std::string said;
  const int status = test::in_small_dev_shm(
      "1m",
      [](auto say) {
        manager m;
        try {
          (void)m.from_shape<double>({1024, 1024});  // 8 MiB
          say("created 8 MiB in a 1 MiB /dev/shm");
          return 1;
        } catch (const out_of_space& e) {
          say(e.what());
        }
        if (!m.names().empty()) return 2;
        if (!test::shm_names("shmarray").empty()) return 3;
        auto small = m.from_shape<double>({16});  // what fits still works
        return small.size() == 16 ? 0 : 4;
      },
      said);
  if (test::exited_with(status, 77)) {
    test::skip("cannot mount a private tmpfs over /dev/shm here (" + said + ")");
    return;
  }
  INFO(said);
  CHECK(test::exited_with(status, 0));
}
