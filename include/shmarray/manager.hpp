// shmarray: manager, the owner of the segments it creates; its scope ends
// their names' life. The counterpart of SharedMemoryManager.
#pragma once

#include <sys/random.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "backing.hpp"
#include "detail/owner/lifetime.hpp"
#include "detail/scope_exit.hpp"
#include "dtype.hpp"
#include "errors.hpp"
#include "metadata.hpp"
#include "ndarray.hpp"
#include "ring.hpp"
#include "segment.hpp"
#include "shape.hpp"

namespace shmarray {

// How to create an array.
struct create_options {
  shmarray::order order = order::row_major;
  // No record: the segment holds exactly the array's bytes, as Python's
  // shared_ndarray2 requires of a segment it wraps. Attach it with an
  // explicit shape; it has no lock.
  bool raw = false;
  // The manager does not remove this segment; it outlives the manager.
  bool keep = false;
  map_options map;
};

struct manager_options {
  // Generated names are prefix + pid + '_' + 10 random base-36 characters.
  std::string prefix = "shmarray_";
};

namespace detail {

// Appends v in base `radix` (10 or 36).
inline void append_number(std::string& s, std::uint64_t v, unsigned radix) {
  char digits[24];
  std::size_t n = 0;
  do {
    digits[n++] = "0123456789abcdefghijklmnopqrstuvwxyz"[v % radix];
    v /= radix;
  } while (v);
  while (n)
    s += digits[--n];
}

// 10 base-36 characters (51 bits) from the kernel's random source, new for
// every name: another user who sees one name cannot plant the next.
inline void append_random(std::string& s) {
  std::uint64_t v = 0;
  if (::getrandom(&v, sizeof v, 0) != ssize_t(sizeof v)) {
    std::random_device rd;  // getrandom unavailable (seccomp?): the same source, by another way
    v = std::uint64_t(rd()) << 32 | rd();
  }
  for (int i = 0; i < 10; ++i, v /= 36)
    s += "0123456789abcdefghijklmnopqrstuvwxyz"[v % 36];
}

}  // namespace detail

// Creates arrays in shared memory and removes every segment it created when
// it is destroyed, in the creating process only: a fork()ed child that
// destroys its copy removes nothing. Handles stay usable after their name is
// removed, until the last copy goes. Thread-safe.
class manager {
 public:
  manager() : manager(manager_options{}) {}
  explicit manager(manager_options o) : s_(std::make_unique<state>()) {
    st().prefix = std::move(o.prefix);
  }
  manager(manager&&) noexcept = default;
  manager& operator=(manager&& o) noexcept {
    if (this != &o) {
      remove_all();
      s_ = std::move(o.s_);
    }
    return *this;
  }
  ~manager() { remove_all(); }

  // A new zero-filled array under a generated POSIX shared-memory name.
  template <class T>
  ndarray<T> from_shape(const shape_arg& shape, const create_options& o = {}) {
    return create<T>(shape, o, nullptr);
  }
  // A new zero-filled array with the given backing: anonymous{},
  // posix_shm{"name"} or file{"path"}.
  template <class T, class Backing, class = std::enable_if_t<detail::is_backing<Backing>::value>>
  ndarray<T> from_shape(const shape_arg& shape, const Backing& backing,
                        const create_options& o = {}) {
    return create<T>(backing, shape, o, nullptr);
  }

  // A new array holding a copy of `data`, read in the order of `o.order`.
  template <class T>
  ndarray<std::remove_const_t<T>> from_array(const T* data, const shape_arg& shape,
                                             const create_options& o = {}) {
    return create<std::remove_const_t<T>>(shape, o, data);
  }
  template <class T, class Backing, class = std::enable_if_t<detail::is_backing<Backing>::value>>
  ndarray<std::remove_const_t<T>> from_array(const T* data, const shape_arg& shape,
                                             const Backing& backing, const create_options& o = {}) {
    return create<std::remove_const_t<T>>(backing, shape, o, data);
  }
  // A new array holding a copy of another, with its shape and order.
  template <class T>
  ndarray<std::remove_const_t<T>> from_array(const ndarray<T>& a, create_options o = {}) {
    o.order = source_order(a);
    return from_array(a.data(), a.shape(), o);
  }
  template <class T, class Backing, class = std::enable_if_t<detail::is_backing<Backing>::value>>
  ndarray<std::remove_const_t<T>> from_array(const ndarray<T>& a, const Backing& backing,
                                             create_options o = {}) {
    o.order = source_order(a);
    return from_array(a.data(), a.shape(), backing, o);
  }

  // A new ring of frames (ring.hpp) of `frame_shape` under a POSIX
  // shared-memory name, or with the given backing (anonymous{} for fork()
  // children, file{path}), and its one writer. The manager removes the
  // name at its end, as an array's; the writer's end closes the ring.
  template <class T>
  ring_writer<T> ring(std::string_view name, const shape_arg& frame_shape,
                      const ring_options& o = {}) {
    return create_ring<T>(posix_shm(name), frame_shape, o);
  }
  template <class T, class Backing, class = std::enable_if_t<detail::is_backing<Backing>::value>>
  ring_writer<T> ring(const Backing& backing, const shape_arg& frame_shape,
                      const ring_options& o = {}) {
    return create_ring<T>(backing, frame_shape, o);
  }

