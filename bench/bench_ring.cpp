// Rings of frames (issue 21): round-trip latency, publish cost and
// throughput, each against a baseline measured side by side in the same run
// (the machines are shared and noisy: read the ratios, not the times).
//
//   build/bench/shmarray_ring_bench [--quick]
//
// 1. Round trips: two processes ping-pong through two rings (each writes one
//    and reads the other), spinning readers, a 64 B and a 512 x 512 uint16
//    frame, against a bare spin ping-pong on two atomic words and against
//    iceoryx's publisher/subscriber (polling subscribers; iox-roudi started
//    here in a private mount namespace, as root, where iceoryx was found at
//    build time); then sleeping readers (spin 0) against a bare futex
//    ping-pong, with a 200 us pause before each round trip (untimed) so that
//    the follower is asleep when its frame comes, and back to back. Every
//    pair is a leader and a follower forked once and parked on a pipe
//    between batches; the batches of all pairs alternate.
// 2. The writer's publish cost (loan + publish, nothing copied), against the
//    bare stores of the same protocol.
// 3. Throughput of 512 x 512 uint16 frames to readers that sum every pixel
//    (block policy: every frame read), the writer loaning and publishing
//    slots that hold frames already, or copying each frame in; against the
//    same sums over private frames in one process (and copies and sums),
//    and against frames sent through a pipe.
#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <shmarray/shmarray.hpp>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"
#include "ring_pingpong.hpp"

#ifdef SHMARRAY_BENCH_ICEORYX
#include "ring_iceoryx.hpp"
#endif

namespace {

namespace pp = bench::pingpong;
using pp::clock_type;
using pp::die;

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now().time_since_epoch())
      .count();
}

// Runs fn in a child process of its own and waits for it (every section
// forks its own processes, from a parent that holds nothing).
void in_child(const std::function<void()>& fn) {
  if (!pp::exited_ok(pp::spawn({}, fn))) die("a benchmark section");
}

// ---- 1. round trips

// A bare spin ping-pong: the leader stores n into `ping` and spins until
// `pong` is n; the follower the other way round. Each word on its own line.
struct spin_words {
  alignas(64) std::atomic<std::uint64_t> ping;
  alignas(64) std::atomic<std::uint64_t> pong;
};

// The words are in zero-filled shared memory made before the fork: zero
// values of lock-free atomics.
void spin_leader(pp::control& c, void* shared) {
  auto* w = static_cast<spin_words*>(shared);
  std::uint64_t seq = 0;
  pp::lead(c, [&] {
    w->ping.store(++seq, std::memory_order_release);
    while (w->pong.load(std::memory_order_acquire) != seq)
      pp::cpu_relax();
  });
}

void spin_follower(pp::control& c, void* shared) {
  auto* w = static_cast<spin_words*>(shared);
  std::uint64_t seq = 0;
  pp::follow(c, [&] {
    ++seq;
    while (w->ping.load(std::memory_order_acquire) != seq)
      pp::cpu_relax();
    w->pong.store(seq, std::memory_order_release);
  });
}

// A bare futex ping-pong: the same with 32-bit words, each side sleeping on
// the futex at once and the other always waking it (a shared futex).
struct futex_words {
  alignas(64) std::atomic<std::uint32_t> ping;
  alignas(64) std::atomic<std::uint32_t> pong;
};

void futex_wait(std::atomic<std::uint32_t>& w, std::uint32_t v) {
  (void)::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&w), FUTEX_WAIT, v, nullptr, nullptr,
                  0);
}
void futex_wake(std::atomic<std::uint32_t>& w) {
  (void)::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&w), FUTEX_WAKE, 1, nullptr, nullptr,
                  0);
}
// Sends v on `out` and waits for it on `in`.
void futex_send(std::atomic<std::uint32_t>& out, std::uint32_t v) {
  out.store(v, std::memory_order_release);
  futex_wake(out);
}
void futex_await(std::atomic<std::uint32_t>& in, std::uint32_t v) {
  for (std::uint32_t got; (got = in.load(std::memory_order_acquire)) != v;)
    futex_wait(in, got);
}

