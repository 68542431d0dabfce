// Rings of frames: order, sequence numbers and times; torn frames never
// accepted; both policies with readers in other processes; groups; every
// kind of death; bad input.
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <complex>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <shmarray/detail/views.hpp>
#include <shmarray/shmarray.hpp>
#include <string>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace shmarray;
using namespace std::chrono_literals;

namespace {

// Element j of frame n, as every test here writes it.
template <class T>
T pattern(std::uint64_t n, std::size_t j) {
  const auto v = int((n * 7 + j) % 100);
  if constexpr (std::is_same_v<T, bool>)
    return v % 2 != 0;
  else if constexpr (std::is_same_v<T, std::complex<float>> ||
                     std::is_same_v<T, std::complex<double>>)
    return T(typename T::value_type(v), typename T::value_type(-v));
  else
    return T(v);
}

template <class T, class Frame>
bool has_pattern(const Frame& f, std::uint64_t n) {
  for (std::size_t j = 0; j < f.size(); ++j)
    if (!(f.data()[j] == pattern<T>(n, j))) return false;
  return true;
}

template <class T>
std::uint64_t publish_pattern(ring_writer<T>& w, std::chrono::nanoseconds timeout = forever) {
  auto l = w.loan(timeout);
  for (std::size_t j = 0; j < l.size(); ++j)
    l.data()[j] = pattern<T>(l.seq(), j);
  return w.publish(std::move(l));
}

// Waits until the writer sees `n` readers attached.
template <class T>
bool readers_attached(const ring_writer<T>& w, std::size_t n) {
  return test::eventually([&] { return w.readers() >= n; });
}

template <class T>
void round_trip(manager& m, const test::names& names, const shape_type& shape, order o) {
  ring_options ro;
  ro.slots = 4;
  ro.order = o;
  auto w = m.ring<T>(names("rt"), shape, ro);
  auto r = ring_reader<T>::attach(names("rt"), shape);
  CHECK(r.frame_shape() == shape);
  CHECK(r.frame_order() == o);
  CHECK(r.slots() == 4);
  const auto before = detail::ring::clock_ns(CLOCK_MONOTONIC);
  for (int i = 0; i < 3; ++i)
    CHECK(publish_pattern(w) == std::uint64_t(i + 1));
  for (std::uint64_t n = 1; n <= 3; ++n) {
    auto f = r.next(1s);
    REQUIRE(f);
    CHECK(f->seq() == n);
    CHECK(f->publish_ns() >= before);
    CHECK(f->shape() == shape);
    CHECK(f->storage_order() == o);
    CHECK(has_pattern<T>(*f, n));
    CHECK(f->valid());
    std::unique_ptr<T[]> copy(new T[f->size()]);
    CHECK(f->copy_to(copy.get()));
  }
  CHECK_FALSE(r.next(1ms));  // nothing more: a timeout, not an error
  CHECK(r.missed() == 0);
  m = manager(names.options());
}

}  // namespace

TEST_CASE(
    "a reader gets every frame in order with its sequence and time for every dtype rank and "
    "order") {
  test::names names;
  manager m(names.options());
  for (order o : {order::row_major, order::column_major})
    for (const shape_type& s :
         {shape_type{}, shape_type{5}, shape_type{3, 4}, shape_type{2, 3, 5}}) {
      round_trip<bool>(m, names, s, o);
      round_trip<std::int8_t>(m, names, s, o);
      round_trip<std::uint8_t>(m, names, s, o);
      round_trip<std::int16_t>(m, names, s, o);
      round_trip<std::uint16_t>(m, names, s, o);
      round_trip<std::int32_t>(m, names, s, o);
      round_trip<std::uint32_t>(m, names, s, o);
      round_trip<std::int64_t>(m, names, s, o);
      round_trip<std::uint64_t>(m, names, s, o);
      round_trip<float>(m, names, s, o);
      round_trip<double>(m, names, s, o);
      round_trip<std::complex<float>>(m, names, s, o);
      round_trip<std::complex<double>>(m, names, s, o);
    }
  CHECK(names.left().empty());
}

