// shmarray: a ring's readers (ring.hpp), attached by name: the next frame
// in order or the newest, groups that split the frames, missed counts, and
// producer_gone once the writer has ended.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

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
#include "detail/attach_retry.hpp"
#include "detail/ring_mapping.hpp"
#include "detail/scope_exit.hpp"
#include "detail/text.hpp"
#include "errors.hpp"
#include "ring_frame.hpp"
#include "ring_options.hpp"
#include "ring_writer.hpp"
#include "shape.hpp"

namespace shmarray {

// A reader of a ring, attached by name (or, in a fork() child, through the
// writer handle it inherited). Move-only; its end detaches it. Frames it
// hands out stay readable after that (their valid() then says whether the
// writer has reused the slot).
template <class T>
class ring_reader : public detail::ring::ring_end {
  using value = std::remove_const_t<T>;

 public:
  using element_type = const value;

  ring_reader() : ring_end("reader") {}
  ring_reader(ring_reader&& o) noexcept : ring_reader() { *this = std::move(o); }
  ring_reader& operator=(ring_reader&& o) noexcept {
    if (this != &o) {
      detach();
      ring_end::operator=(std::move(o));
      entry_ = o.entry_;
      group_ = o.group_;
      cursor_ = o.cursor_;
      held_ = o.held_;
      missed_ = o.missed_;
      spin_ = o.spin_;
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
        lost(m, h - slots + 1 - want);
        want = h - slots + 1;
      }
      const std::byte* sh = m.slot_header(m.slot_of(want));
      const std::uint64_t s1 = load64(sh + rf::s_state, acquire);
      if (s1 != 2 * want) {
        // The writer has moved on into its slot: lost. (A state below 2
        // want cannot be, the head being stored after it: a damaged word
        // is taken as a frame lost too, so that nothing spins for ever.)
        lost(m, 1);
        ++want;
        continue;
      }
      cursor_ = held_ = want;
      return ring_frame<T>(ring_, want, load64(sh + rf::s_publish_ns, relaxed));
    }
  }

