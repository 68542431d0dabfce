// shmarray: ndarray<T>, a cheap handle to an N-dimensional array in shared
// memory; the C++ counterpart of shared_ndarray2's SharedNDArray.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "detail/array_view.hpp"
#include "detail/attach_retry.hpp"
#include "detail/pread.hpp"
#include "dtype.hpp"
#include "errors.hpp"
#include "lock.hpp"
#include "metadata.hpp"
#include "owner_status.hpp"
#include "segment.hpp"
#include "shape.hpp"

namespace shmarray {

class manager;

// How to attach to an existing segment.
struct attach_options {
  // How long to keep retrying a segment that is still being created before
  // not_ready is thrown. Zero: try once.
  std::chrono::milliseconds wait{200};
  map_options map;
  // Also wait, as long as `wait`, for the name to appear: a consumer
  // started before its producer attaches once the producer has made the
  // array, with no retry loop of its own; not_found once `wait` has passed.
  bool wait_for_name = false;
};

namespace detail {

// What all copies of an ndarray handle share: the mapping, and where its
// record is (nullptr for a raw segment).
struct array_state {
  segment seg;
  std::byte* record = nullptr;
  std::uint64_t owner_token = 0;  // from the record as validated (0: none)
  bool other_boot = false;        // the record comes from an earlier boot
};

struct trusted_t {};

inline std::shared_ptr<array_state> share(segment seg, bool with_record) {
  auto s = std::make_shared<array_state>(array_state{std::move(seg), nullptr});
  if (with_record) s->record = record_of(s->seg.data(), s->seg.size());
  return s;
}

}  // namespace detail

// A handle to an array in shared memory. Copies share one mapping, which is
// unmapped when the last copy goes; handles survive fork(). Constness is
// shallow, as in std::span: ndarray<const T> is the read-only handle.
template <class T>
class ndarray : public detail::array_view<T> {
  using base = detail::array_view<T>;
  using base::data_;
  using base::order_;
  using base::set_view;
  using base::shape_;
  using base::size_;

 public:
  using base::begin;
  using base::end;
  using base::ndim;
  using typename base::value_type;

  // Bytes to which data() is aligned: the data starts a page-aligned mapping.
  static constexpr std::size_t alignment = 64;

  // The element type as NumPy names it.
  static constexpr dtype_info dtype() { return dtype_of<T>(); }

  // An empty handle: no data, rank 0, size 0.
  ndarray() = default;

  // Wraps a segment that carries a record; the record is validated and its
  // dtype must be T's.
  explicit ndarray(segment seg) {
    check_access(seg);
    const auto info = detail::read_record(seg.data(), seg.size(), seg.name());
    check_dtype(info, seg.name());
    adopt(std::move(seg), info);
  }

  // Wraps a segment with an explicit shape, as SharedNDArray(shm, shape,
  // dtype) does: a segment that holds exactly the bytes of the shape is raw,
  // whatever those bytes are; any other must carry a record that agrees.
  ndarray(segment seg, const shape_arg& shape_in, order o = order::row_major) {
    const shape_type& shape = shape_in;
    check_access(seg);
    const std::size_t nbytes = detail::checked_nbytes(sizeof(T), shape, seg.name());
    std::byte rec[format::record_size];
    const bool fits = detail::record_fits(seg.size());
    if (fits) detail::copy_record(seg.data(), seg.size(), rec);
    const auto info = described(seg.size(), fits ? rec : nullptr, shape, o, nbytes, seg.name());
    if (info)
      adopt(std::move(seg), *info);
    else
      adopt_raw(std::move(seg), shape, o);
  }

  // Attaches to a named segment (POSIX shared memory or a file) by its
  // record. The record is read with pread and validated, and the dtype
  // checked, before anything is mapped: an object that fails never is.
  template <class Backing, class = std::enable_if_t<detail::is_named<Backing>::value>>
  static ndarray attach(const Backing& backing, const attach_options& opts = {}) {
    return retry_while_not_ready(opts, [&] {
      std::optional<segment_info> info;
      segment seg(open_only, backing, mode, opts.map, [&](int fd, std::size_t size) {
        info = detail::read_record_at(fd, size, backing.name());
        check_dtype(*info, backing.name());
        check_bools_at(fd, info->data_nbytes, backing.name());
      });
      ndarray a;
      a.adopt(std::move(seg), *info, true);
      return a;
    });
  }
  static ndarray attach(std::string_view name, const attach_options& opts = {}) {
    return attach(posix_shm(name), opts);
  }

