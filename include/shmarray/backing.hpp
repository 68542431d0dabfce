// shmarray: backing policies say where a segment's bytes come from and how to
// create, open, map and remove them. No policy knows about another.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <boost/interprocess/anonymous_shared_memory.hpp>
#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "detail/os.hpp"
#include "errors.hpp"

namespace shmarray {

enum class access { read_only, read_write };

// Tuning of a mapping.
struct map_options {
  // Populate the page tables up front (MADV_POPULATE_WRITE, or _READ for a
  // read-only mapping), so the first touch of each page costs no fault.
  bool prefault = false;
  // Advise transparent huge pages (MADV_HUGEPAGE); see huge_pages_status.
  bool huge_pages = false;
};

// What came of a request for huge pages. Shared memory gets huge pages only
// where /sys/kernel/mm/transparent_hugepage/shmem_enabled allows them.
enum class huge_pages_status {
  not_requested,
  unavailable,  // the system does not give shared memory huge pages, or madvise failed
  advised,      // MADV_HUGEPAGE accepted and the system honours the advice
  always,       // the system gives huge pages to all shared memory anyway
};

namespace detail {

namespace bip = boost::interprocess;

// One mapped region and what is known about the object behind it.
struct mapping {
  bip::mapped_region region;
  std::string name;  // empty for anonymous memory
  bool writable = true;
  huge_pages_status huge = huge_pages_status::not_requested;
  dev_t device = 0;  // of the named object, for telling a reused name apart
  ino_t inode = 0;
};

// Lets Boost's mapped_region map any descriptor.
struct fd_mappable {
  int fd;
  bip::mode_t mode;
  bip::mapping_handle_t get_mapping_handle() const {
    bip::mapping_handle_t h;
    h.handle = fd;
    h.is_xsi = false;
    return h;
  }
  bip::mode_t get_mode() const { return mode; }
};

// A backing policy can create a mapping; a named one can also open and remove.
template <class B, class = void>
struct is_backing : std::false_type {};
template <class B>
struct is_backing<B, std::void_t<decltype(std::declval<const B&>().create(
                         std::size_t{}, std::declval<const map_options&>()))>> : std::true_type {};

template <class B, class = void>
struct is_named : std::false_type {};
template <class B>
struct is_named<B, std::void_t<decltype(std::declval<const B&>().remove()),
                               decltype(std::declval<const B&>().open(
                                   access::read_only, std::declval<const map_options&>()))>>
    : std::true_type {};

// Closes a descriptor on scope exit.
struct fd_guard {
  int fd;
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
};

inline huge_pages_status shmem_huge_setting() {
  std::FILE* f = std::fopen("/sys/kernel/mm/transparent_hugepage/shmem_enabled", "re");
  if (!f) return huge_pages_status::unavailable;
  char text[128] = {};
  const std::size_t n = std::fread(text, 1, sizeof text - 1, f);
  std::fclose(f);
  const std::string_view s(text, n);
  const auto open = s.find('['), close = s.find(']');
  if (open == s.npos || close == s.npos || close < open) return huge_pages_status::unavailable;
  const auto active = s.substr(open + 1, close - open - 1);
  if (active == "always" || active == "force") return huge_pages_status::always;
  if (active == "advise" || active == "within_size") return huge_pages_status::advised;
  return huge_pages_status::unavailable;
}

// Populates the page tables of a mapping.
inline void populate(void* p, std::size_t n, bool writable) {
  if (::madvise(p, n, writable ? MADV_POPULATE_WRITE : MADV_POPULATE_READ) == 0) return;
  // Kernels before 5.14 lack MADV_POPULATE_*: touch one byte per page.
  const volatile char* c = static_cast<const char*>(p);
  for (std::size_t off = 0; off < n; off += page_size())
    (void)c[off];
}

// Applies the tuning flags; `shmem` says whether tmpfs pages back the mapping.
inline void tune(mapping& m, const map_options& o, bool shmem) {
  void* p = m.region.get_address();
  const std::size_t n = m.region.get_size();
  if (o.huge_pages) {  // advice first, so that populating can use huge pages
    const auto setting = shmem ? shmem_huge_setting() : huge_pages_status::unavailable;
    m.huge = setting != huge_pages_status::unavailable && ::madvise(p, n, MADV_HUGEPAGE) == 0
                 ? setting
                 : huge_pages_status::unavailable;
  }
  if (o.prefault) populate(p, n, m.writable);
}

inline bip::mapped_region map_region(const fd_mappable& what, std::size_t size,
                                     std::string_view name) {
  try {
    return bip::mapped_region(what, what.mode, 0, size);
  } catch (const bip::interprocess_exception& e) {
    throw_os_error(e.get_native_error(), name, "could not be mapped");
  }
}

// Reserves `size` bytes for a new object and maps it.
inline mapping create_mapping(int fd, std::string_view name, std::size_t size, bool shmem,
                              const map_options& o) {
  if (const int rc = ::posix_fallocate(fd, 0, off_t(size)); rc != 0) {
    if (rc == ENOSPC) throw_out_of_space(fd, name, size, shmem);
    throw_os_error(rc, name, "could not reserve " + std::to_string(size) + " bytes");
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw_os_error(errno, name, "could not be examined");
  mapping m;
  m.name = std::string(name);
  m.device = st.st_dev;
  m.inode = st.st_ino;
  m.region = map_region({fd, bip::read_write}, size, name);
  tune(m, o, shmem);
  return m;
}

// Maps the whole of an existing object, after checking its real size.
inline mapping open_mapping(int fd, std::string_view name, bool writable, bool shmem,
                            const map_options& o) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw_os_error(errno, name, "could not be examined");
  if (!S_ISREG(st.st_mode)) throw access_denied(message(name, "is not a regular file"));
  if (st.st_size == 0)
    throw not_ready(message(name, "is empty: it is still being created, or holds nothing"));
  mapping m;
  m.name = std::string(name);
  m.writable = writable;
  m.device = st.st_dev;
  m.inode = st.st_ino;
  m.region =
      map_region({fd, writable ? bip::read_write : bip::read_only}, std::size_t(st.st_size), name);
  tune(m, o, shmem);
  return m;
}

}  // namespace detail

// Memory shared with fork() children only. It has no name, so it can never leak.
struct anonymous {
  // Anonymous memory has no name: always "".
  const std::string& name() const noexcept {
    static const std::string none;
    return none;
  }

