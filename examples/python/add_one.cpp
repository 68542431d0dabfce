// The C++ worker of examples/python/quick_start.py: attaches an int64 array
// by the name it is given (dtype checked from the record) and adds 1 to
// every element, in place.
#include <cstdint>
#include <cstdio>
#include <shmarray/shmarray.hpp>

// doc-region: add_one
int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: add_one NAME\n");
    return 2;
  }
  try {
    auto arr = shmarray::ndarray<std::int64_t>::attach(argv[1]);
    for (auto& x : arr)
      x += 1;
    return 0;
  } catch (const shmarray::error& e) {
    std::fprintf(stderr, "add_one: %s\n", e.what());
    return 1;
  }
}
// doc-region-end
