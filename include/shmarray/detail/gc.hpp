// shmarray internals: collecting what dead owners left in /dev/shm, for
// `shmarray gc` and for a process that runs without a watchdog.
#pragma once

#include <dirent.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "../backing.hpp"
#include "../metadata.hpp"
#include "../segment.hpp"
#include "token.hpp"

namespace shmarray::detail {

// Every object in /dev/shm by its name (with its '/'), but semaphores
// ("sem.*", not shm_open's) and owner tokens, sorted.
inline std::vector<std::string> shm_object_names() {
  std::vector<std::string> out;
  DIR* d = ::opendir("/dev/shm");
  if (!d) return out;
  while (const dirent* de = ::readdir(d)) {
    const std::string n = de->d_name;
    if (n == "." || n == ".." || n.compare(0, 4, "sem.") == 0 || token_id_of(n)) continue;
    out.push_back("/" + n);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

// The owner tokens in /dev/shm, by id.
inline std::vector<std::uint64_t> token_ids() {
  std::vector<std::uint64_t> ids;
  if (DIR* d = ::opendir("/dev/shm")) {
    while (const dirent* de = ::readdir(d))
      if (const auto id = token_id_of(de->d_name)) ids.push_back(id);
    ::closedir(d);
  }
  return ids;
}

// Whether the owner of a segment with this record is alive: its token, or
// dead whatever the token says if the record comes from an earlier boot.
inline owner_state owner_of(const segment_info& info) {
  return token_state(info.owner_token, info.boot_id != boot_id());
}

struct dead_segment {
  std::string name;
  std::int64_t owner_pid = 0;
};

// Finds the shmarray segments in /dev/shm whose owner is dead (the record
// validates, and its token is free or gone, or it comes from an earlier
// boot) and removes each unless `dry_run`, and only if its name still names
// the object inspected; then removes the tokens nobody holds. Calls
// seen(segment, removed) for each dead owner's segment. Raw segments, kept
// ones (no token) and anything that is not a shmarray segment are never
// touched.
template <class Seen>
void collect_dead(bool dry_run, Seen seen) {
  for (const auto& n : shm_object_names()) {
    try {
      const posix_shm backing(n);
      segment seg(open_only, backing, access_mode::read_only);
      const segment_info info = read_record(seg.data(), seg.size(), backing.name());
      if (owner_of(info) != owner_state::dead) continue;
      const bool removed = !dry_run && backing.remove_if_same(seg.device(), seg.inode());
      seen(dead_segment{backing.name(), info.owner_pid}, removed);
    } catch (const error&) {
      // gone meanwhile, not ours to read, or not a (complete) shmarray segment
    }
  }
  if (!dry_run)
    for (const auto id : token_ids())
      remove_token_if_dead(id);
}

}  // namespace shmarray::detail