  detail::mapping create(std::size_t size, const map_options& o) const {
    detail::mapping m;
    try {
      m.region = boost::interprocess::anonymous_shared_memory(size);
    } catch (const boost::interprocess::interprocess_exception& e) {
      if (e.get_native_error() == ENOMEM)
        throw out_of_space(
            detail::message("", "could not map " + std::to_string(size) + " bytes: out of memory"),
            size, 0);
      detail::throw_os_error(e.get_native_error(), "", "could not be mapped");
    }
    detail::tune(m, o, true);
    return m;
  }
};

// A named POSIX shared-memory object (in /dev/shm on Linux) that any process
// may attach by name. Names may start with '/', and hold no other '/'.
class posix_shm {
 public:
  explicit posix_shm(std::string_view name) : name_(normalise(name)) {}

  // The name with its leading '/'.
  const std::string& name() const noexcept { return name_; }

  detail::mapping create(std::size_t size, const map_options& o) const {
    namespace bip = boost::interprocess;
    bip::shared_memory_object obj;
    try {
      // Created with O_EXCL; Boost then sets the mode with fchmod, so it is
      // exactly 0600 whatever the umask.
      bip::shared_memory_object(bip::create_only, name_.c_str(), bip::read_write,
                                bip::permissions(0600))
          .swap(obj);
    } catch (const bip::interprocess_exception& e) {
      detail::throw_os_error(e.get_native_error(), name_, "could not be created");
    }
    detail::scope_exit undo([&] { ::shm_unlink(name_.c_str()); });
    auto m = detail::create_mapping(obj.get_mapping_handle().handle, name_, size, true, o);
    undo.dismiss();
    return m;
  }

