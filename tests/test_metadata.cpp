#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <shmarray/manager.hpp>
#include <string>

#include "support.hpp"

using namespace shmarray;
namespace fmt = shmarray::format;

namespace {

std::byte* record(const ndarray<double>& a) {
  const auto& s = a.mapped_segment();
  return s.data() + s.size() - fmt::record_size;
}

void restamp(std::byte* rec) {
  detail::store_le<std::uint32_t>(rec + fmt::off_checksum, detail::crc32(rec, fmt::checksummed));
}

attach_options quick() {
  attach_options o;
  o.wait = std::chrono::milliseconds(20);
  return o;
}

}  // namespace

TEST_CASE("crc32 is zlib's CRC-32") {
  CHECK(detail::crc32("123456789", 9) == 0xCBF43926u);
  CHECK(detail::crc32("", 0) == 0u);
  // the table-driven version against the definition, bit by bit, at every length
  auto bitwise = [](const unsigned char* p, std::size_t n) {
    std::uint32_t c = 0xFFFFFFFFu;
    for (std::size_t i = 0; i < n; ++i) {
      c ^= p[i];
      for (int k = 0; k < 8; ++k)
        c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    }
    return c ^ 0xFFFFFFFFu;
  };
  unsigned char bytes[600];
  std::uint32_t x = 12345;
  for (auto& b : bytes)
    b = static_cast<unsigned char>((x = x * 1103515245u + 12345u) >> 16);
  for (std::size_t n = 0; n <= sizeof bytes; ++n)
    REQUIRE(detail::crc32(bytes, n) == bitwise(bytes, n));
  for (std::size_t off = 1; off < 8; ++off)  // unaligned starts
    REQUIRE(detail::crc32(bytes + off, 376) == bitwise(bytes + off, 376));
}

TEST_CASE("the record lies where docs/FORMAT.md says, field by field") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<double>({3, 5, 7});
    const auto& seg = a.mapped_segment();
    // data at offset 0, page aligned; the record ends the segment at a multiple of 64
    CHECK(reinterpret_cast<std::uintptr_t>(a.data()) % 4096 == 0);
    CHECK(static_cast<void*>(a.data()) == static_cast<void*>(seg.data()));
    CHECK(seg.size() == (3 * 5 * 7 * 8 + 63) / 64 * 64 + 512);
    const std::byte* rec = record(a);
    CHECK(std::memcmp(rec, "SHMARRAY", 8) == 0);
    CHECK(detail::load_le<std::uint32_t>(rec + 8) == 1);
    CHECK(detail::load_le<std::uint32_t>(rec + 12) == 512);
    CHECK(detail::load_le<std::uint64_t>(rec + 16) == 3 * 5 * 7 * 8);
    CHECK(std::string(reinterpret_cast<const char*>(rec + 24)) == "<f8");
    CHECK(detail::load_le<std::uint32_t>(rec + 40) == 8);
    CHECK(detail::load_le<std::uint32_t>(rec + 44) == 3);
    CHECK(char(rec[48]) == 'C');
    CHECK(detail::load_le<std::uint64_t>(rec + 56) == std::uint64_t(::getpid()));
    CHECK(detail::load_le<std::uint64_t>(rec + 64) > 1700000000ull * 1000000000ull);
    CHECK(std::memcmp(rec + 72, detail::boot_id().data(), 16) == 0);
    CHECK(detail::load_le<std::uint64_t>(rec + 88) == 3);
    CHECK(detail::load_le<std::uint64_t>(rec + 96) == 5);
    CHECK(detail::load_le<std::uint64_t>(rec + 104) == 7);
    CHECK(detail::load_le<std::uint64_t>(rec + 112) == 0);
    CHECK(detail::load_le<std::uint32_t>(rec + 376) == detail::crc32(rec, 376));
    CHECK(std::memcmp(rec + 380, "REDY", 4) == 0);
    CHECK(detail::load_le<std::uint32_t>(rec + 384) == 2);

    auto f = m.from_shape<std::uint16_t>({2, 3}, [] {
      create_options o;
      o.order = order::column_major;
      return o;
    }());
    const auto& fs = f.mapped_segment();
    const std::byte* frec = fs.data() + fs.size() - 512;
    CHECK(fs.size() == 64 + 512);
    CHECK(char(frec[48]) == 'F');
    CHECK(std::string(reinterpret_cast<const char*>(frec + 24)) == "<u2");

    const auto info = detail::read_record(seg.data(), seg.size(), seg.name());
    CHECK(info.dtype == "<f8");
    CHECK(info.shape == shape_type{3, 5, 7});
    CHECK(info.owner_pid == ::getpid());
  }
  CHECK(names.left().empty());
}

