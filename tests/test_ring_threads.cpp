// The ring's protocol words (docs/FORMAT.md, "Rings: format version 2"),
// with threads instead of processes.
//
// ThreadSanitizer sees the threads of one process only, and only through
// one virtual address per byte: two mappings of one ring are, to it, two
// unrelated pieces of memory. A reader attached the ordinary way maps the
// ring anew (its slots read-only, its own area apart), so these tests give
// their readers the writer's own mapping, through the library's hook for
// tests (detail::ring_access::reader_sharing_mapping): a reader's own
// entry, lock and protocol, over the writer's mapping in place of new ones.
// Everything else (publishing, next(), latest(), valid(), the groups'
// claims, the block policy's releases, futex sleeps and wake-ups, close and
// producer_gone) is the library's code as it is. CI builds this file under
// ThreadSanitizer in build-tsan (tools/run.sh test); it also runs in the
// plain and ASan trees.
//
// What is annotated, and why. The protocol words are all atomic (the
// `__atomic` builtins of detail/ring_sync.hpp), and are checked as they are.
// Frame bytes are plain memory, and:
//  - under `block` the protocol orders them by itself (a reader's release
//    of a frame, a seq_cst store of `done` or `claim`, is what the writer
//    loads before it loans the slot again; the writer's release store of the
//    slot state is what a reader loads with acquire before it reads): those
//    tests write and read the frames with plain accesses, and a report there
//    would be a real bug;
//  - under `overwrite` a reader reads a slot the writer may be rewriting,
//    by design (a seqlock: valid() tells afterwards), and the order that
//    makes valid() right is carried by atomic_thread_fence, which clang 14's
//    ThreadSanitizer does not model. Those tests, and only those, write and
//    read the frame bytes with relaxed atomic word accesses (write_relaxed,
//    read_relaxed), so that the designed race is not reported while every
//    protocol word still is checked.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <shmarray/manager.hpp>
#include <shmarray/ring.hpp>
#include <string>
#include <thread>
#include <vector>

#include "support.hpp"

// A reader on the writer's own mapping (see the top of the file), through
// the library's hook for it: the reader's own protocol, without mappings of
// its own.
template <class T>
shmarray::ring_reader<T> sharing(const shmarray::ring_writer<T>& w,
                                 const shmarray::reader_options& o = {}) {
  return shmarray::detail::ring_access::reader_sharing_mapping<shmarray::ring_reader<T>>(w, o);
}

using namespace shmarray;
using namespace std::chrono_literals;
using word = std::uint64_t;

namespace {

constexpr std::size_t frame_words = 256;

// The pattern of frame `seq`: each word says its frame and its place.
word pattern(word seq, std::size_t i) {
  return seq * 1000003u + i;
}

// Plain accesses: where the protocol orders the frame bytes by itself.
void fill_plain(word* f, word seq) {
  for (std::size_t i = 0; i < frame_words; ++i)
    f[i] = pattern(seq, i);
}
// How many words of f are not frame seq's, read in place.
std::size_t wrong_in_place(const word* f, word seq) {
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < frame_words; ++i)
    wrong += f[i] != pattern(seq, i);
  return wrong;
}

// The annotated accesses: relaxed atomic words, for the overwrite tests'
// frame bytes only (the designed race of a seqlock; see the top).
void write_relaxed(word* f, word seq) {
  for (std::size_t i = 0; i < frame_words; ++i)
    __atomic_store_n(&f[i], pattern(seq, i), __ATOMIC_RELAXED);
}
std::size_t wrong_relaxed(const word* f, word seq) {
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < frame_words; ++i)
    wrong += __atomic_load_n(&f[i], __ATOMIC_RELAXED) != pattern(seq, i);
  return wrong;
}

ring_options options(ring_policy p, std::size_t slots) {
  ring_options o;
  o.policy = p;
  o.slots = slots;
  o.block_timeout = 60s;  // ThreadSanitizer is slow; a timeout here is a failure
  return o;
}

reader_options sleeping() {
  reader_options o;
  o.spin = 0ns;  // straight to the futex: the writer must wake it every time
  return o;
}