TEST_CASE(
    "overwrite: a reader that falls behind skips to what is left and is told exactly how "
    "many it missed") {
  test::names names;
  {
    manager m(names.options());
    ring_options o;
    o.slots = 8;
    auto w = m.ring<std::uint32_t>(names("ow"), {16}, o);
    auto r = ring_reader<std::uint32_t>::attach(names("ow"));
    for (int i = 0; i < 20; ++i)
      publish_pattern(w);
    // Frames 13 to 20 are still there; 1 to 12 were overwritten.
    for (std::uint64_t n = 13; n <= 20; ++n) {
      auto f = r.next(1s);
      REQUIRE(f);
      CHECK(f->seq() == n);
      CHECK(has_pattern<std::uint32_t>(*f, n));
    }
    CHECK(r.missed() == 12);
    CHECK(m.names() == std::vector<std::string>{names("ow")});  // the manager owns it by name
    // latest() passes frames over without counting them as missed.
    for (int i = 0; i < 5; ++i)
      publish_pattern(w);
    auto l = r.latest();
    REQUIRE(l);
    CHECK(l->seq() == 25);
    CHECK(r.missed() == 12);
    CHECK_FALSE(r.latest());  // nothing newer
    publish_pattern(w);
    auto f = r.next(1s);
    REQUIRE(f);
    CHECK(f->seq() == 26);
    // A reader that starts with the oldest frame still there.
    reader_options old;
    old.start = ring_start::oldest;
    auto r2 = ring_reader<std::uint32_t>::attach(names("ow"), old);
    auto g = r2.next(1s);
    REQUIRE(g);
    CHECK(g->seq() == 19);
    CHECK(w.readers() == 2);
  }
  CHECK(names.left().empty());
}

namespace {

// A reader in a forked child: reads `count` frames (or until producer gone),
// sleeping `pause` after each; exit 0 when every valid frame had its
// pattern, sequence numbers only grew, and read + missed == count (+ the
// check of `lossless`: nothing missed).
int child_reader(const std::string& name, std::uint64_t count, std::chrono::microseconds pause,
                 bool lossless, std::chrono::nanoseconds spin = 50us) {
  reader_options o;
  o.spin = spin;
  auto r = ring_reader<std::uint16_t>::attach(name, o);
  std::uint64_t got = 0, last = 0, torn = 0;
  try {
    while (got + torn + r.missed() < count) {
      auto f = r.next(10s);
      if (!f) return 10;
      if (f->seq() <= last) return 11;
      if (lossless && f->seq() != last + 1) return 12;
      last = f->seq();
      const bool right = has_pattern<std::uint16_t>(*f, f->seq());
      if (!f->valid()) {
        if (lossless) return 13;
        ++torn;
        continue;
      }
      if (!right) return 14;
      ++got;
      if (pause.count()) std::this_thread::sleep_for(pause);
    }
  } catch (const producer_gone&) {
  }
  if (lossless && (got != count || r.missed() != 0)) return 15;
  if (got + torn + r.missed() != count) return 16;
  return 0;
}

void run_policy(ring_policy policy, int readers, bool slow) {
  test::names names;
  {
    manager m(names.options());
    ring_options o;
    o.slots = 4;
    o.policy = policy;
    auto w = m.ring<std::uint16_t>(names("p"), {64, 64}, o);
    const std::uint64_t count = 300;
    std::vector<pid_t> kids;
    for (int i = 0; i < readers; ++i) {
      std::fflush(nullptr);
      const pid_t p = ::fork();
      if (p == 0) {
        const auto pause = slow && i == 0 ? 200us : 0us;
        ::_exit(child_reader(names("p"), count, pause, policy == ring_policy::block));
      }
      kids.push_back(p);
    }
    REQUIRE(readers_attached(w, std::size_t(readers)));
    for (std::uint64_t i = 0; i < count; ++i)
      publish_pattern(w, 10s);
    w.close();
    for (pid_t p : kids)
      CHECK(test::exited_with(test::reap(p), 0));
  }
  CHECK(names.left().empty());
}

}  // namespace

TEST_CASE("overwrite with 1 2 and 4 readers in other processes fast and slow") {
  for (int readers : {1, 2, 4})
    for (bool slow : {false, true}) {
      INFO(readers << " readers, slow " << slow);
      run_policy(ring_policy::overwrite, readers, slow);
    }
}

TEST_CASE("block with 1 2 and 4 readers in other processes loses nothing and keeps the order") {
  for (int readers : {1, 2, 4})
    for (bool slow : {false, true}) {
      INFO(readers << " readers, slow " << slow);
      run_policy(ring_policy::block, readers, slow);
    }
}

