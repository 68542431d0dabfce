// shmarray: rings of live frames. One named (or anonymous, for fork()
// children) segment of N slots, each one frame of a fixed element type and
// frame shape; one writer that loans the next slot and publishes it, and any
// number of readers, attached by name, that read frames in place and learn
// afterwards whether the frame they read was whole (a seqlock). The layout
// and protocol are docs/FORMAT.md's "Rings: format version 2".
//
//   auto w = m.ring<std::uint16_t>("/camera", {512, 512}, {.slots = 16});
//   auto loan = w.loan();  fill(loan.data());  w.publish(std::move(loan));
//
//   auto r = shmarray::ring_reader<std::uint16_t>::attach("/camera");
//   while (auto f = r.next(std::chrono::seconds(1))) { use(*f); if (!f->valid()) drop(); }
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <boost/interprocess/mapped_region.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>

#include "backing.hpp"
#include "detail/array_view.hpp"
#include "detail/ring_format.hpp"
#include "detail/ring_sync.hpp"
#include "detail/scope_exit.hpp"
#include "detail/text.hpp"
#include "dtype.hpp"
#include "errors.hpp"
#include "segment.hpp"
#include "shape.hpp"

namespace shmarray {

// How a ring is made (manager::ring).
struct ring_options {
  std::size_t slots = 8;
  ring_policy policy = ring_policy::overwrite;
  shmarray::order order = order::row_major;  // of each frame
  std::size_t max_readers = 16;              // readers attached at once, 1 to 1024
  std::size_t max_groups = 4;                // reader groups over the ring's life, 0 to 64
  // `block`: how long loan() and push() wait for the slowest reader before
  // they throw ring_timeout.
  std::chrono::nanoseconds block_timeout = std::chrono::seconds(10);
  // The manager does not remove this ring's name at its end.
  bool keep = false;
  map_options map;
};

// Where a new reader starts: with the next frame published, or with the
// oldest frame still in the ring.
enum class ring_start { next, oldest };

// How a reader attaches (ring_reader::attach).
struct reader_options {
  // Readers attached under one group name split the frames: each frame goes
  // to exactly one of them. Printable UTF-8, 1 to 40 bytes; empty: a reader
  // of its own, which sees every frame.
  std::string group;
  ring_start start = ring_start::next;
  // How long a reader waiting for a frame spins before it sleeps on the
  // futex (the writer then pays a wake-up, and the reader a futex's
  // latency). Zero: sleep at once.
  std::chrono::nanoseconds spin = std::chrono::microseconds(50);
  // How long attach waits for the name to appear (or for its creation to
  // end) before it throws not_found (or not_ready).
  std::chrono::nanoseconds wait_for_name = std::chrono::nanoseconds(0);
};

// For ever, as a timeout.
inline constexpr std::chrono::nanoseconds forever = std::chrono::nanoseconds::max();

namespace detail::ring {

namespace rf = format::ring;
inline constexpr int relaxed = __ATOMIC_RELAXED, acquire = __ATOMIC_ACQUIRE,
                     release = __ATOMIC_RELEASE, seq_cst = __ATOMIC_SEQ_CST;

// T's dtype must be the ring's (as ndarray checks an array's).
template <class T>
void require_dtype(const ring_info& info, std::string_view name) {
  const dtype_info want = dtype_of<std::remove_const_t<T>>();
  if (info.frame.dtype != want.str)
    throw dtype_mismatch(message(
        name, "is a ring of " + info.frame.dtype + " frames, expected " + std::string(want.str)));
}

// The mappings of one ring in one process, shared by its writer or reader
// and every frame and loan handed out (which keep them alive).
struct mapped_ring {
  std::string name;
  ring_info info;
  // The writer: the whole object, read-write; a reader: [0, D + W)
  // read-only, and its own area read-write, apart.
  std::optional<segment> slots, readers;
  std::byte* base = nullptr;
  std::byte* warea = nullptr;  // the writer area
  std::byte* rarea = nullptr;  // the reader area

