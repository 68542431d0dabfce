// The public inspection API (shmarray/inspect.hpp): list, inspect, collect
// and remove, as the shmarray command and Python's list()/info() use them.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <shmarray/shmarray.hpp>
#include <string>
#include <vector>

#include "ring_support.hpp"
#include "support.hpp"

using namespace shmarray;

namespace {

const object_entry* find(const std::vector<object_entry>& rows, const std::string& name) {
  const auto it =
      std::find_if(rows.begin(), rows.end(), [&](const object_entry& e) { return e.name == name; });
  return it == rows.end() ? nullptr : &*it;
}

}  // namespace

TEST_CASE("list_objects and inspect say what a live owner's segment holds") {
  test::names names;
  manager m(names.options());
  auto a = m.from_shape<std::int16_t>({3, 4}, test::fortran());
  const std::vector<object_entry> rows = list_objects();
  const object_entry* row = find(rows, a.name());
  REQUIRE(row != nullptr);
  CHECK(row->status == object_status::ok);
  CHECK(row->shmarray);
  CHECK(row->owner == owner_status::alive);
  CHECK(row->same_boot);
  CHECK(row->info.dtype == "<i2");
  CHECK(row->info.shape == shape_type{3, 4});
  CHECK(row->info.owner_pid == ::getpid());
  CHECK(byte_strides(row->info) == std::vector<std::ptrdiff_t>{2, 6});

  const object_entry e = inspect(a.name().substr(1));  // with or without its '/'
  CHECK(e.name == a.name());
  CHECK(e.status == object_status::ok);
  CHECK(e.owner == owner_status::alive);
  CHECK(std::string(to_string(e.owner)) == "alive");
  CHECK(std::string(to_string(e.status)) == "ok");
  // The owner tokens are listed only with `all`.
  CHECK(std::none_of(rows.begin(), rows.end(),
                     [](const object_entry& r) { return r.status == object_status::owner_token; }));
  const auto every = list_objects(true);
  CHECK(std::any_of(every.begin(), every.end(), [](const object_entry& r) {
    return r.status == object_status::owner_token && r.owner == owner_status::alive;
  }));
}

TEST_CASE("inspect throws not_found for a missing name and invalid_name for one that cannot be") {
  test::names names;
  CHECK_THROWS_AS(inspect(names("missing")), not_found);
  CHECK_THROWS_AS(inspect("a/b"), invalid_name);
  CHECK_THROWS_AS(inspect(".."), invalid_name);
}

TEST_CASE("inspect gives an object that is not a segment a status, never a throw") {
  test::names names;
  const std::string name = names("plain");
  const int fd = ::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  REQUIRE(fd >= 0);
  const std::string junk(4096, '\xab');  // no record's magic at its end
  REQUIRE(::write(fd, junk.data(), junk.size()) == 4096);
  ::close(fd);
  const object_entry e = inspect(name);
  CHECK(e.status == object_status::corrupt);
  CHECK_FALSE(e.shmarray);
  CHECK(e.bytes == 4096);
  CHECK_FALSE(e.error.empty());
  CHECK(find(list_objects(), name) == nullptr);  // not a shmarray segment
  CHECK(find(list_objects(true), name) != nullptr);
  remove_object(e);
  CHECK_THROWS_AS(inspect(name), not_found);
  CHECK_NOTHROW(remove_object(e));  // gone already: no error
}

TEST_CASE("remove_object removes a kept segment and refuses a live owner's token") {
  test::names names;
  manager m(names.options());
  create_options keep;
  keep.keep = true;
  std::string kept;
  {
    auto k = m.from_shape<double>({8}, keep);
    kept = k.name();
    CHECK(inspect(kept).owner == owner_status::untracked);
  }
  remove_object(inspect(kept));
  CHECK_FALSE(names.exists(kept));

  auto a = m.from_shape<float>({2});  // holds this process's token
  const auto every = list_objects(true);
  const auto token = std::find_if(every.begin(), every.end(), [](const object_entry& r) {
    return r.status == object_status::owner_token && r.owner == owner_status::alive &&
           r.name == detail::owner::token_name(detail::owner::token::get().id());
  });
  REQUIRE(token != every.end());
  CHECK_THROWS_AS(remove_object(*token), access_denied);
  CHECK(inspect(token->name).status == object_status::owner_token);  // still there
}