TEST_CASE(
    "no torn frame is accepted as valid while the writer overwrites as fast as it can and a "
    "reader that skips valid sees torn frames") {
  test::names names;
  std::fflush(nullptr);
  const pid_t writer = ::fork();
  if (writer == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // it never ends by itself
    manager m(names.options());
    ring_options o;
    o.slots = 2;
    auto w = m.ring<std::uint32_t>(names("torn"), {128, 128}, o);  // 64 KiB frames
    if (!readers_attached(w, 1)) ::_exit(3);
    // As fast as it can, until killed.
    for (;;) {
      auto l = w.loan();
      const auto v = std::uint32_t(l.seq());
      for (auto& x : l)
        x = v;
      w.publish(std::move(l));
    }
  }
  reader_options ro;
  ro.wait_for_name = 5s;
  auto r = ring_reader<std::uint32_t>::attach(names("torn"), ro);
  std::uint64_t accepted = 0, rejected = 0, torn_accepted = 0, torn_seen = 0;
  const auto until = std::chrono::steady_clock::now() + 3s;
  while (std::chrono::steady_clock::now() < until && (accepted < 2000 || torn_seen == 0)) {
    auto f = r.next(1s);
    REQUIRE(f);
    // Read in place, as a consumer computing on the frame does.
    bool whole = true;
    const auto want = std::uint32_t(f->seq());
    for (auto x : *f)
      whole &= x == want;
    if (!whole) ++torn_seen;  // what a reader that never asks valid() would have used
    if (f->valid()) {
      ++accepted;
      if (!whole) ++torn_accepted;
    } else {
      ++rejected;
    }
  }
  ::kill(writer, SIGKILL);
  CHECK(test::killed_by(test::reap(writer), SIGKILL));
  INFO("accepted " << accepted << ", rejected " << rejected << ", torn seen " << torn_seen
                   << ", missed " << r.missed());
  CHECK(accepted > 0);
  CHECK(torn_accepted == 0);
  CHECK(torn_seen > 0);  // the check can fail: without valid(), torn frames are used
  CHECK(test::eventually([&] { return names.left().empty(); }));
}

namespace {

// A member of group "g" in a forked child: writes each sequence number it
// processed to `out` (8 bytes each) until producer gone. If `die_at` is
// given, it dies of SIGKILL holding its claim of the frame after that many.
int child_member(const std::string& name, int out, int die_after = -1) {
  reader_options o;
  o.group = "g";
  auto r = ring_reader<std::uint16_t>::attach(name, o);
  int done = 0;
  try {
    for (;;) {
      auto f = r.next(10s);
      if (!f) return 10;
      if (die_after >= 0 && done == die_after) ::raise(SIGKILL);  // holding its claim
      if (!has_pattern<std::uint16_t>(*f, f->seq()) || !f->valid()) return 11;
      const std::uint64_t s = f->seq();
      if (::write(out, &s, sizeof s) != sizeof s) return 12;
      ++done;
      std::this_thread::sleep_for(100us);
    }
  } catch (const producer_gone&) {
  }
  return 0;
}

std::vector<std::uint64_t> read_seqs(int fd) {
  const std::string all = test::read_all(fd);
  std::vector<std::uint64_t> v(all.size() / 8);
  std::memcpy(v.data(), all.data(), v.size() * 8);
  return v;
}

}  // namespace

TEST_CASE("reader groups of 2 and 3 members: every frame processed by exactly one member") {
  for (ring_policy policy : {ring_policy::block, ring_policy::overwrite})
    for (int members : {2, 3}) {
      INFO(members << " members, " << to_string(policy));
      test::names names;
      {
        manager m(names.options());
        ring_options o;
        o.slots = policy == ring_policy::block ? 4 : 64;
        o.policy = policy;
        auto w = m.ring<std::uint16_t>(names("grp"), {32, 32}, o);
        int fds[2];
        REQUIRE(::pipe(fds) == 0);
        std::vector<pid_t> kids;
        for (int i = 0; i < members; ++i) {
          std::fflush(nullptr);
          const pid_t p = ::fork();
          if (p == 0) {
            ::close(fds[0]);
            ::_exit(child_member(names("grp"), fds[1]));
          }
          kids.push_back(p);
        }
        ::close(fds[1]);
        REQUIRE(readers_attached(w, std::size_t(members)));
        const std::uint64_t count = 200;
        for (std::uint64_t i = 0; i < count; ++i) {
          publish_pattern(w, 10s);
          if (policy == ring_policy::overwrite) std::this_thread::sleep_for(300us);
        }
        w.close();
        for (pid_t p : kids)
          CHECK(test::exited_with(test::reap(p), 0));
        auto seqs = read_seqs(fds[0]);
        ::close(fds[0]);
        std::sort(seqs.begin(), seqs.end());
        CHECK(std::adjacent_find(seqs.begin(), seqs.end()) == seqs.end());  // none twice
        // Lossless in block; in overwrite the group's missed count is the rest.
        auto r = ring_reader<std::uint16_t>::attach(names("grp"), reader_options{"g"});
        CHECK(seqs.size() + r.group_missed() == count);
        if (policy == ring_policy::block) CHECK(seqs.size() == count);
      }
      CHECK(names.left().empty());
    }
}