reader_options in_group(const std::string& g) {
  reader_options o;
  o.group = g;
  return o;
}

// What one reader saw.
struct seen {
  std::vector<word> seqs;  // every frame next() gave, in order
  std::size_t torn = 0;    // of those, the frames valid() rejected
  std::size_t wrong = 0;   // frames valid() accepted that were not their sequence's
  std::uint64_t missed = 0;
  bool gone = false, died = false;
};

// Reads frames with next() until producer_gone; `wrong_of` checks a frame in place.
template <class Check>
void read_all(ring_reader<word>& r, seen& s, Check wrong_of, std::chrono::microseconds pause = {}) {
  try {
    for (;;) {
      auto f = r.next(30s);
      if (!f) break;  // nothing for 30 s: the test fails below on the count
      const std::size_t wrong = wrong_of(f->data(), f->seq());
      s.seqs.push_back(f->seq());
      if (!f->valid())
        ++s.torn;
      else
        s.wrong += wrong != 0;  // torn, yet accepted
      if (pause.count()) std::this_thread::sleep_for(pause);
    }
  } catch (const producer_gone& e) {
    s.gone = true;
    s.died = e.died();
  }
  s.missed = r.missed();
}

// The writer: frames 1 to `frames`, each filled by `fill`, a pause after
// every `every` of them, then close(). The readers share the writer's
// mapping (see the top), which must outlive the writer's close: the first
// loan's keep_alive() goes to `keep`, which the test holds until its
// readers are gone. Returns the sequence numbers publish() gave.
template <class Fill>
std::vector<word> write_frames(ring_writer<word>& w, word frames, Fill fill,
                               std::shared_ptr<const void>& keep, word every = 0,
                               std::chrono::microseconds pause = {}) {
  std::vector<word> published;
  for (word n = 1; n <= frames; ++n) {
    auto l = w.loan();
    if (n == 1) keep = l.keep_alive();
    fill(l.data(), l.seq());
    published.push_back(w.publish(std::move(l)));
    if (every && n % every == 0) std::this_thread::sleep_for(pause);
  }
  w.close();
  return published;
}

}  // namespace

TEST_CASE("block: readers of their own get every frame in order, read in place, plain") {
  const std::size_t readers = GENERATE(1, 2, 4);
  constexpr word frames = 1500;
  manager m;
  auto w = m.ring<word>(anonymous{}, {frame_words}, options(ring_policy::block, 4));
  std::shared_ptr<const void> keep;
  std::vector<ring_reader<word>> rs;
  for (std::size_t i = 0; i < readers; ++i)  // spinning and sleeping readers in turn
    rs.push_back(sharing(w, i % 2 ? sleeping() : reader_options{}));
  std::vector<seen> s(readers);
  std::vector<word> published;
  std::vector<std::thread> ts;
  for (std::size_t i = 0; i < readers; ++i)
    ts.emplace_back([&, i] {
      // one reader slow: the writer must wait for it, and sleep
      read_all(rs[i], s[i], wrong_in_place, i == 0 ? 200us : 0us);
    });
  std::thread writer([&] { published = write_frames(w, frames, fill_plain, keep); });
  writer.join();
  for (auto& t : ts)
    t.join();
  REQUIRE(published.size() == frames);
  CHECK(published.back() == frames);
  for (std::size_t i = 0; i < readers; ++i) {
    INFO("reader " << i);
    CHECK(s[i].gone);
    CHECK_FALSE(s[i].died);
    CHECK(s[i].torn == 0);
    CHECK(s[i].wrong == 0);
    CHECK(s[i].missed == 0);
    REQUIRE(s[i].seqs.size() == frames);
    for (word n = 1; n <= frames; ++n)
      REQUIRE(s[i].seqs[n - 1] == n);
  }
}

