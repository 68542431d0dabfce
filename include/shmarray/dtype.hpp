// shmarray: element types and their NumPy type strings; the one place that
// knows which C++ types an array may hold.
#pragma once

#include <complex>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <type_traits>

namespace shmarray {

// A stable code for each supported element type.
enum class dtype_code : std::uint8_t {
  bool_ = 1,
  int8,
  uint8,
  int16,
  uint16,
  int32,
  uint32,
  int64,
  uint64,
  float32,
  float64,
  complex64,
  complex128,
};

// What a segment's record says about its elements.
struct dtype_info {
  dtype_code code;
  std::string_view str;  // NumPy type string, e.g. "<f8"
  std::size_t itemsize;
};

namespace detail {

// shmarray's format is little-endian, and so are the hosts it runs on.
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "shmarray supports little-endian hosts only"
#endif

// Every supported dtype, in code order, as NumPy writes it.
inline constexpr std::string_view dtype_strings[] = {
    "|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f4", "<f8", "<c8", "<c16",
};
inline constexpr std::size_t dtype_sizes[] = {1, 1, 1, 2, 2, 4, 4, 8, 8, 4, 8, 8, 16};
inline constexpr std::size_t dtype_count = sizeof(dtype_sizes) / sizeof(dtype_sizes[0]);

constexpr dtype_info info_of(dtype_code c) {
  const auto i = static_cast<std::size_t>(c) - 1;
  return {c, dtype_strings[i], dtype_sizes[i]};
}

template <class T>
struct always_false : std::false_type {};

template <class T, class = void>
struct dtype_of_impl {
  static_assert(!std::is_same_v<T, char>,
                "shmarray: plain char has no fixed signedness; use signed char, unsigned char, "
                "std::int8_t or std::uint8_t");
  static_assert(!std::is_same_v<T, long double>,
                "shmarray: long double has no portable NumPy dtype; use double");
  static_assert(!std::is_same_v<T, wchar_t> && !std::is_same_v<T, char16_t> &&
                    !std::is_same_v<T, char32_t>,
                "shmarray: character types are not numeric element types");
  static_assert(always_false<T>::value,
                "shmarray: unsupported element type; supported are bool, 8/16/32/64-bit "
                "integers, float, double, std::complex<float> and std::complex<double>");
};

template <>
struct dtype_of_impl<bool> {
  static constexpr dtype_code code = dtype_code::bool_;
};
template <>
struct dtype_of_impl<float> {
  static constexpr dtype_code code = dtype_code::float32;
};
template <>
struct dtype_of_impl<double> {
  static constexpr dtype_code code = dtype_code::float64;
};
template <>
struct dtype_of_impl<std::complex<float>> {
  static constexpr dtype_code code = dtype_code::complex64;
};
template <>
struct dtype_of_impl<std::complex<double>> {
  static constexpr dtype_code code = dtype_code::complex128;
};

template <class T>
inline constexpr bool is_integer_element =
    std::is_integral_v<T> && !std::is_same_v<T, bool> && !std::is_same_v<T, char> &&
    !std::is_same_v<T, wchar_t> && !std::is_same_v<T, char16_t> && !std::is_same_v<T, char32_t>;

// Integers by size and signedness, so long and long long share the 8-byte code.
template <class T>
struct dtype_of_impl<T, std::enable_if_t<is_integer_element<T>>> {
  static constexpr int log2size = sizeof(T) == 1 ? 0 : sizeof(T) == 2 ? 1 : sizeof(T) == 4 ? 2 : 3;
  static_assert(sizeof(T) == (std::size_t{1} << log2size), "shmarray: unsupported integer size");
  static constexpr dtype_code code = static_cast<dtype_code>(
      static_cast<int>(dtype_code::int8) + 2 * log2size + (std::is_signed_v<T> ? 0 : 1));
};

}  // namespace detail

// The dtype of an element type; a compile error names what is not supported.
template <class T>
constexpr dtype_info dtype_of() {
  return detail::info_of(detail::dtype_of_impl<std::remove_cv_t<T>>::code);
}

// The dtype for a NumPy type string, or nothing when shmarray does not know it.
inline std::optional<dtype_info> find_dtype(std::string_view str) {
  for (std::size_t i = 1; i <= detail::dtype_count; ++i) {
    const dtype_info d = detail::info_of(static_cast<dtype_code>(i));
    if (d.str == str) return d;
  }
  return std::nullopt;
}

}  // namespace shmarray
