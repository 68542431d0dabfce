// shmarray-stack: the memory that can back a job's shared arrays. /dev/shm
// is a tmpfs whose pages are memory, and its size is often the machine's
// memory (or more, or a container's share of a larger one), so "fits in
// /dev/shm" does not mean "fits": the job is also compared with
// MemAvailable (/proc/meminfo) and with the room a cgroup memory limit
// leaves, where one applies (cgroup v2 memory.max, v1
// memory.limit_in_bytes, of the job's cgroup and each ancestor).
#pragma once

#include <algorithm>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace shmarray::stack {

// What the memory figures are, and where they came from.
struct memory_room {
  std::optional<std::uint64_t> meminfo;  // MemAvailable, in bytes
  // The tightest cgroup: its limit, and the room it leaves (the limit less
  // what the cgroup uses that cannot be reclaimed: its usage less its
  // inactive file pages, as the kubelet and docker stats count it).
  std::optional<std::uint64_t> cgroup_room;
  std::uint64_t cgroup_limit = 0;
  std::string cgroup;  // its directory
  // The smaller figure (the largest value if there is none).
  std::uint64_t available() const {
    std::uint64_t a = std::numeric_limits<std::uint64_t>::max();
    if (meminfo && *meminfo < a) a = *meminfo;
    if (cgroup_room && *cgroup_room < a) a = *cgroup_room;
    return a;
  }
};

// Where the figures are read: the real files, or (for tests) others, with
// `root` put before every path that mountinfo names.
struct memory_sources {
  std::string meminfo = "/proc/meminfo";
  std::string self_cgroup = "/proc/self/cgroup";
  std::string mountinfo = "/proc/self/mountinfo";
  std::string root;
};

// A byte count as people read it: 1.5 MiB, 2.00 GiB.
inline std::string human_bytes(std::uint64_t bytes) {
  char buf[32];
  if (bytes >= (1ull << 30))
    std::snprintf(buf, sizeof buf, "%.2f GiB", double(bytes) / double(1ull << 30));
  else if (bytes >= (1ull << 20))
    std::snprintf(buf, sizeof buf, "%.1f MiB", double(bytes) / double(1ull << 20));
  else
    std::snprintf(buf, sizeof buf, "%.1f KiB", double(bytes) / 1024.0);
  return buf;
}