TEST_CASE("an empty array and a 0-d array have records too") {
  test::names names;
  {
    manager m(names.options());
    auto e = m.from_shape<float>({0, 4});
    CHECK(e.size() == 0);
    CHECK(e.mapped_segment().size() == 512);
    auto again = ndarray<float>::attach(e.name());
    CHECK(again.shape() == shape_type{0, 4});
    auto s = m.from_shape<float>({});
    CHECK(s.size() == 1);
    CHECK(s.ndim() == 0);
    s() = 4.5f;
    CHECK(ndarray<float>::attach(s.name())() == 4.5f);
  }
  CHECK(names.left().empty());
}

// Each damage to a record must give its own typed error on attach, and never
// a crash; nothing is left behind.
TEST_CASE("damaged or forged records give typed errors, never garbage") {
  test::names names;
  using fn = std::function<void(std::byte*)>;
  struct case_t {
    const char* what;
    fn apply;
    bool restamp;
    int kind;  // 0 corrupt, 1 version, 2 not ready, 3 truncated
  };
  const case_t cases[] = {
      {"a flipped byte in the shape", [](std::byte* r) { r[88] ^= std::byte{0x10}; }, false, 0},
      {"bad magic", [](std::byte* r) { r[0] = std::byte{'X'}; }, false, 0},
      {"a bad checksum", [](std::byte* r) { r[376] ^= std::byte{1}; }, false, 0},
      {"rank 1000", [](std::byte* r) { detail::store_le<std::uint32_t>(r + 44, 1000); }, true, 0},
      {"rank 33", [](std::byte* r) { detail::store_le<std::uint32_t>(r + 44, 33); }, true, 0},
      {"an overflowing shape",
       [](std::byte* r) {
         detail::store_le<std::uint64_t>(r + 88, 1ull << 40);
         detail::store_le<std::uint64_t>(r + 96, 1ull << 40);
       },
       true, 0},
      {"an order that is neither C nor F", [](std::byte* r) { r[48] = std::byte{'X'}; }, true, 0},
      {"an item size that is not the dtype's",
       [](std::byte* r) { detail::store_le<std::uint32_t>(r + 40, 4); }, true, 0},
      {"an unterminated dtype", [](std::byte* r) { std::memset(r + 24, 'f', 16); }, true, 0},
      {"a dtype with control bytes", [](std::byte* r) { r[25] = std::byte{7}; }, true, 0},
      {"a shape entry past the rank", [](std::byte* r) { r[88 + 8 * 5] = std::byte{1}; }, true, 0},
      {"a data size that disagrees with the shape",
       [](std::byte* r) { detail::store_le<std::uint64_t>(r + 16, 8); }, true, 0},
      {"non-zero reserved bytes", [](std::byte* r) { r[360] = std::byte{1}; }, true, 0},
      {"a non-zero pad byte after the order", [](std::byte* r) { r[49] = std::byte{1}; }, true, 0},
      {"non-zero flags", [](std::byte* r) { r[55] = std::byte{0x80}; }, true, 0},
      {"a record size that is not 512",
       [](std::byte* r) { detail::store_le<std::uint32_t>(r + 12, 256); }, true, 0},
      {"a segment larger than its record describes",
       [](std::byte* r) {
         detail::store_le<std::uint64_t>(r + 88, 2);
         detail::store_le<std::uint64_t>(r + 16, 2 * 3 * 8);
       },
       true, 0},
      {"format version 2", [](std::byte* r) { detail::store_le<std::uint32_t>(r + 8, 2); }, true,
       1},
      {"a ready word not yet set", [](std::byte* r) { std::memset(r + 380, 0, 4); }, false, 2},
      {"no record written yet", [](std::byte* r) { std::memset(r, 0, 512); }, false, 2},
      {"a magic written before the version",
       [](std::byte* r) { detail::store_le<std::uint32_t>(r + 8, 0); }, false, 2},
      {"a lock state that is no state",
       [](std::byte* r) { detail::store_le<std::uint32_t>(r + 384, 7); }, false, 0},
      {"a segment shorter than its record says",
       [](std::byte* r) {
         detail::store_le<std::uint64_t>(r + 88, 1000);
         detail::store_le<std::uint64_t>(r + 16, 1000 * 3 * 8);
       },
       true, 3},
  };
  {
    manager m(names.options());
    for (const auto& c : cases) {
      CAPTURE(c.what);
      auto a = m.from_shape<double>({16, 3});
      std::byte* rec = record(a);
      c.apply(rec);
      if (c.restamp) restamp(rec);
      try {
        (void)ndarray<double>::attach(a.name(), quick());
        FAIL("attach accepted " << c.what);
      } catch (const corrupt_metadata& e) {
        CHECK(c.kind == 0);
        CHECK_THAT(e.what(), Catch::Contains(a.name()));
      } catch (const version_mismatch& e) {
        CHECK(c.kind == 1);
        CHECK_THAT(e.what(), Catch::Contains("version 2"));
      } catch (const not_ready& e) {
        CHECK(c.kind == 2);
        CHECK_THAT(e.what(), Catch::Contains(a.name()));
      } catch (const truncated_segment& e) {
        CHECK(c.kind == 3);
        CHECK_THAT(e.what(), Catch::Contains(a.name()));
        CHECK_THAT(e.what(), Catch::Contains("describes 24512"));
      }
      // With an explicit shape the same damage is found, never taken as raw data.
      CHECK_THROWS_AS((void)ndarray<double>::attach(a.name(), {16, 3}, order::row_major, quick()),
                      error);
    }
  }
  CHECK(names.left().empty());
}

