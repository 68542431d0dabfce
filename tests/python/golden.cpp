// The C++ side of the Python tests: makes, checks and describes segments as
// the C++ library does, so that the tests hold the two sides to one format.
//
//   golden make NAME DTYPE ORDER D...    a kept segment, element i of its
//                                        storage = pattern(i)
//   golden raw NAME DTYPE N              a kept raw segment of N elements, pattern
//   golden check NAME DTYPE ORDER D...   attach by name alone (dtype checked),
//                                        check shape, order and pattern
//   golden add1 NAME DTYPE N             attach a raw segment with its shape, +1 each
//   golden add1-fork NAME DTYPE N        the same in a forked child
//   golden fields NAME                   the record as key=value lines
//   golden attach NAME DTYPE             attach; the error's type if it fails
//   golden make-kind NAME DTYPE D...     a managed segment, removed at once; "ok", or
//                                        the error's type if it cannot be made
//   golden own NAME DTYPE D...           a managed segment, held until a line on stdin
//   golden lock-die NAME DTYPE           lock, say so, and die holding it
//   golden lock-check NAME DTYPE         lock; say whether the owner died
//
// Exit 0 when all is as expected; otherwise a message and exit 1.
#include <sys/wait.h>
#include <unistd.h>

#include <complex>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <shmarray/shmarray.hpp>
#include <string>
#include <vector>

#include "dtype_dispatch.hpp"

using namespace shmarray;
using shmarray_test::with_dtype;

namespace {

// The value at storage index i, as the Python tests compute it.
template <class T>
T pattern(std::size_t i) {
  if constexpr (std::is_same_v<T, bool>)
    return i % 3 == 1;
  else if constexpr (std::is_same_v<T, std::complex<float>> ||
                     std::is_same_v<T, std::complex<double>>)
    return T(typename T::value_type(i % 251), typename T::value_type(-double(i % 7)));
  else if constexpr (std::is_floating_point_v<T>)
    return T(double(i % 251) / 4);
  else if constexpr (std::is_signed_v<T>)
    return T(int(i % 251) - 125);
  else
    return T(i % 251);
}

shape_type dims(int argc, char** argv, int from) {
  shape_type s;
  for (int k = from; k < argc; ++k)
    s.push_back(std::strtoull(argv[k], nullptr, 10));
  return s;
}

order order_of(const char* o) {
  return o[0] == 'F' ? order::column_major : order::row_major;
}

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "golden: %s\n", what.c_str());
  std::exit(1);
}

// The C++ name of an error's kind, most derived first.
const char* kind_of(const error& e) {
  if (dynamic_cast<const not_found*>(&e)) return "not_found";
  if (dynamic_cast<const not_ready*>(&e)) return "not_ready";
  if (dynamic_cast<const dtype_mismatch*>(&e)) return "dtype_mismatch";
  if (dynamic_cast<const truncated_segment*>(&e)) return "truncated_segment";
  if (dynamic_cast<const version_mismatch*>(&e)) return "version_mismatch";
  if (dynamic_cast<const corrupt_metadata*>(&e)) return "corrupt_metadata";
  if (dynamic_cast<const invalid_name*>(&e)) return "invalid_name";
  if (dynamic_cast<const shape_mismatch*>(&e)) return "shape_mismatch";
  if (dynamic_cast<const access_denied*>(&e)) return "access_denied";
  if (dynamic_cast<const out_of_space*>(&e)) return "out_of_space";
  if (dynamic_cast<const already_exists*>(&e)) return "already_exists";
  if (dynamic_cast<const invalid_shape*>(&e)) return "invalid_shape";
  if (dynamic_cast<const lock_error*>(&e)) return "lock_error";
  if (dynamic_cast<const system_error*>(&e)) return "system_error";
  return "error";
}

template <class F>
int test_fork(F&& work) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    work();
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

