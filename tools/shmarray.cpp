// The shmarray command: list, inspect and remove shmarray segments (arrays
// and rings of frames) in /dev/shm. Stands on shmarray/inspect.hpp: records
// are read with pread and validated exactly as an attach validates them (a
// ring's head and reader table with pread too), nothing is ever mapped, and
// every name it prints is escaped, so that no object in /dev/shm, whoever
// made it, can crash it or forge its output.
#include <dirent.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <iostream>
#include <map>
#include <optional>
#include <shmarray/detail/owner/helper_daemon.hpp>
#include <shmarray/inspect.hpp>
#include <shmarray/shmarray.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

using shmarray::json_string;
using shmarray::object_entry;
using shmarray::object_status;
using shmarray::owner_status;
using shmarray::printable_name;

// An error's message without the library's own "shmarray: " prefix, which
// the command's prefix replaces.
std::string text(const std::string& what) {
  const std::string p = "shmarray: ";
  return what.compare(0, p.size(), p) == 0 ? what.substr(p.size()) : what;
}
std::string text(const std::exception& e) {
  return text(std::string(e.what()));
}

const char* alive_word(owner_status o) {
  switch (o) {
    case owner_status::alive:
      return "yes";
    case owner_status::gone:
      return "no";
    case owner_status::untracked:
      return "?";
    case owner_status::unreadable:
      break;
  }
  return "unreadable";
}

std::string shape_text(const shmarray::shape_type& s) {
  if (s.empty()) return "()";
  std::string t;
  for (std::size_t i = 0; i < s.size(); ++i)
    t += (i ? "x" : "") + std::to_string(s[i]);
  return t;
}

