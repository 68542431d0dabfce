// The shmarray command: list, inspect and remove shmarray segments in
// /dev/shm. Stands on shmarray/inspect.hpp: records are read with pread and
// validated exactly as an attach validates them, nothing is ever mapped, and
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
#include <shmarray/detail/wire.hpp>
#include <shmarray/inspect.hpp>
#include <shmarray/shmarray.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

namespace sd = shmarray::detail;
using shmarray::object_entry;
using shmarray::object_status;
using shmarray::owner_status;

// An error's message without the library's own "shmarray: " prefix, which
// the command's prefix replaces.
std::string text(const std::string& what) {
  const std::string p = "shmarray: ";
  return what.compare(0, p.size(), p) == 0 ? what.substr(p.size()) : what;
}
std::string text(const std::exception& e) {
  return text(std::string(e.what()));
}

bool same_boot(const shmarray::segment_info& i) {
  return i.boot_id == sd::boot_id();
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

std::string json(const object_entry& e) {
  std::ostringstream o;
  o << "{\"name\": " << sd::json_quoted(e.name) << ", \"bytes\": " << e.bytes
    << ", \"shmarray\": " << (e.shmarray ? "true" : "false")
    << ", \"status\": " << sd::json_quoted(to_string(e.status));
  auto owner = [&] {
    o << ", \"owner\": \"" << to_string(e.owner) << "\"";
    if (e.owner == owner_status::unreadable)
      o << ", \"owner_error\": " << sd::json_quoted(text(e.owner_error));
  };
  if (e.status == object_status::ok) {
    const auto& i = e.info;
    o << ", \"dtype\": " << sd::json_quoted(i.dtype) << ", \"itemsize\": " << i.itemsize
      << ", \"shape\": [";
    for (std::size_t k = 0; k < i.shape.size(); ++k)
      o << (k ? ", " : "") << i.shape[k];
    o << "], \"order\": \"" << char(i.order) << "\", \"data_nbytes\": " << i.data_nbytes
      << ", \"owner_pid\": " << i.owner_pid << ", \"created_ns\": " << i.created_ns
      << ", \"created\": " << sd::json_quoted(time_text(i.created_ns))
      << ", \"same_boot\": " << (same_boot(i) ? "true" : "false")
      << ", \"lock\": " << (e.lock_ready ? "true" : "false") << ", \"owner_alive\": "
      << (e.owner == owner_status::alive  ? "true"
          : e.owner == owner_status::gone ? "false"
                                          : "null");
    owner();
  } else if (e.status == object_status::owner_token) {
    owner();
  } else {
    o << ", \"error\": " << sd::json_quoted(text(e.error));
  }
  o << "}";
  return o.str();
}

int cmd_ls(bool as_json, bool all) {
  const std::vector<object_entry> rows = shmarray::list_objects(all);
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
    const std::string name = sd::escaped(e.name);
    if (e.status == object_status::ok)
      std::printf("%-32s %-6s %-18s %-5c %12llu %8lld %-10s  %-20s  %s\n", name.c_str(),
                  e.info.dtype.c_str(), shape_text(e.info.shape).c_str(), char(e.info.order),
                  (unsigned long long)e.bytes, (long long)e.info.owner_pid, alive_word(e.owner),
                  time_text(e.info.created_ns).c_str(),
                  same_boot(e.info) ? "ok" : "ok (from an earlier boot)");
    else
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

// What an object that is not a readable shmarray segment is, for info and rm.
std::string not_a_segment(const object_entry& e) {
  if (e.status == object_status::no_access)
    return text(e.error) + " (it may be another user's segment)";
  if (e.shmarray || e.bytes == 0) return text(e.error);  // (an empty object: it says so)
  return "segment \"" + sd::escaped(e.name) + "\" is not a shmarray segment (its " +
         std::to_string(e.bytes) + (e.bytes == 1 ? " byte does" : " bytes do") +
         " not end in a shmarray record)";
}

int cmd_info(const std::string& name, bool as_json) {
  object_entry e;
  try {
    e = shmarray::inspect(name);
  } catch (const shmarray::error& x) {
    std::fprintf(stderr, "shmarray info: %s\n", text(x).c_str());
    return 1;
  }
  if (as_json) {
    std::cout << json(e) << "\n";
    return e.status == object_status::ok || e.status == object_status::owner_token ? 0 : 1;
  }
  if (e.status == object_status::owner_token) {
    std::printf("name:        %s\n", sd::escaped(e.name).c_str());
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
  const auto strides = shmarray::detail::packed_strides(i.shape, i.order);  // in elements
  std::string st;
  for (std::size_t k = 0; k < strides.size(); ++k)
    st += (k ? ", " : "") + std::to_string(strides[k] * std::ptrdiff_t(i.itemsize));
  std::printf("name:        %s\n", sd::escaped(e.name).c_str());
  std::printf("dtype:       %s (%zu bytes an element)\n", i.dtype.c_str(), i.itemsize);
  std::printf("shape:       %s (rank %zu)\n", shape_text(i.shape).c_str(), i.shape.size());
  std::printf("order:       %c (%s)\n", char(i.order),
              i.order == shmarray::order::row_major ? "row-major" : "column-major");
  std::printf("strides:     %s (bytes)\n", st.c_str());
  std::printf("data:        %zu bytes; segment %llu bytes\n", i.data_nbytes,
              (unsigned long long)e.bytes);
  std::printf("owner pid:   %lld%s\n", (long long)i.owner_pid,
              same_boot(i) ? "" : " (on an earlier boot)");
  const std::string unreadable = "unknown: " + text(e.owner_error);
  std::printf("owner:       %s\n",
              e.owner == owner_status::alive  ? "alive (its token is held)"
              : e.owner == owner_status::gone ? "gone (its token is free): shmarray gc removes this"
              : e.owner == owner_status::untracked ? "not tracked (kept, or made without a manager)"
                                                   : unreadable.c_str());
  std::printf("created:     %s\n", time_text(i.created_ns).c_str());
  std::printf("lock:        %s\n", e.lock_ready ? "ready" : "not yet used");
  return 0;
}

int cmd_rm(const std::vector<std::string>& names, bool force) {
  int rc = 0;
  for (const auto& n : names) {
    try {
      const object_entry e = shmarray::inspect(n);
      if (e.status == object_status::owner_token && e.owner == owner_status::alive) {
        std::fprintf(stderr,
                     "shmarray rm: %s is the owner token of a live process; not removed (without "
                     "it, gc would take that process's segments for a dead owner's)\n",
                     sd::escaped(e.name).c_str());
        rc = 1;
        continue;
      }
      const bool segment = e.shmarray || e.status == object_status::owner_token;
      if (!segment && !force) {
        std::fprintf(stderr, "shmarray rm: %s; not removed (--force removes it anyway)\n",
                     not_a_segment(e).c_str());
        rc = 1;
        continue;
      }
      const std::string path = std::string(sd::shm_dir) + e.name;
      if (::unlink(path.c_str()) != 0 && errno != ENOENT)
        sd::throw_os_error(errno, e.name, "could not be removed");
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
        const std::string name = sd::escaped(c.name);
        switch (c.what) {
          case shmarray::collected::kind::segment:
            if (!dry_run && !c.removed) return;  // removed or replaced meanwhile
            if (c.token.empty())
              std::printf("%s %s (owner %lld is gone)\n", dry_run ? "would remove" : "removed",
                          name.c_str(), (long long)c.owner_pid);
            else
              std::printf("%s %s (its owner's token %s says so, and nobody holds it)\n",
                          dry_run ? "would remove" : "removed", name.c_str(),
                          sd::escaped(c.token).c_str());
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

// ---- the watchdog (`shmarray __watchdog`, started by the library)

// The owner's token, as the helper watches it: through a descriptor of its
// own (a shared lock through the owner's would downgrade the owner's
// exclusive one), opened once the token has its name (the owner names it
// after telling us) and only if it is this user's own regular file (a name
// another user took after the owner dropped an older token is not it).
class watched_token {
 public:
  explicit watched_token(std::uint64_t id = 0) : id_(id) {}
  watched_token(const watched_token&) = delete;
  watched_token& operator=(const watched_token&) = delete;
  ~watched_token() { close(); }

  // Watches token `id` from now on (the owner's last word on it).
  void reset(std::uint64_t id) {
    close();
    id_ = id;
  }
  void try_open() {
    if (fd_ >= 0 || id_ == 0) return;
    const int fd = ::open(("/dev/shm" + sd::token_name(id_)).c_str(),
                          O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return;
    struct stat st {};
    if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == ::geteuid())
      fd_ = fd;
    else
      ::close(fd);
  }
  // Waits until no process holds the token: a shared lock taken blocking,
  // granted when the owner's exclusive lock goes. Without a descriptor
  // (the owner died before naming it), by its name: a token that is not
  // there, or not this user's, is no owner's; anything else but "dead"
  // counts as alive, for removing a live owner's segment is the one thing a
  // watchdog must never do.
  void wait_until_free() {
    if (id_ == 0) return;
    try_open();
    if (fd_ >= 0) {
      while (::flock(fd_, LOCK_SH) != 0)
        if (errno != EINTR) break;
      return;
    }
    for (;;) {
      struct stat st {};
      const std::string path = "/dev/shm" + sd::token_name(id_);
      if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != ::geteuid())
        return;
      if (sd::token_state(id_, false) == sd::owner_state::dead) return;
      ::usleep(20000);
    }
  }
  void close() {
    if (fd_ >= 0) ::close(fd_);  // (and the shared lock with it)
    fd_ = -1;
  }
  std::uint64_t id() const { return id_; }

 private:
  std::uint64_t id_ = 0;
  int fd_ = -1;
};

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

  // What owners that died with their helper left (a cgroup killed whole, as
  // systemd, Slurm and Kubernetes stop jobs), collected in the background:
  // never on the owner's path, and this helper's owner is alive meanwhile.
  // (Where no thread can be made, there is no background pass.)
  try {
    std::thread([] {
      try {
        shmarray::collect_dead(false, [](const shmarray::collected&) {});
      } catch (...) {
      }
    }).detach();
  } catch (...) {
  }

  // What the owner has registered and not unregistered, by kind, name,
  // device and inode: one name may be registered for two objects of the
  // owner's at once (a creation that failed on a name it already holds
  // unregisters only its own).
  sd::wire::live_set live;
  watched_token token;
  std::string in;         // what has come and is not parsed yet
  bool confused = false;  // bytes that are not the protocol: ignored until the end
  for (;;) {
    char buf[4096];
    const ssize_t got = ::read(3, buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;  // the owner is gone (or closed its end)
    if (confused) continue;
    in.append(buf, std::size_t(got));
    std::size_t at = 0;
    for (sd::wire::record r;;) {
      const std::size_t n = sd::wire::parse(in.data() + at, in.size() - at, r);
      if (n == sd::wire::incomplete) break;
      if (n == sd::wire::invalid) {
        confused = true;
        break;
      }
      at += n;
      if (r.op == 'T') {
        if (r.id != token.id()) token.reset(r.id);
      } else {
        live.apply(r);
        if (r.op == 'R') token.try_open();  // named by now: tokens are named before segments
      }
    }
    in.erase(0, at);
  }
  ::close(3);
  // The owner has gone. Its token is released when the last process
  // holding it is: wait for that, then clean up.
  token.wait_until_free();
  for (const auto& [key, r] : live) {
    const std::string path = shmarray::detail::object_path(r.kind, r.name);
    // (the owner's own, moments after its death: device and inode do where
    // the file system keeps no birth time)
    if (!path.empty()) sd::unlink_if_same(path, r.object, true);
  }
  token.close();
  if (token.id()) sd::remove_token_if_dead(token.id());
  ::_exit(0);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "__watchdog") == 0) watchdog_main();
  if (argc >= 2 && argv[1][0] != '-') {
    const std::string cmd = argv[1];
    if (cmd != "ls" && cmd != "info" && cmd != "gc" && cmd != "rm") {
      std::fprintf(stderr,
                   "shmarray: unknown command \"%s\" (the commands are ls, info, rm and gc; "
                   "shmarray --help says more)\n",
                   sd::escaped(cmd).c_str());
      return 2;
    }
  }
  CLI::App app{"shmarray: list, inspect and remove shmarray segments in /dev/shm", "shmarray"};
  app.set_version_flag("--version", std::string("shmarray ") + SHMARRAY_VERSION);
  app.require_subcommand(1);

  bool as_json = false, all = false, force = false;
  std::string name;
  std::vector<std::string> names;

  auto* ls = app.add_subcommand("ls", "list the shmarray segments in /dev/shm");
  ls->add_flag("--json", as_json, "print a JSON array, one object per segment");
  ls->add_flag("-a,--all", all,
               "also list objects that are not shmarray segments, and the owner tokens");

  auto* info = app.add_subcommand("info", "print the metadata of one segment");
  info->add_option("NAME", name,
                   "the segment's name, with or without its leading / (any bytes: quote a "
                   "name ls shows escaped as $'...')")
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
  if (ls->parsed()) return cmd_ls(as_json, all);
  if (info->parsed()) return cmd_info(name, as_json);
  if (gc->parsed()) return cmd_gc(dry_run);
  return cmd_rm(names, force);
}