template <class T>
int run(const std::string& cmd, int argc, char** argv) {
  const std::string name = argv[2];
  if (cmd == "make") {
    manager m;
    create_options o;
    o.keep = true;  // outlives this program; the test removes it
    o.order = order_of(argv[4]);
    auto a = m.from_shape<T>(dims(argc, argv, 5), posix_shm(name), o);
    T* p = a.data();
    for (std::size_t i = 0; i < a.size(); ++i)
      p[i] = pattern<T>(i);
    return 0;
  }
  if (cmd == "raw") {
    manager m;
    create_options o;
    o.keep = true;
    o.raw = true;
    auto a = m.from_shape<T>({std::strtoull(argv[4], nullptr, 10)}, posix_shm(name), o);
    for (std::size_t i = 0; i < a.size(); ++i)
      a(i) = pattern<T>(i);
    return 0;
  }
  if (cmd == "check") {
    auto a = ndarray<T>::attach(name);
    if (a.shape() != dims(argc, argv, 5)) fail(name + ": shape " + to_string(a.shape()));
    if ((a.storage_order() == order::column_major) != (argv[4][0] == 'F')) fail("order");
    const T* p = a.data();
    for (std::size_t i = 0; i < a.size(); ++i)
      if (!(p[i] == pattern<T>(i))) fail(name + ": element " + std::to_string(i));
    return 0;
  }
  if (cmd == "add1" || cmd == "add1-fork") {
    const std::size_t n = std::strtoull(argv[4], nullptr, 10);
    auto a = ndarray<T>::attach(name, {n});
    auto work = [&] {
      for (std::size_t i = 0; i < n; ++i)
        a(i) = T(a(i) + T(1));
    };
    if (cmd == "add1") {
      work();
      return 0;
    }
    return test_fork(work);
  }
  if (cmd == "lock-die") {
    auto a = ndarray<T>::attach(name);
    auto g = a.lock();
    std::printf("locked\n");
    std::fflush(stdout);
    ::_exit(0);  // holding it: the next locker is told the owner died
  }
  if (cmd == "lock-check") {
    auto a = ndarray<T>::attach(name);
    auto g = a.lock();
    std::printf("owner_died=%d\n", g.owner_died() ? 1 : 0);
    return 0;
  }
  if (cmd == "own") {  // a managed segment; after a line on stdin, check it and end
    {
      manager m;
      auto a = m.from_shape<T>(dims(argc, argv, 4), posix_shm(name));
      for (std::size_t i = 0; i < a.size(); ++i)
        a.data()[i] = pattern<T>(i);
      std::printf("ready\n");
      std::fflush(stdout);
      char line[16];
      if (!std::fgets(line, sizeof line, stdin)) fail("no go-ahead");
      for (std::size_t i = 0; i < a.size(); ++i)
        if (!(a.data()[i] == pattern<T>(i))) fail("the array changed");
    }  // the manager ends: its name may be gone already, which is no error
    std::printf("done\n");
    return 0;
  }
  if (cmd == "make-kind") {
    try {
      manager m;
      m.from_shape<T>(dims(argc, argv, 4), posix_shm(name));
      std::printf("ok\n");
    } catch (const error& e) {
      std::printf("%s\n", kind_of(e));
    }
    return 0;
  }
  if (cmd == "attach") {
    try {
      ndarray<T>::attach(name);
      std::printf("ok\n");
    } catch (const error& e) {
      std::printf("%s\n", kind_of(e));
    }
    return 0;
  }
  fail("unknown command " + cmd);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) fail("usage: golden COMMAND NAME ...");
  const std::string cmd = argv[1], name = argv[2];
  try {
    if (cmd == "fields") {
      segment s(open_only, posix_shm(name), access_mode::read_only);
      const auto i = detail::read_record(s.data(), s.size(), name);
      std::printf(
          "size=%zu\ndtype=%s\nitemsize=%zu\norder=%c\nshape=%s\ndata_nbytes=%zu\n"
          "owner_pid=%lld\ncreated_ns=%llu\nowner_token=%llu\nboot_id=",
          s.size(), i.dtype.c_str(), i.itemsize, i.order == order::column_major ? 'F' : 'C',
          to_string(i.shape).c_str(), i.data_nbytes, (long long)i.owner_pid,
          (unsigned long long)i.created_ns, (unsigned long long)i.owner_token);
      for (auto b : i.boot_id)
        std::printf("%02x", b);
      std::printf("\n");
      return 0;
    }
    if (argc < 4) fail("usage: golden " + cmd + " NAME DTYPE ...");
    const std::string dt = argv[3];
    return with_dtype(dt, [&](auto t) { return run<typename decltype(t)::type>(cmd, argc, argv); });
  } catch (const std::exception& e) {
    fail(e.what());
  }
}