TEST_CASE("a truncated segment is truncated_segment, not a crash") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<double>({4096});
    const std::size_t size = a.mapped_segment().size();
    // Cut a page off the data and move the record to the new end, as a
    // careless copy would.
    std::byte saved[512];
    std::memcpy(saved, record(a), 512);
    const int fd = ::shm_open(a.name().c_str(), O_RDWR, 0);
    REQUIRE(fd >= 0);
    REQUIRE(::ftruncate(fd, off_t(size - 4096)) == 0);
    REQUIRE(::pwrite(fd, saved, 512, off_t(size - 4096 - 512)) == 512);
    ::close(fd);
    CHECK_THROWS_AS(ndarray<double>::attach(a.name(), quick()), truncated_segment);
    CHECK_THROWS_WITH(ndarray<double>::attach(a.name(), quick()),
                      Catch::Contains("holds " + std::to_string(size - 4096) + " bytes"));
  }
  CHECK(names.left().empty());
}

TEST_CASE("a raw segment attached by name alone is an error that says how to attach it") {
  test::names names;
  {
    manager m(names.options());
    const auto raw = test::raw();
    auto small = m.from_shape<double>({10}, raw);
    std::fill(small.begin(), small.end(), 1.5);
    CHECK_THROWS_AS(ndarray<double>::attach(small.name(), quick()), corrupt_metadata);
    CHECK_THROWS_WITH(ndarray<double>::attach(small.name(), quick()),
                      Catch::Contains("explicit shape"));
    auto big = m.from_shape<double>({1024}, raw);
    std::fill(big.begin(), big.end(), 1.5);
    CHECK_THROWS_AS(ndarray<double>::attach(big.name(), quick()), corrupt_metadata);
    big.fill(0.0);  // all zero: indistinguishable from a record not yet written
    CHECK_THROWS_AS(ndarray<double>::attach(big.name(), quick()), not_ready);
  }
  CHECK(names.left().empty());
}