TEST_CASE("printable_name and json_string escape what a name could forge") {
  const std::string hostile = "/bad\nname\033[2J";
  const std::string p = printable_name(hostile);
  CHECK(p.find('\n') == std::string::npos);
  CHECK(p.find('\033') == std::string::npos);
  CHECK(printable_name("/plain") == "/plain");
  const std::string j = json_string(hostile);
  CHECK(j.front() == '"');
  CHECK(j.back() == '"');
  CHECK(j.find('\n') == std::string::npos);
}

TEST_CASE("collect_dead names a dead owner's leftovers with dry_run and removes them without") {
  // In a private /dev/shm: no other process's helper collects first.
  const auto run = test::in_small_tmpfs("/dev/shm", "4m", [&](auto say) {
    test::names names;
    test::without_helper();  // and none of ours: it would collect in the background
    manager m(names.options());
    auto mine = m.from_shape<int>({4});  // a live owner's: never collected
    int fds[2];
    if (::pipe(fds) != 0) return 2;
    const int status = test::in_child([&] {
      manager dying(names.options());
      auto a = dying.from_shape<float>({16});
      auto raw = dying.from_shape<float>({8}, test::raw());  // only the token's journal names it
      const std::string said = a.name() + " " + raw.name();
      (void)!::write(fds[1], said.data(), said.size());
      ::raise(SIGKILL);
      return 1;
    });
    ::close(fds[1]);
    if (!test::killed_by(status, SIGKILL)) return 3;
    const std::string said = test::read_all(fds[0]);
    ::close(fds[0]);
    const std::string a = said.substr(0, said.find(' ')), raw = said.substr(said.find(' ') + 1);
    if (inspect(a).owner != owner_status::gone) return 4;

    // (a dry run may name a segment twice: by its record, and by the journal)
    auto names_of = [](const std::vector<collected>& found, collected::kind k) {
      std::vector<std::string> out;
      for (const auto& c : found)
        if (c.what == k) out.push_back(c.name);
      std::sort(out.begin(), out.end());
      out.erase(std::unique(out.begin(), out.end()), out.end());
      return out;
    };
    const std::vector<collected> would = collect_dead(true);
    std::vector<std::string> want{a, raw};
    std::sort(want.begin(), want.end());
    if (names_of(would, collected::kind::segment) != want) {
      std::string got;
      for (const auto& c : would)
        got += std::to_string(int(c.what)) + c.name + (c.removed ? "+ " : " ") + c.why + "; ";
      say("a dry run found: " + got + "want " + a + " " + raw);
      return 5;
    }
    if (names_of(would, collected::kind::token).size() != 1) return 6;
    if (!names.exists(a) || !names.exists(raw)) return 7;  // a dry run removes nothing
    for (const auto& c : would)
      if (c.removed) return 8;

    const std::vector<collected> done = collect_dead();
    if (names_of(done, collected::kind::segment) != want) return 9;
    for (const auto& c : done)
      if (c.what != collected::kind::skipped && !c.removed) return 10;
    if (names.exists(a) || names.exists(raw)) return 11;
    if (!names.exists(mine.name())) return 12;
    if (!collect_dead(true).empty()) return 13;  // nothing more to do
    return 0;
  });
  if (run.skipped()) return;
  INFO(run.said);
  CHECK(run.ok());
}

