// The shmarray command: list, inspect and remove shmarray segments in
// /dev/shm. Reads records exactly as an attach does (the same validation),
// read-only, and never touches what is not a shmarray segment unless told to.
#include <dirent.h>
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
#include <optional>
#include <shmarray/detail/gc.hpp>
#include <shmarray/shmarray.hpp>
#include <sstream>
#include <string>
#include <typeinfo>
#include <unordered_map>
#include <vector>

namespace {

namespace sd = shmarray::detail;

// What one object in /dev/shm is.
struct entry {
  std::string name;         // "/name"
  std::uint64_t bytes = 0;  // the object's size
  bool shmarray = false;    // ends in a record with the magic
  std::string status = "ok";
  std::string error;  // the typed error's message, when status is not ok
  shmarray::segment_info info;
  std::uint32_t lock_state = 0;
  sd::owner_state owner = sd::owner_state::unknown;
  dev_t device = 0;
  ino_t inode = 0;
};

// An error's message without the library's own "shmarray: " prefix, which
// the command's prefix replaces.
std::string text(const std::exception& e) {
  std::string t = e.what();
  const std::string p = "shmarray: ";
  return t.compare(0, p.size(), p) == 0 ? t.substr(p.size()) : t;
}

// The error's kind as a word for `status`.
std::string status_of(const shmarray::error& e) {
  if (dynamic_cast<const shmarray::not_ready*>(&e)) return "being created";
  if (dynamic_cast<const shmarray::version_mismatch*>(&e)) return "unknown version";
  if (dynamic_cast<const shmarray::truncated_segment*>(&e)) return "truncated";
  if (dynamic_cast<const shmarray::corrupt_metadata*>(&e)) return "corrupt";
  if (dynamic_cast<const shmarray::access_denied*>(&e)) return "no access";
  if (dynamic_cast<const shmarray::not_found*>(&e)) return "gone";
  return "unreadable";
}

bool same_boot(const shmarray::segment_info& i) {
  return i.boot_id == sd::boot_id();
}

// Opens `name` read-only and reads its record as an attach would. Throws
// not_found (and invalid_name) only; every other problem is in the entry.
entry inspect(const std::string& name) {
  entry e;
  const shmarray::posix_shm backing(name);
  e.name = backing.name();
  try {
    shmarray::segment seg(shmarray::open_only, backing, shmarray::access_mode::read_only);
    e.bytes = seg.size();
    e.device = seg.device();
    e.inode = seg.inode();
    const std::byte* rec = sd::record_of(seg.data(), seg.size());
    e.shmarray = rec && sd::has_magic(rec);
    e.info = sd::read_record(seg.data(), seg.size(), e.name);
    e.lock_state = sd::load_acquire(rec, shmarray::format::off_lock_state);
    e.owner = sd::owner_of(e.info);
  } catch (const shmarray::not_found&) {
    throw;
  } catch (const shmarray::error& x) {
    e.status = status_of(x);
    e.error = text(x);
  }
  return e;
}

const char* owner_word(sd::owner_state o) {
  return o == sd::owner_state::alive ? "yes" : o == sd::owner_state::dead ? "no" : "?";
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

std::string json_string(const std::string& s) {
  std::string o = "\"";
  for (const char c : s) {
    switch (c) {
      case '"':
        o += "\\\"";
        break;
      case '\\':
        o += "\\\\";
        break;
      case '\n':
        o += "\\n";
        break;
      case '\t':
        o += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          o += buf;
        } else {
          o += c;
        }
    }
  }
  return o + "\"";
}

std::string json(const entry& e) {
  std::ostringstream o;
  o << "{\"name\": " << json_string(e.name) << ", \"bytes\": " << e.bytes
    << ", \"shmarray\": " << (e.shmarray ? "true" : "false")
    << ", \"status\": " << json_string(e.status);
  if (e.status == "ok") {
    const auto& i = e.info;
    o << ", \"dtype\": " << json_string(i.dtype) << ", \"itemsize\": " << i.itemsize
      << ", \"shape\": [";
    for (std::size_t k = 0; k < i.shape.size(); ++k)
      o << (k ? ", " : "") << i.shape[k];
    o << "], \"order\": \"" << char(i.order) << "\", \"data_nbytes\": " << i.data_nbytes
      << ", \"owner_pid\": " << i.owner_pid << ", \"created_ns\": " << i.created_ns
      << ", \"created\": " << json_string(time_text(i.created_ns))
      << ", \"same_boot\": " << (same_boot(i) ? "true" : "false")
      << ", \"lock\": " << (e.lock_state == shmarray::format::lock_ready ? "true" : "false")
      << ", \"owner_alive\": "
      << (e.owner == sd::owner_state::alive  ? "true"
          : e.owner == sd::owner_state::dead ? "false"
                                             : "null");
  } else {
    o << ", \"error\": " << json_string(e.error);
  }
  o << "}";
  return o.str();
}

int cmd_ls(bool as_json, bool all) {
  std::vector<entry> rows;
  for (const auto& n : sd::shm_object_names()) {
    try {
      entry e = inspect(n);
      if (e.shmarray || all) rows.push_back(std::move(e));
    } catch (const shmarray::error&) {  // removed meanwhile, or a name shm_open refuses
    }
  }
  if (as_json) {
    std::cout << "[";
    for (std::size_t k = 0; k < rows.size(); ++k)
      std::cout << (k ? ",\n " : "") << json(rows[k]);
    std::cout << "]\n";
    return 0;
  }
  std::printf("%-32s %-6s %-18s %-5s %12s %8s %-5s  %-20s  %s\n", "NAME", "DTYPE", "SHAPE", "ORDER",
              "BYTES", "OWNER", "ALIVE", "CREATED", "STATUS");
  for (const auto& e : rows) {
    if (e.status == "ok")
      std::printf("%-32s %-6s %-18s %-5c %12llu %8lld %-5s  %-20s  %s\n", e.name.c_str(),
                  e.info.dtype.c_str(), shape_text(e.info.shape).c_str(), char(e.info.order),
                  (unsigned long long)e.bytes, (long long)e.info.owner_pid, owner_word(e.owner),
                  time_text(e.info.created_ns).c_str(),
                  same_boot(e.info) ? "ok" : "ok (from an earlier boot)");
    else
      std::printf("%-32s %-6s %-18s %-5s %12llu %8s %-5s  %-20s  %s\n", e.name.c_str(), "-", "-",
                  "-", (unsigned long long)e.bytes, "-", "-", "-",
                  e.shmarray ? e.status.c_str() : "not a shmarray segment");
  }
  return 0;
}

int cmd_info(const std::string& name, bool as_json) {
  entry e;
  try {
    e = inspect(name);
  } catch (const shmarray::error& x) {
    std::fprintf(stderr, "shmarray info: %s\n", text(x).c_str());
    return 1;
  }
  if (as_json) {
    std::cout << json(e) << "\n";
    return e.status == "ok" ? 0 : 1;
  }
  if (e.status != "ok") {
    std::fprintf(
        stderr, "shmarray info: %s\n",
        e.shmarray ? e.error.c_str() : (e.name + " is not a shmarray segment (no record)").c_str());
    return 1;
  }
  const auto& i = e.info;
  const auto strides = shmarray::detail::packed_strides(i.shape, i.order);  // in elements
  std::string st;
  for (std::size_t k = 0; k < strides.size(); ++k)
    st += (k ? ", " : "") + std::to_string(strides[k] * std::ptrdiff_t(i.itemsize));
  std::printf("name:        %s\n", e.name.c_str());
  std::printf("dtype:       %s (%zu bytes an element)\n", i.dtype.c_str(), i.itemsize);
  std::printf("shape:       %s (rank %zu)\n", shape_text(i.shape).c_str(), i.shape.size());
  std::printf("order:       %c (%s)\n", char(i.order),
              i.order == shmarray::order::row_major ? "row-major" : "column-major");
  std::printf("strides:     %s (bytes)\n", st.c_str());
  std::printf("data:        %zu bytes; segment %llu bytes\n", i.data_nbytes,
              (unsigned long long)e.bytes);
  std::printf("owner pid:   %lld%s\n", (long long)i.owner_pid,
              same_boot(i) ? "" : " (on an earlier boot)");
  std::printf("owner:       %s\n", e.owner == sd::owner_state::alive ? "alive (its token is held)"
                                   : e.owner == sd::owner_state::dead
                                       ? "gone (its token is free): shmarray gc removes this"
                                       : "not tracked (kept, or made without a manager)");
  std::printf("created:     %s\n", time_text(i.created_ns).c_str());
  std::printf("lock:        %s\n",
              e.lock_state == shmarray::format::lock_ready ? "ready" : "not yet used");
  return 0;
}

int cmd_rm(const std::vector<std::string>& names, bool force) {
  int rc = 0;
  for (const auto& n : names) {
    try {
      const entry e = inspect(n);
      if (!e.shmarray && !force) {
        std::fprintf(stderr,
                     "shmarray rm: %s is not a shmarray segment; not removed (--force removes "
                     "it anyway)\n",
                     e.name.c_str());
        rc = 1;
        continue;
      }
      shmarray::posix_shm(n).remove();
    } catch (const shmarray::error& x) {
      std::fprintf(stderr, "shmarray rm: %s\n", text(x).c_str());
      rc = 1;
    }
  }
  return rc;
}

// Removes the segments whose owner is gone, then the tokens nobody holds.
int cmd_gc(bool dry_run) {
  sd::collect_dead(dry_run, [&](const sd::dead_segment& d, bool removed) {
    if (dry_run || removed)
      std::printf("%s %s (owner %lld is gone)\n", dry_run ? "would remove" : "removed",
                  d.name.c_str(), (long long)d.owner_pid);
  });
  return 0;
}

// ---- the watchdog (`shmarray __watchdog`, started by the library)

struct registered {
  char kind;
  std::string name;
  dev_t dev;
  ino_t ino;
};

// Reads exactly n bytes; false at end-of-file (the owner is gone).
bool read_exact(int fd, void* out, std::size_t n) {
  auto* p = static_cast<char*>(out);
  while (n) {
    const ssize_t got = ::read(fd, p, n);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    p += got;
    n -= std::size_t(got);
  }
  return true;
}

bool read_u64(int fd, std::uint64_t& v) {
  unsigned char b[8];
  if (!read_exact(fd, b, 8)) return false;
  v = 0;
  for (int i = 7; i >= 0; --i)
    v = v << 8 | b[i];
  return true;
}

bool read_name(int fd, std::string& name) {
  unsigned char len[2];
  if (!read_exact(fd, len, 2)) return false;
  name.resize(std::size_t(len[0]) | std::size_t(len[1]) << 8);
  return name.empty() || read_exact(fd, name.data(), name.size());
}

// Unlinks a registered object if its name still names it.
void unlink_if_same(const registered& r) {
  struct stat st {};
  const std::string path = r.kind == 's' ? "/dev/shm" + r.name : r.name;
  if (::stat(path.c_str(), &st) != 0 || st.st_dev != r.dev || st.st_ino != r.ino) return;
  if (r.kind == 's')
    ::shm_unlink(r.name.c_str());
  else
    ::unlink(r.name.c_str());
}

// The helper's life: fd 3 is the owner's socket, fd 4 where it says it runs.
[[noreturn]] void watchdog_main() {
  // Everything but the two descriptors it was given goes (a descriptor of
  // the owner's kept open here would keep someone's pipe from its EOF).
#ifdef SYS_close_range
  if (::syscall(SYS_close_range, 5u, ~0u, 0u) != 0)
#endif
    for (int fd = 5; fd < 1024; ++fd)
      ::close(fd);
  for (int sig : {SIGINT, SIGHUP, SIGTERM, SIGPIPE, SIGQUIT})
    std::signal(sig, SIG_IGN);   // a Ctrl-C to the terminal's group must not stop the cleanup
  const pid_t child = ::fork();  // the intermediate exits, so the helper is nobody's child
  if (child != 0) ::_exit(child < 0 ? 1 : 0);
  ::setsid();
  if (::chdir("/") != 0) {
  }
  const pid_t self = ::getpid();
  (void)!::write(4, &self, sizeof self);
  ::close(4);

  // By kind, name, device and inode: one name may be registered for two
  // objects of the owner's at once (a creation that failed on a name it
  // already holds unregisters only its own).
  std::unordered_map<std::string, registered> live;
  auto key = [](char kind, const std::string& name, std::uint64_t dev, std::uint64_t ino) {
    return kind + std::to_string(dev) + ':' + std::to_string(ino) + ':' + name;
  };
  std::vector<std::uint64_t> tokens;
  for (;;) {
    char op = 0;
    if (!read_exact(3, &op, 1)) break;
    if (op == 'T') {
      std::uint64_t id = 0;
      if (!read_u64(3, id)) break;
      tokens.push_back(id);
    } else if (op == 'R') {
      registered r{};
      std::uint64_t dev = 0, ino = 0;
      if (!read_exact(3, &r.kind, 1) || !read_u64(3, dev) || !read_u64(3, ino) ||
          !read_name(3, r.name))
        break;
      r.dev = dev_t(dev);
      r.ino = ino_t(ino);
      live[key(r.kind, r.name, dev, ino)] = r;
    } else if (op == 'U') {
      char kind = 0;
      std::string name;
      std::uint64_t dev = 0, ino = 0;
      if (!read_exact(3, &kind, 1) || !read_u64(3, dev) || !read_u64(3, ino) || !read_name(3, name))
        break;
      live.erase(key(kind, name, dev, ino));
    } else {
      break;  // not the protocol: the end (closing below makes the owner's sends fail)
    }
  }
  ::close(3);
  // The owner has gone (or closed its end). Its token is released when the
  // last process holding it is: wait for that, then clean up.
  // (Anything but "dead" counts as alive: removing a live owner's segment
  // is the one thing a watchdog must never do.)
  for (const auto id : tokens)
    while (sd::token_state(id, false) != sd::owner_state::dead)
      ::usleep(20000);
  for (const auto& [key, r] : live)
    unlink_if_same(r);
  for (const auto id : tokens)
    sd::remove_token_if_dead(id);
  ::_exit(0);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "__watchdog") == 0) watchdog_main();
  CLI::App app{"shmarray: list, inspect and remove shmarray segments in /dev/shm", "shmarray"};
  app.set_version_flag("--version", std::string("shmarray ") + SHMARRAY_VERSION);
  app.require_subcommand(1);

  bool as_json = false, all = false, force = false;
  std::string name;
  std::vector<std::string> names;

  auto* ls = app.add_subcommand("ls", "list the shmarray segments in /dev/shm");
  ls->add_flag("--json", as_json, "print a JSON array, one object per segment");
  ls->add_flag("-a,--all", all, "also list objects that are not shmarray segments");

  auto* info = app.add_subcommand("info", "print the metadata of one segment");
  info->add_option("NAME", name, "the segment's name, with or without its leading /")->required();
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
  if (ls->parsed()) return cmd_ls(as_json, all);
  if (info->parsed()) return cmd_info(name, as_json);
  if (gc->parsed()) return cmd_gc(dry_run);
  return cmd_rm(names, force);
}