  const ring_layout& layout() const noexcept { return info.layout; }
  std::byte* slot(std::uint64_t k) const noexcept { return base + layout().slot_offset(k); }
  std::byte* slot_header(std::uint64_t k) const noexcept {
    return warea + rf::w_slots + rf::slot_header * k;
  }
  std::byte* entry(std::uint64_t i) const noexcept { return rarea + layout().entry_at(i); }
  std::byte* group(std::uint64_t g) const noexcept { return rarea + layout().group_at(g); }
  std::byte* head() const noexcept { return warea + rf::w_head; }
  // File offsets of the liveness locks.
  std::uint64_t writer_lock_at() const noexcept { return layout().writer_at; }
  std::uint64_t entry_lock_at(std::uint64_t i) const noexcept {
    return layout().readers_at + layout().entry_at(i);
  }
  std::uint64_t slot_of(std::uint64_t seq) const noexcept { return (seq - 1) % layout().slots; }
};

// A mapping of [offset, offset + size) of the object behind fd.
inline segment map_part(int fd, std::uint64_t offset, std::uint64_t size, bool writable,
                        const std::string& name, const object_id& id) {
  namespace bip = boost::interprocess;
  const auto mode = writable ? bip::read_write : bip::read_only;
  try {
    bip::mapped_region r(fd_mappable{fd, mode}, mode, bip::offset_t(offset), std::size_t(size));
    return segment(std::move(r), name, writable, huge_pages_status::not_requested, id);
  } catch (const bip::interprocess_exception& e) {
    throw system_error(message(name, std::string("could not be mapped: ") + e.what()),
                       e.get_native_error());
  }
}

// A descriptor of one process's own (closed in forked children) that holds
// its liveness lock, and through which it asks about others'.
class liveness_lock {
 public:
  liveness_lock() = default;
  // A new open file description of the object behind fd_of_object.
  liveness_lock(int fd_of_object, const std::string& name) {
    auto& fds = process_fds::get();
    fd_ = reopen(fd_of_object, name);
    fds.add(fd_);
  }
  liveness_lock(liveness_lock&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  liveness_lock& operator=(liveness_lock&& o) noexcept {
    if (this != &o) {
      release();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  ~liveness_lock() { release(); }
  int fd() const noexcept { return fd_; }
  // Takes the lock on the byte at file offset `at`.
  void hold(std::uint64_t at, const std::string& name) {
    if (!hold_byte(fd_, at)) throw_os_error(errno, name, "could not take its liveness lock");
  }
  // Lets go of the byte at `at`, keeping the descriptor.
  void let_go(std::uint64_t at) noexcept {
    struct flock fl {};
    fl.l_type = F_UNLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = off_t(at);
    fl.l_len = 1;
    (void)::fcntl(fd_, F_OFD_SETLK, &fl);
  }
  // Dropped (the descriptor closed, with its locks) in this process.
  void release() noexcept {
    if (fd_ >= 0) process_fds::get().close(fd_);
    fd_ = -1;
  }
  // In a forked child: the copy is closed already, and the number may be
  // another descriptor's by now.
  void forget() noexcept { fd_ = -1; }

 private:
  int fd_ = -1;
};

// Frees reader entry i if its reader is gone: its lock not held (or, while
// being set up, its process gone). A member's claim goes to its group's
// missed count. Exactly once, whoever calls it (compare-and-swap).
inline bool reap_if_gone(const mapped_ring& m, int probe_fd, std::uint64_t i) noexcept {
  std::byte* e = m.entry(i);
  const std::uint32_t st = load32(e + rf::e_state, acquire);
  if (st == rf::entry_free) return false;
  if (byte_held(probe_fd, m.entry_lock_at(i))) return false;
  if (st == rf::entry_setting_up) {
    const auto pid = pid_t(load64(e + rf::e_pid, acquire));
    if (pid <= 0 || ::kill(pid, 0) == 0 || errno != ESRCH) return false;
  }
  const std::uint32_t group = load32(e + rf::e_group, relaxed);
  const std::uint64_t claim = load64(e + rf::e_claim, acquire);
  if (!cas32(e + rf::e_state, st, rf::entry_free)) return false;
  if (group != 0 && group <= m.layout().groups && claim != 0)
    add64(m.group(group - 1) + rf::g_missed, 1, seq_cst);
  return true;
}

// Whether the writer is still there: not closed, and its lock held.
inline bool writer_alive(const mapped_ring& m, int probe_fd) noexcept {
  return load32(m.warea + rf::w_closed, acquire) == 0 && byte_held(probe_fd, m.writer_lock_at());
}

}  // namespace detail::ring

// A frame of a ring, held by a reader: a read-only view of the slot in
// place (the Eigen and xtensor adapters view it as they view any array),
// its sequence number and publish time. valid() says, after reading,
// whether the writer has begun overwriting the slot meanwhile: what was
// read from a frame that is no longer valid may be torn, and must be
// dropped. copy_to copies and validates.
template <class T>
class ring_frame : public detail::array_view<const T> {
  using base = detail::array_view<const T>;

 public:
  static constexpr std::size_t alignment = 64;  // slots start at multiples of 64 bytes

  ring_frame() = default;

  explicit operator bool() const noexcept { return ring_ != nullptr; }
  std::uint64_t seq() const noexcept { return seq_; }
  // When the writer published it: CLOCK_MONOTONIC, in ns.
  std::uint64_t publish_ns() const noexcept { return publish_ns_; }
  const std::string& name() const noexcept {
    static const std::string none;
    return ring_ ? ring_->name : none;
  }

  // Whether the frame is still the one published as seq(): true means every
  // byte read from it before this call was read whole.
  bool valid() const noexcept {
    if (!ring_) return false;
    std::atomic_thread_fence(std::memory_order_acquire);
    return detail::ring::load64(state_, detail::ring::relaxed) == 2 * seq_;
  }
  // Copies the frame (in its storage order) to dst, which holds size()
  // elements; false when it was torn (dst then holds garbage).
  bool copy_to(std::remove_const_t<T>* dst) const noexcept {
    if (!ring_) return false;
    std::memcpy(static_cast<void*>(dst), this->data(), this->nbytes());
    return valid();
  }
  std::shared_ptr<const void> keep_alive() const noexcept { return ring_; }

 private:
  template <class U>
  friend class ring_reader;
  ring_frame(std::shared_ptr<const detail::ring::mapped_ring> r, std::uint64_t seq,
             std::uint64_t ns)
      : ring_(std::move(r)), seq_(seq), publish_ns_(ns) {
    const std::uint64_t k = ring_->slot_of(seq);
    state_ = ring_->slot_header(k) + format::ring::s_state;
    this->set_view(reinterpret_cast<const T*>(ring_->slot(k)), ring_->info.frame.shape,
                   ring_->info.frame.order);
  }
  std::shared_ptr<const detail::ring::mapped_ring> ring_;
  const std::byte* state_ = nullptr;
  std::uint64_t seq_ = 0;
  std::uint64_t publish_ns_ = 0;
};

template <class T>
class ring_writer;

// The slot a writer has loaned: a writable view of the next frame. Fill it,
// then publish it (ring_writer::publish); a loan dropped unpublished
// publishes nothing, and the next loan is of the same frame.
template <class T>
class ring_loan : public detail::array_view<T> {
 public:
  static constexpr std::size_t alignment = 64;

  ring_loan() = default;
  ring_loan(ring_loan&& o) noexcept = default;
  ring_loan& operator=(ring_loan&& o) noexcept = default;
  ring_loan(const ring_loan&) = delete;
  ring_loan& operator=(const ring_loan&) = delete;

  explicit operator bool() const noexcept { return ring_ != nullptr; }
  // The sequence number the frame gets when it is published.
  std::uint64_t seq() const noexcept { return seq_; }
  const std::string& name() const noexcept {
    static const std::string none;
    return ring_ ? ring_->name : none;
  }
  std::shared_ptr<const void> keep_alive() const noexcept { return ring_; }

 private:
  friend class ring_writer<T>;
  std::shared_ptr<const detail::ring::mapped_ring> ring_;
  std::uint64_t seq_ = 0;
};

namespace detail {
class ring_access;
}

// The one writer of a ring, made by manager::ring<T>. Move-only. Closing it
// (or its end) tells the readers that no frame will come: they read what is
// left, then get producer_gone.
template <class T>
class ring_writer {
  static_assert(!std::is_const_v<T>, "shmarray: a ring writer writes T, not const T");

 public:
  using element_type = T;

  ring_writer() = default;
  ring_writer(ring_writer&&) noexcept = default;
  ring_writer& operator=(ring_writer&& o) noexcept {
    if (this != &o) {
      close();
      ring_ = std::move(o.ring_);
      lock_ = std::move(o.lock_);
      keep_fd_ = std::exchange(o.keep_fd_, -1);
      next_ = o.next_;
      frontier_ = o.frontier_;
      timeout_ = o.timeout_;
      generation_ = o.generation_;
      loaned_ = o.loaned_;
    }
    return *this;
  }
  ~ring_writer() { close(); }

  explicit operator bool() const noexcept { return ring_ != nullptr; }
  const std::string& name() const { return live().name; }
  const shape_type& frame_shape() const { return live().info.frame.shape; }
  order frame_order() const { return live().info.frame.order; }
  std::size_t slots() const { return std::size_t(live().layout().slots); }
  ring_policy policy() const { return live().info.policy; }
  // The sequence number of the newest published frame (0: none yet).
  std::uint64_t head() const { return next_ - 1; }
  // Readers attached now (entries in use).
  std::size_t readers() const {
    const auto& m = live();
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
    if (loaned_)
      throw error(detail::message(m.name, "has a slot on loan already: publish it first"));
    if (m.info.policy == ring_policy::block) wait_for_readers(timeout);
    const std::uint64_t n = next_;
    std::byte* st = m.slot_header(m.slot_of(n)) + format::ring::s_state;
    // The odd state, then a release fence before any byte of the frame is
    // written: a release store orders only what precedes it.
    detail::ring::store64(st, 2 * n + 1, detail::ring::relaxed);
    std::atomic_thread_fence(std::memory_order_release);
    ring_loan<T> l;
    l.ring_ = ring_;
    l.seq_ = n;
    l.set_view(reinterpret_cast<T*>(m.slot(m.slot_of(n))), m.info.frame.shape, m.info.frame.order);
    loaned_ = true;
    return l;
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
    if (load32(m.rarea + rf::r_sleepers, seq_cst) != 0) {
      add32(m.warea + rf::w_wake, 1, release);
      futex_wake(m.warea + rf::w_wake, INT_MAX);
    }
    l = ring_loan<T>();
    loaned_ = false;
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
    if (generation_ == detail::ring::process_fds::generation()) {
      namespace rf = format::ring;
      using namespace detail::ring;
      store32(ring_->warea + rf::w_closed, 1, seq_cst);
      add32(ring_->warea + rf::w_wake, 1, release);
      futex_wake(ring_->warea + rf::w_wake, INT_MAX);
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

  const detail::ring::mapped_ring& live() const {
    if (!ring_) throw error("shmarray: this ring writer is closed (or was moved from)");
    return *ring_;
  }
  const detail::ring::mapped_ring& usable() const {
    const auto& m = live();
    if (generation_ != detail::ring::process_fds::generation())
      throw wrong_process(detail::message(
          m.name,
          "has its writer in the process that made it; a forked child reads it with "
          "ring_reader<T>::attach(writer)"));
    return m;
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
    const auto spin_until = std::min(until, clock::now() + std::chrono::microseconds(50));
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

  std::shared_ptr<detail::ring::mapped_ring> ring_;
  detail::ring::liveness_lock lock_;
  int keep_fd_ = -1;  // the object, for readers in forked children
  std::uint64_t next_ = 1;
  std::uint64_t frontier_ = 0;
  std::chrono::nanoseconds timeout_{0};
  std::uint64_t generation_ = 0;
  bool loaned_ = false;
};

// A reader of a ring, attached by name (or, in a fork() child, through the
// writer handle it inherited). Move-only; its end detaches it. Frames it
// hands out stay readable after that (their valid() then says whether the
// writer has reused the slot).
template <class T>
class ring_reader {
  using value = std::remove_const_t<T>;

 public:
  using element_type = const value;

  ring_reader() = default;
  ring_reader(ring_reader&& o) noexcept { *this = std::move(o); }
  ring_reader& operator=(ring_reader&& o) noexcept {
    if (this != &o) {
      detach();
      ring_ = std::move(o.ring_);
      lock_ = std::move(o.lock_);
      entry_ = o.entry_;
      group_ = o.group_;
      cursor_ = o.cursor_;
      held_ = o.held_;
      pending_ = o.pending_;
      missed_ = o.missed_;
      spin_ = o.spin_;
      generation_ = o.generation_;
    }
    return *this;
  }
  ring_reader(const ring_reader&) = delete;
  ring_reader& operator=(const ring_reader&) = delete;
  ~ring_reader() { detach(); }

  // Attaches to a ring by name (posix_shm, or a file{path}); its element
  // type must be T, and its frame shape `frame_shape` where one is given.
  template <class Backing, class = std::enable_if_t<detail::is_named<Backing>::value>>
  static ring_reader attach(const Backing& backing, const reader_options& o = {}) {
    return attach_named(backing, nullptr, o);
  }
  template <class Backing, class = std::enable_if_t<detail::is_named<Backing>::value>>
  static ring_reader attach(const Backing& backing, const shape_arg& frame_shape,
                            const reader_options& o = {}) {
    return attach_named(backing, &frame_shape.value(), o);
  }
  static ring_reader attach(std::string_view name, const reader_options& o = {}) {
    return attach_named(posix_shm(name), nullptr, o);
  }
  static ring_reader attach(std::string_view name, const shape_arg& frame_shape,
                            const reader_options& o = {}) {
    return attach_named(posix_shm(name), &frame_shape.value(), o);
  }
  // In a fork() child of the writer's process (an anonymous ring has no
  // name): attaches through the writer handle the child inherited.
  template <class U, class = std::enable_if_t<std::is_same_v<std::remove_const_t<U>, value>>>
  static ring_reader attach(const ring_writer<U>& w, const reader_options& o = {});

  explicit operator bool() const noexcept { return ring_ != nullptr; }
  const std::string& name() const { return live().name; }
  const shape_type& frame_shape() const { return live().info.frame.shape; }
  order frame_order() const { return live().info.frame.order; }
  std::size_t slots() const { return std::size_t(live().layout().slots); }
  ring_policy policy() const { return live().info.policy; }
  // The newest published frame's sequence number (0: none yet).
  std::uint64_t head() const { return detail::ring::load64(live().head(), detail::ring::acquire); }
  // Frames this reader lost: overwritten before it got to them (overwrite).
  std::uint64_t missed() const noexcept { return missed_; }
  // A member: the frames its whole group lost, by skipping or with a member
  // that died holding one.
  std::uint64_t group_missed() const {
    if (!group_) return missed_;
    return detail::ring::load64(live().group(group_ - 1) + format::ring::g_missed,
                                detail::ring::acquire);
  }
  // Whether the writer is still there (its process alive, the ring not closed).
  bool producer_alive() const { return detail::ring::writer_alive(live(), lock_.fd()); }

  // The next frame in order (a member: the next frame of its group's that
  // no other member has), waiting at most `timeout`: nullopt when none came.
  // The frame held before is released (block: the writer may reuse its
  // slot). Once the writer has closed the ring or died, and every frame it
  // left is read: producer_gone.
  std::optional<ring_frame<T>> next(std::chrono::nanoseconds timeout = forever) {
    const auto& m = usable();
    const auto until = detail::ring::deadline_after(timeout);
    if (group_) return next_member(m, until);
    release_held(m);
    namespace rf = format::ring;
    using namespace detail::ring;
    std::uint64_t want = cursor_ + 1;
    const std::uint64_t slots = m.layout().slots;
    for (;;) {
      const std::uint64_t h = load64(m.head(), acquire);
      if (h < want) {
        if (!wait_for(m, want, until)) return std::nullopt;
        continue;
      }
      if (h - want >= slots) {  // overwritten already: skip to the oldest still there
        missed_ += h - slots + 1 - want;
        want = h - slots + 1;
      }
      const std::byte* sh = m.slot_header(m.slot_of(want));
      const std::uint64_t s1 = load64(sh + rf::s_state, acquire);
      if (s1 != 2 * want) {
        if (s1 > 2 * want) {  // the writer has moved on into its slot: lost
          ++missed_;
          ++want;
        }
        continue;
      }
      cursor_ = held_ = want;
      return ring_frame<T>(ring_, want, load64(sh + rf::s_publish_ns, relaxed));
    }
  }

  // The newest frame, without waiting: nullopt if none was published yet
  // or nothing newer than what this reader had. The frames before it are
  // passed over (not counted as missed); next() goes on after it.
  std::optional<ring_frame<T>> latest() {
    const auto& m = usable();
    if (group_)
      throw invalid_argument(detail::message(
          m.name, "is read by a group member, which takes frames in turn with next()"));
    namespace rf = format::ring;
    using namespace detail::ring;
    for (;;) {
      const std::uint64_t h = load64(m.head(), acquire);
      if (h == 0 || h <= cursor_) return std::nullopt;
      const std::byte* sh = m.slot_header(m.slot_of(h));
      if (load64(sh + rf::s_state, acquire) != 2 * h) continue;  // reused this moment
      release_through(m, h - 1);
      cursor_ = held_ = h;
      return ring_frame<T>(ring_, h, load64(sh + rf::s_publish_ns, relaxed));
    }
  }

 private:
  friend class detail::ring_access;
  using mapped = detail::ring::mapped_ring;

  const mapped& live() const {
    if (!ring_) throw error("shmarray: this ring reader is detached (or was moved from)");
    return *ring_;
  }
  const mapped& usable() const {
    const auto& m = live();
    if (generation_ != detail::ring::process_fds::generation())
      throw wrong_process(
          detail::message(m.name,
                          "has this reader in the process that attached it; attach another in the "
                          "forked child"));
    return m;
  }

  std::byte* my_entry(const mapped& m) const noexcept {
    return m.rarea + m.layout().entry_at(entry_);
  }

  // block: the writer may reuse slots up to `done`; it is woken if it sleeps.
  void release_through(const mapped& m, std::uint64_t done) noexcept {
    namespace rf = format::ring;
    using namespace detail::ring;
    if (m.info.policy != ring_policy::block) return;
    store64(my_entry(m) + rf::e_done, done, seq_cst);
    wake_writer(m);
  }
  void release_held(const mapped& m) noexcept {
    if (held_) release_through(m, held_);
    held_ = 0;
  }
  static void wake_writer(const mapped& m) noexcept {
    namespace rf = format::ring;
    using namespace detail::ring;
    if (load32(m.rarea + rf::r_writer_sleeping, seq_cst) != 0) {
      add32(m.rarea + rf::r_progress, 1, release);
      futex_wake(m.rarea + rf::r_progress, 1);
    }
  }

  // Waits until the head reaches `want`: spins, then sleeps on the futex.
  // False at the deadline; producer_gone once the writer has ended.
  bool wait_for(const mapped& m, std::uint64_t want, detail::ring::clock::time_point until) {
    namespace rf = format::ring;
    using namespace detail::ring;
    const auto spin_end =
        spin_.count() > 0 ? std::min(until, deadline_after(spin_)) : clock::time_point::min();
    auto look_again = clock::now() + std::chrono::milliseconds(10);
    while (clock::now() < spin_end) {
      for (int i = 0; i < 32; ++i) {
        if (load64(m.head(), acquire) >= want) return true;
        cpu_relax();
      }
      if (const auto now = clock::now(); now >= look_again) {
        check_writer(m, want);
        look_again = now + std::chrono::milliseconds(10);
      }
    }
    std::byte* sleepers = const_cast<std::byte*>(m.rarea) + rf::r_sleepers;
    const std::byte* wake = m.warea + rf::w_wake;
    for (;;) {
      const std::uint32_t w = load32(wake, acquire);
      add32(sleepers, 1, seq_cst);
      if (load64(m.head(), seq_cst) >= want) {
        add32(sleepers, -1, seq_cst);
        return true;
      }
      try {
        check_writer(m, want);
      } catch (...) {
        add32(sleepers, -1, seq_cst);
        throw;
      }
      const auto now = clock::now();
      if (now >= until) {
        add32(sleepers, -1, seq_cst);
        return false;
      }
      futex_wait(wake, w,
                 std::min<std::chrono::nanoseconds>(until - now, std::chrono::milliseconds(50)));
      add32(sleepers, -1, seq_cst);
      if (load64(m.head(), acquire) >= want) return true;
      if (group_) reap_members(m);
    }
  }

  // producer_gone when the writer has ended and frame `want` never came.
  void check_writer(const mapped& m, std::uint64_t want) const {
    namespace rf = format::ring;
    using namespace detail::ring;
    if (writer_alive(m, lock_.fd())) return;
    if (load64(m.head(), acquire) >= want) return;  // one more came before the end
    const bool closed = load32(m.warea + rf::w_closed, acquire) != 0;
    throw producer_gone(
        detail::message(m.name, closed ? "was closed by its writer: no frame after " +
                                             std::to_string(want - 1) + " will come"
                                       : "has lost its writer (its process died): no frame "
                                         "after " +
                                             std::to_string(want - 1) + " will come"),
        !closed);
  }

  void reap_members(const mapped& m) const noexcept {
    for (std::uint64_t i = 0; i < m.layout().readers; ++i)
      if (i != entry_ &&
          detail::ring::load32(m.entry(i) + format::ring::e_group, detail::ring::relaxed) == group_)
        detail::ring::reap_if_gone(m, lock_.fd(), i);
  }

  // A member: claims the group's next frame (FORMAT.md, Groups), then waits
  // for it. A claim that timed out is kept for the next call.
  std::optional<ring_frame<T>> next_member(const mapped& m, detail::ring::clock::time_point until) {
    namespace rf = format::ring;
    using namespace detail::ring;
    std::byte* e = my_entry(m);
    std::byte* g = m.group(group_ - 1);
    const std::uint64_t slots = m.layout().slots;
    for (;;) {
      std::uint64_t c = pending_;
      if (!c) {
        std::uint64_t skipped = 0;
        for (;;) {
          const std::uint64_t next = load64(g + rf::g_next, acquire);
          c = next + 1;
          skipped = 0;
          if (m.info.policy == ring_policy::overwrite) {
            const std::uint64_t h = load64(m.head(), acquire);
            if (h >= slots && c + slots <= h) {
              skipped = h - slots + 1 - c;
              c = h - slots + 1;
            }
          }
          store64(e + rf::e_claim, c, seq_cst);
          if (cas64(g + rf::g_next, next, c)) break;
        }
        if (skipped) {
          missed_ += skipped;
          add64(g + rf::g_missed, skipped, seq_cst);
        }
        if (m.info.policy == ring_policy::block) wake_writer(m);
        pending_ = c;
      }
      if (load64(m.head(), acquire) < c && !wait_for(m, c, until)) return std::nullopt;
      pending_ = 0;
      const std::byte* sh = m.slot_header(m.slot_of(c));
      if (load64(sh + rf::s_state, acquire) != 2 * c) {  // overwritten before we got to it
        ++missed_;
        add64(g + rf::g_missed, 1, seq_cst);
        continue;
      }
      return ring_frame<T>(ring_, c, load64(sh + rf::s_publish_ns, relaxed));
    }
  }

  void detach() noexcept {
    if (!ring_) return;
    if (generation_ == detail::ring::process_fds::generation()) {
      std::byte* e = my_entry(*ring_);
      detail::ring::store32(e + format::ring::e_state, format::ring::entry_free,
                            detail::ring::release);
      if (ring_->info.policy == ring_policy::block) wake_writer(*ring_);
      lock_.release();
    } else {
      lock_.forget();
    }
    ring_.reset();
  }

  template <class Backing>
  static ring_reader attach_named(const Backing& backing, const shape_type* shape,
                                  const reader_options& o);
  static ring_reader from_descriptor(int fd, std::string name, const detail::ring_info& info,
                                     const object_id& id, const reader_options& o);
  void enter(const reader_options& o);
  std::uint32_t find_group(const mapped& m, const std::string& name);

  std::shared_ptr<mapped> ring_;
  detail::ring::liveness_lock lock_;
  std::uint64_t entry_ = 0;
  std::uint32_t group_ = 0;  // 0: none; g + 1: a member of group g
  std::uint64_t cursor_ = 0;
  std::uint64_t held_ = 0;
  std::uint64_t pending_ = 0;
  std::uint64_t missed_ = 0;
  std::chrono::nanoseconds spin_{0};
  std::uint64_t generation_ = 0;
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
    m->base = seg.data();
    m->warea = m->base + m->layout().writer_at;
    m->rarea = m->base + m->layout().readers_at;
    m->slots.emplace(std::move(seg));
    w.lock_ = ring::liveness_lock(keep_fd, m->name);
    w.lock_.hold(m->writer_lock_at(), m->name);
    w.generation_ = ring::process_fds::generation();
    ring::store64(m->warea + format::ring::w_writer_pid, std::uint64_t(::getpid()), ring::relaxed);
    write_ring_record(m->base, m->info);
    w.timeout_ = o.block_timeout;
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
};

}  // namespace detail

template <class T>
template <class U, class>
ring_reader<T> ring_reader<T>::attach(const ring_writer<U>& w, const reader_options& o) {
  const int fd = detail::ring_access::descriptor(w);
  const auto& m = detail::ring_access::mapping(w);
  return from_descriptor(fd, m.name, m.info, m.slots->id(), o);
}

template <class T>
template <class Backing>
ring_reader<T> ring_reader<T>::attach_named(const Backing& backing, const shape_type* shape,
                                            const reader_options& o) {
  const auto until = detail::ring::deadline_after(o.wait_for_name);
  for (std::chrono::milliseconds pause(1);;
       pause = std::min(pause * 2, std::chrono::milliseconds(20))) {
    try {
      detail::fd_guard fd{backing.open_descriptor(access_mode::read_write)};
      struct stat st {};
      if (::fstat(fd.fd, &st) != 0)
        detail::throw_os_error(errno, backing.name(), "could not be examined");
      if (!S_ISREG(st.st_mode))
        throw access_denied(detail::message(
            backing.name(), "is " + detail::file_kind(st.st_mode) + ", not a regular file"));
      if (st.st_size == 0)
        throw not_ready(detail::message(backing.name(), "is empty: it is still being created"));
      const auto info = detail::read_ring_record_at(fd.fd, std::size_t(st.st_size), backing.name());
      detail::ring::require_dtype<T>(info, backing.name());
      if (shape && *shape != info.frame.shape)
        throw shape_mismatch(
            detail::message(backing.name(), "has frames of shape " + to_string(info.frame.shape) +
                                                ", expected " + to_string(*shape)));
      object_id id;
      if (!detail::identify(fd.fd, id))
        detail::throw_os_error(errno, backing.name(), "could not be examined");
      return from_descriptor(fd.fd, backing.name(), info, id, o);
    } catch (const not_found&) {
      if (detail::ring::clock::now() >= until) throw;
    } catch (const not_ready&) {
      if (detail::ring::clock::now() >= until) throw;
    }
    std::this_thread::sleep_for(pause);
  }
}

template <class T>
ring_reader<T> ring_reader<T>::from_descriptor(int fd, std::string name,
                                               const detail::ring_info& info, const object_id& id,
                                               const reader_options& o) {
  if (!o.group.empty()) {
    const auto at = detail::unprintable_at(o.group);
    if (o.group.size() > format::ring::group_name_max || at != o.group.npos)
      throw invalid_name(
          detail::message(name, "cannot have a reader group named \"" + detail::escaped(o.group) +
                                    "\": group names are printable UTF-8 of 1 to 40 bytes"));
  }
  ring_reader r;
  auto m = std::make_shared<mapped>();
  m->name = std::move(name);
  m->info = info;
  const auto& l = m->layout();
  m->slots.emplace(detail::ring::map_part(fd, 0, l.readers_at, false, m->name, id));
  m->readers.emplace(detail::ring::map_part(fd, l.readers_at, l.reader_bytes, true, m->name, id));
  m->base = m->slots->data();
  m->warea = m->base + l.writer_at;
  m->rarea = m->readers->data();
  r.lock_ = detail::ring::liveness_lock(fd, m->name);
  r.ring_ = std::move(m);
  r.spin_ = o.spin;
  r.generation_ = detail::ring::process_fds::generation();
  r.enter(o);
  return r;
}

// Takes a free entry (freeing gone readers' when none is), its lock, and
// the group's entry; then starts where `o.start` says (FORMAT.md,
// Attaching a reader).
template <class T>
void ring_reader<T>::enter(const reader_options& o) {
  namespace rf = format::ring;
  using namespace detail::ring;
  auto& m = *ring_;
  const auto& l = m.layout();
  const int probe = lock_.fd();
  bool found = false;
  for (int pass = 0; pass < 2 && !found; ++pass) {
    for (entry_ = 0; entry_ < l.readers; ++entry_)
      if (cas32(m.entry(entry_) + rf::e_state, rf::entry_free, rf::entry_setting_up)) {
        found = true;
        break;
      }
    if (!found && pass == 0)
      for (std::uint64_t j = 0; j < l.readers; ++j)
        reap_if_gone(m, probe, j);
  }
  if (!found) {
    ring_.reset();
    throw invalid_argument(detail::message(
        m.name, "has all its " + std::to_string(l.readers) +
                    " reader places taken (ring_options::max_readers when it was made)"));
  }
  std::byte* e = m.entry(entry_);
  auto undo = detail::scope_exit([&] {
    store32(e + rf::e_state, rf::entry_free, release);
    ring_.reset();
  });
  store64(e + rf::e_pid, std::uint64_t(::getpid()), release);
  lock_.hold(m.entry_lock_at(entry_), m.name);
  if (!o.group.empty()) group_ = find_group(m, o.group);
  store32(e + rf::e_group, group_, relaxed);
  store64(e + rf::e_claim, 0, relaxed);
  store64(e + rf::e_missed, 0, relaxed);
  store64(e + rf::e_attached_ns, clock_ns(CLOCK_REALTIME), relaxed);
  const std::uint64_t slots = l.slots;
  const std::uint64_t h = load64(m.head(), seq_cst);
  std::uint64_t start = h;
  if (o.start == ring_start::oldest) start = h > slots ? h - slots : 0;
  store64(e + rf::e_done, start, seq_cst);
  store32(e + rf::e_state, rf::entry_used, seq_cst);
  // block: a writer that did not see the entry yet may have moved on.
  const std::uint64_t h2 = load64(m.head(), seq_cst);
  if (h2 > slots && start < h2 - slots) {
    start = h2 - slots;
    store64(e + rf::e_done, start, seq_cst);
  }
  cursor_ = start;
  undo.dismiss();
}

// The group named `name` (made if new), under the ring's group lock: an
// open-file-description write lock on the reader area's byte 12, so that
// two readers naming a new group at once make one.
template <class T>
std::uint32_t ring_reader<T>::find_group(const mapped& m, const std::string& name) {
  namespace rf = format::ring;
  using namespace detail::ring;
  const auto& l = m.layout();
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = off_t(l.readers_at + 12);
  fl.l_len = 1;
  while (::fcntl(lock_.fd(), F_OFD_SETLKW, &fl) != 0)
    if (errno != EINTR) detail::throw_os_error(errno, m.name, "could not take its group lock");
  auto unlock = detail::scope_exit([&] { lock_.let_go(l.readers_at + 12); });
  for (std::uint64_t g = 0; g < l.groups; ++g) {
    std::byte* ge = m.group(g);
    if (load32(ge + rf::g_state, acquire) != rf::entry_used) continue;
    const std::uint32_t len = load32(ge + rf::g_name_len, relaxed);
    if (len == name.size() && std::memcmp(ge + rf::g_name, name.data(), len) == 0)
      return std::uint32_t(g + 1);
  }
  for (std::uint64_t g = 0; g < l.groups; ++g) {
    std::byte* ge = m.group(g);
    if (!cas32(ge + rf::g_state, rf::entry_free, rf::entry_setting_up)) continue;
    store32(ge + rf::g_name_len, std::uint32_t(name.size()), relaxed);
    std::memset(ge + rf::g_name, 0, rf::group_name_max);
    std::memcpy(ge + rf::g_name, name.data(), name.size());
    store64(ge + rf::g_missed, 0, relaxed);
    store64(ge + rf::g_next, load64(m.head(), seq_cst), seq_cst);
    store32(ge + rf::g_state, rf::entry_used, release);
    return std::uint32_t(g + 1);
  }
  throw invalid_argument(detail::message(
      m.name, "has all its " + std::to_string(l.groups) +
                  " reader groups named already (ring_options::max_groups when it was made)"));
}

}  // namespace shmarray
