// The C++ side of the Python ring tests: a writer or a reader of a named
// ring, with frames of a pattern both sides compute.
//
//   ring_peer write NAME DTYPE SHAPE ORDER SLOTS POLICY COUNT
//       makes the ring (SHAPE: extents joined by ',', "" for rank 0; ORDER C
//       or F; POLICY overwrite or block), waits up to 10 s for one reader,
//       publishes COUNT frames, closes the ring; prints "published COUNT"
//   ring_peer read NAME DTYPE SHAPE ORDER COUNT
//       attaches (start: next), reads until COUNT frames are accounted for
//       (read or missed) or the writer has gone; prints
//       "read R missed M torn T wrong W"; exit 0 when W is 0 and R + M is COUNT
//
// Element j (in storage order) of frame n holds (n + j) % 100, as the
// dtype has it (bool: odd; complex: real part, imaginary 0).
#include <chrono>
#include <complex>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <shmarray/shmarray.hpp>
#include <string>
#include <thread>
#include <vector>

#include "dtype_dispatch.hpp"

using namespace shmarray;
using shmarray_test::with_dtype;

namespace {

[[noreturn]] void fail(const std::string& why) {
  std::fprintf(stderr, "ring_peer: %s\n", why.c_str());
  std::exit(1);
}

template <class T>
T pattern(std::uint64_t n, std::size_t j) {
  const auto v = int((n + j) % 100);
  if constexpr (std::is_same_v<T, bool>)
    return v % 2 != 0;
  else if constexpr (std::is_same_v<T, std::complex<float>> ||
                     std::is_same_v<T, std::complex<double>>)
    return T(typename T::value_type(v), 0);
  else
    return T(v);
}

shape_type parse_shape(const std::string& s) {
  shape_type out;
  std::size_t at = 0;
  while (at < s.size()) {
    const auto comma = s.find(',', at);
    out.push_back(std::strtoull(s.substr(at, comma - at).c_str(), nullptr, 10));
    if (comma == s.npos) break;
    at = comma + 1;
  }
  return out;
}

template <class T>
int write(char** argv) {
  ring_options o;
  o.order = argv[5][0] == 'F' ? order::column_major : order::row_major;
  o.slots = std::strtoull(argv[6], nullptr, 10);
  o.policy = std::string(argv[7]) == "block" ? ring_policy::block : ring_policy::overwrite;
  const std::uint64_t count = std::strtoull(argv[8], nullptr, 10);
  manager m;
  auto w = m.ring<T>(argv[2], parse_shape(argv[4]), o);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (w.readers() == 0) {
    if (std::chrono::steady_clock::now() > until) fail("no reader attached within 10 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  for (std::uint64_t i = 0; i < count; ++i) {
    auto l = w.loan();
    for (std::size_t j = 0; j < l.size(); ++j)
      l.data()[j] = pattern<T>(l.seq(), j);
    w.publish(std::move(l));
  }
  w.close();
  std::printf("published %llu\n", static_cast<unsigned long long>(count));
  return 0;
}

template <class T>
int read(char** argv) {
  const std::uint64_t count = std::strtoull(argv[6], nullptr, 10);
  reader_options o;
  o.wait_for_name = std::chrono::seconds(10);
  auto r = ring_reader<T>::attach(std::string_view(argv[2]), parse_shape(argv[4]), o);
  const auto want_order = argv[5][0] == 'F' ? order::column_major : order::row_major;
  if (r.frame_order() != want_order) fail("the ring's frames are in the other order");
  std::uint64_t got = 0, torn = 0, wrong = 0;
  std::unique_ptr<T[]> copy;
  std::size_t have = 0;
  try {
    while (got + r.missed() < count) {
      auto f = r.next(std::chrono::seconds(10));
      if (!f) fail("no frame within 10 s");
      if (have < f->size()) copy.reset(new T[have = f->size()]);
      if (!f->copy_to(copy.get())) {
        ++torn;
        continue;
      }
      ++got;
      for (std::size_t j = 0; j < f->size(); ++j)
        if (!(copy[j] == pattern<T>(f->seq(), j))) {
          ++wrong;
          break;
        }
    }
  } catch (const producer_gone&) {
  }
  std::printf("read %llu missed %llu torn %llu wrong %llu\n", static_cast<unsigned long long>(got),
              static_cast<unsigned long long>(r.missed()), static_cast<unsigned long long>(torn),
              static_cast<unsigned long long>(wrong));
  return wrong == 0 && got + r.missed() + torn == count ? 0 : 1;
}

template <class T>
int run(const std::string& cmd, int argc, char** argv) {
  if (cmd == "write" && argc == 9) return write<T>(argv);
  if (cmd == "read" && argc == 7) return read<T>(argv);
  fail(
      "usage: ring_peer write NAME DTYPE SHAPE ORDER SLOTS POLICY COUNT | read NAME DTYPE SHAPE "
      "ORDER COUNT");
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc < 4) fail("usage: ring_peer write|read NAME DTYPE ...");
    const std::string cmd = argv[1], dt = argv[3];
    return with_dtype(dt, [&](auto t) { return run<typename decltype(t)::type>(cmd, argc, argv); });
  } catch (const std::exception& e) {
    fail(e.what());
  }
}