TEST_CASE("list_objects_in and inspect_file say what a directory of file backings holds") {
  char tmpl[] = "/tmp/shmarray_inspect_XXXXXX";
  REQUIRE(::mkdtemp(tmpl));
  const std::string dir = tmpl;
  {
    manager m;
    auto a = m.from_shape<float>({2, 3}, file(dir + "/a.shm"));
    a(1, 2) = 5;
    // A file that is no segment, a link to the segment and a FIFO: only
    // regular files are listed, and a link is never followed.
    const int fd = ::open((dir + "/notes.txt").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, "hello\n", 6) == 6);
    ::close(fd);
    REQUIRE(::symlink((dir + "/a.shm").c_str(), (dir + "/link.shm").c_str()) == 0);
    REQUIRE(::mkfifo((dir + "/fifo").c_str(), 0600) == 0);

    const auto rows = list_objects_in(dir);
    REQUIRE(rows.size() == 1);
    CHECK(rows[0].name == dir + "/a.shm");
    CHECK(rows[0].path == dir + "/a.shm");
    CHECK(rows[0].status == object_status::ok);
    CHECK(rows[0].info.dtype == "<f4");
    CHECK(rows[0].info.shape == shape_type{2, 3});
    CHECK(rows[0].owner == owner_status::alive);
    CHECK(list_objects_in(dir + "/").at(0).name == dir + "/a.shm");  // one '/' between

    const auto every = list_objects_in(dir, true);
    CHECK(every.size() == 2);  // and notes.txt, not a segment
    const object_entry* notes = find(every, dir + "/notes.txt");
    REQUIRE(notes != nullptr);
    CHECK_FALSE(notes->shmarray);
    CHECK(notes->status == object_status::corrupt);

    const object_entry e = inspect_file(dir + "/a.shm");
    CHECK(e.status == object_status::ok);
    CHECK(e.info.data_nbytes == 24);
    const object_entry l = inspect_file(dir + "/link.shm");
    CHECK(l.status == object_status::unreadable);
    CHECK_THAT(l.error, Catch::Contains("a symbolic link"));
    CHECK(inspect_file(dir + "/fifo").status == object_status::unreadable);
    CHECK_THROWS_AS(inspect_file(dir + "/missing"), not_found);
    CHECK_THROWS_AS(list_objects_in(dir + "/missing"), not_found);
    CHECK_THROWS_AS(list_objects_in(dir + "/notes.txt"), error);  // not a directory

    remove_object(*notes);  // by its path, not in /dev/shm
    CHECK(::access((dir + "/notes.txt").c_str(), F_OK) != 0);
    CHECK(::access((dir + "/a.shm").c_str(), F_OK) == 0);
  }
  // The manager's end removed the segment; the link and FIFO are the test's.
  CHECK(list_objects_in(dir, true).empty());
  ::unlink((dir + "/link.shm").c_str());
  ::unlink((dir + "/fifo").c_str());
  CHECK(::rmdir(dir.c_str()) == 0);
}

TEST_CASE("list_objects and inspect say what a ring holds") {
  test::names names;
  {
    manager m(names.options());
    const std::string name = names("ring");
    auto [w, own, worker] = test::ring_with_two_readers(m, name, order::column_major);
    auto a = m.from_shape<float>({2});  // an array beside it is still one

    const std::vector<object_entry> rows = list_objects();
    const object_entry* row = find(rows, name);
    REQUIRE(row != nullptr);
    CHECK(row->status == object_status::ok);
    CHECK(row->kind == segment_kind::ring);
    CHECK(row->shmarray);
    CHECK(row->bytes == 3 * 65536 + 512);  // slots, writer and reader areas, the record
    CHECK(row->info.dtype == "<u2");
    CHECK(row->info.shape == shape_type{4, 5});
    CHECK(row->info.order == order::column_major);
    CHECK(row->info.data_nbytes == 40);  // one frame
    CHECK(byte_strides(row->info) == std::vector<std::ptrdiff_t>{2, 8});
    CHECK(row->info.owner_pid == ::getpid());
    CHECK(row->owner == owner_status::alive);
    CHECK(row->same_boot);
    const ring_status& r = row->ring;
    CHECK(r.slots == 4);
    CHECK(r.slot_stride == 64);
    CHECK(r.policy == ring_policy::block);
    CHECK(r.max_readers == 3);
    CHECK(r.max_groups == 2);
    CHECK(r.head == 2);
    CHECK(r.readers == 2);
    CHECK(r.readers_gone == 0);
    REQUIRE(r.attached.size() == 2);
    CHECK_FALSE(r.attached[0].member);
    CHECK(r.attached[0].done == 0);  // it has read nothing
    CHECK(r.attached[1].member);
    CHECK(r.attached[1].group == "workers");
    CHECK(r.attached[1].claim == 0);
    for (const auto& x : r.attached) {
      CHECK(x.pid == ::getpid());
      CHECK(x.alive);
      CHECK(x.missed == 0);
    }
    REQUIRE(r.groups.size() == 1);
    CHECK(r.groups[0].name == "workers");
    CHECK(r.groups[0].members == 1);
    CHECK(r.groups[0].missed == 0);
    CHECK(r.producer == producer_status::alive);
    CHECK(r.writer_pid == ::getpid());
    CHECK(std::string(to_string(row->kind)) == "ring");
    CHECK(std::string(to_string(r.producer)) == "alive");
    const object_entry arr = inspect(a.name());
    CHECK(arr.kind == segment_kind::array);
    CHECK(arr.lock_ready);

    // A reader that dies attached: its entry stays (nobody frees it until
    // a writer waits or a reader needs its place), its lock goes.
    const int status = test::in_child([&] {
      auto dying = ring_reader<std::uint16_t>::attach(name);
      ::raise(SIGKILL);
      return 1;
    });
    CHECK(test::killed_by(status, SIGKILL));
    {
      const object_entry d = inspect(name);
      CHECK(d.ring.readers == 3);
      CHECK(d.ring.readers_gone == 1);
      REQUIRE(d.ring.attached.size() == 3);
      CHECK_FALSE(d.ring.attached[2].alive);
      CHECK(d.ring.attached[2].pid != ::getpid());
    }

    { auto leaving = std::move(worker); }  // detaches
    w.close();
    const object_entry e = inspect(name.substr(1));
    CHECK(e.status == object_status::ok);
    CHECK(e.ring.producer == producer_status::closed);
    CHECK(e.ring.readers == 2);          // its own, and the dead one's entry
    REQUIRE(e.ring.groups.size() == 1);  // a group stays, with no member
    CHECK(e.ring.groups[0].members == 0);
    CHECK(e.owner == owner_status::alive);  // the manager still owns the name
  }
  CHECK(names.left().empty());
}