std::string time_text(std::uint64_t ns) {
  const std::time_t t = std::time_t(ns / 1000000000u);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

const char* owner_alive_json(owner_status o) {
  return o == owner_status::alive ? "true" : o == owner_status::gone ? "false" : "null";
}

// A ring's fields past its frame's dtype, shape and order, in JSON.
void ring_json(std::ostream& o, const object_entry& e) {
  const auto& r = e.ring;
  o << ", \"frame_nbytes\": " << e.info.data_nbytes << ", \"slots\": " << r.slots
    << ", \"slot_stride\": " << r.slot_stride << ", \"policy\": \"" << to_string(r.policy)
    << "\", \"head\": " << r.head << ", \"readers\": " << r.readers
    << ", \"readers_gone\": " << r.readers_gone << ", \"max_readers\": " << r.max_readers
    << ", \"reader_entries\": [";
  for (std::size_t k = 0; k < r.attached.size(); ++k) {
    const auto& x = r.attached[k];
    o << (k ? ", " : "") << "{\"pid\": " << x.pid << ", \"group\": ";
    if (x.member)
      o << json_string(x.group) << ", \"claim\": " << x.claim;
    else
      o << "null, \"done\": " << x.done;
    o << ", \"missed\": " << x.missed << ", \"alive\": " << (x.alive ? "true" : "false") << "}";
  }
  o << "], \"groups\": [";
  for (std::size_t k = 0; k < r.groups.size(); ++k) {
    const auto& g = r.groups[k];
    o << (k ? ", " : "") << "{\"name\": " << json_string(g.name) << ", \"members\": " << g.members
      << ", \"next\": " << g.next << ", \"missed\": " << g.missed << "}";
  }
  o << "], \"max_groups\": " << r.max_groups << ", \"producer\": \"" << to_string(r.producer)
    << "\", \"producer_alive\": "
    << (r.producer == shmarray::producer_status::alive ? "true" : "false")
    << ", \"writer_pid\": " << r.writer_pid;
}

std::string json(const object_entry& e) {
  const bool ring = e.kind == shmarray::segment_kind::ring;
  std::ostringstream o;
  o << "{\"name\": " << json_string(e.name) << ", \"bytes\": " << e.bytes
    << ", \"shmarray\": " << (e.shmarray ? "true" : "false")
    << ", \"status\": " << json_string(to_string(e.status));
  if (ring) o << ", \"kind\": \"ring\"";  // (an array's row has no kind, as before rings)
  auto owner = [&] {
    o << ", \"owner\": \"" << to_string(e.owner) << "\"";
    if (e.owner == owner_status::unreadable)
      o << ", \"owner_error\": " << json_string(text(e.owner_error));
  };
  if (e.status == object_status::ok) {
    const auto& i = e.info;
    o << ", \"dtype\": " << json_string(i.dtype) << ", \"itemsize\": " << i.itemsize
      << ", \"shape\": [";
    for (std::size_t k = 0; k < i.shape.size(); ++k)
      o << (k ? ", " : "") << i.shape[k];
    o << "], \"order\": \"" << char(i.order) << "\"";
    if (ring)
      ring_json(o, e);
    else
      o << ", \"data_nbytes\": " << i.data_nbytes;
    o << ", \"owner_pid\": " << i.owner_pid << ", \"created_ns\": " << i.created_ns
      << ", \"created\": " << json_string(time_text(i.created_ns))
      << ", \"same_boot\": " << (e.same_boot ? "true" : "false");
    if (!ring) o << ", \"lock\": " << (e.lock_ready ? "true" : "false");
    o << ", \"owner_alive\": " << owner_alive_json(e.owner);
    owner();
  } else if (e.status == object_status::owner_token) {
    owner();
  } else {
    o << ", \"error\": " << json_string(text(e.error));
  }
  o << "}";
  return o.str();
}

std::string plural(std::uint64_t n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

// What ls says of a ring after its status: its slots, policy, head,
// readers, groups and producer.
std::string ring_text(const shmarray::ring_status& r) {
  std::string readers = plural(r.readers, "reader", "readers");
  if (r.readers_gone) readers += " (" + std::to_string(r.readers_gone) + " gone)";
  return "ring: " + plural(r.slots, "slot", "slots") + ", " + to_string(r.policy) + ", head " +
         std::to_string(r.head) + ", " + readers + ", " +
         plural(r.groups.size(), "group", "groups") + ", producer " + to_string(r.producer);
}

int cmd_ls(bool as_json, bool all, const std::string& directory) {
  std::vector<object_entry> rows;
  try {
    rows =
        directory.empty() ? shmarray::list_objects(all) : shmarray::list_objects_in(directory, all);
  } catch (const shmarray::error& x) {
    std::fprintf(stderr, "shmarray ls: %s\n", text(x).c_str());
    return 1;
  }
  if (as_json) {
    std::cout << "[";
    for (std::size_t k = 0; k < rows.size(); ++k)
      std::cout << (k ? ",\n " : "") << json(rows[k]);
    std::cout << "]\n";
    return 0;
  }
  std::printf("%-32s %-6s %-18s %-5s %12s %8s %-10s  %-20s  %s\n", "NAME", "DTYPE", "SHAPE",
              "ORDER", "BYTES", "OWNER", "ALIVE", "CREATED", "STATUS");
  for (const auto& e : rows) {
    const std::string name = printable_name(e.name);
    if (e.status == object_status::ok) {
      std::string status = e.same_boot ? "ok" : "ok (from an earlier boot)";
      if (e.kind == shmarray::segment_kind::ring) status += "; " + ring_text(e.ring);
      std::printf("%-32s %-6s %-18s %-5c %12llu %8lld %-10s  %-20s  %s\n", name.c_str(),
                  e.info.dtype.c_str(), shape_text(e.info.shape).c_str(), char(e.info.order),
                  (unsigned long long)e.bytes, (long long)e.info.owner_pid, alive_word(e.owner),
                  time_text(e.info.created_ns).c_str(), status.c_str());
    } else
      std::printf("%-32s %-6s %-18s %-5s %12llu %8s %-10s  %-20s  %s\n", name.c_str(), "-", "-",
                  "-", (unsigned long long)e.bytes, "-",
                  e.status == object_status::owner_token ? alive_word(e.owner) : "-", "-",
                  e.shmarray || e.status == object_status::no_access ||
                          e.status == object_status::owner_token
                      ? to_string(e.status)
                      : "not a shmarray segment");
  }
  return 0;
}

// A NAME with a '/' after its first byte is no name in /dev/shm: a file's path.
bool is_path(const std::string& name) {
  return name.find('/', 1) != std::string::npos;
}

// What an object that is not a readable shmarray segment is, for info and rm.
std::string not_a_segment(const object_entry& e) {
  if (e.status == object_status::no_access)
    return text(e.error) + " (it may be another user's segment)";
  if (e.shmarray || e.bytes == 0) return text(e.error);  // (an empty object: it says so)
  return "segment \"" + printable_name(e.name) + "\" is not a shmarray segment (its " +
         std::to_string(e.bytes) + (e.bytes == 1 ? " byte does" : " bytes do") +
         " not end in a shmarray record)";
}

// What info says of a ring between its frame's order and its owner.
void ring_info_text(const object_entry& e) {
  const auto& r = e.ring;
  std::printf("frame:       %zu bytes, in slots %llu bytes apart; segment %llu bytes\n",
              e.info.data_nbytes, (unsigned long long)r.slot_stride, (unsigned long long)e.bytes);
  std::printf("slots:       %llu\n", (unsigned long long)r.slots);
  std::printf("policy:      %s\n", r.policy == shmarray::ring_policy::block
                                       ? "block (the writer waits for the slowest reader)"
                                       : "overwrite (the writer never waits; a reader that "
                                         "falls behind skips frames)");
  std::printf("head:        %llu (the newest frame published; 0: none yet)\n",
              (unsigned long long)r.head);
  std::printf("readers:     %zu attached (of %llu%s)\n", r.readers,
              (unsigned long long)r.max_readers,
              r.readers_gone ? ("; " + std::to_string(r.readers_gone) + " gone").c_str() : "");
  for (const auto& x : r.attached)
    std::printf("reader:      pid %lld (%s %llu; missed %llu; %s)\n", (long long)x.pid,
                x.member ? ("of group " + printable_name(x.group) + ": claimed").c_str()
                         : "of its own: done to",
                (unsigned long long)(x.member ? x.claim : x.done), (unsigned long long)x.missed,
                x.alive ? "alive" : "gone: its liveness lock is free");
  std::printf("groups:      %zu (of %llu)\n", r.groups.size(), (unsigned long long)r.max_groups);
  for (const auto& g : r.groups)
    std::printf("group:       %s (%s; last claimed %llu; missed %llu)\n",
                printable_name(g.name).c_str(), plural(g.members, "member", "members").c_str(),
                (unsigned long long)g.next, (unsigned long long)g.missed);
  std::string producer = "gone (its liveness lock is free: no more frames)";
  if (r.producer == shmarray::producer_status::alive)
    producer = "alive (writer pid " + std::to_string(r.writer_pid) + ": its liveness lock is held)";
  else if (r.producer == shmarray::producer_status::closed)
    producer = "closed (no more frames)";
  std::printf("producer:    %s\n", producer.c_str());
}

int cmd_info(const std::string& name, bool as_json) {
  object_entry e;
  try {
    e = is_path(name) ? shmarray::inspect_file(name) : shmarray::inspect(name);
  } catch (const shmarray::error& x) {
    std::fprintf(stderr, "shmarray info: %s\n", text(x).c_str());
    return 1;
  }
  if (as_json) {
    std::cout << json(e) << "\n";
    return e.status == object_status::ok || e.status == object_status::owner_token ? 0 : 1;
  }
  if (e.status == object_status::owner_token) {
    std::printf("name:        %s\n", printable_name(e.name).c_str());
    std::printf("owner token: of a process that is %s\n",
                e.owner == owner_status::alive  ? "alive (its lock is held)"
                : e.owner == owner_status::gone ? "gone (nobody holds it: shmarray gc removes it)"
                                                : text(e.owner_error).c_str());
    return 0;
  }
  if (e.status != object_status::ok) {
    std::fprintf(stderr, "shmarray info: %s\n", not_a_segment(e).c_str());
    return 1;
  }
  const auto& i = e.info;
  const bool ring = e.kind == shmarray::segment_kind::ring;
  const auto strides = shmarray::byte_strides(i);
  std::string st;
  for (std::size_t k = 0; k < strides.size(); ++k)
    st += (k ? ", " : "") + std::to_string(strides[k]);
  std::printf("name:        %s\n", printable_name(e.name).c_str());
  if (ring) std::printf("kind:        ring of frames (format version 2)\n");
  std::printf("dtype:       %s (%zu bytes an element)\n", i.dtype.c_str(), i.itemsize);
  std::printf("%s%s (rank %zu)\n",
              ring ? "frame shape: " : "shape:       ", shape_text(i.shape).c_str(),
              i.shape.size());
  std::printf("order:       %c (%s)\n", char(i.order),
              i.order == shmarray::order::row_major ? "row-major" : "column-major");
  std::printf("strides:     %s (bytes%s)\n", st.c_str(), ring ? ", in a frame" : "");
  if (ring)
    ring_info_text(e);
  else
    std::printf("data:        %zu bytes; segment %llu bytes\n", i.data_nbytes,
                (unsigned long long)e.bytes);
  std::printf("owner pid:   %lld%s\n", (long long)i.owner_pid,
              e.same_boot ? "" : " (on an earlier boot)");
  const std::string unreadable = "unknown: " + text(e.owner_error);
  std::printf("owner:       %s\n",
              e.owner == owner_status::alive  ? "alive (its token is held)"
              : e.owner == owner_status::gone ? "gone (its token is free): shmarray gc removes this"
              : e.owner == owner_status::untracked ? "not tracked (kept, or made without a manager)"
                                                   : unreadable.c_str());
  std::printf("created:     %s\n", time_text(i.created_ns).c_str());
  if (!ring) std::printf("lock:        %s\n", e.lock_ready ? "ready" : "not yet used");
  return 0;
}

int cmd_rm(const std::vector<std::string>& names, bool force) {
  int rc = 0;
  for (const auto& n : names) {
    try {
      const object_entry e = is_path(n) ? shmarray::inspect_file(n) : shmarray::inspect(n);
      const bool segment = e.shmarray || e.status == object_status::owner_token;
      if (!segment && !force) {
        std::fprintf(stderr, "shmarray rm: %s; not removed (--force removes it anyway)\n",
                     not_a_segment(e).c_str());
        rc = 1;
        continue;
      }
      shmarray::remove_object(e);  // (refuses a live owner's token)
    } catch (const shmarray::error& x) {
      std::fprintf(stderr, "shmarray rm: %s\n", text(x).c_str());
      rc = 1;
    }
  }
  return rc;
}

// Removes the segments whose owner is gone, then the tokens nobody holds,
// saying what it did, and that there was nothing to do when there was not.
int cmd_gc(bool dry_run) {
  int said = 0;
  shmarray::collect_dead(
      dry_run,
      [&](const shmarray::collected& c) {
        const std::string name = printable_name(c.name);
        switch (c.what) {
          case shmarray::collected::kind::segment:
            if (!dry_run && !c.removed) return;  // removed or replaced meanwhile
            if (c.token.empty())
              std::printf("%s %s (owner %lld is gone)\n", dry_run ? "would remove" : "removed",
                          name.c_str(), (long long)c.owner_pid);
            else
              std::printf("%s %s (its owner's token %s says so, and nobody holds it)\n",
                          dry_run ? "would remove" : "removed", name.c_str(),
                          printable_name(c.token).c_str());
            break;
          case shmarray::collected::kind::token:
            std::printf("%s owner token %s (nobody holds it)\n",
                        dry_run ? "would remove" : "removed", name.c_str());
            break;
          case shmarray::collected::kind::skipped:
            std::printf("left %s alone: %s\n", name.c_str(), text(c.why).c_str());
            break;
        }
        ++said;
      },
      true);  // root collects other users' journals too, as each user
  if (!said) std::printf("%s\n", dry_run ? "nothing would be removed" : "nothing to remove");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "__watchdog") == 0)
    shmarray::detail::owner::run_helper();  // the watchdog helper, as Python starts it
  if (argc == 2 && std::strcmp(argv[1], "__watchdog-batched") == 0)
    shmarray::detail::owner::run_helper(true);  // as the C++ library starts it
  if (argc >= 2 && argv[1][0] != '-') {
    const std::string cmd = argv[1];
    if (cmd != "ls" && cmd != "info" && cmd != "gc" && cmd != "rm") {
      std::fprintf(stderr,
                   "shmarray: unknown command \"%s\" (the commands are ls, info, rm and gc; "
                   "shmarray --help says more)\n",
                   printable_name(cmd).c_str());
      return 2;
    }
  }
  CLI::App app{"shmarray: list, inspect and remove shmarray segments in /dev/shm", "shmarray"};
  app.set_version_flag("--version", std::string("shmarray ") + SHMARRAY_VERSION);
  app.require_subcommand(1);

  bool as_json = false, all = false, force = false;
  std::string name;
  std::vector<std::string> names;

  std::string directory;
  auto* ls = app.add_subcommand("ls", "list the shmarray segments in /dev/shm (or in DIR)");
  ls->add_option("DIR", directory,
                 "a directory of file backings to list instead of /dev/shm (its files are "
                 "named by their paths)");
  ls->add_flag("--json", as_json, "print a JSON array, one object per segment");
  ls->add_flag("-a,--all", all,
               "also list objects that are not shmarray segments, and the owner tokens");

  auto* info = app.add_subcommand("info", "print the metadata of one segment");
  info->add_option("NAME", name,
                   "the segment's name, with or without its leading / (any bytes: quote a "
                   "name ls shows escaped as $'...'), or the path of a file backing (a NAME "
                   "with a / after its first character: ./x.shm, /data/x.shm)")
      ->required();
  info->add_flag("--json", as_json, "print a JSON object");

  bool dry_run = false;
  auto* gc = app.add_subcommand("gc", "remove the segments whose owner process is gone");
  gc->add_flag("-n,--dry-run", dry_run, "say what would be removed, remove nothing");

  auto* rm = app.add_subcommand("rm", "remove segments (mappings that exist stay valid)");
  rm->add_option("NAME", names, "the segments' names")->required();
  rm->add_flag("-f,--force", force, "remove objects that are not shmarray segments too");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;  // a usage error, as Unix commands say it
  }
  if (ls->parsed()) return cmd_ls(as_json, all, directory);
  if (info->parsed()) return cmd_info(name, as_json);
  if (gc->parsed()) return cmd_gc(dry_run);
  return cmd_rm(names, force);
}
