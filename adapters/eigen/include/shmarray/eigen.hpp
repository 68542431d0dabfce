// shmarray: Eigen views of shared arrays. Every view is an Eigen::Map (or an
// Eigen::TensorMap) over the array's own memory, so existing Eigen code runs
// on it unchanged: the storage order, the strides and the alignment flag are
// chosen at compile time, from what the array type guarantees.
//
// An array type is shmarray::ndarray<T>, or any type with its interface
// (element_type, a static `alignment` in bytes, data(), shape(i), ndim(),
// size(), storage_order(), name(), and explicit operator bool).
//
// Maps borrow: like any Eigen::Map, a view must not outlive the array
// handles that keep the memory mapped. A view of a temporary handle would
// dangle at once, so it does not compile.
#pragma once

#include <Eigen/Core>
#include <array>
#include <cstddef>
#include <shmarray/array_ref.hpp>
#include <shmarray/detail/views.hpp>
#include <shmarray/manager.hpp>
#include <shmarray/ndarray.hpp>
#include <shmarray/worker_init.hpp>
#include <type_traits>
#include <unsupported/Eigen/CXX11/Tensor>

namespace shmarray {
namespace eigen {

// Eigen's alignment flag for `bytes` of guaranteed alignment.
constexpr int alignment_flag(std::size_t bytes) {
  return bytes >= 64   ? Eigen::Aligned64
         : bytes >= 32 ? Eigen::Aligned32
         : bytes >= 16 ? Eigen::Aligned16
         : bytes >= 8  ? Eigen::Aligned8
                       : Eigen::Unaligned;
}

// The alignment an array type guarantees for its data, read from the type
// (Array::alignment, in bytes), so that array types declare their own.
template <class Array>
inline constexpr int alignment_of = alignment_flag(Array::alignment);

namespace detail {

template <class T, class Plain>
using constify = std::conditional_t<std::is_const_v<T>, const Plain, Plain>;

template <class A>
using element_of = typename A::element_type;

#define SHMARRAY_EIGEN_NO_TEMPORARY                                                              \
  static_assert(shmarray::detail::dependent_false<A>::value,                                     \
                "shmarray: a view of a temporary ndarray would dangle at once (the last handle " \
                "goes at the end of the statement): name the array first")

}  // namespace detail

template <class T, int Order>
using matrix_type =
    detail::constify<T,
                     Eigen::Matrix<std::remove_const_t<T>, Eigen::Dynamic, Eigen::Dynamic, Order>>;
template <class T>
using vector_type = detail::constify<T, Eigen::Matrix<std::remove_const_t<T>, Eigen::Dynamic, 1>>;

// A whole 1-d array, or any array flat in storage order, with the array
// type's alignment.
template <class A>
using vector_map = Eigen::Map<vector_type<detail::element_of<A>>, alignment_of<A>>;
// A whole 2-d array: packed, with the array type's alignment.
template <class A, int Order = Eigen::RowMajor>
using matrix_map = Eigen::Map<matrix_type<detail::element_of<A>, Order>, alignment_of<A>>;
// Part of an array (frames, rows, columns): no alignment is guaranteed. A
// part is packed, or has an outer stride with a unit inner stride known at
// compile time, so vectorisation stays on.
template <class T, int Order>
using packed_map = Eigen::Map<matrix_type<T, Order>, Eigen::Unaligned>;
template <class T, int Order>
using outer_strided_map = Eigen::Map<matrix_type<T, Order>, Eigen::Unaligned, Eigen::OuterStride<>>;
// Rows: packed when row-major.
template <class T, int Order>
using rows_map =
    std::conditional_t<Order == Eigen::RowMajor, packed_map<T, Order>, outer_strided_map<T, Order>>;
// Columns: packed when column-major.
template <class T, int Order>
using cols_map =
    std::conditional_t<Order == Eigen::ColMajor, packed_map<T, Order>, outer_strided_map<T, Order>>;
// A whole N-d array as a tensor (TensorMap has no strides: whole arrays only).
// TensorMap knows one alignment: that of Eigen's largest packet.
template <class A, int N, int Layout = Eigen::RowMajor>
using tensor_map = Eigen::TensorMap<
    detail::constify<detail::element_of<A>,
                     Eigen::Tensor<std::remove_const_t<detail::element_of<A>>, N, Layout>>,
    (alignment_of<A> >= EIGEN_MAX_ALIGN_BYTES ? Eigen::Aligned : Eigen::Unaligned)>;

namespace detail {

using shmarray::detail::require_range;
using shmarray::detail::require_rank;

template <int Order, class A>
void require_order(const A& a, const char* view) {
  constexpr bool row = Order == Eigen::RowMajor;
  shmarray::detail::require_order(
      a, row, std::string(view) + (row ? "<Eigen::RowMajor>" : "<Eigen::ColMajor>"),
      std::string(view) + (row ? "<Eigen::ColMajor>" : "<Eigen::RowMajor>"));
}

inline Eigen::Index idx(std::size_t n) {
  return static_cast<Eigen::Index>(n);
}

}  // namespace detail

// A 1-d array as a column vector.
template <class A, shmarray::detail::if_array<A> = 0>
vector_map<A> vector(const A& a) {
  detail::require_rank(a, 1, "vector", "; flat(a) maps any array as one vector");
  return vector_map<A>(a.data(), detail::idx(a.size()));
}

// Every element of an array of any rank, in storage order, as one vector.
template <class A, shmarray::detail::if_array<A> = 0>
vector_map<A> flat(const A& a) {
  shmarray::detail::require_array(a, "flat");
  return vector_map<A>(a.data(), detail::idx(a.size()));
}

// A 2-d array as a matrix in its own storage order: matrix(a) for a
// row-major ('C') array, matrix<Eigen::ColMajor>(a) for a column-major one.
template <int Order = Eigen::RowMajor, class A, shmarray::detail::if_array<A> = 0>
matrix_map<A, Order> matrix(const A& a) {
  detail::require_rank(a, 2, "matrix", "; take one frame of a stack with frame(a, k)");
  detail::require_order<Order>(a, "matrix");
  return matrix_map<A, Order>(a.data(), detail::idx(a.shape(0)), detail::idx(a.shape(1)));
}

// An array_ref of rank 1 or 2 as its vector or its matrix: the rank is
// known at compile time (frame(r, k) for one frame of a stack).
template <int Order = Eigen::RowMajor, class T, std::size_t Rank>
auto map(const array_ref<T, Rank>& r) {
  static_assert(Rank == 1 || Rank == 2,
                "shmarray: eigen::map takes an array_ref of rank 1 or 2; take one frame of a "
                "stack with frame(r, k), or tensor<N>(r)");
  if constexpr (Rank == 1)
    return vector(r);
  else
    return matrix<Order>(r);
}

// A stack holds its frames along its slowest axis: frames x height x width
// when row-major (NumPy's way), height x width x frames when column-major
// (Fortran's and MATLAB's). Either way a frame is packed, in the stack's
// order, so it binds to Eigen::Ref of that order without a copy.

// Frame k of a stack as a height x width matrix: frame(a, k) of a row-major
// stack, frame<Eigen::ColMajor>(a, k) of a column-major one.
template <int Order = Eigen::RowMajor, class A, shmarray::detail::if_array<A> = 0>
packed_map<detail::element_of<A>, Order> frame(const A& a, std::size_t k) {
  constexpr bool row = Order == Eigen::RowMajor;
  detail::require_rank(a, 3, "frame",
                       row ? " (frames x height x width)" : " (height x width x frames)");
  detail::require_order<Order>(a, "frame");
  const std::size_t n = a.shape(row ? 0 : 2), h = a.shape(row ? 1 : 0), w = a.shape(row ? 2 : 1);
  detail::require_range(k, 1, n, "frame");
  return packed_map<detail::element_of<A>, Order>(a.data() + k * h * w, detail::idx(h),
                                                  detail::idx(w));
}

// Frames [first, first + count) of a stack as one matrix of packed frames:
// count x (height * width), a frame per row, for a row-major stack;
// (height * width) x count, a frame per column, for a column-major one.
template <int Order = Eigen::RowMajor, class A, shmarray::detail::if_array<A> = 0>
packed_map<detail::element_of<A>, Order> frames(const A& a, std::size_t first, std::size_t count) {
  constexpr bool row = Order == Eigen::RowMajor;
  detail::require_rank(a, 3, "frames",
                       row ? " (frames x height x width)" : " (height x width x frames)");
  detail::require_order<Order>(a, "frames");
  const std::size_t n = a.shape(row ? 0 : 2),
                    hw = row ? a.shape(1) * a.shape(2) : a.shape(0) * a.shape(1);
  detail::require_range(first, count, n, "frames");
  using map = packed_map<detail::element_of<A>, Order>;
  if constexpr (row)
    return map(a.data() + first * hw, detail::idx(count), detail::idx(hw));
  else
    return map(a.data() + first * hw, detail::idx(hw), detail::idx(count));
}

// Rows [first, first + count) of a 2-d array: how work is split by rows.
template <int Order = Eigen::RowMajor, class A, shmarray::detail::if_array<A> = 0>
rows_map<detail::element_of<A>, Order> rows(const A& a, std::size_t first, std::size_t count) {
  detail::require_rank(a, 2, "rows");
  detail::require_order<Order>(a, "rows");
  detail::require_range(first, count, a.shape(0), "rows");
  using map = rows_map<detail::element_of<A>, Order>;
  const std::size_t r = a.shape(0), c = a.shape(1);
  if constexpr (Order == Eigen::RowMajor) {
    return map(a.data() + first * c, detail::idx(count), detail::idx(c));
  } else {
    return map(a.data() + first, detail::idx(count), detail::idx(c),
               Eigen::OuterStride<>(detail::idx(r)));
  }
}

// Columns [first, first + count) of a 2-d array: packed in a column-major
// array, an outer stride in a row-major one.
template <int Order = Eigen::RowMajor, class A, shmarray::detail::if_array<A> = 0>
cols_map<detail::element_of<A>, Order> cols(const A& a, std::size_t first, std::size_t count) {
  detail::require_rank(a, 2, "cols");
  detail::require_order<Order>(a, "cols");
  detail::require_range(first, count, a.shape(1), "cols");
  using map = cols_map<detail::element_of<A>, Order>;
  const std::size_t r = a.shape(0), c = a.shape(1);
  if constexpr (Order == Eigen::RowMajor) {
    return map(a.data() + first, detail::idx(r), detail::idx(count),
               Eigen::OuterStride<>(detail::idx(c)));
  } else {
    return map(a.data() + first * r, detail::idx(r), detail::idx(count));
  }
}

// A whole N-d array as an Eigen::TensorMap of rank N, in its storage order:
// tensor<3>(a) for row-major, tensor<3, Eigen::ColMajor>(a) for column-major.
template <int N, int Layout = Eigen::RowMajor, class A, shmarray::detail::if_array<A> = 0>
tensor_map<A, N, Layout> tensor(const A& a) {
  detail::require_rank(a, std::size_t(N), "tensor");
  detail::require_order<Layout>(a, "tensor");
  std::array<Eigen::Index, std::size_t(N)> dims{};
  for (std::size_t i = 0; i < std::size_t(N); ++i)
    dims[i] = detail::idx(a.shape(i));
  return tensor_map<A, N, Layout>(a.data(), dims);
}

// Views of temporaries: refused at compile time.
template <class A, shmarray::detail::if_temporary_array<A> = 0>
void vector(A&&) {
  SHMARRAY_EIGEN_NO_TEMPORARY;
}
template <class A, shmarray::detail::if_temporary_array<A> = 0>
void flat(A&&) {
  SHMARRAY_EIGEN_NO_TEMPORARY;
}
template <int Order = Eigen::RowMajor, class A, shmarray::detail::if_temporary_array<A> = 0>
void matrix(A&&) {
  SHMARRAY_EIGEN_NO_TEMPORARY;
}
template <int Order = Eigen::RowMajor, class A, shmarray::detail::if_temporary_array<A> = 0>
void frame(A&&, std::size_t) {
  SHMARRAY_EIGEN_NO_TEMPORARY;
}
template <int Order = Eigen::RowMajor, class A, shmarray::detail::if_temporary_array<A> = 0>
void frames(A&&, std::size_t, std::size_t) {
  SHMARRAY_EIGEN_NO_TEMPORARY;
}
template <int Order = Eigen::RowMajor, class A, shmarray::detail::if_temporary_array<A> = 0>
void rows(A&&, std::size_t, std::size_t) {
  SHMARRAY_EIGEN_NO_TEMPORARY;
}
template <int Order = Eigen::RowMajor, class A, shmarray::detail::if_temporary_array<A> = 0>
void cols(A&&, std::size_t, std::size_t) {
  SHMARRAY_EIGEN_NO_TEMPORARY;
}
template <int N, int Layout = Eigen::RowMajor, class A, shmarray::detail::if_temporary_array<A> = 0>
void tensor(A&&) {
  SHMARRAY_EIGEN_NO_TEMPORARY;
}
#undef SHMARRAY_EIGEN_NO_TEMPORARY

namespace detail {

// A worker forked per core runs Eigen on one thread, so that an OpenMP build
// does not start a thread per core in each worker.
inline void single_threaded() {
  Eigen::setNbThreads(1);
}
inline const bool single_threaded_in_workers = shmarray::add_worker_init(&single_threaded);

template <class Derived>
constexpr bool is_vector = Derived::IsVectorAtCompileTime;

template <class Derived>
shape_type shape_of(const Eigen::DenseBase<Derived>& e) {
  if constexpr (is_vector<Derived>)
    return {std::size_t(e.size())};
  else
    return {std::size_t(e.rows()), std::size_t(e.cols())};
}

// Whether an expression with direct access is one packed block of memory.
template <class Derived>
bool is_packed(const Eigen::DenseBase<Derived>& e) {
  return e.derived().innerStride() == 1 &&
         (is_vector<Derived> || e.derived().outerStride() == e.innerSize());
}

// Evaluates an Eigen expression into a new shared array made by `make`,
// keeping its storage order: one copy for packed data, and the expression
// evaluated straight into shared memory otherwise (no private temporary).
template <class Derived, class Make>
auto evaluate_into(const Eigen::DenseBase<Derived>& e, create_options o, Make&& make) {
  using scalar = typename Derived::Scalar;
  constexpr bool row_major = bool(Derived::IsRowMajor) || is_vector<Derived>;
  o.order = row_major ? order::row_major : order::column_major;
  const shape_type shape = shape_of(e);
  if constexpr (bool(Derived::Flags & Eigen::DirectAccessBit)) {
    if (is_packed(e)) return make(shape, o, static_cast<const scalar*>(e.derived().data()));
  }
  ndarray<scalar> out = make(shape, o, static_cast<const scalar*>(nullptr));
  constexpr int Order = row_major ? Eigen::RowMajor : Eigen::ColMajor;
  if constexpr (is_vector<Derived>) {
    if constexpr (std::is_base_of_v<Eigen::ArrayBase<Derived>, Derived>)
      vector(out).array() = e.derived();
    else
      vector(out).noalias() = e.derived();  // new memory: it cannot alias the expression
  } else {
    if constexpr (std::is_base_of_v<Eigen::ArrayBase<Derived>, Derived>)
      matrix<Order>(out).array() = e.derived();
    else
      matrix<Order>(out).noalias() = e.derived();
  }
  return out;
}

}  // namespace detail
}  // namespace eigen

// A new shared array holding the value of any Eigen dense expression (a
// matrix, an array, a block, a product...), in the expression's storage order:
// 1-d for vectors, 2-d otherwise.
template <class Derived>
ndarray<typename Derived::Scalar> from_array(manager& m, const Eigen::DenseBase<Derived>& e,
                                             create_options o = {}) {
  return eigen::detail::evaluate_into(
      e, o, [&](const shape_type& shape, const create_options& opts, const auto* data) {
        return data ? m.from_array(data, shape, opts)
                    : m.from_shape<typename Derived::Scalar>(shape, opts);
      });
}
template <class Derived, class Backing,
          class = std::enable_if_t<shmarray::detail::is_backing<Backing>::value>>
ndarray<typename Derived::Scalar> from_array(manager& m, const Eigen::DenseBase<Derived>& e,
                                             const Backing& backing, create_options o = {}) {
  return eigen::detail::evaluate_into(
      e, o, [&](const shape_type& shape, const create_options& opts, const auto* data) {
        return data ? m.from_array(data, shape, backing, opts)
                    : m.from_shape<typename Derived::Scalar>(shape, backing, opts);
      });
}

}  // namespace shmarray
