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
