// shmarray: what a ring hands out: a reader's frame (a read-only view of a
// slot in place, its sequence number and time, valid() after reading) and
// a writer's loan (the next slot, writable). Both are arrays to the Eigen
// and xtensor adapters' views.
#pragma once

#include <atomic>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "detail/array_view.hpp"
#include "detail/ring_mapping.hpp"

namespace shmarray {

namespace detail::ring {

// What a frame and a loan are to the views: a packed N-d view of one slot,
// with array_view's interface, whose shape and strides are the ring's own
// (computed once per mapping: handing out a frame allocates nothing).
template <class T>
class slot_view {
 public:
  using value_type = std::remove_cv_t<T>;
  using element_type = T;
  using size_type = std::size_t;
  using pointer = T*;
  using reference = T&;
  using iterator = T*;
  static constexpr std::size_t alignment = 64;  // slots start at multiples of 64 bytes

  explicit operator bool() const noexcept { return ring_ != nullptr; }
  T* data() const noexcept { return data_; }
  const shape_type& shape() const noexcept { return ring_ ? ring_->info.frame.shape : none(); }
  std::size_t shape(std::size_t axis) const { return shape().at(axis); }
  const strides_type& strides() const noexcept {
    static const strides_type empty;
    return ring_ ? ring_->strides : empty;
  }
  std::size_t ndim() const noexcept { return shape().size(); }
  std::size_t size() const noexcept { return ring_ ? ring_->elements : 0; }
  std::size_t nbytes() const noexcept { return size() * sizeof(T); }
  bool empty() const noexcept { return size() == 0; }
  order storage_order() const noexcept {
    return ring_ ? ring_->info.frame.order : order::row_major;
  }
  const std::string& name() const noexcept {
    static const std::string unnamed;
    return ring_ ? ring_->name : unnamed;
  }
  std::shared_ptr<const void> keep_alive() const noexcept { return ring_; }

  template <class... I>
  T& operator()(I... idx) const noexcept {
    return data_[shmarray::detail::element_offset(ring_->strides, idx...)];
  }
  T* begin() const noexcept { return data_; }
  T* end() const noexcept { return data_ + size(); }

 protected:
  slot_view() = default;
  slot_view(std::shared_ptr<const mapped_ring> r, T* data) : ring_(std::move(r)), data_(data) {}
  static const shape_type& none() noexcept {
    static const shape_type s;
    return s;
  }
  std::shared_ptr<const mapped_ring> ring_;
  T* data_ = nullptr;
};

}  // namespace detail::ring

// A frame of a ring, held by a reader: a read-only view of the slot in
// place (the Eigen and xtensor adapters view it as they view any array),
// its sequence number and publish time. valid() says, after reading,
// whether the writer has begun overwriting the slot meanwhile: what was
// read from a frame that is no longer valid may be torn, and must be
// dropped. copy_to copies and validates.
template <class T>
class ring_frame : public detail::ring::slot_view<const T> {
  using base = detail::ring::slot_view<const T>;

 public:
  ring_frame() = default;

  std::uint64_t seq() const noexcept { return seq_; }
  // When the writer published it: CLOCK_MONOTONIC, in ns.
  std::uint64_t publish_ns() const noexcept { return publish_ns_; }

  // Whether the frame is still the one published as seq(): true means every
  // byte read from it before this call was read whole.
  bool valid() const noexcept {
    if (!this->ring_) return false;
    std::atomic_thread_fence(std::memory_order_acquire);
    return detail::ring::load64(state_, detail::ring::relaxed) == 2 * seq_;
  }
  // Copies the frame (in its storage order) to dst, which holds size()
  // elements; false when it was torn (dst then holds garbage).
  bool copy_to(std::remove_const_t<T>* dst) const noexcept {
    if (!this->ring_) return false;
    std::memcpy(static_cast<void*>(dst), this->data(), this->nbytes());
    return valid();
  }

 private:
  template <class U>
  friend class ring_reader;
  ring_frame(std::shared_ptr<const detail::ring::mapped_ring> r, std::uint64_t seq,
             std::uint64_t ns)
      : base(r, reinterpret_cast<const T*>(r->slot(r->slot_of(seq)))),
        state_(r->slot_header(r->slot_of(seq)) + format::ring::s_state),
        seq_(seq),
        publish_ns_(ns) {}
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
class ring_loan : public detail::ring::slot_view<T> {
  using base = detail::ring::slot_view<T>;

 public:
  ring_loan() = default;
  ring_loan(ring_loan&& o) noexcept = default;
  ring_loan& operator=(ring_loan&& o) noexcept = default;
  ring_loan(const ring_loan&) = delete;
  ring_loan& operator=(const ring_loan&) = delete;

  // The sequence number the frame gets when it is published.
  std::uint64_t seq() const noexcept { return seq_; }

 private:
  friend class ring_writer<T>;
  ring_loan(std::shared_ptr<const detail::ring::mapped_ring> r, std::uint64_t seq, T* data)
      : base(std::move(r), data), seq_(seq) {}
  std::uint64_t seq_ = 0;
};

}  // namespace shmarray
