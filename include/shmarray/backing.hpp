// shmarray: backing policies say where a segment's bytes come from and how to
// create, open, map and remove them. No policy knows about another.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/interprocess/mapped_region.hpp>
#include <climits>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "detail/huge_pages.hpp"
#include "detail/os_error.hpp"
#include "detail/out_of_space.hpp"
#include "detail/same_object.hpp"
#include "detail/scope_exit.hpp"
#include "detail/system.hpp"
#include "detail/unnamed_file.hpp"
#include "errors.hpp"
#include "segment.hpp"

// Linux 5.14; older C library headers lack the names.
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace shmarray {

namespace detail {

namespace bip = boost::interprocess;

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
                                   access_mode::read_only, std::declval<const map_options&>()))>>
    : std::true_type {};

// Closes a descriptor on scope exit.
struct fd_guard {
  int fd;
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
};

// Populates the page tables of a mapping.
inline void populate(void* p, std::size_t n, bool writable) {
  if (::madvise(p, n, writable ? MADV_POPULATE_WRITE : MADV_POPULATE_READ) == 0) return;
  // Kernels before 5.14 lack MADV_POPULATE_* (EINVAL): touch one byte per
  // page. Any other failure (EFAULT: the object shrank under the mapping)
  // leaves the pages to fault in, where touching them now would be a SIGBUS.
  if (errno != EINVAL) return;
  const volatile char* c = static_cast<const char*>(p);
  for (std::size_t off = 0; off < n; off += page_size())
    (void)c[off];
}

// Applies the tuning flags, given what huge pages the memory can have
// (huge_pages_setting, or not_requested). Returns what came of a request.
inline huge_pages_status tune(const bip::mapped_region& r, const map_options& o,
                              huge_pages_status setting, bool writable) {
  void* p = r.get_address();
  const std::size_t n = r.get_size();
  auto huge = huge_pages_status::not_requested;
  if (o.huge_pages)  // advice first, so that populating can use huge pages
    huge = setting != huge_pages_status::unavailable && ::madvise(p, n, MADV_HUGEPAGE) == 0
               ? setting
               : huge_pages_status::unavailable;
  if (o.prefault) populate(p, n, writable);
  return huge;
}

// What huge pages a mapping of `fd` asked for them can have; not_requested
// where none were asked for (and nothing is read).
inline huge_pages_status huge_setting_if_asked(int fd, bool anonymous, const map_options& o) {
  return o.huge_pages ? huge_pages_setting(fd, anonymous) : huge_pages_status::not_requested;
}

inline bip::mapped_region map_region(const fd_mappable& what, std::size_t size,
                                     std::string_view name) {
  try {
    return bip::mapped_region(what, what.mode, 0, size);
  } catch (const bip::interprocess_exception& e) {
    throw_os_error(e.get_native_error(), name, "could not be mapped");
  }
}

