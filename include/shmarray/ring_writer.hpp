// shmarray: a ring's one writer (ring.hpp): loans the next slot, publishes
// it, closes the ring.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "detail/ring_mapping.hpp"
#include "errors.hpp"
#include "ring_frame.hpp"
#include "ring_options.hpp"

namespace shmarray {

namespace detail {
class ring_access;
}

// The one writer of a ring, made by manager::ring<T>. Move-only. Closing it
// (or its end) tells the readers that no frame will come: they read what is
// left, then get producer_gone.
template <class T>
class ring_writer : public detail::ring::ring_end {
  static_assert(!std::is_const_v<T>, "shmarray: a ring writer writes T, not const T");

 public:
  using element_type = T;

  ring_writer() : ring_end("writer") {}
  ring_writer(ring_writer&& o) noexcept : ring_writer() { *this = std::move(o); }
  ring_writer& operator=(ring_writer&& o) noexcept {
    if (this != &o) {
      close();
      ring_end::operator=(std::move(o));
      keep_fd_ = std::exchange(o.keep_fd_, -1);
      next_ = o.next_;
      frontier_ = o.frontier_;
      timeout_ = o.timeout_;
      spin_ = o.spin_;
    }
    return *this;
  }
  ~ring_writer() { close(); }
  // The sequence number of the newest published frame (0: none yet).
  std::uint64_t head() const { return next_ - 1; }
  // Readers attached now. Entries of readers found gone are freed first,
  // so a dead reader is not counted (a system call per entry).
  std::size_t readers() const {
    const auto& m = usable();
    reap_gone();
    std::size_t n = 0;
    for (std::uint64_t i = 0; i < m.layout().readers; ++i)
      n += detail::ring::load32(m.entry(i) + format::ring::e_state, detail::ring::acquire) ==
           format::ring::entry_used;
    return n;
  }

  // The next slot, to fill. `block`: waits until the slowest attached reader
  // has released the frame the slot holds, at most `timeout` (ring_timeout
  // then, naming the readers that hold it); a reader found gone meanwhile is
  // detached, so a crashed reader never blocks the writer for ever.
  ring_loan<T> loan() { return loan(timeout_); }
  ring_loan<T> loan(std::chrono::nanoseconds timeout) {
    const auto& m = usable();
    if (m.info.policy == ring_policy::block) wait_for_readers(timeout);
    const std::uint64_t n = next_;
    std::byte* st = m.slot_header(m.slot_of(n)) + format::ring::s_state;
    // The odd state, then a release fence before any byte of the frame is
    // written: a release store orders only what precedes it.
    detail::ring::store64(st, 2 * n + 1, detail::ring::relaxed);
    std::atomic_thread_fence(std::memory_order_release);
    return ring_loan<T>(ring_, n, reinterpret_cast<T*>(m.slot(m.slot_of(n))));
  }

  // Publishes a loaned frame: a few stores, and a wake-up only if a reader
  // sleeps. Returns its sequence number.
  std::uint64_t publish(ring_loan<T>&& l) {
    const auto& m = usable();
    if (!l || l.ring_ != ring_ || l.seq_ != next_)
      throw error(detail::message(m.name, "was given a loan that is not its current one"));
    namespace rf = format::ring;
    using namespace detail::ring;
    std::byte* h = m.slot_header(m.slot_of(next_));
    store64(h + rf::s_publish_ns, clock_ns(CLOCK_MONOTONIC), relaxed);
    store64(h + rf::s_state, 2 * next_, release);
    // The head seq_cst, then the sleeper count: the Dekker pair with a
    // sleeping reader's increment and look (FORMAT.md, Publishing).
    store64(m.head(), next_, seq_cst);
    if (load32(m.rarea + rf::r_sleepers, seq_cst) != 0)
      bump_and_wake(m.warea + rf::w_wake, INT_MAX);
    l = ring_loan<T>();
    return next_++;
  }

  // Copies one frame in (size() elements, in the frame's storage order) and
  // publishes it.
  std::uint64_t push(const T* frame) { return push(frame, timeout_); }
  std::uint64_t push(const T* frame, std::chrono::nanoseconds timeout) {
    auto l = loan(timeout);
    std::memcpy(static_cast<void*>(l.data()), frame, l.nbytes());
    return publish(std::move(l));
  }

  // No more frames: readers read what is left, then get producer_gone.
  // In a forked copy of the writer's process it does nothing.
  void close() noexcept {
    if (!ring_) return;
    if (in_own_process()) {
      namespace rf = format::ring;
      using namespace detail::ring;
      store32(ring_->warea + rf::w_closed, 1, seq_cst);
      bump_and_wake(ring_->warea + rf::w_wake, INT_MAX);  // every sleeper, whatever the count says
      lock_.release();
      if (keep_fd_ >= 0) ::close(keep_fd_);
    } else {
      lock_.forget();
    }
    keep_fd_ = -1;
    ring_.reset();
  }

 private:
  friend class detail::ring_access;

  const detail::ring::mapped_ring& usable() const {
    return ring_end::usable("a forked child reads it with ring_reader<T>::attach(writer)");
  }