  // Releases the frame held now (the one next() or latest() gave last),
  // before the next call: in `block`, the writer may reuse its slot from
  // now on, so a reader that works on after it is done with a frame does
  // not hold the writer back. The frame's valid() says false once reused.
  void release() {
    const auto& m = usable();
    if (group_)
      release_claim(m);
    else
      release_held(m);
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

  const mapped& usable() const { return ring_end::usable("attach another in the forked child"); }

  std::byte* my_entry(const mapped& m) const noexcept {
    return m.rarea + m.layout().entry_at(entry_);
  }

  // Frames this reader lost, counted here and in its entry (for listings).
  void lost(const mapped& m, std::uint64_t n) noexcept {
    missed_ += n;
    detail::ring::store64(my_entry(m) + format::ring::e_missed, missed_, detail::ring::relaxed);
  }

  // block: the writer may reuse slots up to `done`; it is woken if it sleeps.
  void release_through(const mapped& m, std::uint64_t done) noexcept {
    namespace rf = format::ring;
    using namespace detail::ring;
    if (m.info.policy != ring_policy::block) {  // for listings only: the writer never waits
      store64(my_entry(m) + rf::e_done, done, relaxed);
      return;
    }
    store64(my_entry(m) + rf::e_done, done, seq_cst);
    wake_writer(m);
  }
  void release_held(const mapped& m) noexcept {
    if (held_) release_through(m, held_);
    held_ = 0;
  }
  // A member: the frame it claimed is released (claim 0); block: the
  // writer is woken if it sleeps.
  void release_claim(const mapped& m) noexcept {
    detail::ring::store64(my_entry(m) + format::ring::e_claim, 0, detail::ring::seq_cst);
    if (m.info.policy == ring_policy::block) wake_writer(m);
  }
  static void wake_writer(const mapped& m) noexcept {
    namespace rf = format::ring;
    using namespace detail::ring;
    if (load32(m.rarea + rf::r_writer_sleeping, seq_cst) != 0)
      bump_and_wake(m.rarea + rf::r_progress, 1);
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
    // The writer's liveness (a system call) is asked only after a sleep
    // that nobody ended: a writer that publishes or closes wakes its
    // sleepers, and a dead one is found within a slice.
    bool ask = false;
    for (;;) {
      const std::uint32_t w = load32(wake, acquire);
      add32(sleepers, 1, seq_cst);
      if (load64(m.head(), seq_cst) >= want) {
        add32(sleepers, -1, seq_cst);
        return true;
      }
      try {
        if (ask || load32(m.warea + rf::w_closed, acquire) != 0) check_writer(m, want);
      } catch (...) {
        add32(sleepers, -1, seq_cst);
        throw;
      }
      const auto now = clock::now();
      if (now >= until) {
        add32(sleepers, -1, seq_cst);
        return false;
      }
      ask = futex_wait(
          wake, w, std::min<std::chrono::nanoseconds>(until - now, std::chrono::milliseconds(50)));
      add32(sleepers, -1, seq_cst);
      if (load64(m.head(), acquire) >= want) return true;
      if (ask && group_) reap_members(m);
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

  // A member: waits for a frame of its group's that no member has, then
  // claims it (FORMAT.md, Groups). It holds no claim while it waits, so a
  // member that times out, detaches or dies waiting takes no frame away.
  std::optional<ring_frame<T>> next_member(const mapped& m, detail::ring::clock::time_point until) {
    namespace rf = format::ring;
    using namespace detail::ring;
    std::byte* e = my_entry(m);
    std::byte* g = m.group(group_ - 1);
    const std::uint64_t slots = m.layout().slots;
    if (load64(e + rf::e_claim, relaxed) != 0) release_claim(m);  // the frame held before
    for (;;) {
      const std::uint64_t next = load64(g + rf::g_next, acquire);
      const std::uint64_t h = load64(m.head(), acquire);
      if (h <= next) {
        if (!wait_for(m, next + 1, until)) return std::nullopt;
        continue;
      }
      std::uint64_t c = next + 1, skipped = 0;
      if (h - c >= slots) {  // overwritten already: to the oldest still there
        skipped = h - slots + 1 - c;
        c = h - slots + 1;
      }
      store64(e + rf::e_claim, c,
              seq_cst);  // before the swap: a writer that sees next >= c sees it
      if (!cas64(g + rf::g_next, next, c)) {
        // Another member took it: no claim is held while looking again (a
        // stale one would hold the writer back while this member waits).
        store64(e + rf::e_claim, 0, seq_cst);
        continue;
      }
      if (skipped) {
        lost(m, skipped);
        add64(g + rf::g_missed, skipped, seq_cst);
      }
      const std::byte* sh = m.slot_header(m.slot_of(c));
      if (load64(sh + rf::s_state, acquire) != 2 * c) {  // reused before we got to it
        lost(m, 1);
        add64(g + rf::g_missed, 1, seq_cst);
        continue;
      }
      return ring_frame<T>(ring_, c, load64(sh + rf::s_publish_ns, relaxed));
    }
  }

  void detach() noexcept {
    if (!ring_) return;
    if (in_own_process()) {
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
  static void check_group_name(std::string_view name, const reader_options& o);
  static ring_reader over(std::shared_ptr<mapped> m, int fd, const reader_options& o);
  void enter(const reader_options& o);
  std::uint32_t find_group(const mapped& m, const std::string& name);

  std::uint64_t entry_ = 0;
  std::uint32_t group_ = 0;  // 0: none; g + 1: a member of group g
  std::uint64_t cursor_ = 0;
  std::uint64_t held_ = 0;
  std::uint64_t missed_ = 0;
  std::chrono::nanoseconds spin_{0};
};

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
  // A name that is not there yet, and a ring still being made, are waited
  // for wait_for_name.
  return detail::retry_attach(o.wait_for_name, o.wait_for_name, [&] {
    detail::fd_guard fd{backing.open_descriptor(access_mode::read_write)};
    const struct stat st = detail::examine_regular(fd.fd, backing.name());
    const auto info = detail::read_ring_record_at(fd.fd, std::size_t(st.st_size), backing.name());
    detail::ring::require_dtype<T>(info, backing.name());
    if (shape && *shape != info.frame.shape)
      throw shape_mismatch(detail::message(backing.name(), "has frames of shape " +
                                                               to_string(info.frame.shape) +
                                                               ", expected " + to_string(*shape)));
    object_id id;
    if (!detail::identify(fd.fd, id))
      detail::throw_os_error(errno, backing.name(), "could not be examined");
    return from_descriptor(fd.fd, backing.name(), info, id, o);
  });
}

template <class T>
ring_reader<T> ring_reader<T>::from_descriptor(int fd, std::string name,
                                               const detail::ring_info& info, const object_id& id,
                                               const reader_options& o) {
  check_group_name(name, o);
  auto m = std::make_shared<mapped>();
  m->name = std::move(name);
  m->info = info;
  const auto& l = m->layout();
  m->slots.emplace(detail::ring::map_part(fd, 0, l.readers_at, false, m->name, id));
  m->readers.emplace(detail::ring::map_part(fd, l.readers_at, l.reader_bytes, true, m->name, id));
  m->set_areas(m->slots->data(), m->readers->data());
  return over(std::move(m), fd, o);
}

template <class T>
void ring_reader<T>::check_group_name(std::string_view name, const reader_options& o) {
  if (o.group.empty()) return;
  const auto at = detail::unprintable_at(o.group);
  if (o.group.size() > format::ring::group_name_max || at != o.group.npos)
    throw invalid_name(
        detail::message(name, "cannot have a reader group named \"" + detail::escaped(o.group) +
                                  "\": group names are printable UTF-8 of 1 to 40 bytes"));
}

// A reader over mappings made already (its own, or in the thread tests the
// writer's), with a liveness descriptor of its own of the object behind fd.
template <class T>
ring_reader<T> ring_reader<T>::over(std::shared_ptr<mapped> m, int fd, const reader_options& o) {
  ring_reader r;
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
    for (entry_ = 0; entry_ < l.readers; ++entry_) {
      std::byte* e = m.entry(entry_);
      if (!cas32(e + rf::e_state, rf::entry_free, rf::entry_setting_up)) continue;
      store64(e + rf::e_pid, std::uint64_t(::getpid()), detail::ring::release);
      // A process freeing the entry's last reader still holds its write
      // lock: give the entry back and take another.
      if (hold_byte(probe, m.entry_lock_at(entry_))) {
        found = true;
        break;
      }
      store32(e + rf::e_state, rf::entry_free, detail::ring::release);
    }
    if (!found && pass == 0)
      for (std::uint64_t j = 0; j < l.readers; ++j)
        reap_if_gone(m, probe, j);
  }
  if (!found) {
    // The message first: m is the mapping this reader lets go of.
    const std::string why = detail::message(
        m.name, "has all its " + std::to_string(l.readers) +
                    " reader places taken (ring_options::max_readers when it was made)");
    ring_.reset();
    throw invalid_argument(why);
  }
  std::byte* e = m.entry(entry_);
  auto undo = detail::scope_exit([&] {
    store32(e + rf::e_state, rf::entry_free, detail::ring::release);
    lock_.let_go(m.entry_lock_at(entry_));
    ring_.reset();
  });
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
// open-file-description write lock on the reader area's r_group_lock byte, so that
// two readers naming a new group at once make one.
template <class T>
std::uint32_t ring_reader<T>::find_group(const mapped& m, const std::string& name) {
  namespace rf = format::ring;
  using namespace detail::ring;
  const auto& l = m.layout();
  // Polled, not waited for: a stopped process holding it must not hold
  // every new member for ever.
  const auto until = deadline_after(std::chrono::seconds(5));
  while (!lock_byte(lock_.fd(), l.readers_at + rf::r_group_lock, F_WRLCK)) {
    if (errno != EAGAIN && errno != EACCES && errno != EINTR)
      detail::throw_os_error(errno, m.name, "could not take its group lock");
    if (clock::now() >= until)
      throw error(detail::message(m.name,
                                  "has its group lock held for 5 s by another process (a reader "
                                  "stopped while it made a group?)"));
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  auto unlock = detail::scope_exit([&] { lock_.let_go(l.readers_at + rf::r_group_lock); });
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
    store32(ge + rf::g_state, rf::entry_used, detail::ring::release);
    return std::uint32_t(g + 1);
  }
  throw invalid_argument(detail::message(
      m.name, "has all its " + std::to_string(l.groups) +
                  " reader groups named already (ring_options::max_groups when it was made)"));
}

}  // namespace shmarray