// Sizes, fills and reserves a new object of `size` bytes, then maps it. The
// initial bytes are written with pwrite: one copy, straight into the object's pages,
// with no zero-filling first and no page faults; the rest is reserved with
// posix_fallocate. Either way a full file system is out_of_space now, never
// a SIGBUS later.
//
// Except where huge pages were asked for and come only when advised (a tmpfs
// mounted huge=advise; shmem_enabled "advise" for anonymous memory): pages
// reserved before the advice would be small ones, so the object is sized,
// mapped and advised first, its pages are reserved by populating them (huge
// where the kernel can), and the initial bytes are copied in. A kernel
// before 5.14 cannot populate: its pages are reserved as above, small.
inline segment create_mapping(int fd, std::string_view name, std::size_t size, bool anonymous,
                              space where, const map_options& o, initial_bytes init) {
  // A full file system is said with the space free before this attempt:
  // the new object (unnamed, or named by us a moment ago) is emptied first.
  auto full = [&] {
    (void)!::ftruncate(fd, 0);
    throw_out_of_space(fd, name, size, where);
  };
  auto reserve = [&](std::size_t from) {
    int rc;
    do  // tmpfs gives up with EINTR when a signal is pending
      rc = ::posix_fallocate(fd, off_t(from), off_t(size - from));
    while (rc == EINTR);
    if (rc == ENOSPC || rc == ENOMEM) full();
    if (rc != 0) throw_os_error(rc, name, "could not reserve " + std::to_string(size) + " bytes");
  };
  object_id id;
  mode_t mode = 0;
  if (!identify(fd, id, &mode)) throw_os_error(errno, name, "could not be examined");
  if (init.created) init.created(init.context, id);
  if (init.keep_fd && (*init.keep_fd = ::fcntl(fd, F_DUPFD_CLOEXEC, 3)) < 0)
    throw_os_error(errno, name, "could not be kept open");
  // The mode asked for is 0600; only a umask that removes owner bits changes it.
  if ((mode & 07777) != 0600 && ::fchmod(fd, 0600) != 0)
    throw_os_error(errno, name, "could not be set to mode 0600");
  const auto setting = huge_setting_if_asked(fd, anonymous, o);
  const bool advise_first = setting == huge_pages_status::advised;
  // Sized first: pwrite grows a file as it goes, and no reader may see a
  // partial size; and a tmpfs mounted huge=within_size gives huge pages
  // only to pages within the size the file has when they are reserved.
  if (::ftruncate(fd, off_t(size)) != 0) {
    if (errno == EFBIG || errno == ENOSPC) full();
    throw_os_error(errno, name, "could not be sized to " + std::to_string(size) + " bytes");
  }
  if (advise_first) {
    auto region = map_region({fd, bip::read_write}, size, name);
    void* p = region.get_address();
    const auto huge =
        ::madvise(p, size, MADV_HUGEPAGE) == 0 ? setting : huge_pages_status::unavailable;
    if (::madvise(p, size, MADV_POPULATE_WRITE) != 0) {
      const int err = errno;
      if (err == EFAULT || err == ENOMEM) {  // a page our own new object could not have
        region = bip::mapped_region();
        full();
      }
      if (err != EINVAL) throw_os_error(err, name, "could not have its pages reserved");
      reserve(0);  // no MADV_POPULATE_WRITE in this kernel
    }
    if (init.size > 0) std::memcpy(p, init.data, init.size);
    return segment(std::move(region), std::string(name), true, huge, id);
  }
  const auto* src = static_cast<const char*>(init.data);
  for (std::size_t done = 0; done < init.size;) {
    const ssize_t n =
        ::pwrite(fd, src + done, std::min<std::size_t>(init.size - done, 1u << 30), off_t(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == ENOSPC || errno == ENOMEM)) full();
    if (n <= 0) throw_os_error(n < 0 ? errno : EIO, name, "could not be written");
    done += std::size_t(n);
  }
  if (init.size < size) reserve(init.size);
  auto region = map_region({fd, bip::read_write}, size, name);
  const auto huge = tune(region, o, setting, true);
  return segment(std::move(region), std::string(name), true, huge, id);
}

// What an object that is not a regular file is, for a message.
inline std::string file_kind(mode_t mode) {
  switch (mode & S_IFMT) {
    case S_IFDIR:
      return "a directory";
    case S_IFIFO:
      return "a FIFO";
    case S_IFSOCK:
      return "a socket";
    case S_IFCHR:
      return "a character device";
    case S_IFBLK:
      return "a block device";
    case S_IFLNK:
      return "a symbolic link";
  }
  return "not a regular file";
}

// Whether an object has holes: pages no one has reserved yet, which a
// write on a full file system would meet as a SIGBUS.
inline bool is_sparse(const struct stat& st) noexcept {
  return std::uint64_t(st.st_blocks) * 512u < std::uint64_t(st.st_size);
}

