// shmarray: xtensor views of shared arrays, and xtensor containers whose
// memory is shared with fork() children.
//
// Speed first: an adaptor whose layout is only known at run time (built from
// strides) takes xtensor's slow generic path, so every contiguous view here
// has a static row_major or column_major layout and a shape only; strided
// adaptors are made only where the view really is strided.
//
// adapt*() views borrow the memory, as xt::adapt does: keep an ndarray handle
// alive while they are used. shared_adapt*() views hold the handle themselves
// and keep the memory mapped for as long as they live.
#pragma once

#include <array>
#include <cstddef>
#include <memory>
#include <shmarray/allocator.hpp>
#include <shmarray/manager.hpp>
#include <shmarray/ndarray.hpp>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>
#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xbuffer_adaptor.hpp>
#include <xtensor/xnoalias.hpp>
#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>

namespace shmarray {

// xtensor containers whose storage comes from shmarray::allocator: built
// before fork(), they are the same memory in the children. (Memory allocated
// after the fork, by a resize, is that process's alone.)
template <class T, xt::layout_type L = XTENSOR_DEFAULT_LAYOUT>
using xarray = xt::xarray<T, L, shmarray::allocator<T>>;
template <class T, std::size_t N, xt::layout_type L = XTENSOR_DEFAULT_LAYOUT>
using xtensor = xt::xtensor<T, N, L, shmarray::allocator<T>>;

namespace detail {

// Borrowing and owning buffers over an array's memory.
template <class T>
using borrowed_buffer = xt::xbuffer_adaptor<T*, xt::no_ownership>;
template <class T>
using owning_buffer = xt::xbuffer_adaptor<T*, xt::no_ownership, std::shared_ptr<const void>>;

template <xt::layout_type L, class T>
void require_xt_order(const ndarray<T>& a, const char* view) {
  static_assert(L == xt::layout_type::row_major || L == xt::layout_type::column_major,
                "shmarray: contiguous xtensor views have a static row_major or column_major "
                "layout");
  const bool row = L == xt::layout_type::row_major;
  if ((a.storage_order() == order::row_major) != row)
    throw order_mismatch(message(
        a.name(), std::string("is ") + (row ? "column-major ('F')" : "row-major ('C')") + ", but " +
                      view + "<xt::layout_type::" + (row ? "row_major" : "column_major") +
                      "> was asked for; ask for " + view +
                      "<xt::layout_type::" + (row ? "column_major" : "row_major") + ">"));
}

template <class T>
void require_xt_rank(const ndarray<T>& a, std::size_t rank, const char* view) {
  if (a.ndim() != rank)
    throw rank_mismatch(message(a.name(), "is " + std::to_string(a.ndim()) + "-d, but " + view +
                                              " needs a " + std::to_string(rank) + "-d array"));
}

inline void require_xt_range(std::size_t first, std::size_t count, std::size_t extent,
                             const char* what) {
  if (first > extent || count > extent - first)
    throw std::out_of_range("shmarray: " + std::string(what) + " [" + std::to_string(first) + ", " +
                            std::to_string(first + count) + ") is outside [0, " +
                            std::to_string(extent) + ")");
}

template <std::size_t N>
std::array<std::size_t, N> fixed_shape(const shape_type& s) {
  std::array<std::size_t, N> out{};
  for (std::size_t i = 0; i < N; ++i)
    out[i] = s[i];
  return out;
}

}  // namespace detail

// A whole array, dynamic rank, static layout: adapt(a) for a row-major ('C')
// array, adapt<xt::layout_type::column_major>(a) for a column-major one.
template <xt::layout_type L = xt::layout_type::row_major, class T>
auto adapt(const ndarray<T>& a) {
  detail::require_xt_order<L>(a, "adapt");
  return xt::adapt<L>(a.data(), a.size(), xt::no_ownership(), a.shape());
}

// A whole array of rank N (checked), static layout.
template <std::size_t N, xt::layout_type L = xt::layout_type::row_major, class T>
auto adapt(const ndarray<T>& a) {
  detail::require_xt_rank(a, N, "adapt<N>");
  detail::require_xt_order<L>(a, "adapt");
  return xt::adapt<L>(a.data(), a.size(), xt::no_ownership(), detail::fixed_shape<N>(a.shape()));
}

// As adapt(a), but the view holds the array's handle: the memory stays
// mapped for as long as the view (or a copy of it) lives.
template <xt::layout_type L = xt::layout_type::row_major, class T>
auto shared_adapt(const ndarray<T>& a) {
  detail::require_xt_order<L>(a, "shared_adapt");
  using buffer = detail::owning_buffer<T>;
  return xt::xarray_adaptor<buffer, L, shape_type>(buffer(a.data(), a.size(), a.keep_alive()),
                                                   a.shape(), L);
}
template <std::size_t N, xt::layout_type L = xt::layout_type::row_major, class T>
auto shared_adapt(const ndarray<T>& a) {
  detail::require_xt_rank(a, N, "shared_adapt<N>");
  detail::require_xt_order<L>(a, "shared_adapt");
  using buffer = detail::owning_buffer<T>;
  return xt::xtensor_adaptor<buffer, N, L>(buffer(a.data(), a.size(), a.keep_alive()),
                                           detail::fixed_shape<N>(a.shape()), L);
}

// Frame k of a stack (frames x height x width) as a height x width view. Of
// a row-major stack: contiguous, with a static row_major layout. Of a
// column-major stack (adapt_frame<xt::layout_type::column_major>): an
// xt::view, strided as those elements really are, which xtensor walks on its
// slower generic path; keep stacks row-major for speed.
template <xt::layout_type L = xt::layout_type::row_major, class T>
auto adapt_frame(const ndarray<T>& a, std::size_t k) {
  detail::require_xt_rank(a, 3, "adapt_frame");
  detail::require_xt_order<L>(a, "adapt_frame");
  detail::require_xt_range(k, 1, a.shape(0), "frame");
  const std::size_t h = a.shape(1), w = a.shape(2);
  if constexpr (L == xt::layout_type::row_major)
    return xt::adapt<L>(a.data() + k * h * w, h * w, xt::no_ownership(),
                        std::array<std::size_t, 2>{h, w});
  else
    return xt::view(adapt<3, L>(a), k, xt::all(), xt::all());
}

// Frames [first, first + count) of a stack as a count x height x width view:
// contiguous and static row_major for a row-major stack, a strided xt::view
// for a column-major one.
template <xt::layout_type L = xt::layout_type::row_major, class T>
auto adapt_frames(const ndarray<T>& a, std::size_t first, std::size_t count) {
  detail::require_xt_rank(a, 3, "adapt_frames");
  detail::require_xt_order<L>(a, "adapt_frames");
  detail::require_xt_range(first, count, a.shape(0), "frames");
  const std::size_t h = a.shape(1), w = a.shape(2);
  if constexpr (L == xt::layout_type::row_major)
    return xt::adapt<L>(a.data() + first * h * w, count * h * w, xt::no_ownership(),
                        std::array<std::size_t, 3>{count, h, w});
  else
    return xt::view(adapt<3, L>(a), xt::range(first, first + count), xt::all(), xt::all());
}

// Rows [first, first + count) of a 2-d array (how work is split by rows):
// contiguous and static row_major for a row-major array, a strided xt::view
// for a column-major one.
template <xt::layout_type L = xt::layout_type::row_major, class T>
auto adapt_rows(const ndarray<T>& a, std::size_t first, std::size_t count) {
  detail::require_xt_rank(a, 2, "adapt_rows");
  detail::require_xt_order<L>(a, "adapt_rows");
  detail::require_xt_range(first, count, a.shape(0), "rows");
  const std::size_t c = a.shape(1);
  if constexpr (L == xt::layout_type::row_major)
    return xt::adapt<L>(a.data() + first * c, count * c, xt::no_ownership(),
                        std::array<std::size_t, 2>{count, c});
  else
    return xt::view(adapt<2, L>(a), xt::range(first, first + count), xt::all());
}

namespace detail {

// Evaluates an xtensor expression into a new shared array made by `make`:
// one copy for a packed container, and the expression assigned straight
// into shared memory otherwise (no private temporary).
template <class E, class Make>
auto evaluate_into(const xt::xexpression<E>& expr, create_options o, Make&& make) {
  using value = std::decay_t<typename E::value_type>;
  const E& e = expr.derived_cast();
  const shape_type shape(e.shape().begin(), e.shape().end());
  if constexpr (xt::has_storage_type<E>::value) {
    const auto layout = e.layout();
    if (e.is_contiguous() &&
        (layout == xt::layout_type::row_major || layout == xt::layout_type::column_major)) {
      o.order = layout == xt::layout_type::row_major ? order::row_major : order::column_major;
      return make(shape, o, static_cast<const value*>(e.data() + e.data_offset()));
    }
  }
  const bool column = E::static_layout == xt::layout_type::column_major;
  o.order = column ? order::column_major : order::row_major;
  ndarray<value> out = make(shape, o, static_cast<const value*>(nullptr));
  if (column)
    xt::noalias(shmarray::adapt<xt::layout_type::column_major>(out)) = e;
  else
    xt::noalias(shmarray::adapt<xt::layout_type::row_major>(out)) = e;
  return out;
}

}  // namespace detail

// A new shared array holding the value of any xtensor expression, with its
// shape (and its layout where it has a static column-major one).
template <class E>
ndarray<std::decay_t<typename E::value_type>> from_array(manager& m, const xt::xexpression<E>& e,
                                                         create_options o = {}) {
  using value = std::decay_t<typename E::value_type>;
  return detail::evaluate_into(
      e, o, [&](const shape_type& shape, const create_options& opts, const value* data) {
        return data ? m.from_array(data, shape, opts) : m.from_shape<value>(shape, opts);
      });
}
template <class E, class Backing, class = std::enable_if_t<detail::is_backing<Backing>::value>>
ndarray<std::decay_t<typename E::value_type>> from_array(manager& m, const xt::xexpression<E>& e,
                                                         const Backing& backing,
                                                         create_options o = {}) {
  using value = std::decay_t<typename E::value_type>;
  return detail::evaluate_into(
      e, o, [&](const shape_type& shape, const create_options& opts, const value* data) {
        return data ? m.from_array(data, shape, backing, opts)
                    : m.from_shape<value>(shape, backing, opts);
      });
}

}  // namespace shmarray
