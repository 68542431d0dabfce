// For bench_python.py: makes a named float32 array of N elements, all 1,
// prints its name, and holds it until its stdin closes.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <shmarray/shmarray.hpp>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  shmarray::manager m;
  auto a = m.from_shape<float>({std::strtoull(argv[1], nullptr, 10)});
  std::fill(a.begin(), a.end(), 1.0f);
  std::printf("%s\n", a.name().c_str());
  std::fflush(stdout);
  while (std::getchar() != EOF) {
  }
  return 0;
}
