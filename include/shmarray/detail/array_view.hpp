// shmarray internals: what every array handle is (ndarray<T>, and the MPI
// adapter's node_array<T>): a packed N-d view of memory, its shape, strides
// and order, element access and iteration. The handles add ownership.
#pragma once

#include <cassert>
#include <cstddef>
#include <type_traits>
#include <utility>

#include "../shape.hpp"

namespace shmarray::detail {

// The offset in elements of the element at (idx...) of a packed view with
// strides `s` (in elements, any indexable container): every array type's
// operator().
template <class Strides, class... I>
std::ptrdiff_t element_offset(const Strides& s, I... idx) noexcept {
  static_assert((std::is_integral_v<I> && ...), "shmarray: indices must be integers");
  assert(sizeof...(I) == s.size() && "shmarray: one index per axis");
  std::ptrdiff_t off = 0;
  std::size_t axis = 0;
  ((off += std::ptrdiff_t(idx) * s[axis++]), ...);
  return off;
}

template <class T>
class array_view {
 public:
  using value_type = std::remove_cv_t<T>;
  using element_type = T;
  using size_type = std::size_t;
  using pointer = T*;
  using reference = T&;
  using iterator = T*;

  T* data() const noexcept { return data_; }
  const shape_type& shape() const noexcept { return shape_; }
  std::size_t shape(std::size_t axis) const { return shape_.at(axis); }
  // Strides in elements (not bytes), derived from the shape and the order.
  const strides_type& strides() const noexcept { return strides_; }
  std::size_t ndim() const noexcept { return shape_.size(); }
  std::size_t size() const noexcept { return size_; }
  std::size_t nbytes() const noexcept { return size_ * sizeof(T); }
  bool empty() const noexcept { return size_ == 0; }
  order storage_order() const noexcept { return order_; }

  // Unchecked element access, one index per axis.
  template <class... I>
  T& operator()(I... idx) const noexcept {
    return data_[element_offset(strides_, idx...)];
  }

  // Iteration over every element, in storage order.
  T* begin() const noexcept { return data_; }
  T* end() const noexcept { return data_ + size_; }

 protected:
  array_view() = default;
  // A read-only view of a writable one (T is const U).
  template <class U, class = std::enable_if_t<std::is_same_v<const U, T>>>
  explicit array_view(const array_view<U>& o)
      : data_(o.data_), shape_(o.shape_), strides_(o.strides_), order_(o.order_), size_(o.size_) {}

  void set_view(T* data, shape_type shape, order o) {
    data_ = data;
    shape_ = std::move(shape);
    order_ = o;
    strides_ = packed_strides(shape_, o);
    size_ = 1;
    for (auto e : shape_)
      size_ *= e;
  }

  T* data_ = nullptr;
  shape_type shape_;
  strides_type strides_;
  order order_ = order::row_major;
  std::size_t size_ = 0;

  template <class U>
  friend class array_view;
};

}  // namespace shmarray::detail
