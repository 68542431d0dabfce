// Generated names: unpredictable to another user, and a name that is taken
// is never the end. This file's getrandom stands in for the C library's
// (the library calls it by name), so a test can make names collide.
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <deque>
#include <shmarray/shmarray.hpp>
#include <string>

#include "support.hpp"

using namespace shmarray;

namespace {
// Values the next calls of getrandom give, in turn; then the kernel's.
std::deque<std::uint64_t> scripted;
}  // namespace

extern "C" ssize_t getrandom(void* buf, size_t n, unsigned flags) {
  if (!scripted.empty() && n == sizeof(std::uint64_t)) {
    std::memcpy(buf, &scripted.front(), n);
    scripted.pop_front();
    return ssize_t(n);
  }
  return ::syscall(SYS_getrandom, buf, n, flags);
}

TEST_CASE("a generated name another user took is passed over for a fresh one") {
  test::names names;
  {
    manager m(names.options());
    (void)m.from_shape<int>({1});  // the token exists: later draws are names only
    // The next three names drawn are one name, planted beforehand.
    scripted = {42, 42, 42};
    const std::string planted = m.generate_name().name();
    scripted = {42, 42, 42};
    const int fd = ::shm_open(planted.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    REQUIRE(fd >= 0);
    ::close(fd);
    auto a = m.from_shape<int>({4});
    CHECK(a.name() != planted);
    CHECK(scripted.empty());  // it did draw the planted name, each time
    auto b = m.from_array(a);
    CHECK(b.name() != planted);
    ::shm_unlink(planted.c_str());
  }
  CHECK(names.left().empty());
}

TEST_CASE("the names the old scheme would make next do not stop a manager") {
  // Names were prefix, pid, a per-process salt and a counter: another user
  // who saw one could plant the next 17 and make from_shape throw.
  test::names names;
  {
    manager m(names.options());
    const std::string first = m.from_shape<int>({1}).name();
    const std::string stem = first.substr(0, first.rfind('_') + 1);
    for (int i = 0; i < 36; ++i) {
      const std::string next = stem + "0123456789abcdefghijklmnopqrstuvwxyz"[i];
      const int fd = ::shm_open(next.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
      if (fd >= 0) ::close(fd);
    }
    for (int i = 0; i < 20; ++i)
      CHECK(m.from_shape<int>({1}).size() == 1);
    for (int i = 0; i < 36; ++i)
      ::shm_unlink((stem + "0123456789abcdefghijklmnopqrstuvwxyz"[i]).c_str());
  }
  CHECK(names.left().empty());
}
