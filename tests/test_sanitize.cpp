// Built only in the sanitizer tree: proves that it is sanitized, and that
// undefined behaviour fails a test instead of only printing.
#include <catch2/catch.hpp>

#include <climits>
#include <cstdlib>
#include <vector>

#include "support.hpp"

TEST_CASE("undefined behaviour aborts the process instead of only printing") {
  const int status = test::in_child([] {
    volatile int big = INT_MAX;
    volatile int r = big + 1;  // signed overflow
    return r == INT_MIN ? 0 : 0;
  });
  CHECK_FALSE(test::exited_with(status, 0));
}

TEST_CASE("a heap buffer overflow is caught") {
  const int status = test::in_child([] {
    std::vector<int>* v = new std::vector<int>(4);
    volatile int* p = v->data();
    const int x = p[4];  // one past the end of the allocation
    delete v;
    return x == 12345 ? 1 : 0;
  });
  CHECK_FALSE(test::exited_with(status, 0));
}
