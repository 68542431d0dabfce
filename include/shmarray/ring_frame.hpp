// shmarray: what a ring hands out: a reader's frame (a read-only view of a
// slot in place, its sequence number and time, valid() after reading) and
// a writer's loan (the next slot, writable). Both are arrays to the Eigen
// and xtensor adapters' views.
#pragma once

#include <atomic>
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

}  // namespace shmarray
