#include <catch2/catch.hpp>

#include <complex>
#include <cstdint>
#include <shmarray/dtype.hpp>

using shmarray::dtype_code;
using shmarray::dtype_of;

TEST_CASE("every supported element type has NumPy's type string and item size") {
  CHECK(dtype_of<bool>().str == "|b1");
  CHECK(dtype_of<std::int8_t>().str == "|i1");
  CHECK(dtype_of<std::uint8_t>().str == "|u1");
  CHECK(dtype_of<signed char>().str == "|i1");
  CHECK(dtype_of<unsigned char>().str == "|u1");
  CHECK(dtype_of<std::int16_t>().str == "<i2");
  CHECK(dtype_of<std::uint16_t>().str == "<u2");
  CHECK(dtype_of<std::int32_t>().str == "<i4");
  CHECK(dtype_of<std::uint32_t>().str == "<u4");
  CHECK(dtype_of<std::int64_t>().str == "<i8");
  CHECK(dtype_of<std::uint64_t>().str == "<u8");
  CHECK(dtype_of<float>().str == "<f4");
  CHECK(dtype_of<double>().str == "<f8");
  CHECK(dtype_of<std::complex<float>>().str == "<c8");
  CHECK(dtype_of<std::complex<double>>().str == "<c16");
  CHECK(dtype_of<std::complex<double>>().itemsize == 16);
  CHECK(dtype_of<bool>().itemsize == 1);
  CHECK(dtype_of<const double>().code == dtype_code::float64);
}

TEST_CASE("long and long long share the 8-byte code where they are 8 bytes") {
  if constexpr (sizeof(long) == 8) {
    CHECK(dtype_of<long>().str == "<i8");
    CHECK(dtype_of<unsigned long>().str == "<u8");
  }
  CHECK(dtype_of<long long>().str == "<i8");
  CHECK(dtype_of<long long>().code == dtype_of<std::int64_t>().code);
  CHECK(dtype_of<unsigned long long>().code == dtype_code::uint64);
}

TEST_CASE("find_dtype knows every supported string and nothing else") {
  for (auto s : {"|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f4", "<f8", "<c8",
                 "<c16"}) {
    const auto d = shmarray::find_dtype(s);
    REQUIRE(d);
    CHECK(d->str == s);
  }
  CHECK(shmarray::find_dtype("<f8")->itemsize == 8);
  for (auto s : {"<f2", "<M8[ns]", ">f8", "<f16", "", "f8", "|S1"})
    CHECK_FALSE(shmarray::find_dtype(s));
}
