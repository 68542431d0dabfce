// shmarray internals: one ring's mappings in one process, its liveness
// lock, and the checks of others' liveness (docs/FORMAT.md, "Rings: format
// version 2").
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/types.h>

#include <boost/interprocess/mapped_region.hpp>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "../backing.hpp"
#include "../dtype.hpp"
#include "../errors.hpp"
#include "../segment.hpp"
#include "ring_format.hpp"
#include "ring_sync.hpp"
#include "scope_exit.hpp"

namespace shmarray {
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
  // Every frame's strides (in elements) and element count, computed once:
  // a frame or loan refers to them, so handing one out allocates nothing.
  strides_type strides;
  std::size_t elements = 0;

  void set_areas(std::byte* slots_at, std::byte* readers_area) {
    base = slots_at;
    warea = base + layout().writer_at;
    rarea = readers_area;
    strides = packed_strides(info.frame.shape, info.frame.order);
    elements = 1;
    for (auto e : info.frame.shape)
      elements *= e;
  }

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
  void let_go(std::uint64_t at) noexcept { (void)lock_byte(fd_, at, F_UNLCK); }
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

// Frees reader entry i if its reader is gone, exactly once whoever calls it.
// The caller takes an open-file-description write lock on the entry's byte,
// which no live reader's read lock allows, and holds it while it frees the
// entry: a new reader that takes the entry meanwhile cannot take its own
// lock, and gives the entry back (ring_reader::enter), so a live reader's
// entry is never freed. An entry being set up is freed only once its
// process is gone. A member's claim goes to its group's missed count.
inline bool reap_if_gone(const mapped_ring& m, int probe_fd, std::uint64_t i) noexcept {
  std::byte* e = m.entry(i);
  if (load32(e + rf::e_state, acquire) == rf::entry_free) return false;
  const std::uint64_t at = m.entry_lock_at(i);
  if (!lock_byte(probe_fd, at, F_WRLCK)) return false;  // held: its reader lives
  auto unlock = scope_exit([&] { (void)lock_byte(probe_fd, at, F_UNLCK); });
  const std::uint32_t st = load32(e + rf::e_state, acquire);
  if (st == rf::entry_free) return false;
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

// What a ring's writer and its readers share: the mappings, the liveness
// descriptor, the process they belong to, and what they say of the ring.
// `role` names the handle in messages ("writer", "reader").
class ring_end {
 public:
  explicit operator bool() const noexcept { return ring_ != nullptr; }
  const std::string& name() const { return live().name; }
  const shape_type& frame_shape() const { return live().info.frame.shape; }
  order frame_order() const { return live().info.frame.order; }
  std::size_t slots() const { return std::size_t(live().layout().slots); }
  ring_policy policy() const { return live().info.policy; }

 protected:
  explicit ring_end(const char* role) noexcept : role_(role) {}
  ring_end(ring_end&&) noexcept = default;
  ring_end& operator=(ring_end&&) noexcept = default;

  const mapped_ring& live() const {
    if (!ring_)
      throw error(std::string("shmarray: this ring ") + role_ +
                  " is closed or detached (or was moved from)");
    return *ring_;
  }
  // live(), in the process that made the handle; `elsewhere` says what a
  // forked child does instead.
  const mapped_ring& usable(const char* elsewhere) const {
    const auto& m = live();
    if (!in_own_process())
      throw wrong_process(message(
          m.name, std::string("has this ") + role_ + " in the process that made it; " + elsewhere));
    return m;
  }
  bool in_own_process() const noexcept { return generation_ == process_fds::generation(); }

  std::shared_ptr<mapped_ring> ring_;
  liveness_lock lock_;
  std::uint64_t generation_ = 0;

 private:
  const char* role_;
};

}  // namespace detail::ring
}  // namespace shmarray
