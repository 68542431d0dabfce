// shmarray internals: collection, gc's half of the owner's lifetime. A dead
// owner's token journal names what its helper did not remove (raw segments
// and file backings, which no record tells of): read it with pread, and
// remove what it names, only where each name still names that very object
// and the token's user could remove it. The scan of /dev/shm around it is
// shmarray::collect_dead (inspect.hpp).
#pragma once

#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "../endian.hpp"
#include "../pread.hpp"
#include "../same_object.hpp"
#include "wire.hpp"

namespace shmarray {

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

}  // namespace shmarray

namespace shmarray::detail::owner {

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
    const std::string path = wire::object_path(r.kind, r.name);
    if (path.empty()) continue;
    collected c;
    c.name = r.name;
    c.token = token;
    if (r.kind == wire::object_kind::file && r.object.birth_ns == 0) {
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
    const removal x =
        unlink_if_same(path, r.object, r.kind == wire::object_kind::shm, &owner, dry_run);
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

}  // namespace shmarray::detail::owner