  // Attaches to an array this or another process made; the manager does not
  // own it and will not remove it.
  template <class T>
  ndarray<T> attach(std::string_view name, const attach_options& opts = {}) const {
    return ndarray<T>::attach(name, opts);
  }
  template <class T>
  ndarray<T> attach(std::string_view name, const shape_arg& shape, order o = order::row_major,
                    const attach_options& opts = {}) const {
    return ndarray<T>::attach(name, shape, o, opts);
  }

  // A fresh name: prefix, owner pid and a random part of its own. With the
  // default prefix it is at most 28 characters long, '/' included.
  posix_shm generate_name() const { return generate_name(::getpid()); }

 private:
  posix_shm generate_name(pid_t self) const {
    const std::string& prefix = st().prefix;
    std::string name;
    name.reserve(prefix.size() + 32);
    name += '/';
    name += prefix;
    detail::append_number(name, std::uint64_t(self), 10);
    name += '_';
    detail::append_random(name);
    return posix_shm(name);
  }

 public:
  // The names this manager will remove, in creation order.
  std::vector<std::string> names() const { return st().owned.names(); }

  // Storage for shmarray::allocator over named memory: a raw segment that
  // lives until deallocate_bytes or the manager's end.
  void* allocate_bytes(std::size_t bytes) {
    const pid_t self = ::getpid();
    for (int attempt = 0;; ++attempt) {
      const posix_shm name = generate_name(self);
      try {
        owned_creation made(st().owned, detail::owner::wire::object_kind::shm, name.name());
        detail::initial_bytes init;
        made.watch(init);
        segment seg(create_only, name, bytes, {}, init);
        detail::scope_exit undo([&] { remove_quietly(name); });
        std::lock_guard<std::mutex> g(st().mu);
        void* p = seg.data();
        made.owned(name.name(), self, seg.id());
        st().allocations.emplace(p, std::move(seg));
        undo.dismiss();
        return p;
      } catch (const already_exists&) {
        if (attempt == 16) throw;
      }
    }
  }
  void deallocate_bytes(void* p) noexcept {
    if (!s_) return;  // moved from: the new owner frees it at its end
    std::lock_guard<std::mutex> g(s_->mu);
    const auto it = s_->allocations.find(p);
    if (it == s_->allocations.end()) return;
    s_->owned.remove(it->second.name());
    s_->allocations.erase(it);
  }

 private:
  using owned_creation = detail::owner::ownership::creation;
  struct state {
    std::string prefix;
    mutable std::mutex mu;  // for allocations
    // The names it created, their token references and their watchdog
    // registrations: removed at the manager's end.
    detail::owner::ownership owned;
    std::map<void*, segment> allocations;
  };

  template <class Backing>
  static constexpr char kind_of() {
    return char(detail::owner::wire::kind_of(Backing::where));  // the backing says where
  }

  // The name the watchdog (and the token's journal) knows an object by.
  template <class Backing>
  static std::string registered_name(const Backing& backing) {
    if constexpr (std::is_same_v<Backing, posix_shm>)
      return backing.name();
    else
      return backing.link_free_path();
  }

  // Undoes a creation that failed half-way; anonymous memory has no name.
  template <class Backing>
  static void remove_quietly(const Backing& backing) noexcept {
    if constexpr (detail::is_named<Backing>::value) {
      try {
        backing.remove();
      } catch (...) {
      }
    }
  }

  // Creates under a generated name, trying another if the name is taken.
  template <class T>
  ndarray<T> create(const shape_type& shape, const create_options& o, const void* data) {
    const pid_t self = ::getpid();
    for (int attempt = 0;; ++attempt) {
      try {
        return create<T>(generate_name(self), shape, o, data, self);
      } catch (const already_exists&) {
        if (attempt == 16) throw;
      }
    }
  }

  // Creates an array of `shape`, holding a copy of `data` (zeros if null).
  template <class T, class Backing>
  ndarray<T> create(const Backing& backing, const shape_type& shape, const create_options& o,
                    const void* data, pid_t self = ::getpid()) {
    static_assert(!std::is_const_v<T>, "shmarray: create arrays of T, not const T");
    const std::size_t nbytes = detail::checked_nbytes(sizeof(T), shape, backing.name());
    std::uint64_t total = nbytes;
    if (o.raw && nbytes == 0)
      throw invalid_shape(detail::message(
          backing.name(),
          "cannot be a raw segment of shape " + to_string(shape) + ": it would hold 0 bytes"));
    if (!o.raw && !detail::segment_bytes(nbytes, total))
      throw invalid_shape(detail::message(
          backing.name(), "cannot hold " + std::to_string(nbytes) + " bytes and a record"));
    std::optional<segment_info> info;
    segment seg = create_owned(
        backing, std::size_t(total), o.keep, o.map, {data, data ? nbytes : std::size_t{0}}, self,
        [&](segment& made, std::uint64_t token_id) {
          if (o.raw) return;
          info = detail::new_info(dtype_of<T>(), shape, o.order, nbytes, self);
          info->owner_token = token_id;
          detail::write_record(made.data(), made.size(), *info, made.name());
        });
    return ndarray<T>(detail::trusted_t{}, std::move(seg), info ? &*info : nullptr, shape, o.order);
  }