TEST_CASE("a group member SIGKILLed while holding a claim does not stall the others") {
  for (ring_policy policy : {ring_policy::block, ring_policy::overwrite}) {
    INFO(to_string(policy));
    test::names names;
    {
      manager m(names.options());
      ring_options o;
      o.slots = 4;
      o.policy = policy;
      o.block_timeout = 5s;
      auto w = m.ring<std::uint16_t>(names("kill"), {32, 32}, o);
      int fds[2];
      REQUIRE(::pipe(fds) == 0);
      std::vector<pid_t> kids;
      for (int i = 0; i < 2; ++i) {
        std::fflush(nullptr);
        const pid_t p = ::fork();
        if (p == 0) {
          ::close(fds[0]);
          ::_exit(child_member(names("kill"), fds[1], i == 0 ? 3 : -1));
        }
        kids.push_back(p);
      }
      ::close(fds[1]);
      REQUIRE(readers_attached(w, 2));
      const std::uint64_t count = 100;
      const auto start = std::chrono::steady_clock::now();
      for (std::uint64_t i = 0; i < count; ++i) {
        publish_pattern(w, 5s);  // a ring_timeout here would fail the test
        std::this_thread::sleep_for(200us);
      }
      CHECK(std::chrono::steady_clock::now() - start < 5s);
      w.close();
      CHECK(test::killed_by(test::reap(kids[0]), SIGKILL));
      CHECK(test::exited_with(test::reap(kids[1]), 0));
      auto seqs = read_seqs(fds[0]);
      ::close(fds[0]);
      std::sort(seqs.begin(), seqs.end());
      CHECK(std::adjacent_find(seqs.begin(), seqs.end()) == seqs.end());
      CHECK(seqs.back() == count);  // the survivor went on to the end
      // Every frame was processed, skipped (overwrite) or held by the dead
      // member; its claim is counted missed once a process finds it dead
      // (the writer, waiting in block mode, always does).
      auto r = ring_reader<std::uint16_t>::attach(names("kill"), reader_options{"g"});
      const auto accounted = seqs.size() + r.group_missed();
      if (policy == ring_policy::block)
        CHECK(accounted == count);
      else
        CHECK((accounted == count || accounted == count - 1));
    }
    CHECK(names.left().empty());
  }
}

namespace {

// A writer in a forked child that publishes `frames` frames once a reader
// is attached, tells the parent, and then dies as `how` says.
enum class death { between_publishes, mid_publish };

void writer_dies(death how) {
  test::names names;
  int up[2];
  REQUIRE(::pipe(up) == 0);
  std::fflush(nullptr);
  const pid_t writer = ::fork();
  if (writer == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // it never ends by itself
    ::close(up[0]);
    manager m(names.options());
    auto w = m.ring<std::uint16_t>(names("die"), {8, 8}, {});
    (void)!::write(up[1], "c", 1);
    if (!readers_attached(w, 1)) ::_exit(3);
    for (int i = 0; i < 3; ++i)
      publish_pattern(w);
    auto l = w.loan();  // frame 4, being written
    if (how == death::mid_publish) std::fill(l.begin(), l.end(), std::uint16_t(9));
    (void)!::write(up[1], "p", 1);
    for (;;)
      ::pause();  // killed here, with frame 4 half-written or not yet begun
  }
  ::close(up[1]);
  char c;
  REQUIRE(::read(up[0], &c, 1) == 1);
  reader_options o;
  o.spin = 0us;
  auto r = ring_reader<std::uint16_t>::attach(names("die"), o);
  REQUIRE(::read(up[0], &c, 1) == 1);
  ::close(up[0]);
  CHECK(r.producer_alive());
  ::kill(writer, SIGKILL);
  CHECK(test::killed_by(test::reap(writer), SIGKILL));
  // The frames still in the ring first, then producer gone, never a hang.
  for (std::uint64_t n = 1; n <= 3; ++n) {
    auto f = r.next(5s);
    REQUIRE(f);
    CHECK(f->seq() == n);
    CHECK(f->valid());
  }
  const auto start = std::chrono::steady_clock::now();
  try {
    (void)r.next(10s);
    FAIL("no producer_gone");
  } catch (const producer_gone& e) {
    CHECK(e.died());
    CHECK(std::string(e.what()).find("died") != std::string::npos);
  }
  CHECK(std::chrono::steady_clock::now() - start < 5s);
  CHECK_FALSE(r.producer_alive());
  // Its helper removes the name, as it removes arrays.
  CHECK(test::eventually([&] { return names.left().empty(); }));
}

}  // namespace

