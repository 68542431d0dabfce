// shmarray: array_ref<T, Rank>, a reference to an array with its rank fixed
// at compile time (as std::mdspan): a pointer, the extents and the strides,
// trivially copyable and small (64 bytes for rank 3), so a process_pool job
// can carry it in its argument. It views the memory of an array handle
// (ndarray) without owning it: keep the handle alive while the ref is used.
// The Eigen and xtensor adapters' views take it as they take an ndarray.
#pragma once

#include <array>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>

#include "detail/array_view.hpp"
#include "detail/mapping_registry.hpp"
#include "errors.hpp"
#include "shape.hpp"

namespace shmarray {

template <class T, std::size_t Rank>
class array_ref {
  static_assert(Rank >= 1, "an array_ref has at least one axis");

 public:
  using element_type = T;
  using value_type = std::remove_cv_t<T>;
  using size_type = std::size_t;
  using pointer = T*;
  using reference = T&;
  using extents_type = std::array<std::size_t, Rank>;
  using strides_type = std::array<std::ptrdiff_t, Rank>;
  static constexpr std::size_t rank = Rank;
  // What the arrays it is made from guarantee for their data (ndarray: 64).
  static constexpr std::size_t alignment = 64;

  array_ref() noexcept = default;
  // A reference to the whole of `a` (an ndarray, or any array with its
  // interface); rank_mismatch unless a has Rank axes.
  template <class A, class = std::enable_if_t<
                         std::is_convertible_v<decltype(std::declval<const A&>().data()), T*>>>
  explicit array_ref(const A& a) {
    static_assert(A::alignment >= alignment, "array_ref: the array type guarantees less alignment");
    if (!a) throw error("shmarray: array_ref of an empty ndarray handle, which refers to no array");
    if (a.ndim() != Rank)
      throw rank_mismatch(detail::message(a.name(), "is " + std::to_string(a.ndim()) +
                                                        "-d, but an array_ref of rank " +
                                                        std::to_string(Rank) + " was asked for"));
    data_ = a.data();
    for (std::size_t k = 0; k < Rank; ++k) {
      shape_[k] = a.shape(k);
      strides_[k] = a.strides()[k];
    }
    order_ = a.storage_order() == order::row_major ? 0 : 1;
  }

  T* data() const noexcept { return data_; }
  const extents_type& shape() const noexcept { return shape_; }
  std::size_t shape(std::size_t axis) const noexcept { return shape_[axis]; }
  std::size_t extent(std::size_t axis) const noexcept { return shape_[axis]; }
  // Strides in elements (not bytes).
  const strides_type& strides() const noexcept { return strides_; }
  std::ptrdiff_t stride(std::size_t axis) const noexcept { return strides_[axis]; }
  static constexpr std::size_t ndim() noexcept { return Rank; }
  std::size_t size() const noexcept {
    std::size_t n = 1;
    for (auto e : shape_)
      n *= e;
    return n;
  }
  std::size_t nbytes() const noexcept { return size() * sizeof(T); }
  bool empty() const noexcept { return size() == 0; }
  order storage_order() const noexcept { return order_ ? order::column_major : order::row_major; }
  explicit operator bool() const noexcept { return data_ != nullptr; }

  // Unchecked element access, one index per axis.
  template <class... I>
  T& operator()(I... idx) const noexcept {
    static_assert(sizeof...(I) == Rank, "shmarray: array_ref takes one index per axis");
    return data_[detail::element_offset(strides_, idx...)];
  }
  T* begin() const noexcept { return data_; }
  T* end() const noexcept { return data_ + size(); }

  // The segment's name (for messages), from the mappings this process has.
  std::string name() const {
    return detail::mapping_registry::instance()
        .holding(reinterpret_cast<std::uintptr_t>(data_))
        .name;
  }
  // A reference owns nothing (the adapters' shared_ views keep nothing alive).
  std::shared_ptr<const void> keep_alive() const noexcept { return {}; }

 private:
  T* data_ = nullptr;
  extents_type shape_{};
  strides_type strides_{};
  std::uint64_t order_ = 0;  // 0: row-major; a full word, so the type has no padding
};

// ref<3>(arr): an array_ref of arr's element type and the rank given.
template <std::size_t Rank, class A>
array_ref<typename A::element_type, Rank> ref(const A& a) {
  return array_ref<typename A::element_type, Rank>(a);
}

}  // namespace shmarray