// Reserves the holes of an object others made (they may only have sized it,
// as multiprocessing.shared_memory does), so that writing to it can never
// meet a full file system. fallocate(2) itself, keeping the size: never
// posix_fallocate, whose fallback writes zeros into a live segment.
inline void reserve_holes(int fd, std::string_view name, std::size_t size, space where) {
  int rc;
  while ((rc = ::fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, off_t(size))) != 0 && errno == EINTR) {
  }
  if (rc == 0 || errno == EOPNOTSUPP) return;  // (a file system without fallocate: nothing to do)
  if (errno == ENOSPC || errno == ENOMEM)
    throw_out_of_space(fd, name, size, where,
                       "is sparse (made by sizing alone), and its pages are reserved before a "
                       "writable attach so that no write meets a full file system: it ");
  throw_os_error(errno, name, "could not have its pages reserved");
}

// Maps the whole of an existing object of a regular file, after checking
// its real size. `check(fd, size)` runs before anything is mapped: what it
// reads it reads with pread, so an object that another process shrinks
// meanwhile is an error there, never a SIGBUS. A writable mapping of a
// sparse object reserves its holes first.
// What fstat says of an object opened to be attached, which must be a
// regular file (access_denied) and not empty (not_ready: it is being made,
// or holds nothing).
inline struct stat examine_regular(int fd, std::string_view name) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw_os_error(errno, name, "could not be examined");
  if (!S_ISREG(st.st_mode))
    throw access_denied(message(name, "is " + file_kind(st.st_mode) + ", not a regular file"));
  if (st.st_size == 0)
    throw not_ready(message(name, "is empty: it is still being created, or holds nothing"));
  return st;
}

template <class Check>
inline segment open_mapping(int fd, std::string_view name, bool writable, space where,
                            const map_options& o, Check&& check) {
  const struct stat st = examine_regular(fd, name);
  const std::size_t size = std::size_t(st.st_size);
  check(fd, size);
  if (writable && is_sparse(st)) reserve_holes(fd, name, size, where);
  object_id id;
  if (!identify(fd, id)) throw_os_error(errno, name, "could not be examined");
  auto region = map_region({fd, writable ? bip::read_write : bip::read_only}, size, name);
  const auto huge = tune(region, o, huge_setting_if_asked(fd, false, o), writable);
  return segment(std::move(region), std::string(name), writable, huge, id);
}

// A check before mapping that checks nothing.
struct no_check {
  void operator()(int, std::size_t) const noexcept {}
};

// What the named backings share: create exclusively, open without blocking
// (a FIFO planted under the name must not hang the caller), and remove.
// Derived says how to open and unlink its kind of name.
template <class Derived>
class named_backing {
  // From this size on, create() looks for the name before it fills.
  static constexpr std::size_t early_check_bytes = std::size_t(1) << 20;

