// shmarray internals: the owner token. A process that owns managed segments
// holds an flock on one small object of its own in /dev/shm for as long as it
// owns any; the kernel releases the lock when the process dies, however it
// dies. A segment's record names its owner's token, so whether the owner is
// alive is a question the kernel answers, with no guessing from pids (which
// are reused, and differ between the pid namespaces of containers that share
// /dev/shm).
#pragma once

#include <fcntl.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>

#include "../os_error.hpp"
#include "../unnamed_file.hpp"
#include "wire.hpp"

namespace shmarray::detail::owner {

// The per-process reset after fork(), in one place. The owner's singletons
// (the token below, the watchdog client of helper_client.hpp) each hold a
// mutex and a state that belong to one process. One pthread_atfork takes
// their mutexes around fork() (the watchdog's first: it takes the token's
// while it holds its own) and, in the child, forgets the parent's state
// (after_fork_in_child), as Python's _owner.py does with register_at_fork.
class fork_reset {
 public:
  enum part { watchdog_part, token_part, ring_part, parts };
  struct hooks {
    void (*lock)() noexcept;
    void (*unlock)() noexcept;
    void (*forget)() noexcept;  // in the child: the parent's state is not ours
  };
  // Called once by each singleton, as it is made.
  static void join(part p, const hooks& h) noexcept {
    static const bool installed = (::pthread_atfork(prepare, parent, after_fork_in_child), true);
    (void)installed;
    slot(p).store(&h);
  }
  // In a forked child: every part forgets its parent's state, and its
  // mutex (taken before the fork) is released.
  static void after_fork_in_child() noexcept {
    for (int p = 0; p < parts; ++p)
      if (const hooks* h = slot(part(p)).load()) {
        h->forget();
        h->unlock();
      }
  }

 private:
  static std::atomic<const hooks*>& slot(part p) noexcept {
    static std::atomic<const hooks*> s[parts];
    return s[p];
  }
  static void prepare() noexcept {
    for (int p = 0; p < parts; ++p)
      if (const hooks* h = slot(part(p)).load()) h->lock();
  }
  static void parent() noexcept {
    for (int p = parts; p-- > 0;)
      if (const hooks* h = slot(part(p)).load()) h->unlock();
  }
};

// "/.shmarray-owner-" and 16 hex digits: hidden from a plain ls of /dev/shm.
inline constexpr char token_prefix[] = ".shmarray-owner-";

inline std::string token_name(std::uint64_t id) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "/%s%016" PRIx64, token_prefix, id);
  return buf;
}

// The id in a token's name (without its '/'), or 0 if it is not one.
inline std::uint64_t token_id_of(const std::string& file) {
  const std::string p = token_prefix;
  if (file.size() != p.size() + 16 || file.compare(0, p.size(), p) != 0) return 0;
  std::uint64_t id = 0;
  for (std::size_t i = p.size(); i < file.size(); ++i) {
    const char c = file[i];
    const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) return 0;
    id = id << 4 | std::uint64_t(d);
  }
  return id;
}

// This process's token: made with its first managed segment, removed with
// its last. Forked children do not inherit it (it is closed in them), so a
// child never makes a dead owner look alive.
class token {
 public:
  static token& get() {
    static token* t = make_once();  // never destroyed: used from atexit paths
    return *t;
  }

  // One more segment owned; the token's id, or 0 where no token could be
  // made (then gc never removes this process's segments; said once). Only
  // a non-zero id counts: release() once for each.
  //
  // A new token is made locked and unnamed. The caller hands its id to the
  // watchdog, then calls publish(id) before writing the id anywhere: an
  // owner killed at any moment then leaves no token that nobody knows of.
  std::uint64_t acquire() {
    std::lock_guard<std::mutex> g(mu_);
    adopt_process();
    if (refs_ == 0 && !make()) return 0;
    if (id_ == 0) return 0;  // lost, and none could be made again (see publish)
    ++refs_;
    return id_;
  }