  // Creates `total` bytes under `backing`, starting with `init`; has
  // write(segment, token id) write its record; and owns it (unless `keep`).
  // A managed named segment holds a reference to its owner's token; one
  // with a record names it there, so that `shmarray gc` can tell when the
  // owner is gone, and the token's journal names them all. A kept one
  // names none and is never collected.
  template <class Backing, class Write>
  segment create_owned(const Backing& backing, std::size_t total, bool keep, const map_options& m,
                       detail::initial_bytes init, pid_t self, Write&& write) {
    std::optional<owned_creation> made;
    if constexpr (detail::is_named<Backing>::value)
      if (!keep)
        made.emplace(st().owned, detail::owner::wire::object_kind(kind_of<Backing>()),
                     registered_name(backing));
    const std::uint64_t token_id = made ? made->token_id() : 0;
    if (made) made->watch(init);
    segment seg(create_only, backing, total, m, init);
    auto undo = detail::scope_exit([&] { remove_quietly(backing); });
    // What the ownership holds, before write() (which may move the segment
    // on: a ring's writer takes it).
    const std::string name = seg.name();
    const object_id id = seg.id();
    write(seg, token_id);
    if (made) made->owned(name, self, id);
    undo.dismiss();
    return seg;
  }

  // A new ring of `slots` frames of `frame_shape`, and its writer.
  template <class T, class Backing>
  ring_writer<T> create_ring(const Backing& backing, const shape_type& frame_shape,
                             const ring_options& o) {
    static_assert(!std::is_const_v<T>, "shmarray: create rings of T, not const T");
    const std::size_t nbytes = detail::checked_nbytes(sizeof(T), frame_shape, backing.name());
    for (auto e : frame_shape)
      if (e == 0)
        throw invalid_shape(detail::message(
            backing.name(), "cannot be a ring of frames of shape " + to_string(frame_shape) +
                                ": a frame holds at least one element"));
    namespace rf = format::ring;
    if (o.slots == 0 || o.slots > rf::max_slots || o.max_readers == 0 ||
        o.max_readers > rf::max_readers || o.max_groups > rf::max_groups)
      throw invalid_argument(detail::message(
          backing.name(), "cannot be a ring of " + std::to_string(o.slots) + " slots, " +
                              std::to_string(o.max_readers) + " readers and " +
                              std::to_string(o.max_groups) + " groups: a ring has 1 to " +
                              std::to_string(rf::max_slots) + " slots, 1 to " +
                              std::to_string(rf::max_readers) + " readers and at most " +
                              std::to_string(rf::max_groups) + " groups"));
    detail::ring_info info;
    if (!info.layout.compute(nbytes, o.slots, o.max_readers, o.max_groups))
      throw invalid_shape(detail::message(
          backing.name(), "cannot be a ring of " + std::to_string(o.slots) + " frames of " +
                              std::to_string(nbytes) + " bytes: too large"));
    const pid_t self = ::getpid();
    info.frame = detail::new_info(dtype_of<T>(), frame_shape, o.order, nbytes, self);
    info.policy = o.policy;
    int keep_fd = -1;
    auto close_fd = detail::scope_exit([&] {
      if (keep_fd >= 0) ::close(keep_fd);
    });
    detail::initial_bytes init;
    init.keep_fd = &keep_fd;
    std::optional<ring_writer<T>> w;
    segment seg = create_owned(
        backing, std::size_t(info.layout.size), o.keep, o.map, init, self,
        [&](segment& made, std::uint64_t token_id) {
          info.frame.owner_token = token_id;
          w.emplace(detail::ring_access::make_writer<T>(std::move(made), keep_fd, info, o));
          keep_fd = -1;  // the writer's now
        });
    (void)seg;  // moved on into the writer
    return std::move(*w);
  }

  void remove_all() noexcept {
    if (!s_) return;
    std::lock_guard<std::mutex> g(st().mu);
    s_->owned.remove_all();
    s_->allocations.clear();
  }

  template <class T>
  static order source_order(const ndarray<T>& a) {
    if (!a) throw error("shmarray: from_array of an empty ndarray handle, which holds no array");
    return a.storage_order();
  }

  state& st() const {
    if (!s_) throw error("shmarray: this manager was moved from");
    return *s_;
  }

  std::unique_ptr<state> s_;
};

}  // namespace shmarray