TEST_CASE("collect_dead removes a killed owner's ring by its record") {
  // In a private /dev/shm: no other process's helper collects first, and
  // what is left at the end is exactly what the test left (nothing).
  const auto run = test::in_small_tmpfs("/dev/shm", "4m", [&](auto say) {
    test::names names;
    test::without_helper();
    const std::string ring = names("ring");
    int fds[2];
    if (::pipe(fds) != 0) return 2;
    const int status = test::in_child([&] {
      manager dying(names.options());
      auto w = dying.ring<float>(ring, {8});
      const std::vector<float> frame(8, 1.f);
      w.push(frame.data());
      const std::string pid = std::to_string(::getpid());
      (void)!::write(fds[1], pid.data(), pid.size());
      ::raise(SIGKILL);
      return 1;
    });
    ::close(fds[1]);
    const std::string pid = test::read_all(fds[0]);
    ::close(fds[0]);
    if (!test::killed_by(status, SIGKILL)) return 3;
    const object_entry e = inspect(ring);
    if (e.status != object_status::ok || e.kind != segment_kind::ring) {
      say("inspect: " + e.error);
      return 4;
    }
    if (e.owner != owner_status::gone || e.ring.producer != producer_status::gone ||
        e.ring.head != 1 || std::to_string(e.info.owner_pid) != pid)
      return 5;
    // Found by its record (no token named: that is the journal's way).
    auto by_record = [&](const std::vector<collected>& found, bool removed) {
      return std::any_of(found.begin(), found.end(), [&](const collected& c) {
        return c.what == collected::kind::segment && c.name == ring && c.token.empty() &&
               std::to_string(c.owner_pid) == pid && c.removed == removed;
      });
    };
    const std::vector<collected> would = collect_dead(true);
    if (!by_record(would, false)) {
      std::string got;
      for (const auto& c : would)
        got += std::to_string(int(c.what)) + " " + c.name + " [" + c.token + "] " + c.why + "; ";
      say("a dry run found: " + got);
      return 6;
    }
    if (!names.exists(ring)) return 7;
    if (!by_record(collect_dead(), true)) return 8;
    if (!test::in_shm().empty()) {
      for (const auto& n : test::in_shm())
        say("left: " + n + "; ");
      return 9;
    }
    return 0;
  });
  if (run.skipped()) return;
  INFO(run.said);
  CHECK(run.ok());
}

namespace {

// A ring's bytes as anyone can write them: the library's own record for 2
// slots of 3-byte frames, 3 readers and 2 groups, over zero areas.
std::vector<std::byte> ring_bytes(detail::ring_info& info) {
  info.frame = detail::new_info(dtype_of<std::uint8_t>(), {3}, order::row_major, 3, ::getpid());
  info.policy = ring_policy::overwrite;
  REQUIRE(info.layout.compute(3, 2, 3, 2));
  std::vector<std::byte> bytes(std::size_t(info.layout.size));
  detail::write_ring_record(bytes.data(), info);
  return bytes;
}

std::byte* record_in(std::vector<std::byte>& b) {
  return b.data() + b.size() - format::record_size;
}

// The checksum made right after a forger's change to the record.
void reseal(std::vector<std::byte>& b) {
  std::byte* rec = record_in(b);
  detail::store_le<std::uint32_t>(rec + format::off_checksum,
                                  detail::crc32(rec, format::checksummed));
}

void put(const std::string& name, const std::vector<std::byte>& b) {
  const int fd = ::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, b.data(), b.size()) == ssize_t(b.size()));
  ::close(fd);
}

}  // namespace