  // Gives the token the caller announced (`id`, from acquire or from the
  // last publish) its name if it has none yet, and returns the id the
  // caller may record: `id` itself once it is named. Any other value is a
  // new token, still unnamed, to be announced and published in turn; 0
  // means none could be made (the caller's reference from acquire still
  // counts: release it as always).
  // A new one is needed where the unnamed token cannot be linked here
  // (then tokens are made by name from now on) or where the token's name
  // was removed while this process lives: systemd's RemoveIPC=yes removes a
  // user's /dev/shm files when the user logs out, under a job still
  // running, and segments made from then on must name a token that says
  // their owner is alive.
  std::uint64_t publish(std::uint64_t id) {
    std::lock_guard<std::mutex> g(mu_);
    adopt_process();
    if (refs_ == 0 || id_ == 0) return 0;
    if (id != id_) return id_;  // a newer token: announce it first
    if (named_) {
      struct stat st {};
      if (::fstat(fd_, &st) != 0 || st.st_nlink > 0) return id_;
      replace();  // removed behind our back
      return id_;
    }
    if (link_unnamed(fd_, "/dev/shm" + token_name(id_)) == 0) {
      named_ = true;
      return id_;
    }
    if (errno != EEXIST) unnamed_ok_ = false;  // cannot link here: by name from now on
    replace();
    return id_;
  }

  // One segment fewer; the token goes with the last.
  void release() noexcept {
    std::lock_guard<std::mutex> g(mu_);
    if (pid_ != ::getpid() || refs_ == 0) return;
    if (--refs_ == 0) drop();
  }

  std::uint64_t id() {
    std::lock_guard<std::mutex> g(mu_);
    adopt_process();
    return refs_ ? id_ : 0;
  }

  // The token's journal: what its owner has registered with the watchdog,
  // as the helper's own 'R' and 'U' records, so that when owner and helper
  // die at once (a cgroup killed whole) gc can do the helper's work. Appends
  // `rec` to the journal of token `id`, or with `rewrite` makes `rec` the
  // whole journal; false where `id` is not this process's token now (the
  // caller then writes the whole journal to the new one). Best effort: a
  // write that fails (a full /dev/shm) leaves the helper to do its work.
  bool journal(std::uint64_t id, const std::string& rec, bool rewrite) noexcept {
    std::lock_guard<std::mutex> g(mu_);
    if (pid_ != ::getpid() || refs_ == 0 || id == 0 || id != id_ || fd_ < 0) return false;
    if (journal_bytes_ < wire::header_size) return true;  // no header: no journal (see head)
    if (rewrite) journal_bytes_ = wire::header_size;
    const ssize_t n =
        rec.empty() ? 0 : ::pwrite(fd_, rec.data(), rec.size(), off_t(journal_bytes_));
    if (n == ssize_t(rec.size())) journal_bytes_ += rec.size();
    if (rewrite || n != ssize_t(rec.size())) (void)!::ftruncate(fd_, off_t(journal_bytes_));
    return true;
  }

  // The journal's size now, for deciding when to rewrite it.
  std::size_t journal_bytes() {
    std::lock_guard<std::mutex> g(mu_);
    return journal_bytes_;
  }

 private:
  token() : pid_(::getpid()) {}
  static token* make_once() {
    static const fork_reset::hooks hooks{[]() noexcept { get().mu_.lock(); },
                                         []() noexcept { get().mu_.unlock(); },
                                         []() noexcept { get().forget_parent(true); }};
    auto* t = new token;
    fork_reset::join(fork_reset::token_part, hooks);
    return t;
  }

  // The parent's token is not ours: start afresh. After fork() our copy of
  // its descriptor is closed (the parent's lock stays); a child of vfork or
  // clone may share the parent's descriptors, and closes nothing.
  void forget_parent(bool close_descriptor) noexcept {
    if (close_descriptor && fd_ >= 0) ::close(fd_);
    fd_ = -1;
    id_ = 0;
    refs_ = 0;
    journal_bytes_ = 0;
    named_ = false;
    pid_ = ::getpid();
  }

  // A child made by vfork or clone, where no fork handler ran.
  void adopt_process() noexcept {
    if (pid_ != ::getpid()) forget_parent(false);
  }

  // A random id whose name is free now.
  static std::uint64_t fresh_id() {
    for (int attempt = 0; attempt < 8; ++attempt) {
      std::uint64_t id = 0;
      if (::getrandom(&id, sizeof id, 0) != sizeof id || id == 0) continue;
      struct stat st {};
      if (::stat(("/dev/shm" + token_name(id)).c_str(), &st) != 0 && errno == ENOENT) return id;
    }
    return 0;
  }