TEST_CASE("block: a reader group splits the frames, each to exactly one member, plain") {
  const std::size_t members = GENERATE(2, 3);
  constexpr word frames = 1500;
  manager m;
  auto w = m.ring<word>(anonymous{}, {frame_words}, options(ring_policy::block, 4));
  std::shared_ptr<const void> keep;
  std::vector<ring_reader<word>> rs;
  for (std::size_t i = 0; i < members; ++i)
    rs.push_back(sharing(w, in_group("workers")));
  // and one reader of its own beside the group, which sees every frame
  rs.push_back(sharing(w, sleeping()));
  std::vector<seen> s(rs.size());
  std::vector<std::thread> ts;
  for (std::size_t i = 0; i < rs.size(); ++i)
    ts.emplace_back([&, i] { read_all(rs[i], s[i], wrong_in_place, i == 0 ? 100us : 0us); });
  std::thread writer([&] { write_frames(w, frames, fill_plain, keep); });
  writer.join();
  for (auto& t : ts)
    t.join();
  std::vector<int> taken(frames + 1, 0);
  for (std::size_t i = 0; i < members; ++i) {
    INFO("member " << i);
    CHECK(s[i].gone);
    CHECK(s[i].torn == 0);
    CHECK(s[i].wrong == 0);
    CHECK(s[i].missed == 0);
    CHECK(std::is_sorted(s[i].seqs.begin(), s[i].seqs.end()));
    for (word n : s[i].seqs)
      ++taken[n];
  }
  for (word n = 1; n <= frames; ++n) {
    INFO("frame " << n);
    REQUIRE(taken[n] == 1);
  }
  CHECK(rs[0].group_missed() == 0);
  const seen& own = s.back();
  CHECK(own.torn == 0);
  CHECK(own.wrong == 0);
  CHECK(own.seqs.size() == frames);
}

TEST_CASE("overwrite: readers in place accept no torn frame, and missed counts are exact") {
  constexpr word frames = 4000;
  manager m;
  auto w = m.ring<word>(anonymous{}, {frame_words}, options(ring_policy::overwrite, 4));
  std::shared_ptr<const void> keep;
  std::vector<ring_reader<word>> rs;
  rs.push_back(sharing(w));              // spins
  rs.push_back(sharing(w, sleeping()));  // sleeps on the futex
  rs.push_back(sharing(w));              // slow: falls behind
  rs.push_back(sharing(w, in_group("pair")));
  rs.push_back(sharing(w, in_group("pair")));
  std::vector<seen> s(rs.size());
  std::vector<std::thread> ts;
  for (std::size_t i = 0; i < rs.size(); ++i)
    ts.emplace_back([&, i] { read_all(rs[i], s[i], wrong_relaxed, i == 2 ? 300us : 0us); });
  // A reader of latest() only, which must stop by itself.
  std::atomic<bool> done{false};
  auto latest_reader = sharing(w);
  seen ls;
  std::thread lt([&] {
    while (!done.load()) {
      if (auto f = latest_reader.latest()) {
        const std::size_t wrong = wrong_relaxed(f->data(), f->seq());
        if (f->valid()) {
          ls.wrong += wrong != 0;
          ls.seqs.push_back(f->seq());
        } else {
          ++ls.torn;
        }
      }
      std::this_thread::yield();
    }
  });
  // a pause now and then, for the sleeping reader to sleep
  std::thread writer([&] { write_frames(w, frames, write_relaxed, keep, 64, 100us); });
  writer.join();
  for (auto& t : ts)
    t.join();
  done = true;
  lt.join();
  for (std::size_t i = 0; i < 3; ++i) {
    const seen& r = s[i];
    INFO("reader " << i << ": " << r.seqs.size() << " frames, " << r.torn << " torn, " << r.missed
                   << " missed");
    CHECK(r.gone);
    CHECK_FALSE(r.died);
    CHECK(r.wrong == 0);  // zero torn frames accepted as valid
    // In order; the gaps between the frames it got are exactly what it was
    // told it missed (a torn frame it dropped is one it got); and the last
    // frame, which nothing overwrote, it got.
    REQUIRE(std::is_sorted(r.seqs.begin(), r.seqs.end()));
    word before = 0, gaps = 0;
    for (word n : r.seqs) {
      CHECK(n > before);
      gaps += n - before - 1;
      before = n;
    }
    CHECK(gaps == r.missed);
    CHECK(before == frames);
    CHECK(r.missed + r.seqs.size() == frames);
  }
  CHECK(s[2].missed > 0);  // the slow one fell behind, and was told
  // The pair took each frame at most once between them, and what neither
  // took is what the group was told it lost.
  std::vector<int> taken(frames + 1, 0);
  std::size_t took = 0;
  for (std::size_t i = 3; i < 5; ++i) {
    CHECK(s[i].gone);
    CHECK(s[i].wrong == 0);
    for (word n : s[i].seqs)
      ++taken[n];
    took += s[i].seqs.size();
  }
  CHECK(std::count_if(taken.begin(), taken.end(), [](int c) { return c > 1; }) == 0);
  CHECK(took + rs[3].group_missed() == frames);
  CHECK(rs[3].group_missed() == rs[4].group_missed());
  CHECK(ls.wrong == 0);
  CHECK(std::is_sorted(ls.seqs.begin(), ls.seqs.end()));
}

