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