  // Another token in place of the current one, for the references held.
  // On failure the id is 0 until the last reference goes.
  void replace() noexcept {
    journal_bytes_ = 0;
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    named_ = false;
    id_ = 0;
    try {
      make();
    } catch (...) {
    }
  }

  // Locked before it has a name: no process, gc included, ever sees this
  // token unlocked while its owner lives. Named by publish(id).
  bool make() {
    journal_bytes_ = 0;
    if (const int tmp = unnamed_ok_ ? open_unnamed("/dev/shm") : -1; tmp >= 0) {
      const std::uint64_t id = fresh_id();
      // 0600 whatever the umask: this user's helper and gc must open it.
      if (id != 0 && ::fchmod(tmp, 0600) == 0 && ::flock(tmp, LOCK_EX | LOCK_NB) == 0) {
        fd_ = tmp;
        id_ = id;
        named_ = false;
        head();
        return true;
      }
      ::close(tmp);
    }
    return make_named();  // the kernel or /dev/shm cannot make unnamed files
  }

  // The token made by name, then locked.
  bool make_named() {
    for (int attempt = 0; attempt < 8; ++attempt) {
      std::uint64_t id = 0;
      if (::getrandom(&id, sizeof id, 0) != sizeof id || id == 0) continue;
      const std::string name = token_name(id);
      const int fd = ::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
      if (fd < 0) {
        if (errno == EEXIST) continue;
        say_once(errno);
        return false;
      }
      if (::fchmod(fd, 0600) != 0) {  // whatever the umask, as above
        const int err = errno;
        ::close(fd);
        ::shm_unlink(name.c_str());
        say_once(err);
        return false;
      }
      // Blocking: a reader (ls, gc) may hold a shared lock for a moment, or
      // a collector that took this new name for a dead one's its shared
      // lock while it removes the name (then the check below sends us on).
      int locked;
      while ((locked = ::flock(fd, LOCK_EX)) != 0 && errno == EINTR) {
      }
      if (locked != 0) {
        const int err = errno;
        ::close(fd);
        ::shm_unlink(name.c_str());
        say_once(err);
        return false;
      }
      // A gc that looked between our shm_open and our flock saw the lock
      // free and may have removed the name: then it is not ours, try another.
      // (A collector removes a name only while it holds a shared lock, which
      // ours excludes, so once we hold it and the name is still ours, no
      // collector can take it.)
      struct stat mine {
      }, named{};
      if (::fstat(fd, &mine) != 0 || ::stat(("/dev/shm" + name).c_str(), &named) != 0 ||
          mine.st_ino != named.st_ino || mine.st_dev != named.st_dev) {
        ::close(fd);
        continue;
      }
      fd_ = fd;
      id_ = id;
      named_ = true;
      head();
      return true;
    }
    say_once(EEXIST);
    return false;
  }

  // Writes the journal's header, naming this token (see wire::header_record);
  // where it cannot be written, the token keeps no journal, and is 0 bytes.
  void head() noexcept {
    journal_bytes_ = 0;
    object_id self;
    std::string h;
    try {
      if (!identify(fd_, self)) return;
      wire::header_record(h, id_, self);
    } catch (...) {
      return;
    }
    if (::pwrite(fd_, h.data(), h.size(), 0) == ssize_t(h.size()))
      journal_bytes_ = h.size();
    else
      (void)!::ftruncate(fd_, 0);
  }

  void drop() noexcept {
    journal_bytes_ = 0;
    if (named_) ::shm_unlink(token_name(id_).c_str());
    named_ = false;
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    id_ = 0;
  }

  void say_once(int err) noexcept {
    if (said_) return;
    said_ = true;
    const std::string text =
        "shmarray: warning: cannot make this process's owner token in "
        "/dev/shm (" +
        errno_text(err) + "); `shmarray gc` will not remove its segments if it dies\n";
    (void)!::write(2, text.data(), text.size());
  }