TEST_CASE(
    "a writer SIGKILLed between publishes: readers get producer gone after the frames left "
    "and nothing stays in /dev/shm") {
  writer_dies(death::between_publishes);
}

TEST_CASE(
    "a writer SIGKILLed mid-publish: readers get producer gone after the frames left and "
    "nothing stays in /dev/shm") {
  writer_dies(death::mid_publish);
}

TEST_CASE("a writer that closes the ring: readers read what is left then get producer gone") {
  test::names names;
  {
    manager m(names.options());
    auto w = m.ring<float>(names("close"), {4}, {});
    auto r = ring_reader<float>::attach(names("close"));
    publish_pattern(w);
    publish_pattern(w);
    w.close();
    CHECK(r.next(1s));
    CHECK(r.next(1s));
    try {
      (void)r.next(1s);
      FAIL("no producer_gone");
    } catch (const producer_gone& e) {
      CHECK_FALSE(e.died());
    }
    CHECK_THROWS_AS(w.loan(), error);  // a closed writer publishes nothing
  }
  CHECK(names.left().empty());
}

TEST_CASE("block: a reader SIGKILLed while the writer waits does not block it past its timeout") {
  test::names names;
  {
    manager m(names.options());
    ring_options o;
    o.slots = 4;
    o.policy = ring_policy::block;
    auto w = m.ring<std::uint16_t>(names("rk"), {8, 8}, o);
    std::fflush(nullptr);
    const pid_t reader = ::fork();
    if (reader == 0) {
      auto r = ring_reader<std::uint16_t>::attach(names("rk"));
      (void)r.next(10s);  // holds frame 1
      std::this_thread::sleep_for(300ms);
      ::raise(SIGKILL);  // dies holding it, while the writer waits for it
    }
    REQUIRE(readers_attached(w, 1));
    for (int i = 0; i < 4; ++i)
      publish_pattern(w, 1s);  // frames 1-4 fill the ring
    const auto start = std::chrono::steady_clock::now();
    publish_pattern(w, 5s);  // frame 5 needs frame 1's slot: waits for the reader's death
    const auto waited = std::chrono::steady_clock::now() - start;
    CHECK(waited < 3s);
    CHECK(test::killed_by(test::reap(reader), SIGKILL));
    CHECK(w.readers() == 0);  // its entry was freed
    for (int i = 0; i < 10; ++i)
      publish_pattern(w, 1s);  // and nothing holds the writer any more
  }
  CHECK(names.left().empty());
}

TEST_CASE("block: a reader SIGSTOPped makes the writer's timeout fire") {
  test::names names;
  {
    manager m(names.options());
    ring_options o;
    o.slots = 2;
    o.policy = ring_policy::block;
    auto w = m.ring<std::uint16_t>(names("stop"), {8}, o);
    std::fflush(nullptr);
    const pid_t reader = ::fork();
    if (reader == 0) {
      auto r = ring_reader<std::uint16_t>::attach(names("stop"));
      (void)r.next(10s);
      ::raise(SIGSTOP);
      ::_exit(0);
    }
    REQUIRE(readers_attached(w, 1));
    publish_pattern(w, 1s);
    publish_pattern(w, 1s);
    REQUIRE(test::eventually([&] {
      std::FILE* f = std::fopen(("/proc/" + std::to_string(reader) + "/stat").c_str(), "r");
      char st = '?';
      if (f) {
        (void)!std::fscanf(f, "%*d (%*[^)]) %c", &st);
        std::fclose(f);
      }
      return st == 'T';
    }));
    const auto start = std::chrono::steady_clock::now();
    CHECK_THROWS_AS(publish_pattern(w, 200ms), ring_timeout);
    CHECK(std::chrono::steady_clock::now() - start >= 200ms);
    try {
      publish_pattern(w, 10ms);
    } catch (const ring_timeout& e) {
      CHECK(std::string(e.what()).find("pid " + std::to_string(reader)) != std::string::npos);
    }
    ::kill(reader, SIGKILL);
    CHECK(test::killed_by(test::reap(reader), SIGKILL));
  }
  CHECK(names.left().empty());
}

