// shmarray internals: whether the memory under a descriptor can have
// transparent huge pages, and on what terms. Memory of tmpfs files gets them
// by the `huge=` option of the tmpfs mount the file lives on (none there: no
// huge pages, whatever the system setting); unnamed shared memory (a memfd)
// lives on the kernel's internal mount, whose option is
// /sys/kernel/mm/transparent_hugepage/shmem_enabled. That file's `deny` and
// `force` override every mount.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "../segment.hpp"

namespace shmarray::detail {

// The active word of shmem_enabled ("never", "advise", ...), "" where the
// kernel has no transparent huge pages.
inline std::string shmem_enabled_mode() {
  std::FILE* f = std::fopen("/sys/kernel/mm/transparent_hugepage/shmem_enabled", "re");
  if (!f) return {};
  char text[128] = {};
  const std::size_t n = std::fread(text, 1, sizeof text - 1, f);
  std::fclose(f);
  const std::string_view s(text, n);
  const auto open = s.find('['), close = s.find(']');
  if (open == s.npos || close == s.npos || close < open) return {};
  return std::string(s.substr(open + 1, close - open - 1));
}

// What a tmpfs `huge=` mode gives a segment. A segment is sized before it
// is mapped, so within_size gives every whole huge page of it, as always.
inline huge_pages_status huge_of_mode(std::string_view mode) noexcept {
  if (mode == "always" || mode == "within_size" || mode == "force")
    return huge_pages_status::always;
  if (mode == "advise") return huge_pages_status::advised;
  return huge_pages_status::unavailable;
}

// The id of the mount that descriptor `fd` is on (fdinfo's mnt_id), or -1.
inline long mount_id_of(int fd) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
  std::FILE* f = std::fopen(path, "re");
  if (!f) return -1;
  long id = -1;
  char line[256];
  while (std::fgets(line, sizeof line, f))
    if (std::strncmp(line, "mnt_id:", 7) == 0) id = std::strtol(line + 7, nullptr, 10);
  std::fclose(f);
  return id;
}

// The `huge=` mode of the tmpfs mount `mount_id`, as /proc/self/mountinfo
// says: "never" where the option is absent (tmpfs's default), "" where the
// mount is not tmpfs or is not found. Found by id, never by path: two tmpfs
// stacked on one directory share its path.
inline std::string tmpfs_huge_mode(long mount_id) {
  std::FILE* f = std::fopen("/proc/self/mountinfo", "re");
  if (!f) return {};
  std::string out;
  std::string line;
  char chunk[512];
  bool at_start = true;
  auto consider = [&](const std::string& l) {
    // "ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER"
    char* end = nullptr;
    if (std::strtol(l.c_str(), &end, 10) != mount_id || end == l.c_str() || *end != ' ')
      return false;
    const auto dash = l.find(" - ");
    if (dash == l.npos) return true;
    const auto type_end = l.find(' ', dash + 3);
    if (type_end == l.npos || l.compare(dash + 3, type_end - dash - 3, "tmpfs") != 0) return true;
    const auto source_end = l.find(' ', type_end + 1);
    if (source_end == l.npos) return true;
    std::string_view super(l);
    super.remove_prefix(source_end + 1);
    while (!super.empty() && (super.back() == '\n' || super.back() == ' '))
      super.remove_suffix(1);
    out = "never";
    while (!super.empty()) {
      const auto comma = super.find(',');
      const auto option = super.substr(0, comma);
      if (option.substr(0, 5) == "huge=") out = std::string(option.substr(5));
      if (comma == super.npos) break;
      super.remove_prefix(comma + 1);
    }
    return true;
  };
  while (std::fgets(chunk, sizeof chunk, f)) {  // lines of any length
    if (at_start) line.clear();
    line += chunk;
    at_start = !line.empty() && line.back() == '\n';
    if (at_start && consider(line)) break;
  }
  if (!at_start) consider(line);
  std::fclose(f);
  return out;
}

// What huge pages the memory under `fd` can have: `anonymous` for a memfd,
// otherwise by the mount of the file system the object lives on (a file
// system other than tmpfs: none, as for file mappings that can be written).
inline huge_pages_status huge_pages_setting(int fd, bool anonymous) {
  const std::string system = shmem_enabled_mode();
  if (system.empty() || system == "deny") return huge_pages_status::unavailable;
  if (system == "force") return huge_pages_status::always;
  if (anonymous) return huge_of_mode(system);
  const long id = mount_id_of(fd);
  return id < 0 ? huge_pages_status::unavailable : huge_of_mode(tmpfs_huge_mode(id));
}

}  // namespace shmarray::detail
