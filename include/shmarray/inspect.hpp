// shmarray: what is in /dev/shm. Lists its objects with their state,
// inspects one, and collects what dead owners left: what the `shmarray`
// command (ls, info, rm, gc), the watchdog helper and the library's own
// collection pass stand on, as Python's shmarray.list() does.
//
// Anyone may put anything in /dev/shm, so nothing here maps what it
// inspects: records are read with pread, and an object that another user
// shrinks, forges or names with any bytes is a status, never a crash.
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
#include "detail/os.hpp"
#include "detail/token.hpp"
#include "detail/wire.hpp"
#include "errors.hpp"
#include "metadata.hpp"

namespace shmarray {

// Whether the owner of a segment (or of a token) is alive, as its owner
// token tells: held (alive), free or missing (gone), none named (untracked:
// a kept segment, never collected), or a token that cannot be read here.
enum class owner_status { alive, gone, untracked, unreadable };

inline const char* to_string(owner_status s) noexcept {
  switch (s) {
    case owner_status::alive:
      return "alive";
    case owner_status::gone:
      return "gone";
    case owner_status::untracked:
      return "untracked";
    case owner_status::unreadable:
      break;
  }
  return "unreadable";
}

// What an object in /dev/shm is; the words are those of `shmarray ls`.
enum class object_status {
  ok,               // a valid shmarray segment
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

// One object in /dev/shm, as inspected.
struct object_entry {
  std::string name;         // "/name", its bytes as they are in the directory
  std::uint64_t bytes = 0;  // the object's size
  bool shmarray = false;    // its last 512 bytes start with a record's magic
  object_status status = object_status::ok;
  std::string error;  // the typed error's message, when status is not ok
  segment_info info;  // when status is ok
  bool lock_ready = false;
  owner_status owner = owner_status::untracked;  // ok segments and tokens
  std::string owner_error;                       // when owner is unreadable
  std::uint64_t token = 0;                       // a token's id
  detail::object_id id;                          // device, inode and birth time
};

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

// Every regular file of /dev/shm (lstat: nothing followed) but semaphores
// ("sem.*", not shm_open's), by name without its '/', sorted by bytes.
inline std::vector<std::string> shm_files() {
  std::vector<std::string> out;
  DIR* d = ::opendir(shm_dir);
  if (!d) return out;
  const int dfd = ::dirfd(d);
  while (const dirent* de = ::readdir(d)) {
    const std::string n = de->d_name;
    if (n == "." || n == ".." || n.compare(0, 4, "sem.") == 0) continue;
    struct stat st {};
    if (de->d_type == DT_REG ||
        (de->d_type == DT_UNKNOWN && ::fstatat(dfd, n.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
         S_ISREG(st.st_mode)))
      out.push_back(n);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

inline owner_status owner_of(owner_state s) noexcept {
  switch (s) {
    case owner_state::alive:
      return owner_status::alive;
    case owner_state::dead:
      return owner_status::gone;
    case owner_state::unknown:
      return owner_status::untracked;
    case owner_state::unreadable:
      break;
  }
  return owner_status::unreadable;
}

inline std::string token_unreadable(std::uint64_t id, int err) {
  return "its owner token " + token_name(id) + " cannot be read: " + errno_text(err);
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
    e.owner = owner_of(token_lock_state(fd, &err));
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
  e.info = validate_record(rec, size, e.name);
  e.lock_ready = load_le<std::uint32_t>(rec + format::off_lock_state) == format::lock_ready;
  int err = 0;
  e.owner = owner_of(token_state(e.info.owner_token, e.info.boot_id != boot_id(), &err));
  if (e.owner == owner_status::unreadable)
    e.owner_error = token_unreadable(e.info.owner_token, err);
}

// Journals larger than this are not read (one forged to fill /dev/shm must
// not fill the reader's memory too): their tokens are left, and said.
inline constexpr std::size_t journal_limit = std::size_t(256) << 20;

// The objects the journal of token `id` (open as `fd`, examined as `st`)
// still names: its 'R' records less its 'U' records, up to the first that
// is not whole (the owner died writing it). Read with pread. False where it
// is not token `id`'s journal (no header naming this very file: another
// user's file named like a token), or is too large to read.
inline bool journal_of(int fd, const struct stat& st, std::uint64_t id, wire::live_set& live) {
  live.clear();
  if (st.st_size == 0) return true;  // a token that keeps no journal
  if (std::uint64_t(st.st_size) > journal_limit) return false;
  std::string bytes(std::size_t(st.st_size), '\0');
  const std::size_t got = pread_full(fd, bytes.data(), bytes.size(), 0);
  object_id self;
  if (!identify(fd, self) || !wire::header_is(bytes.data(), got, id, self)) return false;
  live.apply_all(bytes.data() + wire::header_size, got - wire::header_size);
  return true;
}

// Where an object the helper or a journal names is: /dev/shm/NAME for kind
// 's' (one '/', at the start), a file's absolute path for 'f'; "" where the
// name cannot be one.
inline std::string object_path(char kind, const std::string& name) {
  if (name.size() < 2 || name[0] != '/' || name.find('\0') != std::string::npos) return "";
  if (kind == 's') return name.find('/', 1) == std::string::npos ? shm_dir + name : "";
  return name;
}

}  // namespace detail

// Inspects /dev/shm/NAME: any bytes but '/', with or without the leading
// '/'. Reads with pread, never maps. Throws not_found where nothing has
// that name, invalid_name where it cannot be one; every other problem is
// the entry's status and error.
inline object_entry inspect(std::string_view name) {
  const std::string bare = detail::any_shm_name(name);
  object_entry e;
  e.name = "/" + bare;
  const std::string path = std::string(detail::shm_dir) + e.name;
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) throw not_found(detail::message(e.name, "does not exist"));
    detail::throw_os_error(errno, e.name, "cannot be examined");
  }
  e.bytes = std::uint64_t(st.st_size);  // what lstat says, readable or not
  e.id = {std::uint64_t(st.st_dev), std::uint64_t(st.st_ino), 0};  // the birth time once opened
  int fd = -1;
  try {
    // Never opened unless it is a regular file: a FIFO or a device is not
    // a segment, and opening one may block or act.
    if (!S_ISREG(st.st_mode))
      throw error(
          detail::message(e.name, "is " + detail::file_kind(st.st_mode) + ", not a regular file"));
    fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      if (err == ENOENT) throw not_found(detail::message(e.name, "was removed meanwhile"));
      if (const auto id = detail::token_id_of(bare)) {  // a token still, whoever's it is
        e.status = object_status::owner_token;
        e.token = id;
        e.owner = owner_status::unreadable;
        e.owner_error = detail::token_unreadable(id, err);
        return e;
      }
      detail::throw_os_error(err, e.name, "cannot be read");
    }
    detail::fd_guard close_fd{fd};
    detail::inspect_fd(fd, e, detail::token_id_of(bare));
  } catch (const error& x) {
    e.status = detail::status_of(x);
    e.error = x.what();
  }
  return e;
}

// The objects of /dev/shm, sorted by name: the shmarray segments, and those
// that cannot be opened here (no access: they may be segments); with `all`,
// every regular file and the owner tokens too. Never a semaphore ("sem.*")
// or anything but a regular file; an object removed meanwhile is left out.
inline std::vector<object_entry> list_objects(bool all = false) {
  std::vector<object_entry> out;
  for (const auto& n : detail::shm_files()) {
    if (!all && detail::token_id_of(n)) continue;
    try {
      object_entry e = inspect(n);
      if (e.status == object_status::gone) continue;
      if (all || e.shmarray || e.status == object_status::no_access) out.push_back(std::move(e));
    } catch (const error&) {  // removed meanwhile
    }
  }
  return out;
}

// What collect_dead found: a dead owner's segment (found by its record, or
// named by its token's journal: then `token` says which), a token nobody
// holds, or something left alone, and why (its owner's token cannot be read,
// a file without a birth time, another user's journal, ...).
struct collected {
  enum class kind { segment, token, skipped };
  kind what = kind::segment;
  std::string name;            // "/name" in /dev/shm, or a file backing's path
  std::int64_t owner_pid = 0;  // a segment's, from its record (0: from a journal)
  std::string token;           // the journal's token, for what it named
  bool removed = false;
  std::string why;  // skipped: the reason
};

namespace detail {

// Removes (with `dry_run`, only names) what a dead owner's journal still
// names, where each is still that object (device, inode and birth time) and
// `owner`'s, and calls seen() for each; false where some removal failed for
// a reason that may pass (the token is then kept, for another try). A file
// whose file system keeps no birth time is left alone and said: nothing
// tells it from a later file of that path and inode.
template <class Seen>
bool collect_journal(const wire::live_set& live, uid_t owner, const std::string& token,
                     bool dry_run, Seen& seen) {
  bool ok = true;
  for (const auto& [key, r] : live) {
    const std::string path = object_path(r.kind, r.name);
    if (path.empty()) continue;
    collected c;
    c.name = r.name;
    c.token = token;
    if (r.kind == 'f' && r.object.birth_ns == 0) {
      struct stat st {};
      if (::lstat(path.c_str(), &st) != 0 || std::uint64_t(st.st_ino) != r.object.inode) continue;
      c.what = collected::kind::skipped;
      c.why =
          "its file system keeps no birth time, so it cannot be told from a later file at "
          "that path: remove it yourself if it is the one its owner (of " +
          token + ") left";
      seen(c);
      continue;
    }
    const removal x = unlink_if_same(path, r.object, r.kind == 's', &owner, dry_run);
    if (x == removal::failed) ok = false;
    if (x != removal::removed) continue;
    c.removed = !dry_run;
    seen(c);
  }
  return ok;
}

// collect_journal for another user's token, with only that user's rights:
// in a child that becomes that user (uid, and gid of the token; no
// supplementary groups), so that nothing is removed the user could not.
// What the child saw comes back through a pipe.
template <class Seen>
bool collect_journal_as(const wire::live_set& live, const struct stat& token_st,
                        const std::string& token, bool dry_run, Seen& seen) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return false;
  std::fflush(nullptr);
  const pid_t child = ::fork();
  if (child < 0) {
    ::close(p[0]);
    ::close(p[1]);
    return false;
  }
  if (child == 0) {
    ::close(p[0]);
    bool ok = ::setgroups(0, nullptr) == 0 &&
              ::setresgid(token_st.st_gid, token_st.st_gid, token_st.st_gid) == 0 &&
              ::setresuid(token_st.st_uid, token_st.st_uid, token_st.st_uid) == 0;
    try {
      auto say = [&](const collected& c) {
        std::string m(1, c.what == collected::kind::skipped ? 'S' : c.removed ? 'R' : 'W');
        for (const std::string* s : {&c.name, &c.why}) {
          wire::put_u64(m, s->size());
          m += *s;
        }
        (void)!::write(p[1], m.data(), m.size());
      };
      ok = ok && collect_journal(live, token_st.st_uid, token, dry_run, say);
    } catch (...) {
      ok = false;
    }
    ::_exit(ok ? 0 : 1);
  }
  ::close(p[1]);
  std::string in;
  char buf[4096];
  for (ssize_t n; (n = ::read(p[0], buf, sizeof buf)) != 0;)
    if (n > 0)
      in.append(buf, std::size_t(n));
    else if (errno != EINTR)
      break;
  ::close(p[0]);
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  for (std::size_t at = 0; at < in.size();) {
    collected c;
    c.what = in[at] == 'S' ? collected::kind::skipped : collected::kind::segment;
    c.removed = in[at] == 'R';
    c.token = token;
    ++at;
    for (std::string* s : {&c.name, &c.why}) {
      if (at + 8 > in.size()) return false;
      const std::size_t n = std::size_t(load_le<std::uint64_t>(in.data() + at));
      at += 8;
      if (n > in.size() - at) return false;
      s->assign(in, at, n);
      at += n;
    }
    seen(c);
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

}  // namespace detail

// Finds the shmarray segments in /dev/shm whose owner is gone (the record
// validates, and its token is free or missing, or it comes from an earlier
// boot) and removes each unless `dry_run`, only while its name still names
// the object inspected; then, for each token nobody holds, what its journal
// still names (raw segments and file backings, which no record tells of:
// what a helper that died with its owner did not remove), then the token.
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
    if (const auto id = detail::token_id_of(n)) {
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
    const std::string token = detail::token_name(id);
    auto journal = [&](int fd, const struct stat& st) {
      detail::wire::live_set live;
      collected left;
      left.what = collected::kind::skipped;
      left.name = token;
      if (!detail::journal_of(fd, st, id, live)) {
        left.why =
            std::uint64_t(st.st_size) > detail::journal_limit
                ? "its journal is larger than gc reads (" + std::to_string(st.st_size) + " bytes)"
                : "it is not an owner token: its bytes do not name this very file";
        seen(left);
        return false;
      }
      if (live.empty()) return true;
      if (st.st_uid == ::geteuid())
        return detail::collect_journal(live, st.st_uid, token, dry_run, seen);
      if (others && ::geteuid() == 0)
        return detail::collect_journal_as(live, st, token, dry_run, seen);
      left.why = "it is user " + std::to_string(st.st_uid) +
                 "'s, whose journal only that user or root's shmarray gc collects";
      if (others) seen(left);
      return false;
    };
    if (!detail::remove_token_if_dead(id, journal, dry_run)) continue;
    collected c;
    c.what = collected::kind::token;
    c.name = token;
    c.removed = !dry_run;
    seen(c);
  }
}

}  // namespace shmarray
