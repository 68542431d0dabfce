// Where the time of creating a 4 KiB named array goes: each step of
// manager::from_shape's path, timed on its own in the same process as the
// raw shm_open+ftruncate+mmap it is compared with. Prints each step's time
// per array and its ratio to the raw create. The machines are shared and
// noisy: medians of many batches; read the ratios.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <shmarray/shmarray.hpp>
#include <string>
#include <vector>

#include "harness.hpp"

namespace {

using clock_type = std::chrono::steady_clock;
namespace so = shmarray::detail::owner;

[[noreturn]] void die(const char* what) {
  std::perror(what);
  std::exit(1);
}

struct steps {
  std::vector<std::string> order;
  std::map<std::string, std::vector<double>> us;  // per array, one entry per batch
  void add(const std::string& step, double us_per_array) {
    if (!us.count(step)) order.push_back(step);
    us[step].push_back(us_per_array);
  }
};

double us_since(clock_type::time_point t0, int n) {
  return std::chrono::duration<double, std::micro>(clock_type::now() - t0).count() / n;
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int batch = 200, reps = quick ? 9 : 31;
  const std::size_t data = 4096;
  std::uint64_t total = 0;
  if (!shmarray::detail::segment_bytes(data, total)) die("segment_bytes");
  const std::string base = "/shmarray_bench_create_" + std::to_string(::getpid()) + "_";
  auto name = [&](int i) { return base + std::to_string(i); };
  steps s;
  shmarray::manager m;  // starts the token and the watchdog: steady state below
  auto warm = m.from_shape<std::uint8_t>({data});

  for (int rep = 0; rep < reps; ++rep) {
    // The baseline: shm_open+ftruncate+mmap, then close.
    {
      std::vector<void*> maps;
      const auto t0 = clock_type::now();
      for (int i = 0; i < batch; ++i) {
        const int fd = ::shm_open(name(i).c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
        if (fd < 0 || ::ftruncate(fd, off_t(data)) != 0) die("shm_open");
        void* p = ::mmap(nullptr, data, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        ::close(fd);
        maps.push_back(p);
      }
      s.add("raw: shm_open+ftruncate+mmap", us_since(t0, batch));
      for (int i = 0; i < batch; ++i) {
        ::munmap(maps[std::size_t(i)], data);
        ::shm_unlink(name(i).c_str());
      }
    }
    // The same raw create, with what any array that must not SIGBUS on a
    // full /dev/shm and that says what it holds needs: its pages reserved
    // and a record written (one page touched). No leak window is closed.
    {
      std::vector<void*> maps;
      const auto t0 = clock_type::now();
      for (int i = 0; i < batch; ++i) {
        const int fd = ::shm_open(name(i).c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
        if (fd < 0 || ::posix_fallocate(fd, 0, off_t(total)) != 0) die("shm_open");
        void* p = ::mmap(nullptr, std::size_t(total), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        ::close(fd);
        if (p == MAP_FAILED) die("mmap");
        static_cast<char*>(p)[total - 1] = 1;
        maps.push_back(p);
      }
      s.add("raw, reserved and one page written", us_since(t0, batch));
      for (int i = 0; i < batch; ++i) {
        ::munmap(maps[std::size_t(i)], std::size_t(total));
        ::shm_unlink(name(i).c_str());
      }
    }
    // The whole of manager::from_shape.
    {
      shmarray::manager batch_manager;  // removes the batch at its end, untimed
      std::vector<shmarray::ndarray<std::uint8_t>> arrays;
      const auto t0 = clock_type::now();
      for (int i = 0; i < batch; ++i)
        arrays.push_back(batch_manager.from_shape<std::uint8_t>({data}));
      s.add("manager::from_shape, all of it", us_since(t0, batch));
    }
    // Its steps, one at a time over the batch, in the order it takes them.
    {
      std::vector<int> fds(batch);
      std::vector<void*> maps(batch);
      std::vector<shmarray::detail::object_id> ids(batch);
      std::vector<std::uint64_t> tokens(batch);
      std::vector<std::string> names(batch);
      auto step = [&](const char* what, auto&& f) {
        const auto t0 = clock_type::now();
        for (int i = 0; i < batch; ++i)
          f(i);
        s.add(what, us_since(t0, batch));
      };
      step("a fresh name (getrandom)",
           [&](int i) { names[std::size_t(i)] = m.generate_name().name(); });
      step("owner token: acquire and publish", [&](int i) {
        auto& t = so::token::get();
        tokens[std::size_t(i)] = t.acquire();
        so::watchdog::get().prepare(tokens[std::size_t(i)]);
        t.publish(tokens[std::size_t(i)]);
      });
      step("O_TMPFILE open", [&](int i) {
        fds[std::size_t(i)] = shmarray::detail::open_unnamed("/dev/shm");
        if (fds[std::size_t(i)] < 0) die("O_TMPFILE");
      });
      step("statx (identify, mode)", [&](int i) {
        mode_t mode = 0;
        if (!shmarray::detail::identify(fds[std::size_t(i)], ids[std::size_t(i)], &mode))
          die("identify");
      });
      step("watchdog add (journal + send)", [&](int i) {
        so::watchdog::get().add(so::wire::object_kind::shm, names[std::size_t(i)],
                                ids[std::size_t(i)], tokens[std::size_t(i)]);
      });
      step("posix_fallocate", [&](int i) {
        if (::posix_fallocate(fds[std::size_t(i)], 0, off_t(total)) != 0) die("fallocate");
      });
      step("mmap", [&](int i) {
        maps[std::size_t(i)] = ::mmap(nullptr, std::size_t(total), PROT_READ | PROT_WRITE,
                                      MAP_SHARED, fds[std::size_t(i)], 0);
        if (maps[std::size_t(i)] == MAP_FAILED) die("mmap");
      });
      step("the record (new_info + write_record)", [&](int i) {
        auto info = shmarray::detail::new_info(shmarray::dtype_of<std::uint8_t>(), {data},
                                               shmarray::order::row_major, data, ::getpid());
        info.owner_token = tokens[std::size_t(i)];
        shmarray::detail::write_record(static_cast<std::byte*>(maps[std::size_t(i)]),
                                       std::size_t(total), info, names[std::size_t(i)]);
      });
      step("linkat (name it)", [&](int i) {
        if (shmarray::detail::link_unnamed(fds[std::size_t(i)],
                                           "/dev/shm" + names[std::size_t(i)]) != 0)
          die("linkat");
      });
      step("close", [&](int i) { ::close(fds[std::size_t(i)]); });
      for (int i = 0; i < batch; ++i) {
        ::munmap(maps[std::size_t(i)], std::size_t(total));
        ::shm_unlink(names[std::size_t(i)].c_str());
        so::watchdog::get().remove(so::wire::object_kind::shm, names[std::size_t(i)],
                                   ids[std::size_t(i)]);
        if (tokens[std::size_t(i)]) so::token::get().release();
      }
    }
  }

  const double raw = bench::median(s.us["raw: shm_open+ftruncate+mmap"]);
  std::printf("create a 4 KiB named array, step by step (median of %d batches of %d)\n\n", reps,
              batch);
  std::printf("| %-40s | %9s | %7s |\n", "step", "us", "x raw");
  std::printf("|------------------------------------------|-----------|---------|\n");
  double sum = 0;
  for (const auto& k : s.order) {
    const double us = bench::median(s.us[k]);
    if (k.compare(0, 3, "raw") != 0 && k.compare(0, 8, "manager:") != 0) sum += us;
    std::printf("| %-40s | %9.2f | %6.2fx |\n", k.c_str(), us, us / raw);
  }
  std::printf("| %-40s | %9.2f | %6.2fx |\n", "(the steps' sum)", sum, sum / raw);
  return 0;
}