TEST_CASE("sleeping readers lose no wake-up in a ping-pong through two rings") {
  test::names names;
  {
    manager m(names.options());
    auto ping = m.ring<std::uint64_t>(names("ping"), {1}, {});
    std::fflush(nullptr);
    const int rounds = 2000;
    const pid_t echo = ::fork();
    if (echo == 0) {
      manager mc(names.options());
      auto pong = mc.ring<std::uint64_t>(names("pong"), {1}, {});
      reader_options o;
      o.spin = 0us;  // sleep on the futex at once
      auto r = ring_reader<std::uint64_t>::attach(names("ping"), o);
      for (int i = 0; i < rounds; ++i) {
        auto f = r.next(10s);
        if (!f) ::_exit(10);
        const std::uint64_t v = f->data()[0];
        pong.push(&v);
      }
      ::_exit(0);
    }
    reader_options o;
    o.spin = 0us;
    o.wait_for_name = 5s;
    auto r = ring_reader<std::uint64_t>::attach(names("pong"), o);
    REQUIRE(readers_attached(ping, 1));
    int slow = 0;
    for (int i = 0; i < rounds; ++i) {
      const std::uint64_t v = std::uint64_t(i);
      const auto t0 = std::chrono::steady_clock::now();
      ping.push(&v);
      auto f = r.next(10s);
      REQUIRE(f);
      REQUIRE(f->data()[0] == v);
      // A lost wake-up is noticed only at the end of a 50 ms sleep.
      slow += std::chrono::steady_clock::now() - t0 >= 40ms;
    }
    CHECK(test::exited_with(test::reap(echo), 0));
    INFO(slow << " of " << rounds << " round trips took 40 ms or more");
    CHECK(slow <= rounds / 100);
  }
  // The echo's ring goes with its process (its helper removes the name).
  CHECK(test::eventually([&] { return names.left().empty(); }));
}

TEST_CASE("an anonymous ring is read by fork children through the writer they inherited") {
  manager m;
  ring_options o;
  o.policy = ring_policy::block;  // lossless, however slowly the children run
  auto w = m.ring<std::int32_t>(anonymous{}, {3, 3}, o);
  std::vector<pid_t> kids;
  for (int i = 0; i < 2; ++i) {
    std::fflush(nullptr);
    const pid_t p = ::fork();
    if (p == 0) {
      auto r = ring_reader<std::int32_t>::attach(w);
      // The writer handle belongs to the parent: a child cannot publish.
      try {
        (void)w.loan();
        ::_exit(20);
      } catch (const wrong_process&) {
      }
      for (std::uint64_t n = 1; n <= 50; ++n) {
        auto f = r.next(10s);
        if (!f || f->seq() != n || !has_pattern<std::int32_t>(*f, n)) ::_exit(21);
      }
      ::_exit(0);
    }
    kids.push_back(p);
  }
  REQUIRE(readers_attached(w, 2));
  for (int i = 0; i < 50; ++i) {
    publish_pattern(w);
    std::this_thread::sleep_for(200us);
  }
  for (pid_t p : kids)
    CHECK(test::exited_with(test::reap(p), 0));
}

TEST_CASE(
    "a forked child's copy of a reader says wrong process and its liveness lock is not "
    "kept") {
  test::names names;
  {
    manager m(names.options());
    auto w = m.ring<std::uint8_t>(names("fk"), {4}, {});
    auto r = ring_reader<std::uint8_t>::attach(names("fk"));
    const int st = test::in_child([&] {
      try {
        (void)r.next(1ms);
        return 1;
      } catch (const wrong_process&) {
      }
      return 0;
    });
    CHECK(test::exited_with(st, 0));
    CHECK(w.readers() == 1);
  }
  CHECK(names.left().empty());
}

TEST_CASE("frames and loans are arrays to the views: Eigen and xtensor see them as any array") {
  STATIC_REQUIRE(detail::is_array<ring_frame<float>>::value);
  STATIC_REQUIRE(detail::is_array<ring_loan<float>>::value);
  STATIC_REQUIRE(std::is_same_v<ring_frame<float>::element_type, const float>);
}