pp::ping_pong::role futex_leader(std::chrono::nanoseconds gap) {
  return [=](pp::control& c, void* shared) {
    auto* w = static_cast<futex_words*>(shared);
    std::uint32_t seq = 0;
    pp::lead(
        c,
        [&] {
          futex_send(w->ping, ++seq);
          futex_await(w->pong, seq);
        },
        gap);
  };
}

void futex_follower(pp::control& c, void* shared) {
  auto* w = static_cast<futex_words*>(shared);
  std::uint32_t seq = 0;
  pp::follow(c, [&] {
    futex_await(w->ping, ++seq);
    futex_send(w->pong, seq);
  });
}

// Through two rings: each side writes one ring (its own, made by its own
// manager) and reads the other's; a frame carries the sequence number in
// its first 8 bytes, written into the loaned slot and read in place.
template <class T>
struct ring_side {
  shmarray::manager m;
  shmarray::ring_writer<T> out;
  shmarray::ring_reader<T> in;
  std::uint64_t seq = 0;

  ring_side(const std::string& mine, const std::string& theirs, const shmarray::shape_type& shape,
            std::chrono::nanoseconds spin) {
    shmarray::ring_options o;
    o.slots = 4;
    out = m.ring<T>(mine, shape, o);
    shmarray::reader_options ro;
    ro.spin = spin;
    ro.wait_for_name = std::chrono::seconds(30);
    in = shmarray::ring_reader<T>::attach(theirs, shape, ro);
    // Both attached before any frame: a reader starts with the next one.
    const auto until = clock_type::now() + std::chrono::seconds(30);
    while (out.readers() == 0) {
      if (clock_type::now() > until) die("the other side's attach");
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  void send(std::uint64_t v) {
    auto l = out.loan();
    std::memcpy(static_cast<void*>(l.data()), &v, sizeof v);
    out.publish(std::move(l));
  }
  std::uint64_t receive() {
    const auto f = in.next(std::chrono::seconds(30));
    if (!f) die("a ring round trip (timed out)");
    std::uint64_t v;
    std::memcpy(&v, static_cast<const void*>(f->data()), sizeof v);
    if (!f->valid()) die("a ring round trip (a torn frame)");
    return v;
  }
};

template <class T>
pp::ping_pong::role ring_leader(std::string ping, std::string pong, shmarray::shape_type shape,
                                std::chrono::nanoseconds spin,
                                std::chrono::nanoseconds gap = std::chrono::nanoseconds(0)) {
  return [=](pp::control& c, void*) {
    ring_side<T> s(ping, pong, shape, spin);
    pp::lead(
        c,
        [&] {
          s.send(++s.seq);
          if (s.receive() != s.seq) die("a ring round trip");
        },
        gap);
  };
}

template <class T>
pp::ping_pong::role ring_follower(std::string ping, std::string pong, shmarray::shape_type shape,
                                  std::chrono::nanoseconds spin) {
  return [=](pp::control& c, void*) {
    ring_side<T> s(pong, ping, shape, spin);
    pp::follow(c, [&] {
      if (s.receive() != ++s.seq) die("a ring round trip");
      s.send(s.seq);
    });
  };
}

struct contender {
  std::unique_ptr<pp::ping_pong> pair;
  int trips;  // per batch
  std::vector<std::uint32_t> ns;
};

double percentile(std::vector<std::uint32_t> v, double p) {
  if (v.empty()) return 0;
  const std::size_t k = std::min(v.size() - 1, std::size_t(p * double(v.size())));
  std::nth_element(v.begin(), v.begin() + std::ptrdiff_t(k), v.end());
  return v[k] * 1e-9;
}

void latency_header() {
  std::printf(
      "\nRound trips through two rings (a ping-pong of two processes): p50 ratio = shmarray / "
      "baseline, lower is better\n\n");
  std::printf("| %-50s | %-40s | %9s | %9s | %9s | %9s | %6s | %-22s |\n", "operation", "baseline",
              "base p50", "base p99", "ours p50", "ours p99", "ratio", "goal");
  std::printf(
      "|%s|%s|%s|%s|%s|%s|%s|%s|\n", std::string(52, '-').c_str(), std::string(42, '-').c_str(),
      std::string(11, '-').c_str(), std::string(11, '-').c_str(), std::string(11, '-').c_str(),
      std::string(11, '-').c_str(), std::string(8, '-').c_str(), std::string(24, '-').c_str());
}

std::string us(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, s < 10e-6 ? "%.2f us" : "%.1f us", s * 1e6);
  return buf;
}

void latency_row(const std::string& what, const std::string& baseline, const contender& base,
                 const contender& ours, double goal) {
  const double b50 = percentile(base.ns, 0.5), o50 = percentile(ours.ns, 0.5);
  const double ratio = o50 / b50;
  char g[64] = "";
  if (goal > 0) std::snprintf(g, sizeof g, "<= %.1fx: %s", goal, ratio <= goal ? "met" : "missed");
  std::printf("| %-50s | %-40s | %9s | %9s | %9s | %9s | %5.2fx | %-22s |\n", what.c_str(),
              baseline.c_str(), us(b50).c_str(), us(percentile(base.ns, 0.99)).c_str(),
              us(o50).c_str(), us(percentile(ours.ns, 0.99)).c_str(), ratio, g);
  std::fflush(stdout);
}

#ifdef SHMARRAY_BENCH_ICEORYX
// Gives this process (a child) its own mount namespace with fresh tmpfs
// mounts over /dev/shm and /tmp, where iox-roudi's 207 MiB and its sockets
// go and vanish with the namespace. Needs root.
bool private_mounts() {
  if (::unshare(CLONE_NEWNS) != 0) return false;
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return false;
  for (const char* at : {"/dev/shm", "/tmp"})
    if (::mount("shmarray_bench", at, "tmpfs", MS_NOSUID | MS_NODEV, "size=1g,mode=1777") != 0)
      return false;
  return true;
}
#endif

void round_trips(bool quick) {
  [[maybe_unused]] pid_t roudi = -1;
#ifdef SHMARRAY_BENCH_ICEORYX
  if (::geteuid() != 0)
    std::printf(
        "\n(iceoryx skipped: iox-roudi runs in a private mount namespace, which needs "
        "root)\n");
  else if (!private_mounts())
    std::printf("\n(iceoryx skipped: no private mount namespace: %s)\n", std::strerror(errno));
  else if ((roudi = bench::iceoryx::start_roudi()) < 0)
    std::printf("\n(iceoryx skipped: iox-roudi did not start)\n");
#else
  std::printf("\n(iceoryx skipped: not built, iceoryx_posh's CMake package was not found)\n");
#endif
  const std::string base = "/shmarray_bench_ring_" + std::to_string(::getpid()) + "_";
  const shmarray::shape_type small{64}, large{512, 512};
  const std::chrono::nanoseconds spinning = std::chrono::seconds(10), sleeping{0}, none{0};
  // Sleeping readers: with a gap before each trip the follower is asleep
  // when the frame comes; back to back, each side may still be on its way
  // to the futex when the other's frame arrives.
  const std::chrono::nanoseconds gap = std::chrono::microseconds(200);
  const int fast = quick ? 1000 : 4000, slow = quick ? 150 : 600;
  auto make = [](const pp::ping_pong::role& l, const pp::ping_pong::role& f, int trips) {
    contender c;
    c.pair = std::make_unique<pp::ping_pong>(l, f);
    c.trips = trips;
    return c;
  };
  auto rings = [&](const std::string& tag, const shmarray::shape_type& shape,
                   std::chrono::nanoseconds spin, std::chrono::nanoseconds g, int trips) {
    const std::string ping = base + tag + "_ping", pong = base + tag + "_pong";
    if (shape.size() == 1)
      return make(ring_leader<std::uint8_t>(ping, pong, shape, spin, g),
                  ring_follower<std::uint8_t>(ping, pong, shape, spin), trips);
    return make(ring_leader<std::uint16_t>(ping, pong, shape, spin, g),
                ring_follower<std::uint16_t>(ping, pong, shape, spin), trips);
  };
  std::vector<contender> cs;
  enum {
    spin,
    ring_small,
    ring_large,
    futex,
    b2b_small,
    futex_gap,
    gap_small,
    gap_large,
    iox_small,
    iox_large
  };
  cs.push_back(make(spin_leader, spin_follower, fast));
  cs.push_back(rings("s", small, spinning, none, fast));
  cs.push_back(rings("l", large, spinning, none, fast));
  cs.push_back(make(futex_leader(none), futex_follower, slow));
  cs.push_back(rings("zs", small, sleeping, none, slow));
  cs.push_back(make(futex_leader(gap), futex_follower, slow));
  cs.push_back(rings("gs", small, sleeping, gap, slow));
  cs.push_back(rings("gl", large, sleeping, gap, slow));
#ifdef SHMARRAY_BENCH_ICEORYX
  if (roudi > 0)
    for (std::size_t payload : {std::size_t(64), std::size_t(512 * 512 * 2)})
      cs.push_back(make([=](pp::control& c, void*) { bench::iceoryx::leader(c, payload); },
                        [=](pp::control& c, void*) { bench::iceoryx::follower(c, payload); },
                        fast));
#endif
  // Batches of every pair in turn, in a rotating order; the first trips of
  // each batch (the follower waking from its pipe) are dropped, and so is
  // the first round.
  const int rounds = quick ? 5 : 15;
  for (int r = 0; r < rounds + 1; ++r)
    for (std::size_t i = 0; i < cs.size(); ++i) {
      auto& c = cs[(i + std::size_t(r)) % cs.size()];
      const auto ns = c.pair->run(c.trips);
      if (r > 0) c.ns.insert(c.ns.end(), ns.begin() + c.trips / 10, ns.end());
    }
  latency_header();
  const std::string bare = "bare spin ping-pong (2 atomic words)";
  const std::string iox = "iceoryx 2.0.3 pub/sub, polling";
  const std::string futex_base = "bare futex ping-pong, 200 us gaps";
  const bool have_iox = cs.size() > iox_large;
  latency_row("64 B frame, spinning readers", bare, cs[spin], cs[ring_small], 2.0);
  if (have_iox)
    latency_row("64 B frame, spinning readers", iox, cs[iox_small], cs[ring_small], 0.2);
  latency_row("512x512 uint16 frame, spinning readers", bare, cs[spin], cs[ring_large], 2.0);
  if (have_iox)
    latency_row("512x512 uint16 frame, spinning readers", iox, cs[iox_large], cs[ring_large], 0.2);
  latency_row("64 B frame, spin 0, 200 us gaps", futex_base, cs[futex_gap], cs[gap_small], 1.2);
  latency_row("512x512 uint16 frame, spin 0, 200 us gaps", futex_base, cs[futex_gap], cs[gap_large],
              1.2);
  latency_row("64 B frame, spin 0, back to back", "bare futex ping-pong, back to back", cs[futex],
              cs[b2b_small], 0);
  cs.clear();  // every iceoryx process ends before roudi
#ifdef SHMARRAY_BENCH_ICEORYX
  bench::iceoryx::stop_roudi(roudi);
#endif
}

// ---- 2. the writer's publish cost

// The protocol's own stores, bare: the odd state, a release fence, the
// even state, the head (seq_cst), the sleeper count (seq_cst); optionally
// the publish time, as the ring stamps each frame.
struct bare_ring {
  alignas(64) std::uint64_t head = 0;
  alignas(64) std::atomic<std::uint32_t> sleepers{0};
  alignas(64) std::uint64_t state[64] = {};
  std::uint64_t stamp[64] = {};
};

template <bool stamped>
void bare_publish(bare_ring& r, std::uint64_t& n, std::uint64_t slots, int batch) {
  for (int i = 0; i < batch; ++i, ++n) {
    const std::uint64_t k = ((n - 1) % slots) * 8 & 63;  // a line per slot
    __atomic_store_n(&r.state[k], 2 * n + 1, __ATOMIC_RELAXED);
    std::atomic_thread_fence(std::memory_order_release);
    if (stamped) __atomic_store_n(&r.stamp[k], std::uint64_t(now_ns()), __ATOMIC_RELAXED);
    __atomic_store_n(&r.state[k], 2 * n, __ATOMIC_RELEASE);
    __atomic_store_n(&r.head, n, __ATOMIC_SEQ_CST);
    if (r.sleepers.load(std::memory_order_seq_cst) != 0) futex_wake(r.sleepers);
  }
}

template <class T>
void ring_publish(shmarray::ring_writer<T>& w, int batch) {
  for (int i = 0; i < batch; ++i)
    w.publish(w.loan());
}

void publish_cost(bool quick) {
  const int reps = quick ? 7 : 21, batch = 20000;
  shmarray::manager m;
  const std::string base = "/shmarray_bench_publish_" + std::to_string(::getpid()) + "_";
  shmarray::ring_options o;
  o.slots = 8;
  auto small = m.ring<std::uint8_t>(base + "s", {64}, o);
  auto large = m.ring<std::uint16_t>(base + "l", {512, 512}, o);
  auto bare = std::make_unique<bare_ring>();
  std::uint64_t n = 1;
  volatile std::uint64_t slots_v = 8;  // a ring's slot count is known at run time only
  const std::uint64_t slots = slots_v;
  std::printf(
      "\nPublishing a frame (loan + publish, nothing copied, no reader): ratio = shmarray / "
      "baseline, lower is better\n\n");
  std::printf("| %-36s | %-46s | %9s | %9s | %6s |\n", "operation", "baseline", "baseline",
              "shmarray", "ratio");
  std::printf("|%s|%s|%s|%s|%s|\n", std::string(38, '-').c_str(), std::string(48, '-').c_str(),
              std::string(11, '-').c_str(), std::string(11, '-').c_str(),
              std::string(8, '-').c_str());
  auto row = [&](const char* what, const char* baseline, bench::result r) {
    std::printf("| %-36s | %-46s | %6.1f ns | %6.1f ns | %5.2fx |\n", what, baseline,
                r.base / batch * 1e9, r.ours / batch * 1e9, r.ours / r.base);
    std::fflush(stdout);
  };
  row("publish, 64 B frame", "bare: odd, fence, even, head, sleepers",
      bench::compare(
          reps, [&] { bare_publish<false>(*bare, n, slots, batch); },
          [&] { ring_publish(small, batch); }));
  row("publish, 64 B frame", "bare, + the CLOCK_MONOTONIC publish time",
      bench::compare(
          reps, [&] { bare_publish<true>(*bare, n, slots, batch); },
          [&] { ring_publish(small, batch); }));
  row("publish, 512x512 uint16 frame", "bare, + the CLOCK_MONOTONIC publish time",
      bench::compare(
          reps, [&] { bare_publish<true>(*bare, n, slots, batch); },
          [&] { ring_publish(large, batch); }));
  row("publish, 512x512 uint16 frame", "publish, 64 B frame",
      bench::compare(
          reps, [&] { ring_publish(small, batch); }, [&] { ring_publish(large, batch); }));
}

// ---- 3. throughput

constexpr std::size_t frame_h = 512, frame_w = 512, frame_px = frame_h * frame_w;
constexpr std::size_t frame_bytes = frame_px * sizeof(std::uint16_t);
constexpr std::size_t tp_slots = 8;  // the ring's slots, and the private frames

// The reader's work: every pixel summed.
__attribute__((noinline)) std::uint64_t sum_frame(const std::uint16_t* p) {
  std::uint64_t s = 0;
  for (std::size_t i = 0; i < frame_px; ++i)
    s += p[i];
  return s;
}

// This process's CPU time so far, in seconds.
double cpu_seconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

// What a reader sends back.
struct reader_result {
  std::int64_t first_ns = INT64_MAX;  // when it asked for its first timed frame
  std::int64_t last_ns = 0;           // after its last
  std::uint64_t frames = 0, sum = 0, torn = 0;
  double cpu = 0;  // seconds, from first_ns
};

struct throughput_run {
  double seconds;
  double writer_cpu = 0, readers_cpu = 0;  // seconds of CPU over seconds
};

// The source frames (a writer copies frame j from src[j % tp_slots]).
struct sources {
  std::vector<std::uint16_t> px;
  std::uint64_t sums[tp_slots];
  sources() : px(tp_slots * frame_px) {
    for (std::size_t i = 0; i < px.size(); ++i)
      px[i] = std::uint16_t((i * 2654435761u) >> 20);
    for (std::size_t k = 0; k < tp_slots; ++k)
      sums[k] = sum_frame(frame(k));
  }
  const std::uint16_t* frame(std::size_t j) const { return px.data() + (j % tp_slots) * frame_px; }
  std::uint64_t expected(std::uint64_t frames) const {
    std::uint64_t s = 0;
    for (std::uint64_t j = 0; j < frames; ++j)
      s += sums[j % tp_slots];
    return s;
  }
};

// The baselines, in one process: the same sums over private frames; or
// (`copy`) each frame copied from the sources into one of as many private
// frames as the ring has slots, then summed: the writer's and the reader's
// work one after the other.
throughput_run private_sums(const sources& src, std::uint64_t frames, bool copy) {
  const double s = bench::in_own_process([&] {
    std::vector<std::uint16_t> mine(src.px);
    std::uint64_t sum = 0;
    for (std::size_t k = 0; k < tp_slots; ++k)
      sum += sum_frame(mine.data() + k * frame_px);  // warm, as the ring's slots are
    const double t = bench::seconds_of([&] {
      for (std::uint64_t j = 0; j < frames; ++j) {
        std::uint16_t* f = mine.data() + (j % tp_slots) * frame_px;
        if (copy) std::memcpy(f, src.frame(j), frame_bytes);
        sum += sum_frame(f);
      }
    });
    bench::keep(sum);
    return t;
  });
  if (s < 0) die("the private sums");
  return {s};
}

// A reader's bookkeeping of one frame: warm-up frames (seq <= warm) are read
// and summed but neither timed nor counted.
struct reader_clock {
  reader_result r;
  std::int64_t prev = now_ns();
  double cpu0 = 0;
  void frame(std::uint64_t seq, std::uint64_t warm, std::uint64_t sum, bool valid) {
    if (seq > warm) {
      if (r.first_ns == INT64_MAX) {
        r.first_ns = prev;
        cpu0 = cpu_seconds();
      }
      if (valid) {
        r.sum += sum;
        ++r.frames;
      } else {
        ++r.torn;
      }
    }
    prev = r.last_ns = now_ns();
  }
  const reader_result& end() {
    r.cpu = cpu_seconds() - cpu0;
    return r;
  }
};

// The readers' results: the seconds from the first one's first timed frame
// to the last one's last, and their CPU.
throughput_run collect(int fd, int readers, std::uint64_t want, std::uint64_t want_sum) {
  std::int64_t first = INT64_MAX, last = 0;
  std::uint64_t got = 0, sum = 0;
  double cpu = 0;
  for (int i = 0; i < readers; ++i) {
    reader_result res{};
    if (!pp::read_all(fd, &res, sizeof res)) die("a throughput reader");
    if (res.torn) die("a block-mode reader saw a torn frame");
    first = std::min(first, res.first_ns);
    last = std::max(last, res.last_ns);
    got += res.frames;
    sum += res.sum;
    cpu += res.cpu;
  }
  if (got != want || sum != want_sum) die("the frames the readers summed");
  const double seconds = double(last - first) * 1e-9;
  return {seconds, 0, cpu / seconds};
}

// Frames through a ring (block: nothing lost) to `readers` readers, each of
// its own or members of one group. `fill`: the writer copies each frame in
// (push); else it loans and publishes slots that hold frames already. The
// writer fills every slot before any reader attaches, then sends 2 x slots
// frames of warm-up (the readers' first touch of each slot's pages), then
// the timed frames.
throughput_run ring_sums(const sources& src, std::uint64_t frames, int readers, bool group,
                         bool fill, int tag) {
  const std::string name =
      "/shmarray_bench_tp_" + std::to_string(::getpid()) + "_" + std::to_string(tag);
  const std::uint64_t warm = 3 * tp_slots;  // the slot fill and the warm-up
  int created[2], wcpu[2], results[2];
  if (::pipe(created) != 0 || ::pipe(wcpu) != 0 || ::pipe(results) != 0) die("pipe");
  const pid_t writer = pp::spawn({created[1], wcpu[1]}, [&] {
    shmarray::manager m;
    shmarray::ring_options o;
    o.slots = tp_slots;
    o.policy = shmarray::ring_policy::block;
    auto w = m.ring<std::uint16_t>(name, {frame_h, frame_w}, o);
    for (std::size_t k = 0; k < tp_slots; ++k)
      w.push(src.frame(k));
    if (!pp::write_all(created[1], "c", 1)) die("created");
    const auto until = clock_type::now() + std::chrono::seconds(30);
    while (w.readers() < std::size_t(readers)) {
      if (clock_type::now() > until) die("the readers' attach");
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    double cpu = 0;
    for (std::uint64_t j = tp_slots; j < warm + frames; ++j) {
      if (j == warm) cpu = cpu_seconds();
      if (fill) {
        w.push(src.frame(j));
      } else {
        w.publish(w.loan());
      }
    }
    cpu = cpu_seconds() - cpu;
    w.close();
    if (!pp::write_all(wcpu[1], &cpu, sizeof cpu)) die("the writer's CPU");
  });
  ::close(created[1]);
  ::close(wcpu[1]);
  char c;
  if (!pp::read_all(created[0], &c, 1)) die("the throughput ring's creation");
  std::vector<pid_t> pids{writer};
  for (int i = 0; i < readers; ++i)
    pids.push_back(pp::spawn({results[1]}, [&] {
      shmarray::reader_options ro;
      if (group) ro.group = "sums";
      auto r = shmarray::ring_reader<std::uint16_t>::attach(name, {frame_h, frame_w}, ro);
      reader_clock rc;
      try {
        while (auto f = r.next(std::chrono::seconds(30))) {
          const std::uint64_t s = sum_frame(f->data());
          rc.frame(f->seq(), warm, s, f->valid());
        }
        die("a throughput reader (timed out)");
      } catch (const shmarray::producer_gone&) {
      }
      if (!pp::write_all(results[1], &rc.end(), sizeof(reader_result))) die("result");
    }));
  ::close(results[1]);
  const std::uint64_t n = std::uint64_t(group ? 1 : readers);
  auto run = collect(results[0], readers, frames * n, src.expected(frames) * n);
  double cpu = 0;
  if (!pp::read_all(wcpu[0], &cpu, sizeof cpu)) die("the throughput writer");
  run.writer_cpu = cpu / run.seconds;
  for (pid_t p : pids)
    if (!pp::exited_ok(p)) die("a throughput process");
  for (int fd : {created[0], wcpu[0], results[0]})
    ::close(fd);
  return run;
}

// The same frames written down a pipe (1 MiB of pipe buffer) and read out
// into a private frame, which the reader sums; as many frames of warm-up.
throughput_run pipe_sums(const sources& src, std::uint64_t frames) {
  const std::uint64_t warm = 3 * tp_slots;
  int p[2], results[2];
  if (::pipe(p) != 0 || ::pipe(results) != 0) die("pipe");
  (void)::fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
  const pid_t reader = pp::spawn({p[0], results[1]}, [&] {
    std::vector<std::uint16_t> buf(frame_px);
    reader_clock rc;
    for (std::uint64_t j = 0; j < warm + frames; ++j) {
      if (!pp::read_all(p[0], buf.data(), frame_bytes)) die("reading the pipe");
      rc.frame(j + 1, warm, sum_frame(buf.data()), true);
    }
    if (!pp::write_all(results[1], &rc.end(), sizeof(reader_result))) die("result");
  });
  const pid_t writer = pp::spawn({p[1]}, [&] {
    for (std::uint64_t j = 0; j < warm + frames; ++j)
      if (!pp::write_all(p[1], src.frame(j), frame_bytes)) die("writing the pipe");
  });
  for (int fd : {p[0], p[1], results[1]})
    ::close(fd);
  const auto run = collect(results[0], 1, frames, src.expected(frames));
  ::close(results[0]);
  if (!pp::exited_ok(reader) || !pp::exited_ok(writer)) die("a pipe process");
  return run;
}

void throughput(bool quick) {
  const int reps = quick ? 3 : 7;
  const std::uint64_t frames = quick ? 500 : 2000;
  const sources src;
  struct variant {
    const char* what;
    int readers;
    bool group, fill;
    std::vector<double> fps, writer_cpu, readers_cpu;
  };
  std::vector<variant> vs = {
      {"ring to 1 reader, writer loans+publishes", 1, false, false, {}, {}, {}},
      {"ring to 1 reader, writer push()es (a copy in)", 1, false, true, {}, {}, {}},
      {"ring to 2 readers (each sums all), loans", 2, false, false, {}, {}, {}},
      {"ring to 2 readers (each sums all), push()es", 2, false, true, {}, {}, {}},
      {"ring to a group of 2 (each frame once), loans", 2, true, false, {}, {}, {}},
      {"ring to a group of 2 (each frame once), push()es", 2, true, true, {}, {}, {}},
  };
  std::vector<double> priv, copied, pipe;
  int tag = 0;
  for (int r = 0; r < reps; ++r) {
    priv.push_back(double(frames) / private_sums(src, frames, false).seconds);
    copied.push_back(double(frames) / private_sums(src, frames, true).seconds);
    for (auto& v : vs) {
      const auto run = ring_sums(src, frames, v.readers, v.group, v.fill, tag++);
      v.fps.push_back(double(frames) / run.seconds);
      v.writer_cpu.push_back(run.writer_cpu);
      v.readers_cpu.push_back(run.readers_cpu);
    }
    pipe.push_back(double(frames) / pipe_sums(src, frames).seconds);
  }
  std::printf(
      "\nThroughput of 512x512 uint16 frames, every pixel summed: frames/s, ratio = "
      "shmarray / baseline, higher is better; CPU: cores busy, the writer's / the readers'\n\n");
  std::printf("| %-50s | %-37s | %10s | %10s | %6s | %-11s | %-16s |\n", "operation", "baseline",
              "baseline", "shmarray", "ratio", "CPU w / r", "goal");
  std::printf("|%s|%s|%s|%s|%s|%s|%s|\n", std::string(52, '-').c_str(),
              std::string(39, '-').c_str(), std::string(12, '-').c_str(),
              std::string(12, '-').c_str(), std::string(8, '-').c_str(),
              std::string(13, '-').c_str(), std::string(18, '-').c_str());
  auto row = [](const std::string& what, const std::string& baseline, double b, const variant& v,
                const char* goal) {
    const double o = bench::median(v.fps);
    char cpu[32];
    std::snprintf(cpu, sizeof cpu, "%.2f / %.2f", bench::median(v.writer_cpu),
                  bench::median(v.readers_cpu));
    char g[32] = "";
    if (goal) std::snprintf(g, sizeof g, "%s: %s", goal, o >= 0.9 * b ? "met" : "missed");
    std::printf("| %-50s | %-37s | %8.0f/s | %8.0f/s | %5.2fx | %-11s | %-16s |\n", what.c_str(),
                baseline.c_str(), b, o, o / b, cpu, g);
    std::fflush(stdout);
  };
  const double p = bench::median(priv);
  for (const auto& v : vs)
    row(v.what, "the same sums, private frames, 1 proc", p, v,
        v.readers == 1 && !v.fill ? ">= 0.9x" : nullptr);
  row(vs[1].what, "copy in, then sum, private frames, 1 proc", bench::median(copied), vs[1],
      nullptr);
  row(vs[1].what, "a pipe (1 MiB buffer): read(), then sum", bench::median(pipe), vs[1], nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  std::printf("shmarray ring benchmarks%s\n", quick ? " (--quick)" : "");
  in_child([&] { round_trips(quick); });
  in_child([&] { publish_cost(quick); });
  in_child([&] { throughput(quick); });
  return 0;
}