  std::mutex mu_;
  pid_t pid_ = 0;
  int fd_ = -1;
  std::uint64_t id_ = 0;
  std::size_t refs_ = 0;
  std::size_t journal_bytes_ = 0;
  bool named_ = false;      // linked under its name in /dev/shm
  bool unnamed_ok_ = true;  // unnamed tokens can be linked here
  bool said_ = false;
};

// unknown: no token to ask (kept or raw: never collected); unreadable: a
// token exists but cannot be opened or locked here (its errno says why).
enum class liveness { alive, dead, unknown, unreadable };

// Whether the process that holds the token open as `fd` is alive: the lock
// is held (alive) or free (dead). A shared lock, through a descriptor of our
// own: taken through the owner's, it would downgrade the owner's lock.
inline liveness token_lock_state(int fd, int* err = nullptr) noexcept {
  const int r = ::flock(fd, LOCK_SH | LOCK_NB);
  const int e = errno;
  if (r == 0) {
    ::flock(fd, LOCK_UN);
    return liveness::dead;
  }
  if (e == EWOULDBLOCK) return liveness::alive;
  if (err) *err = e;
  return liveness::unreadable;
}

// Whether the process that holds token `id` is alive: its token is gone or
// its lock is free (dead), held (alive), or there is no token to ask
// (unknown: a kept or raw segment, never collected); unreadable where the
// token cannot be opened or locked (`err` says why). `other_boot`: the
// record comes from an earlier boot, whose processes are all gone.
inline liveness token_state(std::uint64_t id, bool other_boot, int* err = nullptr) {
  if (id == 0) return liveness::unknown;
  if (other_boot) return liveness::dead;
  const int fd =
      ::shm_open(token_name(id).c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0);
  if (fd < 0) {
    if (errno == ENOENT) return liveness::dead;
    if (err) *err = errno;
    return liveness::unreadable;
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {  // planted: no token of anyone's
    if (err) *err = EINVAL;
    ::close(fd);
    return liveness::unreadable;
  }
  const liveness state = token_lock_state(fd, err);
  ::close(fd);
  return state;
}

// Removes token `id` if nobody holds it. A shared lock that is granted at
// once says the owner is dead (as token_lock_state asks), and is what the
// collector holds while it works: every reader that asks meanwhile is told
// "dead" too, where an exclusive lock would read as "alive" to it. Collectors
// keep out of each other's way with an open-file-description write lock
// (F_OFD_SETLK: independent of flock) on the token, taken after the shared
// lock; then the name is removed only if it still names the object locked
// (a collector that came just before has removed it, or a new owner has
// taken it: an owner made by name takes its exclusive lock blocking, so it
// waits for our shared lock to go and then finds the name no longer its).
// while_locked(fd, st) runs just before, holding both (gc collects what the
// token's journal names then); the token stays where it returns false or
// throws, so that nothing its journal names is lost. True if removed; with
// `dry_run`, true where it would be, and nothing is.
template <class F>
inline bool remove_token_if_dead(std::uint64_t id, F&& while_locked,
                                 bool dry_run = false) noexcept {
  const std::string name = token_name(id);
  // Read and write: a write lock needs it. Nothing is written through it.
  const int fd = ::shm_open(name.c_str(), O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0);
  if (fd < 0) return false;
  bool removed = false;
  struct flock only_me {};
  only_me.l_type = F_WRLCK;
  only_me.l_whence = SEEK_SET;  // l_start 0, l_len 0: the whole file
  struct stat locked {};
  if (::fstat(fd, &locked) == 0 && S_ISREG(locked.st_mode) && ::flock(fd, LOCK_SH | LOCK_NB) == 0 &&
      ::fcntl(fd, F_OFD_SETLK, &only_me) == 0) {
    struct stat named {};
    if (::stat(("/dev/shm" + name).c_str(), &named) == 0 && locked.st_ino == named.st_ino &&
        locked.st_dev == named.st_dev) {
      bool done = false;
      try {
        done = while_locked(fd, locked);
      } catch (...) {
      }
      removed = done && (dry_run || ::shm_unlink(name.c_str()) == 0);
    }
  }
  ::close(fd);  // and both locks with it
  return removed;
}

inline bool remove_token_if_dead(std::uint64_t id) noexcept {
  return remove_token_if_dead(id, [](int, const struct stat&) { return true; });
}

}  // namespace shmarray::detail::owner