TEST_CASE("inspect gives a forged or damaged ring a status and bounds what its words say") {
  namespace rf = format::ring;
  test::names names;
  detail::ring_info info;

  // A valid record over hostile words: a head at its limit, a group whose
  // name length and bytes lie, entries in states and groups that are none.
  auto hostile = ring_bytes(info);
  const auto& l = info.layout;
  detail::store_le<std::uint64_t>(hostile.data() + l.writer_at + rf::w_head, UINT64_MAX);
  std::byte* g0 = hostile.data() + l.readers_at + l.group_at(0);
  detail::store_le<std::uint32_t>(g0 + rf::g_state, rf::entry_used);
  detail::store_le<std::uint32_t>(g0 + rf::g_name_len, 0xFFFFFFFFu);
  for (std::size_t i = 0; i < rf::group_name_max; ++i)
    g0[rf::g_name + i] = std::byte("\n\033[2J"[i % 4]);
  detail::store_le<std::uint32_t>(hostile.data() + l.readers_at + l.group_at(1) + rf::g_state, 7);
  const std::uint32_t entries[3][2] = {{rf::entry_used, 1}, {rf::entry_used, 9999}, {3, 1}};
  for (std::uint64_t i = 0; i < 3; ++i) {
    std::byte* e = hostile.data() + l.readers_at + l.entry_at(i);
    detail::store_le<std::uint32_t>(e + rf::e_state, entries[i][0]);
    detail::store_le<std::uint32_t>(e + rf::e_group, entries[i][1]);
  }
  put(names("hostile"), hostile);
  const object_entry h = inspect(names("hostile"));
  CHECK(h.status == object_status::ok);
  CHECK(h.kind == segment_kind::ring);
  CHECK(h.ring.head == UINT64_MAX);
  CHECK(h.ring.readers == 2);
  REQUIRE(h.ring.groups.size() == 1);
  CHECK(h.ring.groups[0].name.size() == rf::group_name_max);
  CHECK(h.ring.groups[0].members == 1);
  CHECK(printable_name(h.ring.groups[0].name).find_first_of("\n\033") == std::string::npos);
  CHECK(h.ring.producer == producer_status::gone);  // nobody holds its writer's lock
  CHECK(h.owner == owner_status::untracked);        // no token: never collected

  // Damaged records: each a status and the message an attach would give.
  struct damage {
    const char* name;
    object_status status;
    const char* says;
  };
  const damage cases[] = {{"policy", object_status::corrupt, "policy byte 88"},
                          {"slots", object_status::corrupt, "out of range"},
                          {"checksum", object_status::corrupt, "checksum"},
                          {"stride", object_status::corrupt, "slot stride 8"},
                          {"short", object_status::truncated, "describes a ring of"},
                          {"ready", object_status::being_created, "being created"}};
  for (const auto& c : cases) {
    auto b = ring_bytes(info);
    std::byte* rec = record_in(b);
    const std::string what = c.name;
    if (what == "policy") {
      rec[rf::off_policy] = std::byte('X');
      reseal(b);
    } else if (what == "slots") {
      detail::store_le<std::uint32_t>(rec + rf::off_slots, 0);
      reseal(b);
    } else if (what == "checksum") {
      detail::store_le<std::uint32_t>(rec + rf::off_slots, 3);
    } else if (what == "stride") {
      detail::store_le<std::uint64_t>(rec + rf::off_slot_stride, 8);
      reseal(b);
    } else if (what == "short") {  // the record kept at a shorter object's end
      b.erase(b.begin(), b.begin() + std::ptrdiff_t(rf::area_alignment));
    } else {
      detail::store_le<std::uint32_t>(rec + format::off_ready, 0);
    }
    const std::string name = names("damaged_" + what);
    put(name, b);
    const object_entry e = inspect(name);
    INFO(what << ": " << e.error);
    CHECK(e.status == c.status);
    CHECK(e.kind == segment_kind::ring);  // its version says so
    CHECK(e.shmarray);
    CHECK_THAT(e.error, Catch::Contains(c.says));
    const auto rows = list_objects();  // held: find() points into it
    const object_entry* row = find(rows, name);
    REQUIRE(row != nullptr);
    CHECK(row->status == c.status);
  }
  // Nothing that does not validate is collected, whoever made it.
  for (const auto& c : collect_dead(true))
    CHECK(c.name.find(names.prefix()) == std::string::npos);
  for (const auto& e : list_objects(true))
    if (e.name.find(names.prefix()) != std::string::npos) remove_object(e);
  CHECK(names.left().empty());
}