TEST_CASE("attach waits a short while for a segment that is being created") {
  test::names names;
  const auto name = names("slow");
  // A creator that takes 50 ms between creating the name and finishing.
  const int fd = ::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  REQUIRE(fd >= 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::usleep(50000);
    // Finish: size it, then write a complete record.
    const std::size_t size = 64 + 512;
    if (::ftruncate(fd, off_t(size)) != 0) ::_exit(1);
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) ::_exit(2);
    const auto info = detail::new_info(dtype_of<double>(), {8}, order::row_major, 64, ::getpid());
    detail::write_record(static_cast<std::byte*>(p), size, info, name);
    ::_exit(0);
  }
  attach_options patient;
  patient.wait = std::chrono::seconds(5);
  auto a = ndarray<double>::attach(name, patient);
  CHECK(a.shape() == shape_type{8});
  CHECK(test::exited_with(test::reap(pid), 0));
  attach_options impatient;
  impatient.wait = std::chrono::milliseconds(0);
  CHECK_NOTHROW(ndarray<double>::attach(name, impatient));
  ::close(fd);
  CHECK(remove(posix_shm(name)));
  CHECK(names.left().empty());
}

TEST_CASE("a lock initialised in an earlier boot is initialised again, not trusted") {
  test::names names;
  char dir[] = "/tmp/shmarray_boot_XXXXXX";
  REQUIRE(::mkdtemp(dir));
  const std::string path = std::string(dir) + "/stack.shm";
  {
    manager m(names.options());
    auto a = m.from_shape<double>({8}, file(path));
    std::byte* rec = record(a);
    // The lock bytes of a mutex held by a process that is gone without the
    // kernel knowing: what a file holds after a crash and a reboot.
    const int status = test::in_child([&] {
      auto g = a.lock();
      std::byte image[fmt::mutex_field];
      std::memcpy(image, rec + fmt::off_mutex, sizeof image);
      g.unlock();
      std::memcpy(rec + fmt::off_mutex, image, sizeof image);  // "held" by a dead thread
      return 0;
    });
    REQUIRE(test::exited_with(status, 0));
    // In this boot the stale lock cannot be told from a held one.
    CHECK_FALSE(ndarray<double>::attach(file(path)).try_lock_for(std::chrono::milliseconds(20)));
    // Recorded as from another boot, it is initialised again on attach.
    std::memset(rec + fmt::off_lock_boot_id, 0xAB, 16);
    auto b = ndarray<double>::attach(file(path));
    auto g = b.try_lock();
    CHECK(g.owns_lock());
    CHECK_FALSE(g.owner_died());
    CHECK(std::memcmp(rec + fmt::off_lock_boot_id, detail::boot_id().data(), 16) == 0);
  }
  CHECK(::access(path.c_str(), F_OK) != 0);
  CHECK(::rmdir(dir) == 0);
  CHECK(names.left().empty());
}

TEST_CASE("a record whose writer made no lock gets one on the first writable attach") {
  test::names names;
  {
    manager m(names.options());
    auto a = m.from_shape<double>({8});
    std::byte* rec = record(a);
    // what a writer without pthreads (a Python process) leaves: state 0, all zero
    std::memset(rec + fmt::off_lock_state, 0, fmt::record_size - fmt::off_lock_state);
    auto ro = ndarray<const double>::attach(a.name());  // a reader leaves it alone
    CHECK(detail::load_le<std::uint32_t>(rec + fmt::off_lock_state) == 0);
    auto b = ndarray<double>::attach(a.name());
    CHECK(detail::load_le<std::uint32_t>(rec + fmt::off_lock_state) == 2);
    CHECK(std::memcmp(rec + fmt::off_lock_boot_id, detail::boot_id().data(), 16) == 0);
    auto g = b.try_lock();
    CHECK(g.owns_lock());
    CHECK_FALSE(g.owner_died());
    const int status = test::in_child([&] { return b.try_lock().owns_lock() ? 1 : 0; });
    CHECK(test::exited_with(status, 0));
  }
  CHECK(names.left().empty());
}
