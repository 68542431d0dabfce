// The C++ type of a NumPy dtype string, for the C++ programs of the Python
// tests (golden.cpp, ring_peer.cpp): one table, so that both take the same
// dtypes.
#pragma once

#include <complex>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace shmarray_test {

template <class T>
struct type_tag {
  using type = T;
};

// f(type_tag<T>{}) for the type T of the dtype string dt ("|b1", "<i4",
// "<c16", ...); std::invalid_argument("unknown dtype DT") for any other.
template <class F>
decltype(auto) with_dtype(const std::string& dt, F&& f) {
  if (dt == "|b1") return f(type_tag<bool>{});
  if (dt == "|i1") return f(type_tag<std::int8_t>{});
  if (dt == "|u1") return f(type_tag<std::uint8_t>{});
  if (dt == "<i2") return f(type_tag<std::int16_t>{});
  if (dt == "<u2") return f(type_tag<std::uint16_t>{});
  if (dt == "<i4") return f(type_tag<std::int32_t>{});
  if (dt == "<u4") return f(type_tag<std::uint32_t>{});
  if (dt == "<i8") return f(type_tag<std::int64_t>{});
  if (dt == "<u8") return f(type_tag<std::uint64_t>{});
  if (dt == "<f4") return f(type_tag<float>{});
  if (dt == "<f8") return f(type_tag<double>{});
  if (dt == "<c8") return f(type_tag<std::complex<float>>{});
  if (dt == "<c16") return f(type_tag<std::complex<double>>{});
  throw std::invalid_argument("unknown dtype " + dt);
}

}  // namespace shmarray_test
