// shmarray: shapes, storage order and the strides derived from them, with
// every size computed under overflow checks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <iterator>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "errors.hpp"

namespace shmarray {

using shape_type = std::vector<std::size_t>;
using strides_type = std::vector<std::ptrdiff_t>;

// The storage order of an array: C (row-major) or Fortran (column-major).
// The values are the characters the format stores.
enum class order : char { row_major = 'C', column_major = 'F' };

// The highest rank an array may have (NumPy's limit too).
inline constexpr std::size_t max_rank = 32;

// A shape as a caller writes it: {3, 4}, {mat.rows(), mat.cols()}, or any
// container of integers (std::vector, std::array, a shape() of xtensor).
// A negative extent is invalid_shape.
class shape_arg {
 public:
  shape_arg(std::initializer_list<std::size_t> extents) : v_(extents) {}
  template <class I, class = std::enable_if_t<std::is_integral_v<I>>>
  shape_arg(std::initializer_list<I> extents) {
    assign(extents.begin(), extents.end());
  }
  template <class C, class I = std::decay_t<decltype(*std::begin(std::declval<const C&>()))>,
            class = std::enable_if_t<std::is_integral_v<I>>>
  shape_arg(const C& extents) {  // NOLINT(google-explicit-constructor)
    assign(std::begin(extents), std::end(extents));
  }

  const shape_type& value() const noexcept { return v_; }
  operator const shape_type&() const noexcept { return v_; }  // NOLINT

 private:
  template <class It>
  void assign(It first, It last) {
    for (; first != last; ++first) {
      const auto e = *first;
      if constexpr (std::is_signed_v<std::decay_t<decltype(e)>>) {
        if (e < 0)
          throw invalid_shape("shmarray: a shape cannot hold the negative extent " +
                              std::to_string(e));
      }
      v_.push_back(std::size_t(e));
    }
  }

  shape_type v_;
};

inline std::string to_string(const shape_type& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ',';
  return s + ")";
}

namespace detail {

// itemsize * prod(shape), or false when the rank is too high or it overflows.
// The product of the non-zero extents must stay below PTRDIFF_MAX too, so that
// every stride and byte offset fits ptrdiff_t even in an empty array.
inline bool product_bytes(std::size_t itemsize, const std::uint64_t* shape, std::size_t rank,
                          std::uint64_t& out) noexcept {
  if (rank > max_rank) return false;
  std::uint64_t n = itemsize;
  bool empty = false;
  for (std::size_t i = 0; i < rank; ++i) {
    if (shape[i] == 0)
      empty = true;
    else if (__builtin_mul_overflow(n, shape[i], &n))
      return false;
  }
  if (n > std::uint64_t(PTRDIFF_MAX)) return false;
  out = empty ? 0 : n;
  return true;
}

// The bytes an array of `shape` takes, or invalid_shape naming the segment.
inline std::size_t checked_nbytes(std::size_t itemsize, const shape_type& shape,
                                  std::string_view name) {
  if (shape.size() > max_rank)
    throw invalid_shape(message(name, "cannot have rank " + std::to_string(shape.size()) +
                                          ": at most " + std::to_string(max_rank)));
  std::vector<std::uint64_t> extents(shape.begin(), shape.end());
  std::uint64_t n = 0;
  if (!product_bytes(itemsize, extents.data(), extents.size(), n))
    throw invalid_shape(
        message(name, "cannot have shape " + to_string(shape) + ": " + std::to_string(itemsize) +
                          "-byte elements of that shape overflow the address space"));
  return std::size_t(n);
}

// Element strides of a packed array of `shape` in `o`.
inline strides_type packed_strides(const shape_type& shape, order o) {
  strides_type s(shape.size());
  std::ptrdiff_t step = 1;
  if (o == order::row_major) {
    for (std::size_t i = shape.size(); i-- > 0;) {
      s[i] = step;
      step *= std::ptrdiff_t(shape[i]);
    }
  } else {
    for (std::size_t i = 0; i < shape.size(); ++i) {
      s[i] = step;
      step *= std::ptrdiff_t(shape[i]);
    }
  }
  return s;
}

inline std::string spec_text(const std::vector<std::ptrdiff_t>& spec) {
  std::string s = "(";
  for (std::size_t i = 0; i < spec.size(); ++i)
    s += (i ? ", " : "") + std::to_string(spec[i]);
  return s + (spec.size() == 1 ? ",)" : ")");
}

// A shape as a reshape specification.
inline std::vector<std::ptrdiff_t> spec_of(const shape_type& shape) {
  std::vector<std::ptrdiff_t> spec;
  for (auto e : shape) {
    if (e > std::size_t(PTRDIFF_MAX))
      throw shape_mismatch("shmarray: an extent of " + std::to_string(e) + " cannot be a shape");
    spec.push_back(std::ptrdiff_t(e));
  }
  return spec;
}

// The shape that `spec` gives an array of `size` elements of `itemsize`
// bytes (one extent may be -1, inferred), or the error naming the array.
inline shape_type reshaped(const std::vector<std::ptrdiff_t>& spec, std::size_t size,
                           std::size_t itemsize, std::string_view name) {
  auto cannot = [&] {
    return shape_mismatch(message(name, "cannot be reshaped from size " + std::to_string(size) +
                                            " into shape " + spec_text(spec)));
  };
  if (spec.size() > max_rank)
    throw invalid_shape(message(name, "cannot be reshaped to rank " + std::to_string(spec.size()) +
                                          ": at most " + std::to_string(max_rank)));
  std::size_t inferred = spec.size();
  std::uint64_t known = 1;
  for (std::size_t i = 0; i < spec.size(); ++i) {
    if (spec[i] == -1) {
      if (inferred != spec.size())
        throw invalid_shape(
            message(name, "cannot be reshaped to " + spec_text(spec) + ": more than one -1"));
      inferred = i;
    } else if (spec[i] < 0) {
      throw invalid_shape(
          message(name, "cannot be reshaped to " + spec_text(spec) + ": a negative extent"));
    } else if (__builtin_mul_overflow(known, std::uint64_t(spec[i]), &known)) {
      throw cannot();
    }
  }
  shape_type shape(spec.begin(), spec.end());
  if (inferred != spec.size()) {
    if (known == 0 || size % known != 0) throw cannot();
    shape[inferred] = size / std::size_t(known);
  } else if (known != size) {
    throw cannot();
  }
  // An empty array takes any shape with a zero in it, but its strides must
  // still fit: the non-zero extents obey the same limit as at creation.
  std::uint64_t bytes = 0;
  const std::vector<std::uint64_t> extents(shape.begin(), shape.end());
  if (!product_bytes(itemsize, extents.data(), extents.size(), bytes))
    throw invalid_shape(
        message(name, "cannot be reshaped to " + spec_text(spec) + ": its extents overflow"));
  return shape;
}

}  // namespace detail
}  // namespace shmarray
