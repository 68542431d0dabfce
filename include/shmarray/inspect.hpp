// shmarray: what is in /dev/shm (or in a directory of file backings).
// Lists its objects with their state, inspects one, and collects what dead
// owners left: what the `shmarray` command (ls, info, rm, gc), the watchdog
// helper and the library's own collection pass stand on, as Python's
// shmarray.list() does.
//
// Anyone may put anything in /dev/shm, so nothing here maps what it
// inspects: records are read with pread (and so are a ring's live words,
// its head and reader table), and an object that another user shrinks,
// forges or names with any bytes is a status, never a crash.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "backing.hpp"
#include "detail/endian.hpp"
#include "detail/os_error.hpp"
#include "detail/owner/collect.hpp"
#include "detail/owner/token.hpp"
#include "detail/ring_format.hpp"
#include "detail/ring_sync.hpp"
#include "detail/scope_exit.hpp"
#include "detail/system.hpp"
#include "detail/text.hpp"
#include "errors.hpp"
#include "metadata.hpp"
#include "owner_status.hpp"
#include "shape.hpp"

namespace shmarray {

// What an object in /dev/shm is; the words are those of `shmarray ls`.
enum class object_status {
  ok,               // a valid shmarray segment: an array or a ring (see `kind`)
  being_created,    // not_ready: empty, or its record is not complete yet
  unknown_version,  // version_mismatch
  truncated,        // truncated_segment
  corrupt,          // corrupt_metadata (or no record at all: not a segment)
  no_access,        // it cannot be opened here: it may be another user's segment
  gone,             // removed while it was inspected
  unreadable,       // any other failure (not a regular file, an I/O error)
  owner_token,      // an owner token (listed with `all`)
};

inline const char* to_string(object_status s) noexcept {
  switch (s) {
    case object_status::ok:
      return "ok";
    case object_status::being_created:
      return "being created";
    case object_status::unknown_version:
      return "unknown version";
    case object_status::truncated:
      return "truncated";
    case object_status::corrupt:
      return "corrupt";
    case object_status::no_access:
      return "no access";
    case object_status::gone:
      return "gone";
    case object_status::owner_token:
      return "owner token";
    case object_status::unreadable:
      break;
  }
  return "unreadable";
}

// What a shmarray segment holds: an array (format version 1) or a ring of
// frames (version 2).
enum class segment_kind { array, ring };

inline const char* to_string(segment_kind k) noexcept {
  return k == segment_kind::ring ? "ring" : "array";
}

// Whether a ring's writer is there: its liveness lock held (alive), the
// ring closed by it (no more frames), or neither (gone: its process died,
// or it let go without closing).
enum class producer_status { alive, closed, gone };

inline const char* to_string(producer_status p) noexcept {
  switch (p) {
    case producer_status::alive:
      return "alive";
    case producer_status::closed:
      return "closed";
    case producer_status::gone:
      break;
  }
  return "gone";
}

// A reader group of a ring, as its entry says.
struct ring_group_status {
  std::string name;         // its bytes as they are (at most 40): print them escaped
  std::size_t members = 0;  // attached readers of the group
  std::uint64_t next = 0;   // the last sequence number a member claimed
  std::uint64_t missed = 0;
};

// A reader attached to a ring (its entry in state 2), as its entry says.
struct ring_reader_status {
  std::int64_t pid = 0;
  bool member = false;      // of a group (`group`), or a reader of its own
  std::string group;        // a member's group's name (empty: its entry names no group in use)
  std::uint64_t done = 0;   // of its own: every frame up to this one is released
  std::uint64_t claim = 0;  // a member: the frame it claimed last (0: none)
  std::uint64_t missed = 0;
  bool alive = true;  // its liveness lock is held (false: it died, and its entry is not freed yet)
};

// What a ring's record says and what its words hold now, read with pread
// (docs/FORMAT.md, "Rings: format version 2"). The frame's dtype, shape and
// order, and the owner, are the entry's `info`; its data_nbytes is one
// frame's bytes.
struct ring_status {
  ring_policy policy = ring_policy::overwrite;
  std::uint64_t slots = 0;
  std::uint64_t slot_stride = 0;
  std::uint64_t max_readers = 0;
  std::uint64_t max_groups = 0;
  std::uint64_t head = 0;        // the newest published frame's sequence number; 0: none yet
  std::size_t readers = 0;       // reader entries attached (in state 2)
  std::size_t readers_gone = 0;  // of those, the ones whose liveness lock nobody holds
  std::vector<ring_reader_status> attached;  // those readers, in the table's order
  std::vector<ring_group_status> groups;     // the groups in use, in the table's order
  producer_status producer = producer_status::gone;
  std::int64_t writer_pid = 0;  // as the writer area says
};

// One object in /dev/shm (or a file), as inspected.
struct object_entry {
  std::string name;         // "/name", its bytes as they are in the directory; a file: its path
  std::string path;         // where it is: "/dev/shm/name", or the file's path
  std::uint64_t bytes = 0;  // the object's size
  bool shmarray = false;    // its last 512 bytes start with a record's magic
  object_status status = object_status::ok;
  std::string error;      // the typed error's message, when status is not ok
  segment_info info;      // when status is ok
  bool same_boot = true;  // ok segments: made since this machine last booted
  bool lock_ready = false;
  segment_kind kind = segment_kind::array;       // a ring's when its record says version 2
  ring_status ring;                              // ok rings
  owner_status owner = owner_status::untracked;  // ok segments and tokens
  std::string owner_error;                       // when owner is unreadable
  std::uint64_t token = 0;                       // a token's id
  detail::object_id id;                          // device, inode and birth time
};

// A name as it may be printed: any bytes that are not printable UTF-8
// (control characters, invalid bytes, quotes) escaped as $'...' shows them,
// so that no name, whoever made it, can forge a listing.
inline std::string printable_name(std::string_view name) {
  return detail::escaped(name);
}

// A name as a JSON string, quotes included (invalid UTF-8 escaped).
inline std::string json_string(std::string_view s) {
  return detail::json_quoted(s);
}

// The strides of an inspected segment's array, in bytes.
inline std::vector<std::ptrdiff_t> byte_strides(const segment_info& info) {
  std::vector<std::ptrdiff_t> out;
  for (const auto s : detail::packed_strides(info.shape, info.order))
    out.push_back(s * std::ptrdiff_t(info.itemsize));
  return out;
}

namespace detail {

inline constexpr char shm_dir[] = "/dev/shm";

// The name in /dev/shm of `name` (any bytes, with or without its leading
// '/'): what `shmarray info` and `rm` accept, so that a user can inspect and
// remove a hostile name that creation and attach would refuse.
inline std::string any_shm_name(std::string_view name) {
  const std::string_view bare = !name.empty() && name[0] == '/' ? name.substr(1) : name;
  if (bare.empty() || bare == "." || bare == ".." || bare.find('/') != bare.npos ||
      bare.find('\0') != bare.npos)
    throw invalid_name(message(name, "is not a name in /dev/shm"));
  return std::string(bare);
}

// Every regular file of the open directory `d` (lstat: nothing followed),
// by name, sorted by bytes; without semaphores ("sem.*", not shm_open's)
// where `semaphores` is false.
inline std::vector<std::string> regular_files(DIR* d, bool semaphores = true) {
  std::vector<std::string> out;
  const int dfd = ::dirfd(d);
  while (const dirent* de = ::readdir(d)) {
    const std::string n = de->d_name;
    if (n == "." || n == ".." || (!semaphores && n.compare(0, 4, "sem.") == 0)) continue;
    struct stat st {};
    if (de->d_type == DT_REG ||
        (de->d_type == DT_UNKNOWN && ::fstatat(dfd, n.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
         S_ISREG(st.st_mode)))
      out.push_back(n);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Every regular file of /dev/shm but semaphores, by name without its '/'.
inline std::vector<std::string> shm_files() {
  DIR* d = ::opendir(shm_dir);
  if (!d) return {};
  std::vector<std::string> out = regular_files(d, false);
  ::closedir(d);
  return out;
}

inline std::string token_unreadable(std::uint64_t id, int err) {
  return "its owner token " + owner::token_name(id) + " cannot be read: " + errno_text(err);
}

// The status word of a typed error met while inspecting.
inline object_status status_of(const error& e) noexcept {
  if (dynamic_cast<const not_ready*>(&e)) return object_status::being_created;
  if (dynamic_cast<const version_mismatch*>(&e)) return object_status::unknown_version;
  if (dynamic_cast<const truncated_segment*>(&e)) return object_status::truncated;
  if (dynamic_cast<const corrupt_metadata*>(&e)) return object_status::corrupt;
  if (dynamic_cast<const access_denied*>(&e)) return object_status::no_access;
  if (dynamic_cast<const not_found*>(&e)) return object_status::gone;
  return object_status::unreadable;
}

// The live words of the validated ring `r` behind `fd` into `out`: the
// head and closed words of the writer area, and the groups and reader
// entries of the reader area, read with pread as its record is (nothing
// that is only inspected is mapped). Whether the writer is alive is its
// liveness lock, asked with F_OFD_GETLK through `fd`, an open file
// description of the inspector's own; so is each attached reader's. The
// words are anyone's who can write the object: a count or a name they hold
// is bounded by the record's, never trusted further.
inline void read_ring_status(int fd, const ring_info& r, ring_status& out, std::string_view name) {
  namespace rf = format::ring;
  const ring_layout& l = r.layout;
  out.policy = r.policy;
  out.slots = l.slots;
  out.slot_stride = l.stride;
  out.max_readers = l.readers;
  out.max_groups = l.groups;
  std::byte w[rf::w_writer_pid + 8];
  std::vector<std::byte> table(std::size_t(l.entry_at(l.readers)));  // the groups, then the entries
  if (pread_full(fd, w, sizeof w, off_t(l.writer_at)) != sizeof w ||
      pread_full(fd, table.data(), table.size(), off_t(l.readers_at)) != table.size())
    throw truncated_segment(message(name,
                                    "shrank while its ring's words were read (another process "
                                    "is resizing it)"));
  out.head = load_le<std::uint64_t>(w + rf::w_head);
  out.writer_pid = std::int64_t(load_le<std::uint64_t>(w + rf::w_writer_pid));
  out.producer = load_le<std::uint32_t>(w + rf::w_closed) != 0 ? producer_status::closed
                 : ring::byte_held(fd, l.writer_at)            ? producer_status::alive
                                                               : producer_status::gone;
  std::vector<std::size_t> index(std::size_t(l.groups), SIZE_MAX);  // group g's in out.groups
  out.groups.clear();
  for (std::uint64_t g = 0; g < l.groups; ++g) {
    const std::byte* ge = table.data() + l.group_at(g);
    if (load_le<std::uint32_t>(ge + rf::g_state) != rf::entry_used) continue;
    ring_group_status s;
    const auto len = std::min<std::uint32_t>(load_le<std::uint32_t>(ge + rf::g_name_len),
                                             std::uint32_t(rf::group_name_max));
    s.name.assign(reinterpret_cast<const char*>(ge + rf::g_name), len);
    s.next = load_le<std::uint64_t>(ge + rf::g_next);
    s.missed = load_le<std::uint64_t>(ge + rf::g_missed);
    index[std::size_t(g)] = out.groups.size();
    out.groups.push_back(std::move(s));
  }
  out.attached.clear();
  for (std::uint64_t i = 0; i < l.readers; ++i) {
    const std::byte* e = table.data() + l.entry_at(i);
    if (load_le<std::uint32_t>(e + rf::e_state) != rf::entry_used) continue;
    ring_reader_status x;
    x.pid = std::int64_t(load_le<std::uint64_t>(e + rf::e_pid));
    const std::uint32_t g = load_le<std::uint32_t>(e + rf::e_group);
    x.member = g != 0;
    if (x.member && g <= l.groups && index[g - 1] != SIZE_MAX) {
      ring_group_status& of = out.groups[index[g - 1]];
      x.group = of.name;
      ++of.members;
    }
    x.done = load_le<std::uint64_t>(e + rf::e_done);
    x.claim = load_le<std::uint64_t>(e + rf::e_claim);
    x.missed = load_le<std::uint64_t>(e + rf::e_missed);
    x.alive = ring::byte_held(fd, l.readers_at + l.entry_at(i));
    out.attached.push_back(std::move(x));
  }
  out.readers = out.attached.size();
  out.readers_gone =
      std::size_t(std::count_if(out.attached.begin(), out.attached.end(),
                                [](const ring_reader_status& x) { return !x.alive; }));
}

// Inspects the open object `fd` named `e.name` (a token if `token` is not 0).
inline void inspect_fd(int fd, object_entry& e, std::uint64_t token) {
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !identify(fd, e.id))
    throw_os_error(errno, e.name, "could not be examined");
  if (!S_ISREG(st.st_mode))
    throw error(message(e.name, "is " + file_kind(st.st_mode) + ", not a regular file"));
  e.bytes = std::uint64_t(st.st_size);
  if (token) {
    e.status = object_status::owner_token;
    e.token = token;
    int err = 0;
    e.owner = owner::status_of(owner::token_lock_state(fd, &err));
    if (e.owner == owner_status::unreadable) e.owner_error = token_unreadable(token, err);
    return;
  }
  const std::size_t size = std::size_t(st.st_size);
  if (size == 0)
    throw not_ready(message(e.name,
                            "is empty (0 bytes): not a shmarray segment, or one still "
                            "being created"));
  std::byte rec[format::record_size];
  if (!record_fits(size)) no_record_fits(e.name, size);
  if (!read_tail(fd, size, rec)) (void)read_record_at(fd, size, e.name, rec);  // says why
  e.shmarray = has_magic(rec);
  if (e.shmarray && load_le<std::uint32_t>(rec + format::off_version) == format::ring_version) {
    e.kind = segment_kind::ring;
    const ring_info r = validate_ring_record(rec, size, e.name);
    e.info = r.frame;
    read_ring_status(fd, r, e.ring, e.name);
  } else {
    e.info = validate_record(rec, size, e.name);
    e.lock_ready = load_le<std::uint32_t>(rec + format::off_lock_state) == format::lock_ready;
  }
  e.same_boot = e.info.boot_id == boot_id();
  int err = 0;
  e.owner = owner::status_of(owner::token_state(e.info.owner_token, !e.same_boot, &err));
  if (e.owner == owner_status::unreadable)
    e.owner_error = token_unreadable(e.info.owner_token, err);
}

}  // namespace detail

namespace detail {

// Inspects `entry` of the directory `dir` (AT_FDCWD: `entry` is a path),
// shown as `shown`, an owner token's if `token` is not 0: see inspect().
inline object_entry inspect_at(int dir, const std::string& entry, std::string shown,
                               std::string path, std::uint64_t token) {
  object_entry e;
  e.name = std::move(shown);
  e.path = std::move(path);
  struct stat st {};
  if (::fstatat(dir, entry.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) throw not_found(message(e.name, "does not exist"));
    throw_os_error(errno, e.name, "cannot be examined");
  }
  e.bytes = std::uint64_t(st.st_size);  // what lstat says, readable or not
  e.id = {std::uint64_t(st.st_dev), std::uint64_t(st.st_ino), 0};  // the birth time once opened
  try {
    // Never opened unless it is a regular file: a FIFO or a device is not
    // a segment, and opening one may block or act.
    if (!S_ISREG(st.st_mode))
      throw error(message(e.name, "is " + file_kind(st.st_mode) + ", not a regular file"));
    const int fd = ::openat(dir, entry.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      if (err == ENOENT) throw not_found(message(e.name, "was removed meanwhile"));
      if (token) {  // a token still, whoever's it is
        e.status = object_status::owner_token;
        e.token = token;
        e.owner = owner_status::unreadable;
        e.owner_error = token_unreadable(token, err);
        return e;
      }
      throw_os_error(err, e.name, "cannot be read");
    }
    fd_guard close_fd{fd};
    inspect_fd(fd, e, token);
  } catch (const error& x) {
    e.status = status_of(x);
    e.error = x.what();
  }
  return e;
}

// Whether a listing shows an entry (see list_objects).
inline bool listed(const object_entry& e, bool all) noexcept {
  return e.status != object_status::gone &&
         (all || e.shmarray || e.status == object_status::no_access);
}

}  // namespace detail

// Inspects /dev/shm/NAME: any bytes but '/', with or without the leading
// '/'. Reads with pread, never maps. Throws not_found where nothing has
// that name, invalid_name where it cannot be one; every other problem is
// the entry's status and error.
inline object_entry inspect(std::string_view name) {
  const std::string bare = detail::any_shm_name(name);
  return detail::inspect_at(AT_FDCWD, std::string(detail::shm_dir) + "/" + bare, "/" + bare,
                            std::string(detail::shm_dir) + "/" + bare,
                            detail::owner::token_id_of(bare));
}

// Inspects the file at `path` (a file backing's, say) as inspect() does an
// object of /dev/shm: a link at its end is not followed (it is "a symbolic
// link, not a regular file"), the record is read with pread.
inline object_entry inspect_file(const std::string& path) {
  if (path.empty() || path.find('\0') != path.npos)
    throw invalid_name(detail::message(path, "is not a path"));
  return detail::inspect_at(AT_FDCWD, path, path, path, 0);
}

// The objects of /dev/shm, sorted by name: the shmarray segments, and those
// that cannot be opened here (no access: they may be segments); with `all`,
// every regular file and the owner tokens too. Never a semaphore ("sem.*")
// or anything but a regular file; an object removed meanwhile is left out.
inline std::vector<object_entry> list_objects(bool all = false) {
  std::vector<object_entry> out;
  for (const auto& n : detail::shm_files()) {
    if (!all && detail::owner::token_id_of(n)) continue;
    try {
      object_entry e = inspect(n);
      if (detail::listed(e, all)) out.push_back(std::move(e));
    } catch (const error&) {  // removed meanwhile
    }
  }
  return out;
}

// The objects of `directory` (file backings, say), as list_objects lists
// /dev/shm's, named by their paths ("DIRECTORY/NAME"): the shmarray
// segments and the files that cannot be opened here; with `all`, every
// regular file. Each entry is reached through one descriptor of the
// directory, opened once, without following a link at the entry. Throws
// not_found or access_denied where the directory cannot be read.
inline std::vector<object_entry> list_objects_in(const std::string& directory, bool all = false) {
  if (directory.empty() || directory.find('\0') != directory.npos)
    throw invalid_name(detail::message(directory, "is not a directory's path"));
  const int dir = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) detail::throw_os_error(errno, directory, "cannot be listed");
  DIR* d = ::fdopendir(dir);
  if (!d) {
    const int err = errno;
    ::close(dir);
    detail::throw_os_error(err, directory, "cannot be listed");
  }
  detail::scope_exit close_dir([&] { ::closedir(d); });  // and the descriptor with it
  const std::string prefix = directory.back() == '/' ? directory : directory + "/";
  std::vector<object_entry> out;
  for (const auto& n : detail::regular_files(d)) {
    try {
      object_entry e = detail::inspect_at(dir, n, prefix + n, prefix + n, 0);
      if (detail::listed(e, all)) out.push_back(std::move(e));
    } catch (const error&) {  // removed meanwhile
    }
  }
  return out;
}

// Finds the shmarray segments in /dev/shm, arrays and rings, whose owner is
// gone (the record validates, and its token is free or missing, or it
// comes from an earlier boot) and removes each unless `dry_run`, only while
// its name still names the object inspected; then, for each token nobody
// holds, what its journal still names (raw segments and file backings,
// which no record tells of: what a helper that died with its owner did not
// remove), then the token.
// Calls seen(const collected&) for each. Kept segments (no token), those
// whose token cannot be read, and anything no token names are never touched.
//
// A journal is another user's file: it is acted on only where it names this
// very token (its header), and only for objects of the token's user. The
// caller's own user's journals are collected here; another user's, only
// with `others` and as root (shmarray gc does), in a child that becomes
// that user; otherwise such a token is left, unless its journal is empty.
template <class Seen>
void collect_dead(bool dry_run, Seen&& seen, bool others = false) {
  std::vector<std::uint64_t> tokens;
  for (const auto& n : detail::shm_files()) {
    if (const auto id = detail::owner::token_id_of(n)) {
      tokens.push_back(id);
      continue;
    }
    object_entry e;
    try {
      e = inspect(n);
    } catch (const error&) {
      continue;
    }
    if (e.status != object_status::ok) continue;
    collected c;
    c.name = e.name;
    c.owner_pid = e.info.owner_pid;
    if (e.owner == owner_status::unreadable) {
      c.what = collected::kind::skipped;
      c.why = e.owner_error;
      seen(c);
    } else if (e.owner == owner_status::gone) {
      c.removed = !dry_run && detail::unlink_if_same(detail::shm_dir + e.name, e.id, true) ==
                                  detail::removal::removed;
      seen(c);
    }
  }
  for (const auto id : tokens) {
    const std::string token = detail::owner::token_name(id);
    auto journal = [&](int fd, const struct stat& st) {
      detail::owner::wire::live_set live;
      collected left;
      left.what = collected::kind::skipped;
      left.name = token;
      if (!detail::owner::journal_of(fd, st, id, live)) {
        left.why =
            std::uint64_t(st.st_size) > detail::owner::journal_limit
                ? "its journal is larger than gc reads (" + std::to_string(st.st_size) + " bytes)"
                : "it is not an owner token: its bytes do not name this very file";
        seen(left);
        return false;
      }
      if (live.empty()) return true;
      if (st.st_uid == ::geteuid())
        return detail::owner::collect_journal(live, st.st_uid, token, dry_run, seen);
      if (others && ::geteuid() == 0)
        return detail::owner::collect_journal_as(live, st, token, dry_run, seen);
      left.why = "it is user " + std::to_string(st.st_uid) +
                 "'s, whose journal only that user or root's shmarray gc collects";
      if (others) seen(left);
      return false;
    };
    if (!detail::owner::remove_token_if_dead(id, journal, dry_run)) continue;
    collected c;
    c.what = collected::kind::token;
    c.name = token;
    c.removed = !dry_run;
    seen(c);
  }
}

// collect_dead, returning what it found.
inline std::vector<collected> collect_dead(bool dry_run = false, bool others = false) {
  std::vector<collected> out;
  collect_dead(
      dry_run, [&](const collected& c) { out.push_back(c); }, others);
  return out;
}

// Removes the object an entry of inspect(), inspect_file() or a listing
// names (mappings of it stay valid). Refuses, with access_denied, the
// token of a live owner: without it, gc would take that process's segments
// for a dead owner's. What to remove is the caller's choice: an entry that
// is no shmarray segment (not e.shmarray) is removed too. One gone already
// is no error.
inline void remove_object(const object_entry& e) {
  if (e.status == object_status::owner_token && e.owner == owner_status::alive)
    throw access_denied(
        detail::message(e.name,
                        "is the owner token of a live process; not removed (without it, "
                        "gc would take that process's segments for a dead owner's)"));
  const std::string path = e.path.empty() ? detail::shm_dir + e.name : e.path;
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    detail::throw_os_error(errno, e.name, "could not be removed");
}

}  // namespace shmarray