TEST_CASE("bad input to rings: typed errors and nothing left behind") {
  test::names names;
  {
    manager m(names.options());
    auto w = m.ring<std::uint16_t>(names("bad"), {4, 4}, {});
    auto a = m.from_shape<std::uint16_t>({4, 4});
    // A ring attached as an array, and an array attached as a ring.
    CHECK_THROWS_WITH(ndarray<std::uint16_t>::attach(names("bad")),
                      Catch::Contains("is a ring of frames"));
    CHECK_THROWS_AS(ndarray<std::uint16_t>::attach(names("bad")), version_mismatch);
    CHECK_THROWS_AS(ring_reader<std::uint16_t>::attach(a.name()), version_mismatch);
    CHECK_THROWS_WITH(ring_reader<std::uint16_t>::attach(a.name()), Catch::Contains("is an array"));
    // Wrong dtype, wrong frame shape, missing, bad names.
    CHECK_THROWS_AS(ring_reader<float>::attach(names("bad")), dtype_mismatch);
    CHECK_THROWS_AS(ring_reader<std::uint16_t>::attach(names("bad"), {4, 5}), shape_mismatch);
    CHECK_THROWS_AS(ring_reader<std::uint16_t>::attach(names("none")), not_found);
    CHECK_THROWS_AS(ring_reader<std::uint16_t>::attach("bad\nname"), invalid_name);
    reader_options g;
    g.group = "tab\there";
    CHECK_THROWS_AS(ring_reader<std::uint16_t>::attach(names("bad"), g), invalid_name);
    // Zero slots, zero extents, too many readers or groups.
    ring_options zero;
    zero.slots = 0;
    CHECK_THROWS_AS(m.ring<float>(names("z"), {4}, zero), invalid_argument);
    CHECK_THROWS_AS(m.ring<float>(names("z"), {4, 0}, {}), invalid_shape);
    ring_options many;
    many.max_readers = 5000;
    CHECK_THROWS_AS(m.ring<float>(names("z"), {4}, many), invalid_argument);
    CHECK_THROWS_AS(m.ring<float>(names("bad"), {4}, {}), already_exists);
    // A full reader table.
    ring_options one;
    one.max_readers = 1;
    auto w1 = m.ring<float>(names("one"), {4}, one);
    auto r1 = ring_reader<float>::attach(names("one"));
    CHECK_THROWS_AS(ring_reader<float>::attach(names("one")), invalid_argument);
    CHECK_FALSE(names.exists(names("z")));
  }
  CHECK(names.left().empty());
}