TEST_CASE("a reader asleep on the futex is woken for each frame, and for the close") {
  constexpr word frames = 200;
  manager m;
  auto w = m.ring<word>(anonymous{}, {frame_words}, options(ring_policy::overwrite, 8));
  std::shared_ptr<const void> keep;
  auto r = sharing(w, sleeping());
  seen s;
  std::thread reader([&] { read_all(r, s, wrong_relaxed); });
  // a pause after every frame: the reader is asleep when the next comes
  std::thread writer([&] { write_frames(w, frames, write_relaxed, keep, 1, 300us); });
  writer.join();
  reader.join();
  CHECK(s.gone);
  CHECK_FALSE(s.died);
  CHECK(s.wrong == 0);
  CHECK(s.seqs.size() + s.torn + s.missed == frames);
}

#if defined(SHMARRAY_TSAN)
// A report ends the process with exit code 66, however this is run.
extern "C" const char* __tsan_default_options() {
  return "halt_on_error=1";
}

namespace {
// The broken reader's in-place read, by name in the report.
__attribute__((noinline)) word sum_released_frame(const word* f) {
  word sum = 0;
  for (std::size_t i = 0; i < frame_words; ++i)
    sum += f[i];
  return sum;
}
}  // namespace

// Proof that the block tests above can fail: a reader that releases a frame
// before it has read it (its `done` stored at once, where the protocol
// stores it when the reader asks for the next frame) lets the writer reuse
// the slot while it reads, and ThreadSanitizer says so.
TEST_CASE("ThreadSanitizer reports a block reader that releases a frame before reading it") {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const int status = test::in_child([&] {
    ::dup2(fds[1], 2);  // the report, for the parent to read
    ::close(fds[0]);
    manager m;
    auto w = m.ring<word>(anonymous{}, {frame_words}, options(ring_policy::block, 2));
    std::shared_ptr<const void> keep;
    auto r = sharing(w);
    const auto& ring = detail::ring_access::mapping(w);
    std::thread reader([&] {
      try {
        while (auto f = r.next(10s)) {
          // The bug: frame f released now, before it is read.
          detail::ring::store64(ring.entry(0) + format::ring::e_done, f->seq(),
                                detail::ring::seq_cst);
          volatile word sum = sum_released_frame(f->data());
          (void)sum;
          std::this_thread::sleep_for(50ms);  // the writer must not see a later release first
        }
      } catch (const producer_gone&) {
      }
    });
    write_frames(w, 6, fill_plain, keep);
    reader.join();
    return 0;
  });
  ::close(fds[1]);
  const std::string report = test::read_all(fds[0]);
  ::close(fds[0]);
  INFO(report);
  CHECK(test::exited_with(status, 66));
  CHECK(report.find("WARNING: ThreadSanitizer: data race") != std::string::npos);
  CHECK(report.find("sum_released_frame") != std::string::npos);
  CHECK(report.find("fill_plain") != std::string::npos);
}
#endif
