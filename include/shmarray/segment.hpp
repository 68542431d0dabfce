// shmarray: a move-only RAII mapping of one region of shared memory.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>
#include <utility>

#include "backing.hpp"
#include "creation_tags.hpp"
#include "detail/system.hpp"

namespace shmarray {

// One mapped region: created exclusively (mode 0600, memory reserved up
// front) or opened after checking the object's real size. Unmapped on
// destruction; removing a name is a separate act (shmarray::remove, manager).
class segment {
 public:
  // Creates `size` bytes: zero, or starting with a copy of `init`, written in
  // a single pass.
  template <class Backing>
  segment(create_only_t, const Backing& backing, std::size_t size, const map_options& o = {},
          detail::initial_bytes init = {})
      : m_(backing.create(checked_size(size, backing), o, checked_init(init, size))) {}

  template <class Backing>
  segment(open_only_t, const Backing& backing, access_mode a = access_mode::read_write,
          const map_options& o = {})
      : m_(backing.open(a, o)) {}

  // Opens once check(fd, size) has approved the object, before anything is
  // mapped: it reads what it needs with pread (ndarray's attach validates
  // the record there), so an object that fails it is never mapped.
  template <class Backing, class Check>
  segment(open_only_t, const Backing& backing, access_mode a, const map_options& o, Check&& check)
      : m_(backing.open(a, o, std::forward<Check>(check))) {}

  segment(segment&&) noexcept = default;
  segment& operator=(segment&&) noexcept = default;

  std::byte* data() const noexcept { return static_cast<std::byte*>(m_.region.get_address()); }
  std::size_t size() const noexcept { return m_.region.get_size(); }
  // The name with its leading '/', the path of a file, or "" when anonymous.
  const std::string& name() const noexcept { return m_.name; }
  bool writable() const noexcept { return m_.writable; }
  huge_pages_status huge_pages() const noexcept { return m_.huge; }
  dev_t device() const noexcept { return dev_t(m_.id.device); }
  ino_t inode() const noexcept { return ino_t(m_.id.inode); }
  // The object's device, inode and birth time: what remove_if_same takes.
  const detail::object_id& id() const noexcept { return m_.id; }

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

  detail::mapping m_;
};

}  // namespace shmarray