  // Attaches with an explicit shape (raw segments, or to check a record),
  // decided as the constructor above decides it, before anything is mapped.
  template <class Backing, class = std::enable_if_t<detail::is_named<Backing>::value>>
  static ndarray attach(const Backing& backing, const shape_arg& shape_in,
                        order o = order::row_major, const attach_options& opts = {}) {
    const shape_type& shape = shape_in;
    const std::size_t nbytes = detail::checked_nbytes(sizeof(T), shape, backing.name());
    return retry_while_not_ready(opts, [&] {
      std::optional<segment_info> info;
      segment seg(open_only, backing, mode, opts.map, [&](int fd, std::size_t size) {
        std::byte rec[format::record_size];
        const bool fits = detail::record_fits(size) && size != nbytes;
        if (fits) detail::read_tail_or_throw(fd, size, rec, backing.name());
        info = described(size, fits ? rec : nullptr, shape, o, nbytes, backing.name());
        check_bools_at(fd, nbytes, backing.name());
      });
      ndarray a;
      if (info)
        a.adopt(std::move(seg), *info, true);
      else
        a.adopt_raw(std::move(seg), shape, o, true);
      return a;
    });
  }
  static ndarray attach(std::string_view name, const shape_arg& shape, order o = order::row_major,
                        const attach_options& opts = {}) {
    return attach(posix_shm(name), shape, o, opts);
  }

  // A read-only view of a writable handle.
  template <class U, class = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
  ndarray(const ndarray<U>& other)  // NOLINT(google-explicit-constructor): like T* to const T*
      : base(other), state_(other.state_) {}

  // False for a default-constructed handle, which refers to no array.
  explicit operator bool() const noexcept { return state_ != nullptr; }

  // The segment's name ("/name", a file path, or "" for anonymous memory).
  const std::string& name() const {
    static const std::string none;
    return state_ ? state_->seg.name() : none;
  }
  // Whether the segment carries a record (and so a lock); false for raw segments.
  bool has_metadata() const noexcept { return state_ && state_->record; }
  // Whether the process that made the array (its manager's process) is
  // alive, as its owner token says: alive; gone (it ended or died, however:
  // what it left is shmarray gc's); untracked where no token is named (a
  // kept or raw segment, anonymous memory, an empty handle); unreadable
  // where the token cannot be read here. Asks the kernel at each call.
  owner_status owner_state() const {
    if (!state_ || state_->owner_token == 0) return owner_status::untracked;
    return detail::owner::status_of(
        detail::owner::token_state(state_->owner_token, state_->other_boot));
  }
  // True while the owner is known to be alive (owner_state() is alive).
  bool owner_alive() const { return owner_state() == owner_status::alive; }

  // Shares ownership of the mapping: whoever holds it keeps the memory
  // mapped, as a handle does (for views that must not outlive it).
  std::shared_ptr<const void> keep_alive() const noexcept { return state_; }

  // The mapping behind the array.
  const segment& mapped_segment() const {
    if (!state_) throw error("shmarray: an empty ndarray has no segment");
    return state_->seg;
  }

  // Bounds-checked element access: std::out_of_range on a wrong index count
  // or an index outside its axis.
  template <class... I>
  T& at(I... idx) const {
    static_assert((std::is_integral_v<I> && ...), "shmarray: indices must be integers");
    if (sizeof...(I) != ndim())
      throw std::out_of_range("shmarray: " + std::to_string(sizeof...(I)) + " indices for a " +
                              std::to_string(ndim()) + "-d array");
    std::size_t axis = 0;
    (check_index(idx, axis++), ...);
    return (*this)(idx...);
  }

  template <class U = T>
  void fill(const value_type& v) const {
    static_assert(std::is_same_v<U, T> && !std::is_const_v<U>,
                  "shmarray: cannot fill an ndarray<const T>");
    std::fill(begin(), end(), v);
  }

  // The same data seen with another shape of the same size, in the same
  // storage order; one extent may be -1 and is then inferred.
  ndarray reshape(const std::vector<std::ptrdiff_t>& spec) const {
    ndarray r = *this;
    r.set_view(data_, detail::reshaped(spec, size_, sizeof(T), name()), order_);
    return r;
  }
  ndarray reshape(std::initializer_list<std::ptrdiff_t> spec) const {
    return reshape(std::vector<std::ptrdiff_t>(spec));
  }
  ndarray reshape(const shape_type& shape) const { return reshape(detail::spec_of(shape)); }

