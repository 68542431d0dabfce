// The core API as docs/api.md shows it: segments, ndarray handles, the
// manager, the lock and the allocator. Each doc-region is a block of that
// page; the code around the regions makes what they need and checks what
// they did.
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <shmarray/shmarray.hpp>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

void check(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(what);
}

// Names of this run's own, so that two runs never meet.
std::string unique(const char* what) {
  return what + std::string("_") + std::to_string(getpid());
}

void segment_section() {
  const std::string name = unique("frames");
  // clang-format off
  // doc-region: segment
  using namespace shmarray;
  segment s(create_only, posix_shm(name), 1 << 20);  // O_CREAT|O_EXCL, mode 0600 whatever the umask
  segment t(open_only, posix_shm("/" + name));       // maps the object's real size (fstat)
  segment r(open_only, posix_shm(name), access_mode::read_only);  // mapped PROT_READ
  s.data(); s.size(); s.name();                      // "/frames_4242"
  remove(posix_shm(name));                           // unlink; false if it was not there
  // doc-region-end
  // clang-format on
  check(t.size() == s.size() && r.size() == s.size(), "segments of one object");
  check(!shmarray::remove(shmarray::posix_shm(name)), "removed once");
}

void ndarray_section(shmarray::manager& m, const std::filesystem::path& dir) {
  using namespace shmarray;
  const std::string frames = m.from_shape<double>({3, 4}).name();
  create_options raw_options;
  raw_options.raw = true;
  const std::string raw_block = m.from_shape<double>({480, 640}, raw_options).name();
  const std::string opened = m.from_shape<double>({3, 4}, raw_options).name();
  const std::string path = (dir / "stack.f32").string();
  m.from_shape<float>({2, 8, 8}, file(path));

  // clang-format off
  // doc-region: ndarray
  auto a = ndarray<double>::attach(frames);                    // by name alone, from the record
  auto b = ndarray<double>::attach(raw_block, {480, 640});     // a raw segment: explicit shape
  auto c = ndarray<const float>::attach(file(path));           // read-only mapping
  ndarray<double> d(segment(open_only, posix_shm(opened)), {3, 4});  // wrap a segment you opened

  a.data();  a.shape();  a.strides();   // strides in elements, derived from shape and order
  a.ndim();  a.size();   a.nbytes();    a.name();   a.dtype();
  a.storage_order();                    // shmarray::order::row_major ('C') or column_major ('F')
  a(1, 2) = 3.0;                        // unchecked, one index per axis
  a.at(1, 2);                           // checked: std::out_of_range on a wrong count or index
  for (double& x : a) x *= 2;           // every element, in storage order
  a.fill(0.0);
  auto r = a.reshape({2, -1});          // the same memory; one -1 is inferred
  ndarray<const double> view = a;       // a read-only view of a writable handle
  if (!ndarray<double>{}) { /* a default handle refers to no array */ }
  // doc-region-end
  // clang-format on
  check(b.shape()[1] == 640 && c.ndim() == 3 && d.size() == 12, "attached four ways");
  check(r.shape()[0] == 2 && r.shape()[1] == 6 && view.size() == 12, "reshaped and viewed");
}

void manager_section(const std::filesystem::path& dir) {
  using namespace shmarray;
  const std::vector<double> source(480 * 640);
  const double* ptr = source.data();
  const std::string results = unique("results");
  const std::string out = (dir / "out.f64").string();

  // clang-format off
  // doc-region: manager
  manager m;                                          // or manager(manager_options{prefix})
  auto a = m.from_shape<float>({10, 512, 512});       // zero-filled, generated name
  auto b = m.from_array(ptr, {480, 640});             // a copy of ptr's 480*640 elements
  auto c = m.from_array(a);                           // a copy of another array
  auto d = m.from_shape<double>({8}, anonymous{});    // fork-only memory, no name
  auto e = m.from_shape<double>({8}, posix_shm(results));  // a name of your choosing
  auto f = m.from_shape<double>({8}, file(out));      // a file

  create_options o;
  o.order = order::column_major;   // Fortran order ('F'); from_array reads the input in it
  o.raw = true;                    // no record: exactly the data's bytes, as shared_ndarray2 wants
  o.keep = true;                   // not removed by the manager
  o.map.prefault = true;           // populate the page tables now
  auto g = m.from_shape<std::uint16_t>({2048, 2048}, o);

  auto h = m.attach<float>(a.name());                 // attach; the manager does not own it
  m.names();                                          // what it will remove
  // doc-region-end
  // clang-format on
  check(b.size() == 480 * 640 && c.size() == a.size() && d.name().empty() && h.size() == a.size(),
        "made seven ways");
  check(e.size() == 8 && f.size() == 8, "named and file arrays");
  check(shmarray::remove(posix_shm(g.name())), "a kept array stays until removed");
}

void lock_section(shmarray::manager& m) {
  auto a = m.from_shape<double>({2, 2});
  // doc-region: lock
  {
    auto g = a.lock();    // waits as long as it takes
    if (g.owner_died()) { /* the last holder died holding it: repair the data */
    }
    a(0, 0) += 1;
  }                            // unlocked here
  if (auto g = a.try_lock()) { /* only if free */
  }
  if (auto g = a.try_lock_for(std::chrono::milliseconds(50))) { /* within 50 ms */
  }
  // doc-region-end
  check(a(0, 0) == 1, "locked and added");
}

void allocator_section() {
  // clang-format off
  // doc-region: allocator
  std::vector<double, shmarray::allocator<double>> v(1000);  // filled before fork() ...
  if (fork() == 0) { v[0] = 1; _exit(0); }                    // ... is the same memory in the child
  // doc-region-end
  // clang-format on
  int status = 0;
  wait(&status);
  check(v[0] == 1, "the child's write is the parent's");
}

}  // namespace

int main() {
  try {
    const auto dir = std::filesystem::temp_directory_path() / unique("shmarray_api");
    std::filesystem::create_directories(dir);
    segment_section();
    {
      shmarray::manager m;
      ndarray_section(m, dir);
      lock_section(m);
    }
    manager_section(dir);
    allocator_section();
    std::filesystem::remove_all(dir);
  } catch (const std::exception& e) {
    std::printf("FAILED: %s\n", e.what());
    return 1;
  }
  std::printf("ok: docs/api.md's examples run\n");
  return 0;
}