namespace detail {

inline std::optional<std::string> read_text(const std::string& path) {
  std::ifstream f(path);
  if (!f) return std::nullopt;
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A whole decimal number, or nothing ("max", empty, anything else).
inline std::optional<std::uint64_t> parse_count(const std::string& text) {
  std::size_t end = text.find_last_not_of(" \n\t");
  if (end == std::string::npos) return std::nullopt;
  std::uint64_t v = 0;
  for (std::size_t i = 0; i <= end; ++i) {
    if (text[i] < '0' || text[i] > '9') return std::nullopt;
    if (v > (std::numeric_limits<std::uint64_t>::max() - 9) / 10) return std::nullopt;
    v = v * 10 + std::uint64_t(text[i] - '0');
  }
  return v;
}

// The value of `key` in a "key value" file (memory.stat, /proc/meminfo).
inline std::optional<std::uint64_t> keyed(const std::string& text, const std::string& key) {
  std::istringstream in(text);
  std::string k, v;
  while (in >> k >> v) {
    if (!k.empty() && k.back() == ':') k.pop_back();
    if (k == key) return parse_count(v);
    std::getline(in, k);
  }
  return std::nullopt;
}

// A mountinfo field with its octal escapes (\040 for a space) undone.
inline std::string unescape(const std::string& s) {
  std::string out;
  auto octal = [&](std::size_t i) { return i < s.size() && s[i] >= '0' && s[i] <= '7'; };
  for (std::size_t i = 0; i < s.size(); ++i)
    if (s[i] == '\\' && octal(i + 1) && octal(i + 2) && octal(i + 3)) {
      out += char((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
      i += 3;
    } else {
      out += s[i];
    }
  return out;
}

struct cgroup_mount {
  std::string root, point;  // the mount's root in the hierarchy, and where it is
};

// The cgroup2 mount (v2), or the v1 mount holding the memory controller.
inline std::optional<cgroup_mount> find_cgroup_mount(const std::string& mountinfo, bool v2) {
  std::istringstream in(mountinfo);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::vector<std::string> fields;
    for (std::string w; f >> w;)
      fields.push_back(w);
    std::size_t dash = 0;
    while (dash < fields.size() && fields[dash] != "-")
      ++dash;
    if (dash < 5 || dash + 3 > fields.size()) continue;
    const std::string& type = fields[dash + 1];
    if (v2 ? type != "cgroup2" : type != "cgroup") continue;
    if (!v2) {
      bool memory = false;
      std::istringstream opts(dash + 3 < fields.size() ? fields[dash + 3] : "");
      for (std::string o; std::getline(opts, o, ',');)
        memory = memory || o == "memory";
      if (!memory) continue;
    }
    return cgroup_mount{unescape(fields[3]), unescape(fields[4])};
  }
  return std::nullopt;
}

// The job's cgroup path in a hierarchy, from /proc/self/cgroup: the v2 line
// ("0::/path"), or the v1 line whose controllers include memory.
inline std::optional<std::string> own_cgroup(const std::string& self, bool v2) {
  std::istringstream in(self);
  std::string line;
  while (std::getline(in, line)) {
    const std::size_t a = line.find(':'), b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    const std::string id = line.substr(0, a), controllers = line.substr(a + 1, b - a - 1);
    if (v2) {
      if (id == "0" && controllers.empty()) return line.substr(b + 1);
      continue;
    }
    std::istringstream c(controllers);
    for (std::string n; std::getline(c, n, ',');)
      if (n == "memory") return line.substr(b + 1);
  }
  return std::nullopt;
}

// The tightest limit of the cgroup and its ancestors in one hierarchy.
inline void tightest_limit(const memory_sources& src, bool v2, memory_room& out) {
  const auto self = read_text(src.self_cgroup);
  const auto mounts = read_text(src.mountinfo);
  if (!self || !mounts) return;
  const auto path = own_cgroup(*self, v2);
  const auto mount = find_cgroup_mount(*mounts, v2);
  if (!path || !mount) return;
  std::string rel;  // the cgroup below the mount's root
  if (mount->root == "/")
    rel = *path;
  else if (path->compare(0, mount->root.size(), mount->root) == 0 &&
           (path->size() == mount->root.size() || (*path)[mount->root.size()] == '/'))
    rel = path->substr(mount->root.size());
  else
    return;  // the cgroup is not under this mount: nothing known
  const std::string top = src.root + mount->point;
  std::string dir = top + rel;
  while (dir.size() > 1 && dir.back() == '/')
    dir.pop_back();
  for (;;) {
    const auto limit_text = read_text(dir + (v2 ? "/memory.max" : "/memory.limit_in_bytes"));
    const auto usage_text = read_text(dir + (v2 ? "/memory.current" : "/memory.usage_in_bytes"));
    const auto limit = limit_text ? parse_count(*limit_text) : std::nullopt;
    // v1 says "no limit" with the largest page count it has.
    if (limit && *limit < (std::uint64_t(1) << 62) && usage_text) {
      const auto usage = parse_count(*usage_text).value_or(0);
      const auto stat = read_text(dir + "/memory.stat").value_or("");
      auto reclaimable = keyed(stat, v2 ? "inactive_file" : "total_inactive_file");
      if (!v2 && !reclaimable) reclaimable = keyed(stat, "inactive_file");
      const std::uint64_t used = usage - std::min(usage, reclaimable.value_or(0));
      const std::uint64_t room = *limit > used ? *limit - used : 0;
      if (!out.cgroup_room || room < *out.cgroup_room) {
        out.cgroup_room = room;
        out.cgroup_limit = *limit;
        out.cgroup = dir.substr(src.root.size());
      }
    }
    if (dir.size() <= top.size()) break;
    const std::size_t slash = dir.rfind('/');
    if (slash == std::string::npos || slash < top.size()) break;
    dir.resize(slash);
  }
}

}  // namespace detail

// The memory that can back shared memory here, now.
inline memory_room memory_for_shared_arrays(const memory_sources& src = {}) {
  memory_room r;
  if (const auto m = detail::read_text(src.meminfo))
    if (const auto kb = detail::keyed(*m, "MemAvailable")) r.meminfo = *kb * 1024;
  detail::tightest_limit(src, true, r);
  detail::tightest_limit(src, false, r);
  return r;
}

// Empty if `need` bytes of shared memory fit in `room`; else what to say:
// both figures (/dev/shm's free bytes, and the memory that can back them),
// and the ways out.
inline std::string memory_shortfall(std::uint64_t need, std::uint64_t shm_free,
                                    const memory_room& room) {
  const std::uint64_t have = room.available();
  if (need <= have) return {};
  auto both = [](std::uint64_t b) { return std::to_string(b) + " bytes (" + human_bytes(b) + ")"; };
  std::string s =
      "the job needs " + both(need) + " of shared memory. /dev/shm has " + both(shm_free) +
      " free, but its pages are memory, and the memory that can back them is " + both(have) + ":";
  if (room.meminfo) s += "\n  MemAvailable in /proc/meminfo is " + both(*room.meminfo);
  if (room.cgroup_room)
    s += "\n  the memory limit of cgroup " + room.cgroup + ", " + both(room.cgroup_limit) +
         ", leaves " + both(*room.cgroup_room);
  s += ".\n  Run a smaller job, free memory, or keep the arrays in file-backed mappings on disk "
       "with --scratch DIR.";
  return s;
}

}  // namespace shmarray::stack