  detail::mapping open(access a, const map_options& o) const {
    namespace bip = boost::interprocess;
    const bool writable = a == access::read_write;
    try {
      bip::shared_memory_object obj(bip::open_only, name_.c_str(),
                                    writable ? bip::read_write : bip::read_only);
      return detail::open_mapping(obj.get_mapping_handle().handle, name_, writable, true, o);
    } catch (const bip::interprocess_exception& e) {
      detail::throw_os_error(e.get_native_error(), name_, "could not be opened");
    }
  }

  // Unlinks the name; false if there was nothing to remove. Mappings stay valid.
  bool remove() const {
    if (::shm_unlink(name_.c_str()) == 0) return true;
    if (errno == ENOENT) return false;
    detail::throw_os_error(errno, name_, "could not be removed");
  }

  // Checks a name and gives it its leading '/'.
  static std::string normalise(std::string_view name) {
    const std::string_view bare = !name.empty() && name[0] == '/' ? name.substr(1) : name;
    const char* why = nullptr;
    if (bare.empty())
      why = "is empty";
    else if (bare.find('/') != bare.npos)
      why = "holds a '/' after its first character";
    else if (bare.find('\0') != bare.npos)
      why = "holds a NUL character";
    else if (bare == "." || bare == "..")
      why = "is a directory name";
    else if (bare.size() > 255)
      why = "is longer than 255 characters";
    if (why)
      throw invalid_name(detail::message(name, std::string("is not a valid name: it ") + why));
    return "/" + std::string(bare);
  }

 private:
  std::string name_;
};

// A mapped file: it outlives processes and reboots. Created with mode 0600.
class file {
 public:
  explicit file(std::string_view path) : path_(path) {
    if (path_.empty()) throw invalid_name("shmarray: a file backing needs a path");
    if (path_.find('\0') != path_.npos)
      throw invalid_name(detail::message(path, "is not a valid path: it holds a NUL character"));
  }

  const std::string& name() const noexcept { return path_; }

  detail::mapping create(std::size_t size, const map_options& o) const {
    const int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0 && errno == ENOENT)
      throw not_found(detail::message(path_, "cannot be created: its directory does not exist"));
    if (fd < 0) detail::throw_os_error(errno, path_, "could not be created");
    detail::fd_guard close_fd{fd};
    detail::scope_exit undo([&] { ::unlink(path_.c_str()); });
    if (::fchmod(fd, 0600) != 0)
      detail::throw_os_error(errno, path_, "could not be set to mode 0600");
    auto m = detail::create_mapping(fd, path_, size, on_tmpfs(fd), o);
    undo.dismiss();
    return m;
  }

  detail::mapping open(access a, const map_options& o) const {
    const bool writable = a == access::read_write;
    const int fd = ::open(path_.c_str(), (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (fd < 0) detail::throw_os_error(errno, path_, "could not be opened");
    detail::fd_guard close_fd{fd};
    return detail::open_mapping(fd, path_, writable, on_tmpfs(fd), o);
  }

  bool remove() const {
    if (::unlink(path_.c_str()) == 0) return true;
    if (errno == ENOENT) return false;
    detail::throw_os_error(errno, path_, "could not be removed");
  }

 private:
  static bool on_tmpfs(int fd) {
    struct statfs st {};
    return ::fstatfs(fd, &st) == 0 && st.f_type == 0x01021994;  // TMPFS_MAGIC
  }

  std::string path_;
};

// Removes a named segment or file; false if it did not exist.
template <class Backing>
bool remove(const Backing& b) {
  return b.remove();
}

}  // namespace shmarray