  // What every attached reader allows: the writer may publish frame n once
  // the result is at least n - slots.
  std::uint64_t frontier(std::uint64_t need, std::string* holders = nullptr) const {
    namespace rf = format::ring;
    using namespace detail::ring;
    const auto& m = *ring_;
    std::uint64_t f = UINT64_MAX;
    std::uint64_t gmin[rf::max_groups];
    bool gused[rf::max_groups] = {};
    for (std::uint64_t i = 0; i < m.layout().readers; ++i) {
      const std::byte* e = m.entry(i);
      if (load32(e + rf::e_state, seq_cst) != rf::entry_used) continue;
      const std::uint32_t g = load32(e + rf::e_group, relaxed);
      std::uint64_t allows;
      if (g == 0 || g > m.layout().groups) {
        allows = load64(e + rf::e_done, seq_cst);
      } else {
        if (!gused[g - 1]) gmin[g - 1] = load64(m.group(g - 1) + rf::g_next, seq_cst);
        gused[g - 1] = true;
        const std::uint64_t c = load64(e + rf::e_claim, seq_cst);
        if (c != 0) gmin[g - 1] = std::min(gmin[g - 1], c - 1);
        allows = c != 0 ? c - 1 : UINT64_MAX;
      }
      f = std::min(f, allows);
      if (holders && allows < need)
        *holders += (holders->empty() ? "pid " : ", pid ") +
                    std::to_string(std::int64_t(load64(e + rf::e_pid, relaxed)));
    }
    for (std::uint64_t g = 0; g < m.layout().groups; ++g)
      if (gused[g]) f = std::min(f, gmin[g]);
    return f;
  }

  void reap_gone() const noexcept {
    for (std::uint64_t i = 0; i < ring_->layout().readers; ++i)
      detail::ring::reap_if_gone(*ring_, lock_.fd(), i);
  }

  void wait_for_readers(std::chrono::nanoseconds timeout) {
    namespace rf = format::ring;
    using namespace detail::ring;
    const auto& m = *ring_;
    const std::uint64_t slots = m.layout().slots;
    if (next_ <= slots) return;
    const std::uint64_t need = next_ - slots;
    if (frontier_ >= need) return;
    if ((frontier_ = frontier(need)) >= need) return;
    const auto until = deadline_after(timeout);
    const auto spin_until = std::min(until, deadline_after(spin_));
    while (clock::now() < spin_until) {
      for (int i = 0; i < 64; ++i)
        cpu_relax();
      if ((frontier_ = frontier(need)) >= need) return;
    }
    std::byte* progress = m.rarea + rf::r_progress;
    std::byte* sleeping = m.rarea + rf::r_writer_sleeping;
    for (;;) {
      const std::uint32_t p = load32(progress, acquire);
      store32(sleeping, 1, seq_cst);
      if ((frontier_ = frontier(need)) >= need) break;
      const auto now = clock::now();
      if (now >= until) {
        store32(sleeping, 0, seq_cst);
        std::string holders;
        (void)frontier(need, &holders);
        throw ring_timeout(detail::message(
            m.name, "could not publish frame " + std::to_string(next_) +
                        ": a reader has not released frame " + std::to_string(need) +
                        " within the timeout (" + holders + ")"));
      }
      futex_wait(progress, p,
                 std::min<std::chrono::nanoseconds>(until - now, std::chrono::milliseconds(10)));
      reap_gone();
    }
    store32(sleeping, 0, seq_cst);
  }

  int keep_fd_ = -1;  // the object, for readers in forked children
  std::uint64_t next_ = 1;
  std::uint64_t frontier_ = 0;
  std::chrono::nanoseconds timeout_{0};
  std::chrono::nanoseconds spin_{0};
};

namespace detail {

// What the manager and the readers do with a ring's parts.
class ring_access {
 public:
  // A new ring's writer over a segment the manager made (zero-filled, the
  // size of the layout) and the descriptor it kept: takes the writer's
  // lock, writes the writer's fields, then the record, last.
  template <class T>
  static ring_writer<T> make_writer(segment seg, int keep_fd, ring_info info,
                                    const ring_options& o) {
    ring_writer<T> w;
    w.keep_fd_ = keep_fd;
    auto m = std::make_shared<ring::mapped_ring>();
    m->name = seg.name();
    m->info = std::move(info);
    m->set_areas(seg.data(), seg.data() + m->layout().readers_at);
    m->slots.emplace(std::move(seg));
    w.lock_ = ring::liveness_lock(keep_fd, m->name);
    w.lock_.hold(m->writer_lock_at(), m->name);
    w.generation_ = ring::process_fds::generation();
    ring::store64(m->warea + format::ring::w_writer_pid, std::uint64_t(::getpid()), ring::relaxed);
    write_ring_record(m->base, m->info);
    w.timeout_ = o.block_timeout;
    w.spin_ = o.spin;
    w.ring_ = std::move(m);
    return w;
  }
  template <class T>
  static int descriptor(const ring_writer<T>& w) {
    if (!w.ring_ || w.keep_fd_ < 0)
      throw error("shmarray: a reader cannot attach through a closed ring writer");
    return w.keep_fd_;
  }
  template <class T>
  static const ring::mapped_ring& mapping(const ring_writer<T>& w) {
    return w.live();
  }
  // A reader that shares the writer's own mapping, for tests in one
  // process only: ThreadSanitizer knows one address per byte, and every
  // reader otherwise maps the ring anew (read-only). R is ring_reader<T>.
  template <class R, class T>
  static R reader_sharing_mapping(const ring_writer<T>& w, const reader_options& o) {
    R::check_group_name(w.live().name, o);
    return R::over(w.ring_, descriptor(w), o);
  }
};

}  // namespace detail

}  // namespace shmarray