 public:
  // The object is made unnamed in its directory, registered (init.created),
  // sized and filled, and only then linked under its name: a process killed
  // at any moment leaves no name behind that nobody knows of, and no reader
  // ever finds it empty. Where the kernel or file system cannot make or link
  // unnamed files, the name is created first and removed on failure.
  segment create(std::size_t size, const map_options& o, initial_bytes init = {}) const {
    self().check_creatable();
    // A name that exists fails at once, before the work of a large fill
    // (the link below refuses it too, after the fill: for a small segment
    // that costs less than this lookup, a sixth of a small creation's time).
    struct stat st {};
    if (size >= early_check_bytes && ::lstat(self().path().c_str(), &st) == 0)
      throw_os_error(EEXIST, name(), "");
    if (const int tmp = open_unnamed(self().directory()); tmp >= 0) {
      fd_guard close_tmp{tmp};
      auto m = create_mapping(tmp, name(), size, false, Derived::where, o, init);
      if (link_unnamed(tmp, self().path()) == 0) return m;
      if (errno == EEXIST) throw_os_error(EEXIST, name(), "could not be created");
    }
    const int fd = self().open_fd(O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
      throw not_found(message(name(), "cannot be created: its directory does not exist"));
    if (fd < 0 && errno == ENOSPC) throw_cannot_create(self().directory(), name(), Derived::where);
    if (fd < 0) throw_os_error(errno, name(), "could not be created");
    fd_guard close_fd{fd};
    scope_exit undo([&] { self().unlink_name(); });
    auto m = create_mapping(fd, name(), size, false, Derived::where, o, init);
    undo.dismiss();
    return m;
  }

  // Opens the object without following a symbolic link, runs check(fd,
  // size) on it before anything is mapped (see open_mapping), and maps it.
  template <class Check = no_check>
  segment open(access_mode a, const map_options& o, Check&& check = {}) const {
    fd_guard close_fd{open_descriptor(a)};
    return open_mapping(close_fd.fd, name(), a == access_mode::read_write, Derived::where, o,
                        check);
  }

  // Opens the object as open() does, maps nothing, and gives the caller the
  // descriptor (close-on-exec, non-blocking), for what maps it otherwise
  // (a ring's reader maps its slots read-only and its own area apart).
  int open_descriptor(access_mode a) const {
    const bool writable = a == access_mode::read_write;
    const int fd =
        self().open_fd((writable ? O_RDWR : O_RDONLY) | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ELOOP)
      throw access_denied(
          message(name(),
                  "is a symbolic link, which shmarray does not follow (another user may have "
                  "planted it); to attach through a link on purpose, resolve it yourself "
                  "(realpath) and attach the path it names"));
    if (fd < 0) throw_os_error(errno, name(), "could not be opened");
    return fd;
  }

  // Unlinks the name; false if there was nothing to remove. Mappings stay valid.
  bool remove() const {
    if (self().unlink_name() == 0) return true;
    if (errno == ENOENT) return false;
    throw_os_error(errno, name(), "could not be removed");
  }

  // Unlinks the name only while it still names the object `id` that was
  // created under it (segment::id()): a name someone else has since reused,
  // even with the same inode number, is left alone. False if nothing was
  // removed.
  bool remove_if_same(const object_id& id) const noexcept {
    try {
      return unlink_if_same(self().link_free_path(), id, true) == removal::removed;
    } catch (...) {
      return false;
    }
  }

 private:
  const Derived& self() const { return static_cast<const Derived&>(*this); }
  const std::string& name() const { return self().name(); }
};

}  // namespace detail

// Memory shared with fork() children only. It has no name, so it can never
// leak. It is a memfd (an unnamed tmpfs file, as MAP_SHARED | MAP_ANONYMOUS
// memory is inside the kernel) so that, like the named backings, it is
// reserved up front and filled with a single copy.
struct anonymous {
  // Anonymous memory has no name: always "".
  const std::string& name() const noexcept {
    static const std::string none;
    return none;
  }

  // Where its bytes are (for messages and the owner's records).
  static constexpr detail::space where = detail::space::memory;

  segment create(std::size_t size, const map_options& o, detail::initial_bytes init = {}) const {
    const int fd = ::memfd_create("shmarray", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) detail::throw_os_error(errno, "", "could not be created");
    detail::fd_guard close_fd{fd};
    auto m = detail::create_mapping(fd, "", size, true, where, o, init);
    // Sealed at its size: no process can shrink it under the mappings (a
    // SIGBUS for every mapper) or grow it, even through /proc. A kernel
    // without seals leaves it as it was.
    (void)::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
    return m;
  }
};

// A named POSIX shared-memory object (in /dev/shm on Linux) that any process
// may attach by name. Names may start with '/', and hold no other '/'.
class posix_shm : public detail::named_backing<posix_shm> {
 public:
  // Where its objects are (for messages and the owner's records).
  static constexpr detail::space where = detail::space::dev_shm;

  explicit posix_shm(std::string_view name) : name_(normalise(name)) {}

