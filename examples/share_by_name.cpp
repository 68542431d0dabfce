// Two unrelated processes share an image stack by name: this program, run
// with no argument, creates and fills a stack, then starts a second copy of
// itself (a new program, not a fork: it shares nothing but the name) that
// attaches the stack with ndarray<T>::attach, checks its dtype and shape,
// computes each frame's mean into a second shared array, and signals back
// by exiting. The first then reads the means.
//
//   share_by_name              # the creator
//   share_by_name NAME MEANS   # the attacher (started by the creator)
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <shmarray/eigen.hpp>
#include <shmarray/shmarray.hpp>
#include <string>

extern char** environ;

namespace {

int attacher(const std::string& stack_name, const std::string& means_name) {
  // By name alone: the record says dtype, shape and order; a wrong T throws
  // dtype_mismatch, a missing name not_found.
  auto stack = shmarray::ndarray<const std::uint16_t>::attach(stack_name);
  auto means = shmarray::ndarray<double>::attach(means_name);
  if (stack.ndim() != 3 || means.size() != stack.shape()[0]) return 3;
  for (std::size_t k = 0; k < stack.shape()[0]; ++k)
    means(k) = shmarray::eigen::frame(stack, k).cast<double>().mean();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc == 3) return attacher(argv[1], argv[2]);

    shmarray::manager m;  // its end removes both names
    auto stack = m.from_shape<std::uint16_t>({16, 64, 64});
    auto means = m.from_shape<double>({16});
    for (std::size_t k = 0; k < 16; ++k)
      shmarray::eigen::frame(stack, k).setConstant(std::uint16_t(100 * k));

    // Another program (this one's file, started anew): it knows the names
    // and nothing else.
    const std::string self = "/proc/self/exe";
    std::string a = stack.name(), b = means.name();
    char* args[] = {argv[0], a.data(), b.data(), nullptr};
    pid_t pid = 0;
    if (const int err = ::posix_spawn(&pid, self.c_str(), nullptr, nullptr, args, environ)) {
      std::fprintf(stderr, "share_by_name: cannot start the attacher: %s\n", std::strerror(err));
      return 1;
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      std::fprintf(stderr, "the attacher failed\n");
      return 1;
    }
    for (std::size_t k = 0; k < 16; ++k)
      if (std::abs(means(k) - 100.0 * double(k)) > 1e-9) {
        std::fprintf(stderr, "frame %zu: mean %g\n", k, means(k));
        return 1;
      }
    std::printf("ok: another program attached %s by name and computed 16 frame means\n",
                stack.name().c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "share_by_name: %s\n", e.what());
    return 1;
  }
}
