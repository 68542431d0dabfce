// A user's program: a shared array written by a forked child.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <shmarray/shmarray.hpp>

int main() {
  shmarray::manager m;
  auto a = m.from_shape<float>({4, 5});
  const pid_t pid = fork();
  if (pid == 0) {
    a.fill(2.5f);
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  for (float x : a)
    if (x != 2.5f) return 1;
  std::printf("consumer ok\n");
  return 0;
}