  // Takes the segment's process-shared lock, waiting as long as it takes.
  template <class U = T>
  scoped_lock lock() const {
    static_assert(std::is_same_v<U, T> && !std::is_const_v<U>,
                  "shmarray: ndarray<const T> has no lock(): the mutex must be written to be "
                  "taken; lock through a writable ndarray<T>");
    return scoped_lock::acquire(state_, mutex(), name(), scoped_lock::mode::wait);
  }
  // Takes the lock if it is free; the result owns it or converts to false.
  template <class U = T>
  scoped_lock try_lock() const {
    static_assert(std::is_same_v<U, T> && !std::is_const_v<U>,
                  "shmarray: ndarray<const T> has no try_lock()");
    return scoped_lock::acquire(state_, mutex(), name(), scoped_lock::mode::try_once);
  }
  // Waits at most `timeout` for the lock, so a stopped holder cannot block forever.
  template <class Rep, class Period, class U = T>
  scoped_lock try_lock_for(std::chrono::duration<Rep, Period> timeout) const {
    static_assert(std::is_same_v<U, T> && !std::is_const_v<U>,
                  "shmarray: ndarray<const T> has no try_lock_for()");
    return scoped_lock::acquire(state_, mutex(), name(), scoped_lock::mode::until,
                                scoped_lock::saturate(timeout));
  }

 private:
  template <class U>
  friend class ndarray;
  friend class manager;

  // Built by manager from a segment it has just created and described.
  ndarray(detail::trusted_t, segment seg, const segment_info* info, shape_type shape, order o) {
    state_ = detail::share(std::move(seg), info != nullptr);
    if (info) state_->owner_token = info->owner_token;
    set_view(reinterpret_cast<T*>(state_->seg.data()), std::move(shape), o);
  }

  static constexpr access_mode mode =
      std::is_const_v<T> ? access_mode::read_only : access_mode::read_write;

  // Retries while the segment is being created (and, with wait_for_name,
  // while its name does not exist yet) until opts.wait has passed; then the
  // last attempt's error is thrown.
  template <class F>
  static ndarray retry_while_not_ready(const attach_options& opts, F&& attempt) {
    return detail::retry_attach(opts.wait, opts.wait_for_name ? opts.wait : opts.wait.zero(),
                                std::forward<F>(attempt));
  }

  static void check_access(const segment& seg) {
    if (!std::is_const_v<T> && !seg.writable())
      throw access_denied(
          detail::message(seg.name(),
                          "is mapped read-only, so it cannot back a writable ndarray<T>; use "
                          "ndarray<const T>"));
  }

  // T's dtype, or |b1 seen as its bytes through uint8_t (see check_bools).
  static void check_dtype(const segment_info& info, std::string_view name) {
    if (info.dtype == dtype().str) return;
    if (std::is_same_v<std::remove_const_t<T>, std::uint8_t> && info.dtype == dtype_of<bool>().str)
      return;
    throw dtype_mismatch(
        detail::message(name, "holds " + info.dtype + ", expected " + std::string(dtype().str)));
  }

  // What a segment of `size` bytes, its record copied to `rec` (nullptr
  // where it has none), is when attached with an explicit shape: raw
  // (nullopt) when it holds exactly the shape's bytes; else its record,
  // which must agree with the shape, the order and T.
  static std::optional<segment_info> described(std::size_t size, const std::byte* rec,
                                               const shape_type& shape, order o, std::size_t nbytes,
                                               std::string_view name) {
    if (size == nbytes) return std::nullopt;
    std::uint64_t with_record = 0;
    const bool could_be = detail::segment_bytes(nbytes, with_record) && with_record == size;
    // A record, or the place of one not written yet: validate_record says which.
    if (rec && (detail::has_magic(rec) ||
                (could_be && detail::all_zero(rec + format::off_magic, sizeof format::magic)))) {
      auto info = detail::validate_record(rec, size, name);
      check_dtype(info, name);
      if (info.shape != shape || info.order != o)
        throw shape_mismatch(detail::message(
            name, "has shape " + to_string(info.shape) + " in " + order_name(info.order) +
                      " order, expected " + to_string(shape) + " in " + order_name(o) + " order"));
      return info;
    }
    throw shape_mismatch(detail::message(
        name, "holds " + std::to_string(size) + " bytes, but shape " + to_string(shape) + " of " +
                  std::string(dtype().str) + " takes " + std::to_string(nbytes)));
  }