  // The name with its leading '/'.
  const std::string& name() const noexcept { return name_; }
  // Where the object is: /dev/shm/NAME.
  std::string link_free_path() const { return path(); }

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
    else if (bare.size() > NAME_MAX)
      why = "is longer than 255 bytes";
    std::string control;
    if (!why) {
      if (const auto at = detail::unprintable_at(bare); at != bare.npos) {
        control = "holds a control character or a byte that is not UTF-8 at byte " +
                  std::to_string(at + (bare.size() < name.size())) +
                  " (names are printable UTF-8, so that no name can forge what lists print)";
        why = control.c_str();
      }
    }
    if (why)
      throw invalid_name(detail::message(name, std::string("is not a valid name: it ") + why));
    return "/" + std::string(bare);
  }

 private:
  friend class detail::named_backing<posix_shm>;
  // "sem." names are POSIX semaphores' (sem_open), which listings skip.
  void check_creatable() const {
    if (name_.compare(0, 5, "/sem.") == 0)
      throw invalid_name(detail::message(
          name_, "is not a name for a segment: names starting \"sem.\" are POSIX semaphores'"));
    if (name_.compare(0, 17, "/.shmarray-owner-") == 0)
      throw invalid_name(detail::message(
          name_,
          "is not a name for a segment: names starting \".shmarray-owner-\" are owner "
          "tokens'"));
  }
  // glibc's shm_open opens /dev/shm/NAME.
  static std::string directory() { return "/dev/shm"; }
  std::string path() const { return directory() + name_; }
  int open_fd(int flags) const { return ::shm_open(name_.c_str(), flags, 0600); }
  int unlink_name() const { return ::shm_unlink(name_.c_str()); }

  std::string name_;
};

// A mapped file: it outlives processes and reboots. Created with mode 0600.
// A relative path is made absolute at once, so a later chdir changes nothing.
class file : public detail::named_backing<file> {
 public:
  // Where its objects are (for messages and the owner's records).
  static constexpr detail::space where = detail::space::file_system;

  explicit file(std::string_view path) : path_(absolute(path)) {}

  const std::string& name() const noexcept { return path_; }
  // The path with its directory's links resolved as they are now: how the
  // file is registered and removed later, never following a link.
  std::string link_free_path() const {
    char real[PATH_MAX];
    if (!::realpath(directory().c_str(), real)) return path_;
    const std::string base = path_.substr(path_.rfind('/') + 1);
    return std::string(real) + (real[1] == '\0' ? "" : "/") + base;
  }

 private:
  friend class detail::named_backing<file>;
  void check_creatable() const noexcept {}
  std::string directory() const {
    const auto slash = path_.rfind('/');
    return slash == 0 ? "/" : path_.substr(0, slash);
  }
  const std::string& path() const { return path_; }
  int open_fd(int flags) const { return ::open(path_.c_str(), flags, 0600); }
  int unlink_name() const { return ::unlink(path_.c_str()); }
  static std::string absolute(std::string_view path) {
    if (path.empty()) throw invalid_name("shmarray: a file backing needs a path");
    if (path.find('\0') != path.npos)
      throw invalid_name(detail::message(path, "is not a valid path: it holds a NUL character"));
    std::string out(path);
    if (path[0] != '/') {
      char cwd[PATH_MAX];
      if (!::getcwd(cwd, sizeof cwd))
        detail::throw_os_error(errno, path, "cannot be made absolute (getcwd failed)");
      out = std::string(cwd) + "/" + out;
    }
    // What the kernel cannot open cannot be registered with the watchdog
    // either: refused here, before anything exists.
    if (out.size() >= PATH_MAX)
      throw invalid_name(detail::message(out.substr(0, 64) + "...",
                                         "is not a valid path: its " + std::to_string(out.size()) +
                                             " bytes are more than the " +
                                             std::to_string(PATH_MAX - 1) + " a path may have"));
    return out;
  }

  std::string path_;
};

// Removes a named segment or file; false if it did not exist.
template <class Backing>
bool remove(const Backing& b) {
  return b.remove();
}

}  // namespace shmarray
