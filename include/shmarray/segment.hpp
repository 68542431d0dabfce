// shmarray: a move-only RAII mapping of one region of shared memory, and the
// types a backing policy speaks in (backing.hpp: where the bytes come from).
#pragma once

#include <sys/types.h>

#include <boost/interprocess/mapped_region.hpp>
#include <cstddef>
#include <string>
#include <utility>

#include "creation_tags.hpp"
#include "detail/mapping_registry.hpp"
#include "detail/same_object.hpp"
#include "detail/system.hpp"
#include "errors.hpp"

namespace shmarray {

// How a segment is mapped.
enum class access_mode { read_only, read_write };

// Tuning of a mapping.
struct map_options {
  // Populate the page tables up front (MADV_POPULATE_WRITE, or _READ for a
  // read-only mapping), so the first touch of each page costs no fault.
  bool prefault = false;
  // Advise transparent huge pages (MADV_HUGEPAGE); see huge_pages_status.
  bool huge_pages = false;
};

// What came of a request for huge pages. A named segment or a file on tmpfs
// gets them as the `huge=` option of its tmpfs mount allows (none where the
// option is absent, as on /dev/shm by default; advised for huge=advise;
// always for huge=always and huge=within_size), anonymous memory as
// /sys/kernel/mm/transparent_hugepage/shmem_enabled does, whose `deny` and
// `force` override every mount; a file elsewhere gets none.
enum class huge_pages_status {
  not_requested,
  unavailable,  // the system does not give shared memory huge pages, or madvise failed
  advised,      // MADV_HUGEPAGE accepted and the system honours the advice
  always,       // the system gives huge pages to all shared memory anyway
};

using detail::object_id;

namespace detail {

// Bytes a new segment starts with: [0, size) is written, the rest is zero.
// `created`, if set, is told the new object's identity as soon as it exists,
// before it is sized and filled (the manager registers it with the
// watchdog then, so an owner killed during a long fill leaks nothing).
struct initial_bytes {
  const void* data = nullptr;
  std::size_t size = 0;
  void (*created)(void* context, const object_id& id) noexcept = nullptr;
  void* context = nullptr;
  // If set, receives a descriptor of the new object (close-on-exec), which
  // the caller then owns, also when the creation fails after it was made
  // (-1 until then): a ring's writer keeps one to lock and to reopen.
  int* keep_fd = nullptr;
};

}  // namespace detail

// One mapped region: created exclusively (mode 0600, memory reserved up
// front) or opened after checking the object's real size. Unmapped on
// destruction; removing a name is a separate act (shmarray::remove, manager).
//
// A backing policy's create() and open() return a segment: they map the
// object and hand the region over with what they know of it.
class segment {
 public:
  // Creates `size` bytes: zero, or starting with a copy of `init`, written in
  // a single pass.
  template <class Backing>
  segment(create_only_t, const Backing& backing, std::size_t size, const map_options& o = {},
          detail::initial_bytes init = {})
      : segment(backing.create(checked_size(size, backing), o, checked_init(init, size))) {}

  template <class Backing>
  segment(open_only_t, const Backing& backing, access_mode a = access_mode::read_write,
          const map_options& o = {})
      : segment(backing.open(a, o)) {}

  // Opens once check(fd, size) has approved the object, before anything is
  // mapped: it reads what it needs with pread (ndarray's attach validates
  // the record there), so an object that fails it is never mapped.
  template <class Backing, class Check>
  segment(open_only_t, const Backing& backing, access_mode a, const map_options& o, Check&& check)
      : segment(backing.open(a, o, std::forward<Check>(check))) {}

  // Adopts a mapped region (what a backing policy's create() and open()
  // do): `name` is "" for anonymous memory, `id` the object's identity
  // (device, inode, birth time; zero where it has none).
  explicit segment(boost::interprocess::mapped_region&& region, std::string name = {},
                   bool writable = true, huge_pages_status huge = huge_pages_status::not_requested,
                   object_id id = {})
      : region_(std::move(region)),
        name_(std::move(name)),
        writable_(writable),
        huge_(huge),
        id_(id),
        // mapping made: every segment's mapping comes in here, and is noted
        // so that a process_pool can refuse jobs that point into mappings
        // made after its workers were forked.
        registered_(region_.get_address() ? detail::registered_mapping(region_.get_address(),
                                                                       region_.get_size(), name_)
                                          : detail::registered_mapping()) {}

  segment(segment&&) noexcept = default;
  // The mapping held before goes through the destructor, as every other.
  segment& operator=(segment&& other) noexcept {
    segment gone(std::move(other));
    swap(gone);
    return *this;
  }
  segment(const segment&) = delete;
  segment& operator=(const segment&) = delete;

  ~segment() {
    // mapping unmade: region_'s destructor unmaps, after this body (a
    // moved-from segment holds no mapping).
  }

  void swap(segment& other) noexcept {
    region_.swap(other.region_);
    name_.swap(other.name_);
    std::swap(writable_, other.writable_);
    std::swap(huge_, other.huge_);
    std::swap(id_, other.id_);
    std::swap(registered_, other.registered_);
  }

  std::byte* data() const noexcept { return static_cast<std::byte*>(region_.get_address()); }
  std::size_t size() const noexcept { return region_.get_size(); }
  // The name with its leading '/', the path of a file, or "" when anonymous.
  const std::string& name() const noexcept { return name_; }
  bool writable() const noexcept { return writable_; }
  huge_pages_status huge_pages() const noexcept { return huge_; }
  dev_t device() const noexcept { return dev_t(id_.device); }
  ino_t inode() const noexcept { return ino_t(id_.inode); }
  // The object's device, inode and birth time: what remove_if_same takes.
  const object_id& id() const noexcept { return id_; }

  // Bytes of this mapping that the kernel backs with huge pages right now
  // (from /proc/self/smaps): what the huge-page advice actually achieved.
  std::size_t huge_page_bytes() const {
    return 1024 * detail::mapping_kib(data(), {"ShmemPmdMapped", "FilePmdMapped"});
  }

 private:
  template <class Backing>
  static std::size_t checked_size(std::size_t size, const Backing& backing) {
    if (size == 0 || size > std::size_t(PTRDIFF_MAX))
      throw invalid_shape(
          detail::message(backing.name(), "cannot hold " + std::to_string(size) + " bytes"));
    return size;
  }

  static detail::initial_bytes checked_init(detail::initial_bytes init, std::size_t size) {
    if (init.size > size)
      throw invalid_shape("shmarray: more initial bytes than the segment holds");
    return init;
  }

  boost::interprocess::mapped_region region_;
  std::string name_;  // empty for anonymous memory
  bool writable_ = true;
  huge_pages_status huge_ = huge_pages_status::not_requested;
  object_id id_;  // of the named object, for telling a reused name (or inode) apart
  // Last, so that it leaves the registry before region_ unmaps.
  detail::registered_mapping registered_;
};

}  // namespace shmarray

// The library's backings (anonymous, posix_shm, file), as before.
#include "backing.hpp"