TEST_CASE("a forged ring record is corrupt metadata and a truncated ring is truncated") {
  test::names names;
  {
    manager m(names.options());
    ring_options keep;
    keep.keep = true;
    auto w = m.ring<float>(names("forged"), {8}, keep);
    const std::string path = "/dev/shm" + names("forged");
    const int fd = ::open(path.c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    struct stat st {};
    REQUIRE(::fstat(fd, &st) == 0);
    const off_t rec = st.st_size - 512;
    // Each forged field, then the record put back.
    char saved[512];
    REQUIRE(::pread(fd, saved, 512, rec) == 512);
    for (std::size_t off : {format::ring::off_policy, format::ring::off_slots,
                            format::ring::off_slot_stride, format::off_shape, std::size_t(364)}) {
      char b = char(saved[off] ^ 0x5a);
      REQUIRE(::pwrite(fd, &b, 1, rec + off_t(off)) == 1);
      CHECK_THROWS_AS(ring_reader<float>::attach(names("forged")), corrupt_metadata);
      REQUIRE(::pwrite(fd, saved, 512, rec) == 512);
    }
    // A consistent forgery (checksum recomputed) of a ring larger than the object.
    char forged[512];
    std::memcpy(forged, saved, 512);
    detail::store_le<std::uint32_t>(reinterpret_cast<std::byte*>(forged) + format::ring::off_slots,
                                    2000);
    detail::store_le<std::uint32_t>(reinterpret_cast<std::byte*>(forged) + format::off_checksum,
                                    detail::crc32(reinterpret_cast<std::byte*>(forged), 376));
    REQUIRE(::pwrite(fd, forged, 512, rec) == 512);
    CHECK_THROWS_AS(ring_reader<float>::attach(names("forged")), metadata_error);
    REQUIRE(::pwrite(fd, saved, 512, rec) == 512);
    CHECK_NOTHROW(ring_reader<float>::attach(names("forged")));
    // A consistent forgery whose sizes wrap past 2^64 (65536 slots of
    // frames of 2^48 - 1 bytes) to the size of a small object.
    {
      auto* b = reinterpret_cast<std::byte*>(forged);
      std::memcpy(forged, saved, 512);
      std::memcpy(b + format::off_dtype, "|u1\0", 4);
      detail::store_le<std::uint32_t>(b + format::off_itemsize, 1);
      const std::uint64_t frame = (std::uint64_t(1) << 48) - 1;
      detail::store_le<std::uint64_t>(b + format::off_shape, frame);
      detail::store_le<std::uint64_t>(b + format::ring::off_frame_nbytes, frame);
      detail::store_le<std::uint32_t>(b + format::ring::off_slots, 65536);
      detail::store_le<std::uint32_t>(b + format::ring::off_max_readers, 1);
      detail::store_le<std::uint32_t>(b + format::ring::off_max_groups, 0);
      detail::store_le<std::uint64_t>(b + format::ring::off_slot_stride, frame + 1);
      detail::store_le<std::uint32_t>(b + format::off_checksum, detail::crc32(b, 376));
      CHECK_THROWS_AS(detail::validate_ring_record(b, 4325888, "/wrap"), corrupt_metadata);
    }
    // Cut short, the record is gone from its place: zeros there, as a ring
    // being made has (not ready), never a crash.
    REQUIRE(::ftruncate(fd, rec) == 0);
    CHECK_THROWS_AS(ring_reader<float>::attach(names("forged")), not_ready);
    ::close(fd);
    shmarray::remove(posix_shm(names("forged")));
  }
  CHECK(names.left().empty());
}

TEST_CASE("a ring too large for /dev/shm is out of space at creation never a SIGBUS") {
  const auto run = test::in_small_tmpfs("/dev/shm", "1m", [](auto say) {
    manager m;
    try {
      ring_options o;
      o.slots = 8;
      (void)m.ring<std::uint16_t>("/too_large", {512, 512}, o);  // 4 MiB of frames
      say("created");
      return 1;
    } catch (const out_of_space& e) {
      say(e.what());
    }
    // Nothing left, and a ring that fits works.
    if (!test::in_shm().empty()) return 2;
    auto w = m.ring<std::uint16_t>("/fits", {16, 16}, {});
    auto r = ring_reader<std::uint16_t>::attach("/fits");
    publish_pattern(w);
    auto f = r.next(1s);
    return f && f->valid() ? 0 : 3;
  });
  if (run.skipped()) return;
  INFO(run.said);
  CHECK(run.ok());
}

TEST_CASE("a loan dropped unpublished publishes nothing and the next loan is of the same frame") {
  test::names names;
  {
    manager m(names.options());
    auto w = m.ring<std::int32_t>(names("drop"), {4}, {});
    auto r = ring_reader<std::int32_t>::attach(names("drop"));
    try {
      auto l = w.loan();
      l.data()[0] = -1;
      throw std::runtime_error("the fill failed");
    } catch (const std::runtime_error&) {
    }
    CHECK(w.head() == 0);
    CHECK_FALSE(r.next(1ms));
    auto l = w.loan();
    CHECK(l.seq() == 1);
    CHECK(publish_pattern(w) == 1);  // a fresh loan of frame 1, filled and published
    CHECK_THROWS_AS(w.publish(std::move(l)), error);  // the stale one is not current any more
    auto f = r.next(1s);
    REQUIRE(f);
    CHECK(f->seq() == 1);
    CHECK(has_pattern<std::int32_t>(*f, 1));
  }
  CHECK(names.left().empty());
}

TEST_CASE("block: release lets the writer reuse a frame's slot before the next call") {
  test::names names;
  {
    manager m(names.options());
    ring_options o;
    o.slots = 1;
    o.policy = ring_policy::block;
    auto w = m.ring<std::uint8_t>(names("rel"), {2}, o);
    auto r = ring_reader<std::uint8_t>::attach(names("rel"));
    publish_pattern(w);
    auto f = r.next(1s);
    REQUIRE(f);
    CHECK_THROWS_AS(publish_pattern(w, 20ms), ring_timeout);  // the reader holds frame 1
    r.release();
    CHECK(publish_pattern(w, 1s) == 2);
    CHECK_FALSE(f->valid());  // its slot holds frame 2 now
    auto g = r.next(1s);
    REQUIRE(g);
    CHECK(g->seq() == 2);
  }
  CHECK(names.left().empty());
}

TEST_CASE("a writer counts live readers only: a dead reader's entry is freed") {
  test::names names;
  {
    manager m(names.options());
    auto w = m.ring<float>(names("live"), {4}, {});
    auto r = ring_reader<float>::attach(names("live"));
    const int st = test::in_child([&] {
      auto mine = ring_reader<float>::attach(names("live"));
      ::raise(SIGKILL);  // dies attached
      return 1;
    });
    CHECK(test::killed_by(st, SIGKILL));
    CHECK(w.readers() == 1);
  }
  CHECK(names.left().empty());
}
