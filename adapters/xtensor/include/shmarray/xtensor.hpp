// shmarray: xtensor views of shared arrays, and xtensor containers whose
// memory is shared with fork() children.
//
// Speed first: an adaptor whose layout is only known at run time (built from
// strides) takes xtensor's slow generic path, so every contiguous view here
// has a static row_major or column_major layout and a shape only; only views
// that really are strided (rows of a column-major array) are strided.
//
// adapt*() views borrow the memory, as xt::adapt does: keep an ndarray handle
// alive while they are used (a view of a temporary handle does not compile).
// shared_adapt*() views hold the handle themselves and keep the memory mapped
// for as long as they, or copies of them, live.
#pragma once

#include <array>
#include <cstddef>
#include <memory>
#include <shmarray/allocator.hpp>
#include <shmarray/detail/views.hpp>
#include <shmarray/manager.hpp>
#include <shmarray/ndarray.hpp>
#include <string>
#include <type_traits>
#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xbuffer_adaptor.hpp>
#include <xtensor/xnoalias.hpp>
#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>

namespace shmarray {

// xtensor containers whose storage comes from shmarray::allocator: made
// before fork(), they are the same memory in the children. Memory allocated
// after the fork is that process's alone, and xtensor allocates a temporary
// for `a = a + b` and `a += b` (then swaps it in): in a worker, assign with
// xt::noalias(a) += b, which writes in place.
template <class T, xt::layout_type L = XTENSOR_DEFAULT_LAYOUT>
using xarray = xt::xarray<T, L, shmarray::allocator<T>>;
template <class T, std::size_t N, xt::layout_type L = XTENSOR_DEFAULT_LAYOUT>
using xtensor = xt::xtensor<T, N, L, shmarray::allocator<T>>;

namespace detail {

template <class A>
using xt_element = typename A::element_type;

// Borrowing and owning buffers over an array's memory.
template <class T>
using owning_buffer = xt::xbuffer_adaptor<T*, xt::no_ownership, std::shared_ptr<const void>>;

template <xt::layout_type L, class A>
void require_xt_order(const A& a, const char* view) {
  static_assert(L == xt::layout_type::row_major || L == xt::layout_type::column_major,
                "shmarray: views of whole arrays have a static row_major or column_major layout");
  constexpr bool row = L == xt::layout_type::row_major;
  require_order(a, row,
                std::string(view) +
                    (row ? "<xt::layout_type::row_major>" : "<xt::layout_type::column_major>"),
                std::string(view) +
                    (row ? "<xt::layout_type::column_major>" : "<xt::layout_type::row_major>"));
}

template <std::size_t N>
std::array<std::size_t, N> fixed_shape(const shape_type& s) {
  std::array<std::size_t, N> out{};
  for (std::size_t i = 0; i < N; ++i)
    out[i] = s[i];
  return out;
}
// An array_ref's extents (a std::array already).
template <std::size_t N, std::size_t M>
std::array<std::size_t, N> fixed_shape(const std::array<std::size_t, M>& s) {
  std::array<std::size_t, N> out{};
  for (std::size_t i = 0; i < N && i < M; ++i)
    out[i] = s[i];
  return out;
}

// A contiguous part of an array: where it starts, and its shape.
template <class T, std::size_t N>
struct part {
  T* data;
  std::array<std::size_t, N> shape;
  std::size_t size() const {
    std::size_t n = 1;
    for (auto e : shape)
      n *= e;
    return n;
  }
};

// A static-layout view of a part: borrowing, or holding the array's mapping.
template <xt::layout_type L, class T, std::size_t N>
auto borrowing(const part<T, N>& p) {
  return xt::adapt<L>(p.data, p.size(), xt::no_ownership(), p.shape);
}
template <xt::layout_type L, class T, std::size_t N>
auto owning(const part<T, N>& p, std::shared_ptr<const void> keep) {
  return xt::xtensor_adaptor<owning_buffer<T>, N, L>(
      owning_buffer<T>(p.data, p.size(), std::move(keep)), p.shape, L);
}

}  // namespace detail

#define SHMARRAY_XT_NO_TEMPORARY                                                                \
  static_assert(shmarray::detail::dependent_false<A>::value,                                    \
                "shmarray: a borrowing view of a temporary ndarray would dangle at once: name " \
                "the array first, or use shared_adapt, which holds the memory")

// A whole array, dynamic rank, static layout: adapt(a) for a row-major ('C')
// array, adapt<xt::layout_type::column_major>(a) for a column-major one.
template <xt::layout_type L = xt::layout_type::row_major, class A,
          shmarray::detail::if_array<A> = 0>
auto adapt(const A& a) {
  detail::require_xt_order<L>(a, "adapt");
  return xt::adapt<L>(a.data(), a.size(), xt::no_ownership(), a.shape());
}

// A whole array of rank N (checked), static layout.
template <std::size_t N, xt::layout_type L = xt::layout_type::row_major, class A,
          shmarray::detail::if_array<A> = 0>
auto adapt(const A& a) {
  detail::require_rank(a, N, "adapt<N>");
  detail::require_xt_order<L>(a, "adapt");
  return xt::adapt<L>(a.data(), a.size(), xt::no_ownership(), detail::fixed_shape<N>(a.shape()));
}

// As adapt(a), but holding the array's handle.
template <xt::layout_type L = xt::layout_type::row_major, class A,
          shmarray::detail::if_array<A> = 0>
auto shared_adapt(const A& a) {
  detail::require_xt_order<L>(a, "shared_adapt");
  using buffer = detail::owning_buffer<detail::xt_element<A>>;
  return xt::xarray_adaptor<buffer, L, shape_type>(buffer(a.data(), a.size(), a.keep_alive()),
                                                   a.shape(), L);
}
template <std::size_t N, xt::layout_type L = xt::layout_type::row_major, class A,
          shmarray::detail::if_array<A> = 0>
auto shared_adapt(const A& a) {
  detail::require_rank(a, N, "shared_adapt<N>");
  detail::require_xt_order<L>(a, "shared_adapt");
  return detail::owning<L>(
      detail::part<detail::xt_element<A>, N>{a.data(), detail::fixed_shape<N>(a.shape())},
      a.keep_alive());
}

namespace detail {

// A stack holds its frames along its slowest axis: frames x height x width
// when row-major, height x width x frames when column-major.
template <xt::layout_type L, class A>
void require_stack(const A& a, const char* view) {
  require_rank(a, 3, view,
               L == xt::layout_type::row_major ? " (frames x height x width)"
                                               : " (height x width x frames)");
  require_xt_order<L>(a, view);
}

// Frames [first, first + count) of a stack, checked: contiguous in either order.
template <xt::layout_type L, class A>
part<xt_element<A>, 3> frames_part(const A& a, std::size_t first, std::size_t count,
                                   const char* view, const char* what = "frames") {
  constexpr bool row = L == xt::layout_type::row_major;
  require_stack<L>(a, view);
  require_range(first, count, a.shape(row ? 0 : 2), what);
  const std::size_t h = a.shape(row ? 1 : 0), w = a.shape(row ? 2 : 1);
  return {a.data() + first * h * w,
          row ? std::array<std::size_t, 3>{count, h, w} : std::array<std::size_t, 3>{h, w, count}};
}

// Frame k of a stack, checked, as a height x width part.
template <xt::layout_type L, class A>
part<xt_element<A>, 2> frame_part(const A& a, std::size_t k, const char* view) {
  const auto p = frames_part<L>(a, k, 1, view, "frame");
  constexpr bool row = L == xt::layout_type::row_major;
  return {p.data, {p.shape[row ? 1 : 0], p.shape[row ? 2 : 1]}};
}

// Rows [first, first + count) of a row-major 2-d array, checked.
template <class A>
part<xt_element<A>, 2> rows_part(const A& a, std::size_t first, std::size_t count,
                                 const char* view) {
  require_rank(a, 2, view);
  require_xt_order<xt::layout_type::row_major>(a, view);
  require_range(first, count, a.shape(0), "rows");
  const std::size_t c = a.shape(1);
  return {a.data() + first * c, {count, c}};
}

}  // namespace detail

// Frame k of a stack as a height x width view, contiguous, with a static
// layout: adapt_frame(a, k) of a row-major stack (frames x height x width),
// adapt_frame<xt::layout_type::column_major>(a, k) of a column-major one
// (height x width x frames).
template <xt::layout_type L = xt::layout_type::row_major, class A,
          shmarray::detail::if_array<A> = 0>
auto adapt_frame(const A& a, std::size_t k) {
  return detail::borrowing<L>(detail::frame_part<L>(a, k, "adapt_frame"));
}

// Frames [first, first + count) of a stack, contiguous, static layout:
// count x height x width of a row-major stack, height x width x count of a
// column-major one.
template <xt::layout_type L = xt::layout_type::row_major, class A,
          shmarray::detail::if_array<A> = 0>
auto adapt_frames(const A& a, std::size_t first, std::size_t count) {
  return detail::borrowing<L>(detail::frames_part<L>(a, first, count, "adapt_frames"));
}

// Rows [first, first + count) of a 2-d array (how work is split by rows):
// contiguous and static row_major for a row-major array, a strided xt::view
// for a column-major one.
template <xt::layout_type L = xt::layout_type::row_major, class A,
          shmarray::detail::if_array<A> = 0>
auto adapt_rows(const A& a, std::size_t first, std::size_t count) {
  if constexpr (L == xt::layout_type::row_major) {
    return detail::borrowing<L>(detail::rows_part(a, first, count, "adapt_rows"));
  } else {
    detail::require_rank(a, 2, "adapt_rows");
    detail::require_xt_order<L>(a, "adapt_rows");
    detail::require_range(first, count, a.shape(0), "rows");
    return xt::view(adapt<2, L>(a), xt::range(first, first + count), xt::all());
  }
}

// Owning counterparts of the contiguous parts of an array.
template <xt::layout_type L = xt::layout_type::row_major, class A,
          shmarray::detail::if_array<A> = 0>
auto shared_adapt_frame(const A& a, std::size_t k) {
  return detail::owning<L>(detail::frame_part<L>(a, k, "shared_adapt_frame"), a.keep_alive());
}
template <xt::layout_type L = xt::layout_type::row_major, class A,
          shmarray::detail::if_array<A> = 0>
auto shared_adapt_frames(const A& a, std::size_t first, std::size_t count) {
  return detail::owning<L>(detail::frames_part<L>(a, first, count, "shared_adapt_frames"),
                           a.keep_alive());
}
template <class A, shmarray::detail::if_array<A> = 0>
auto shared_adapt_rows(const A& a, std::size_t first, std::size_t count) {
  return detail::owning<xt::layout_type::row_major>(
      detail::rows_part(a, first, count, "shared_adapt_rows"), a.keep_alive());
}

// Borrowing views of temporaries: refused at compile time.
template <xt::layout_type L = xt::layout_type::row_major, class A,
          shmarray::detail::if_temporary_array<A> = 0>
void adapt(A&&) {
  SHMARRAY_XT_NO_TEMPORARY;
}
template <std::size_t N, xt::layout_type L = xt::layout_type::row_major, class A,
          shmarray::detail::if_temporary_array<A> = 0>
void adapt(A&&) {
  SHMARRAY_XT_NO_TEMPORARY;
}
template <xt::layout_type L = xt::layout_type::row_major, class A,
          shmarray::detail::if_temporary_array<A> = 0>
void adapt_frame(A&&, std::size_t) {
  SHMARRAY_XT_NO_TEMPORARY;
}
template <xt::layout_type L = xt::layout_type::row_major, class A,
          shmarray::detail::if_temporary_array<A> = 0>
void adapt_frames(A&&, std::size_t, std::size_t) {
  SHMARRAY_XT_NO_TEMPORARY;
}
template <xt::layout_type L = xt::layout_type::row_major, class A,
          shmarray::detail::if_temporary_array<A> = 0>
void adapt_rows(A&&, std::size_t, std::size_t) {
  SHMARRAY_XT_NO_TEMPORARY;
}
#undef SHMARRAY_XT_NO_TEMPORARY

namespace detail {

// Evaluates an xtensor expression into a new shared array made by `make`:
// one copy for contiguous data (a container, or a view with a data
// interface), and the expression assigned straight into shared memory
// otherwise (no private temporary).
template <class E, class Make>
auto evaluate_into(const xt::xexpression<E>& expr, create_options o, Make&& make) {
  using value = std::decay_t<typename E::value_type>;
  const E& e = expr.derived_cast();
  const shape_type shape(e.shape().begin(), e.shape().end());
  if constexpr (xt::has_data_interface<E>::value) {
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
// shape (and its layout where it is contiguous column-major, or has a static
// column-major one).
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