  // A bool whose byte is neither 0 nor 1 is undefined behaviour to read, and
  // any process that can write a segment can put one there: the bytes of a
  // segment viewed as bool are checked when it is attached. (Whoever writes
  // them later is trusted, as every writer of a segment is.)
  static constexpr bool is_bool = std::is_same_v<std::remove_const_t<T>, bool>;

  static void check_bool_bytes(const unsigned char* p, std::size_t n, std::size_t offset,
                               std::string_view name) {
    for (std::size_t i = 0; i < n; ++i)
      if (p[i] > 1)
        throw dtype_mismatch(detail::message(
            name, "holds byte " + std::to_string(unsigned(p[i])) + " at offset " +
                      std::to_string(offset + i) +
                      ", which is not a bool (0 or 1); attach it as std::uint8_t to read its "
                      "bytes"));
  }

  // The bytes of a mapping this process made or was handed.
  static void check_bools(const segment& seg, std::size_t n) {
    if constexpr (is_bool)
      check_bool_bytes(reinterpret_cast<const unsigned char*>(seg.data()), n, 0, seg.name());
  }

  // The bytes of an object before it is mapped, read with pread: an object
  // another user shrinks meanwhile is truncated_segment, never a SIGBUS.
  static void check_bools_at(int fd, std::size_t n, std::string_view name) {
    if constexpr (is_bool) {
      std::vector<unsigned char> buf(std::min<std::size_t>(n, 1u << 16));
      for (std::size_t at = 0; at < n;) {
        const std::size_t want = std::min(buf.size(), n - at);
        if (detail::pread_full(fd, buf.data(), want, off_t(at)) != want)
          throw truncated_segment(detail::message(
              name, "shrank while its bytes were read (another process resizes it)"));
        check_bool_bytes(buf.data(), want, at, name);
        at += want;
      }
    } else {
      (void)fd;
      (void)n;
      (void)name;
    }
  }

  static const char* order_name(order o) { return o == order::row_major ? "C" : "F"; }

  // Takes a segment whose record `info` has been validated (and its dtype
  // checked; its bytes too where `checked`).
  void adopt(segment seg, const segment_info& info, bool checked = false) {
    if (!checked) check_bools(seg, info.data_nbytes);
    std::byte* rec = detail::record_of(seg.data(), seg.size());
    if (seg.writable()) detail::refresh_lock(rec, seg.name());
    state_ = detail::share(std::move(seg), true);
    state_->owner_token = info.owner_token;
    state_->other_boot = info.boot_id != detail::boot_id();
    set_view(reinterpret_cast<T*>(state_->seg.data()), info.shape, info.order);
  }

  // Takes a raw segment that holds exactly the bytes of `shape`.
  void adopt_raw(segment seg, const shape_type& shape, order o, bool checked = false) {
    if (!checked) check_bools(seg, seg.size());
    state_ = detail::share(std::move(seg), false);
    set_view(reinterpret_cast<T*>(state_->seg.data()), shape, o);
  }

  template <class I>
  void check_index(I i, std::size_t axis) const {
    if constexpr (std::is_signed_v<I>) {
      if (i < 0)
        throw std::out_of_range("shmarray: index " + std::to_string(i) + " is negative (axis " +
                                std::to_string(axis) + ")");
    }
    if (std::size_t(i) >= shape_[axis])
      throw std::out_of_range("shmarray: index " + std::to_string(i) +
                              " is out of bounds for axis " + std::to_string(axis) + " with size " +
                              std::to_string(shape_[axis]));
  }

  pthread_mutex_t* mutex() const {
    if (!state_ || !state_->record)
      throw lock_error(detail::message(
          name(), "has no record, so it has no lock (raw segments carry only their data)"));
    // Checked at every lock, not only at attach: any process that can
    // write the segment can overwrite its mutex meanwhile, and glibc writes
    // through the pointers a robust mutex holds.
    pthread_mutex_t* m = detail::record_mutex(state_->record);
    if (!detail::mutex_kind_ok(m))
      detail::corrupt(name(), "its lock is not a robust process-shared mutex (it was overwritten)");
    return m;
  }

  std::shared_ptr<detail::array_state> state_;
};

}  // namespace shmarray
