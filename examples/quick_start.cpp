// shmarray's quick start, the C++ twin of shared_ndarray2's: a manager,
// from_array of 0..1023, a forked child that adds 1 in place, and the parent
// that sees 1..1024. When the manager goes, the segment goes. The README
// shows the region below, and what the program prints.
// doc-region: quick_start
#include <shmarray/shmarray.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <numeric>
#include <vector>

int main() {
  shmarray::manager manager;  // its scope is the memory's life

  std::vector<std::int64_t> values(1024);
  std::iota(values.begin(), values.end(), 0);
  auto arr = manager.from_array(values.data(), {values.size()});  // a copy, in shared memory

  if (fork() == 0) {  // the child works in place
    for (auto& x : arr)
      x += 1;
    _exit(0);  // leaves the parent's manager alone
  }
  int status = 0;
  wait(&status);

  bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  for (std::size_t i = 0; i < arr.size(); ++i)
    ok = ok && arr(i) == std::int64_t(i) + 1;
  std::printf("%s: the child's +1 is seen by the parent: arr = [%lld, %lld, ..., %lld]\n",
              ok ? "ok" : "FAILED", (long long)arr(0), (long long)arr(1), (long long)arr(1023));
  return ok ? 0 : 1;
}  // the segment is unlinked here
// doc-region-end
