// shmarray's quick start, the C++ twin of shared_ndarray2's: a manager,
// from_array of 0..1023, a forked child that adds 1 in place, and the parent
// that sees 1..1024. When the manager goes, the segment goes.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <numeric>
#include <shmarray/shmarray.hpp>
#include <vector>

int main() {
  shmarray::manager manager;

  std::vector<std::int64_t> values(1024);
  std::iota(values.begin(), values.end(), 0);
  shmarray::ndarray<std::int64_t> arr = manager.from_array(values.data(), {values.size()});
  std::printf("created %s: %zu x %s, %zu bytes\n", arr.name().c_str(), arr.size(),
              std::string(arr.dtype().str).c_str(), arr.nbytes());

  const pid_t child = fork();
  if (child < 0) return 1;
  if (child == 0) {  // the child works on the same memory, in place
    for (auto& x : arr)
      x += 1;
    _exit(0);  // leaves the parent's manager alone
  }
  int status = 0;
  if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "the child failed\n");
    return 1;
  }

  for (std::size_t i = 0; i < arr.size(); ++i) {
    if (arr(i) != std::int64_t(i) + 1) {
      std::fprintf(stderr, "arr(%zu) = %lld, expected %zu\n", i, (long long)arr(i), i + 1);
      return 1;
    }
  }
  std::printf("ok: the child's +1 is seen by the parent: arr = [%lld, %lld, ..., %lld]\n",
              (long long)arr(0), (long long)arr(1), (long long)arr(1023));
  return 0;
}
