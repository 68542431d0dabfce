// compare_outputs A B: shmarray-stack's outputs in directories A and B are
// the same: processed.tif and max.tif byte for byte, mean.tif and std.tif
// within float rounding. Prints "same" and exits 0, or says what differs.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <shmarray/stack/tiff.hpp>
#include <string>
#include <vector>

namespace st = shmarray::stack;

namespace {

std::vector<char> bytes(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

std::vector<float> floats(const std::string& p) {
  const auto info = st::probe_tiff(p);
  std::vector<float> v(info.frames * info.height * info.width);
  st::read_tiff(p, info, v.data(), 0, info.frames);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--make-nan-stack") {
    // a float stack with a NaN and an infinity, for the maximum's rule
    std::vector<float> v(6 * 8 * 10);
    for (std::size_t i = 0; i < v.size(); ++i)
      v[i] = float(i % 37) - 5.f;
    v[3] = std::nanf("");
    v[8 * 10 * 4 + 5] = INFINITY;
    st::write_tiff(argv[2], v.data(), 6, 8, 10);
    return 0;
  }
  if (argc != 3) return 2;
  const std::string a = argv[1], b = argv[2];
  for (const char* f : {"/processed.tif", "/max.tif"})
    if (bytes(a + f).empty() || bytes(a + f) != bytes(b + f)) {
      std::printf("%s differs\n", f + 1);
      return 1;
    }
  for (const char* f : {"/mean.tif", "/std.tif"}) {
    const auto x = floats(a + f), y = floats(b + f);
    if (x.size() != y.size()) {
      std::printf("%s: sizes differ\n", f + 1);
      return 1;
    }
    for (std::size_t i = 0; i < x.size(); ++i)
      if (std::fabs(x[i] - y[i]) > 1e-5f * std::max(1.f, std::fabs(x[i]))) {
        std::printf("%s: pixel %zu: %g against %g\n", f + 1, i, double(x[i]), double(y[i]));
        return 1;
      }
  }
  std::printf("same\n");
  return 0;
}
