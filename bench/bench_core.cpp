// shmarray's core benchmarks. Every figure is a ratio against a baseline run
// side by side in the same process (alternating, median of many runs),
// because the machines are shared and noisy: read the ratios, not the times.
//
//   bash tools/run.sh bench        or        build/bench/shmarray_bench [--quick]
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <numeric>
#include <shmarray/shmarray.hpp>
#include <string>
#include <vector>

#include "harness.hpp"

namespace {

using bench::compare;
using bench::row;

void die(const char* what) {
  std::perror(what);
  std::exit(1);
}

void wait_ok(pid_t pid) {
  int st = 0;
  if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) die("child");
}

// The quick start in raw POSIX calls: shared memory, a copy in, a child that
// adds 1, a check, cleanup. `name` empty: anonymous memory.
void raw_quick_start(const std::vector<std::int64_t>& src, const std::string& name) {
  const std::size_t n = src.size() * sizeof(std::int64_t);
  void* p;
  if (name.empty()) {
    p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  } else {
    const int fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0 || ftruncate(fd, off_t(n)) != 0) die("shm_open");
    p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
  }
  if (p == MAP_FAILED) die("mmap");
  auto* a = static_cast<std::int64_t*>(p);
  std::memcpy(a, src.data(), n);
  const pid_t pid = fork();
  if (pid == 0) {
    for (std::size_t i = 0; i < src.size(); ++i)
      a[i] += 1;
    _exit(0);
  }
  wait_ok(pid);
  for (std::size_t i = 0; i < src.size(); ++i)
    if (a[i] != src[i] + 1) die("check");
  munmap(p, n);
  if (!name.empty()) shm_unlink(name.c_str());
}

