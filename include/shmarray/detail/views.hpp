// shmarray internals: the checks every adapter's views make of the array
// they are asked to view, with the errors and messages they share.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "../errors.hpp"
#include "../shape.hpp"

namespace shmarray::detail {

template <class T>
struct dependent_false : std::false_type {};

// An array type: ndarray<T>, or any type with its interface, which the
// adapters' views accept.
template <class A, class = void>
struct is_array : std::false_type {};
template <class A>
struct is_array<A, std::void_t<typename A::element_type, decltype(A::alignment),
                               decltype(std::declval<const A&>().data()),
                               decltype(std::declval<const A&>().storage_order()),
                               decltype(std::declval<const A&>().keep_alive())>> : std::true_type {
};
template <class A>
using if_array = std::enable_if_t<is_array<std::decay_t<A>>::value, int>;
// A temporary array (an lvalue makes a forwarding A a reference).
template <class A>
using if_temporary_array =
    std::enable_if_t<!std::is_reference_v<A> && is_array<std::decay_t<A>>::value, int>;

// An array handle that refers to an array (not a default-constructed one).
template <class A>
void require_array(const A& a, const char* view) {
  if (!a)
    throw error(std::string("shmarray: ") + view +
                " of an empty ndarray handle, which refers to no array");
}

template <class A>
void require_rank(const A& a, std::size_t rank, const char* view, const char* hint = "") {
  require_array(a, view);
  if (a.ndim() != rank)
    throw rank_mismatch(message(a.name(), "is " + std::to_string(a.ndim()) + "-d, but " + view +
                                              " needs a " + std::to_string(rank) + "-d array" +
                                              hint));
}

// `want_row` is the view's compile-time order; `asked` and `other` spell the
// view as asked for and as it should have been asked for.
template <class A>
void require_order(const A& a, bool want_row, const std::string& asked, const std::string& other) {
  require_array(a, asked.c_str());
  if ((a.storage_order() == order::row_major) != want_row)
    throw order_mismatch(message(
        a.name(), std::string("is ") + (want_row ? "column-major ('F')" : "row-major ('C')") +
                      ", but " + asked + " was asked for; ask for " + other));
}

inline void require_range(std::size_t first, std::size_t count, std::size_t extent,
                          const char* what) {
  if (first > extent || count > extent - first)
    throw std::out_of_range("shmarray: " + std::string(what) + " [" + std::to_string(first) + ", " +
                            std::to_string(first + count) + ") is outside [0, " +
                            std::to_string(extent) + ")");
}

}  // namespace shmarray::detail