template <class Backing>
void shmarray_quick_start(const std::vector<std::int64_t>& src, const Backing& backing) {
  shmarray::manager m;
  auto a = m.from_array(src.data(), {src.size()}, backing);
  const pid_t pid = fork();
  if (pid == 0) {
    for (auto& x : a)
      x += 1;
    _exit(0);
  }
  wait_ok(pid);
  for (std::size_t i = 0; i < src.size(); ++i)
    if (a(i) != src[i] + 1) die("check");
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int scale = quick ? 4 : 1;
  bench::header("shmarray core benchmarks");

  // 1. The quick start end to end, first, while this process is small (a
  // fork costs what the parent's page tables cost).
  {
    std::vector<std::int64_t> src(1024);
    std::iota(src.begin(), src.end(), 0);
    const std::string raw_name = "/shmarray_bench_" + std::to_string(getpid());
    const int reps = 400 / scale;
    row("quick start, anonymous backing", "same steps in raw POSIX calls",
        compare(
            reps, [&] { raw_quick_start(src, ""); },
            [&] { shmarray_quick_start(src, shmarray::anonymous{}); }));
    row("quick start, named backing", "same steps in raw POSIX calls",
        compare(
            reps, [&] { raw_quick_start(src, raw_name); },
            [&] { shmarray_quick_start(src, shmarray::manager().generate_name()); }));
  }

  // The owner token a process holds while it owns managed segments: made
  // with the first, removed with the last (so a program's first named
  // array pays it once), against the bare calls it is built on.
  {
    const std::string raw_name = "/shmarray_bench_token_" + std::to_string(getpid());
    auto& token = shmarray::detail::owner::token::get();
    const int batch = 200;
    const auto r = compare(
        15 / scale,
        [&] {
          for (int i = 0; i < batch; ++i) {
            const int fd =
                ::shm_open(raw_name.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
            ::shm_unlink(raw_name.c_str());
            ::close(fd);
          }
        },
        [&] {
          for (int i = 0; i < batch; ++i) {
            token.acquire();
            token.release();
          }
        });
    row("owner token: make and remove", "shm_open(O_EXCL)+shm_unlink+close",
        {r.base / batch, r.ours / batch});
  }

  // The first named array of a process starts its watchdog helper (a
  // posix_spawn of the shmarray command, which forks once and says it runs).
  // Each run is a fresh child process: its first named array, against the
  // same steps in raw calls, fork and wait included on both sides.
  {
    const std::string raw_name = "/shmarray_bench_first_" + std::to_string(getpid());
    auto in_child = [](auto&& body) {
      const pid_t pid = ::fork();
      if (pid == 0) {
        body();
        ::_exit(0);
      }
      wait_ok(pid);
    };
    const auto r = compare(
        31 / scale,
        [&] {
          in_child([&] {
            const int fd = ::shm_open(raw_name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
            if (fd < 0 || ::ftruncate(fd, 4096) != 0) ::_exit(1);
            void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            static_cast<char*>(p)[0] = 1;
            ::munmap(p, 4096);
            ::close(fd);
            ::shm_unlink(raw_name.c_str());
          });
        },
        [&] {
          in_child([&] {
            shmarray::manager m;
            auto a = m.from_shape<unsigned char>({4096});
            a(0) = 1;
          });
        });
    row("first named array of a process (starts the watchdog)", "fork+shm_open+...+shm_unlink", r);
  }

  // 2. Creating a 4 KiB named array, and attaching to it by name with full
  // validation, against the bare system calls.
  {
    const int batch = 200, reps = 25 / (quick ? 5 : 1);
    const std::string base = "/shmarray_bench_" + std::to_string(getpid()) + "_";
    std::vector<void*> maps;
    std::vector<shmarray::ndarray<std::uint8_t>> arrays;
    auto unlink_raw = [&] {
      for (int i = 0; i < int(maps.size()); ++i) {
        munmap(maps[i], 4096);
        shm_unlink((base + std::to_string(i)).c_str());
      }
      maps.clear();
    };
    std::unique_ptr<shmarray::manager> m;
    auto r = compare(
        reps,
        [&] {
          for (int i = 0; i < batch; ++i) {
            const int fd =
                shm_open((base + std::to_string(i)).c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
            if (fd < 0 || ftruncate(fd, 4096) != 0) die("shm_open");
            void* p = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            close(fd);
            maps.push_back(p);
          }
        },
        [&] {
          m = std::make_unique<shmarray::manager>();
          for (int i = 0; i < batch; ++i)
            arrays.push_back(m->from_shape<std::uint8_t>({4096}));
        },
        [&] {
          unlink_raw();
          arrays.clear();
          m.reset();
        });
    row("create a 4 KiB named array", "shm_open+ftruncate+mmap", {r.base / batch, r.ours / batch});

    // attach: both sides open, map and unmap the same 4 KiB arrays by name
    shmarray::manager keep;
    std::vector<std::string> names;
    for (int i = 0; i < batch; ++i)
      names.push_back(keep.from_shape<std::uint8_t>({4096}).name());
    r = compare(
        reps,
        [&] {
          for (const auto& n : names) {
            const int fd = shm_open(n.c_str(), O_RDWR, 0);
            struct stat st {};
            if (fd < 0 || fstat(fd, &st) != 0) die("shm_open");
            void* p =
                mmap(nullptr, std::size_t(st.st_size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            close(fd);
            munmap(p, std::size_t(st.st_size));
          }
        },
        [&] {
          for (const auto& n : names)
            (void)shmarray::ndarray<std::uint8_t>::attach(n);
        });
    row("attach a 4 KiB array by name (and detach)", "shm_open+fstat+mmap+munmap",
        {r.base / batch, r.ours / batch});
  }

  // 3. from_array of large arrays against malloc + memcpy into fresh pages.
  for (std::size_t mib : {std::size_t(64), std::size_t(256), std::size_t(1024)}) {
    if (quick && mib > 64) break;
    const std::size_t n = mib << 20;
    std::vector<unsigned char> src(n, 1);
    void* dst = nullptr;
    shmarray::ndarray<unsigned char> arr;
    std::unique_ptr<shmarray::manager> m;
    const int reps = mib >= 1024 ? 5 : 9;
    auto teardown = [&] {
      std::free(dst);
      dst = nullptr;
      arr = {};
      m.reset();
    };
    auto baseline = [&] {
      dst = std::malloc(n);
      std::memcpy(dst, src.data(), n);
    };
    for (bool prefault : {false, true}) {
      shmarray::create_options o;
      o.map.prefault = prefault;
      row("from_array " + std::to_string(mib) + " MiB, named" + (prefault ? ", prefault" : ""),
          "malloc+memcpy (fresh pages)",
          compare(
              reps, baseline,
              [&] {
                m = std::make_unique<shmarray::manager>();
                arr = m->from_array(src.data(), {n}, o);
              },
              teardown));
    }
  }
  return 0;
}
