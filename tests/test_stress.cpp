// Stress: many processes create, attach, lock, write and remove arrays at
// once while the test SIGKILLs them at random. At the end the data written
// under the lock is consistent (a counter equals the completed critical
// sections), /dev/shm holds nothing of ours, and no helper is left.
//
// SHMARRAY_STRESS_SECONDS sets how long the processes run (default 8).
// CTest runs this test alone (RUN_SERIAL): it counts owner tokens and
// helpers in the whole system.
#include <dirent.h>
#include <sys/mman.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <list>
#include <optional>
#include <random>
#include <shmarray/shmarray.hpp>
#include <string>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace shmarray;

namespace {

constexpr std::size_t slots = 6;           // processes running at any time
constexpr std::size_t data_len = 1 << 15;  // written whole in each critical section

// The ledger: one named int64 array, everything in it written under its lock.
constexpr std::size_t counter = 0;   // critical sections completed
constexpr std::size_t pending = 1;   // slot + 1 while a section is under way
constexpr std::size_t repairs = 2;   // sections found half-done by the next locker
constexpr std::size_t died = 3;      // locks that reported owner_died
constexpr std::size_t sections = 8;  // per slot: sections completed (a section's commit)
constexpr std::size_t data = 64;     // every element equals the counter
constexpr std::size_t ledger_len = data + data_len;

// Makes the ledger consistent after a holder died mid-section: a section
// counts once its slot's count is bumped, so the counter and data follow
// the counts. Idempotent.
void repair(const ndarray<std::int64_t>& l) {
  std::int64_t done = 0;
  for (std::size_t s = 0; s < slots; ++s)
    done += l(sections + s);
  l(counter) = done;
  std::fill(l.data() + data, l.data() + ledger_len, done);
  l(pending) = 0;
}

struct control {
  std::atomic<int> stop{0};
  std::atomic<int> in_section{-1};  // the slot inside a ledger section, for the killer to aim at
};

std::set<std::string> tokens() {
  std::set<std::string> out;
  for (auto& n : test::shm_names(detail::owner::token_prefix))
    out.insert(n);
  return out;
}

// The pids of running `shmarray __watchdog` helpers.
std::set<pid_t> helpers() {
  std::set<pid_t> out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  while (const dirent* e = ::readdir(d)) {
    const pid_t pid = std::atoi(e->d_name);
    if (pid <= 0) continue;
    std::ifstream f("/proc/" + std::string(e->d_name) + "/cmdline");
    std::string cmd((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (cmd.find(std::string("__watchdog")) != std::string::npos && test::running(pid))
      out.insert(pid);
  }
  ::closedir(d);
  return out;
}

// A worker's life: until told to stop, at random: a critical section on the
// ledger; a new array of its own, filled under its lock; dropping one; or
// attaching a peer's array and checking, under its lock, that it is not torn
// (or repairing it, as the first locker after its creator died mid-fill).
// Exit 0 when all went as it should, 3 and a message otherwise.
[[noreturn]] void work(std::size_t slot, const std::string& ledger_name,
                       const std::string& peer_prefix, control* ctl) {
  int code = 0;
  try {
    std::mt19937 rng(std::uint32_t(::getpid()) * 2654435761u);
    auto ledger = ndarray<std::int64_t>::attach(ledger_name);
    manager_options mo;
    mo.prefix = peer_prefix;
    std::list<manager> mine;  // one manager per array: dropping it removes that array
    while (!ctl->stop.load()) {
      const unsigned what = rng() % 10;
      if (what < 4) {
        auto g = ledger.lock();
        if (g.owner_died()) {
          ++ledger(died);
          if (ledger(pending) != 0) {
            ++ledger(repairs);
            repair(ledger);
          }
        }
        ctl->in_section = int(slot);
        ledger(pending) = std::int64_t(slot + 1);
        const std::int64_t next = ledger(counter) + 1;
        ledger(counter) = next;
        // Half the data, a pause (a kill here leaves it torn), the rest.
        std::fill(ledger.data() + data, ledger.data() + data + data_len / 2, next);
        ::usleep(50 + rng() % 200);
        std::fill(ledger.data() + data + data_len / 2, ledger.data() + ledger_len, next);
        ++ledger(sections + slot);  // the commit
        ledger(pending) = 0;
        ctl->in_section = -1;
      } else if (what < 7) {
        mine.emplace_back(mo);
        auto a = mine.back().from_shape<std::uint32_t>({1 + rng() % 50000});
        auto g = a.lock();
        std::fill(a.begin(), a.end(), rng());
        if (mine.size() > 3) mine.pop_front();
      } else if (what < 8) {
        if (!mine.empty()) mine.pop_front();
      } else {
        const auto peers = test::shm_names(peer_prefix);
        if (peers.empty()) continue;
        auto it = peers.begin();
        std::advance(it, rng() % peers.size());
        try {
          auto a = ndarray<std::uint32_t>::attach(*it);
          auto g = a.lock();
          const auto first = a(0);
          if (g.owner_died()) {  // its creator died mid-fill: the first locker repairs
            std::fill(a.begin(), a.end(), first);
          } else if (std::count(a.begin(), a.end(), first) != std::ptrdiff_t(a.size())) {
            std::fprintf(stderr, "stress: %s is torn under its lock\n", it->c_str());
            code = 3;
            break;
          }
        } catch (const not_found&) {  // removed meanwhile: expected
        } catch (const not_ready&) {  // being created (its record not yet ready)
        }
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "stress: worker %zu: %s\n", slot, e.what());
    code = 3;
  }
  std::fflush(nullptr);
  if (code) ::_exit(code);
  ::_exit(0);  // the managers are gone (their destructors ran); no atexit of the parent's
}

pid_t spawn(std::size_t slot, const std::string& ledger_name, const std::string& peer_prefix,
            control* ctl) {
  std::fflush(nullptr);
  pid_t pid;
  for (int attempt = 0; (pid = ::fork()) < 0 && errno == EAGAIN && attempt < 50; ++attempt)
    ::usleep(10000);  // a loaded machine may refuse for a moment
  if (pid == 0) {
    for (int sig : {SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE, SIGTERM, SIGINT})
      ::signal(sig, SIG_DFL);
    work(slot, ledger_name, peer_prefix, ctl);
  }
  return pid;
}

}  // namespace

TEST_CASE("processes create, attach, lock, write and remove at once, SIGKILLed at random") {
  if (detail::owner::find_helper().empty()) {
    std::printf("SHMARRAY-SKIP: the shmarray command (the watchdog helper) is not built here\n");
    return;
  }
  const char* env = std::getenv("SHMARRAY_STRESS_SECONDS");
  const double seconds = env ? std::atof(env) : 8.0;
  const auto tokens_before = tokens();
  const auto helpers_before = helpers();
  test::names names;
  void* page = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  REQUIRE(page != MAP_FAILED);
  auto* ctl = new (page) control();
  const std::string peers = names.prefix() + "w";
  std::uint64_t kills = 0, spawned = 0;
  std::int64_t completed = 0;
  std::vector<std::string> failures;
  {
    manager m(names.options());
    auto ledger = m.from_shape<std::int64_t>({ledger_len}, posix_shm(names("ledger")));
    const std::string ledger_name = ledger.name();
    pid_t pids[slots];
    // A fork that failed leaves its slot empty (-1): never kill(-1, ...).
    auto start = [&](std::size_t s) {
      pids[s] = spawn(s, ledger_name, peers, ctl);
      if (pids[s] > 0)
        ++spawned;
      else
        failures.push_back("fork failed: " + std::string(std::strerror(errno)));
    };
    for (std::size_t s = 0; s < slots; ++s)
      start(s);
    std::mt19937 rng(12345);
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5 + rng() % 30));
      // Every other kill aims at a process inside a ledger section.
      const int aim = ctl->in_section.load();
      const std::size_t s = kills % 2 && aim >= 0 ? std::size_t(aim) : rng() % slots;
      if (pids[s] > 0) {
        ::kill(pids[s], SIGKILL);
        const int st = test::reap(pids[s]);
        if (!test::killed_by(st, SIGKILL))  // it ended by itself before: a failure
          failures.push_back("worker " + std::to_string(pids[s]) + " ended by itself, status " +
                             std::to_string(st));
        ++kills;
      }
      start(s);
    }
    ctl->stop = 1;
    for (std::size_t s = 0; s < slots; ++s) {
      if (pids[s] <= 0) continue;
      const int st = test::reap(pids[s]);
      if (!test::exited_with(st, 0))
        failures.push_back("worker " + std::to_string(pids[s]) + " status " + std::to_string(st));
    }
    // The killed workers' helpers remove what they left, within a second or two.
    for (int i = 0; i < 500 && !test::shm_names(peers).empty(); ++i)
      ::usleep(10000);
    if (!test::shm_names(peers).empty() && std::getenv("STRESS_DEBUG")) {
      std::system(
          ("ls -la --time-style=full-iso /dev/shm; " + std::string(std::getenv("STRESS_DEBUG")))
              .c_str());
    }
    CHECK(test::shm_names(peers).empty());

    auto g = ledger.lock();
    if (g.owner_died() && ledger(pending) != 0) {
      ++ledger(repairs);
      repair(ledger);
    }
    std::int64_t done = 0;
    for (std::size_t s = 0; s < slots; ++s)
      done += ledger(sections + s);
    completed = ledger(counter);
    INFO(kills << " kills, " << spawned << " processes, " << completed << " sections, "
               << ledger(died) << " owner_died, " << ledger(repairs) << " repairs");
    CHECK(failures.empty());
    CHECK(completed == done);
    CHECK(completed > 0);
    CHECK(ledger(pending) == 0);
    CHECK(std::count(ledger.data() + data, ledger.data() + ledger_len, completed) ==
          std::ptrdiff_t(data_len));
    CHECK(ledger(repairs) > 0);  // hundreds of kills: some hit a holder mid-section
    std::printf("stress: %.1f s, %llu kills, %llu processes, %lld sections, %lld repairs\n",
                seconds, (unsigned long long)kills, (unsigned long long)spawned,
                (long long)completed, (long long)ledger(repairs));
  }
  CHECK(names.left().empty());
  // Every killed owner's token removed, every helper but this process's own gone.
  auto stray_helpers = [&] {
    std::set<pid_t> now = helpers();
    for (pid_t p : helpers_before)
      now.erase(p);
    now.erase(detail::owner::watchdog::get().helper_pid());
    return now;
  };
  // (Tokens of processes that ended before this test may go meanwhile.)
  auto new_tokens = [&] {
    std::set<std::string> extra;
    for (const auto& t : tokens())
      if (!tokens_before.count(t)) extra.insert(t);
    return extra;
  };
  for (int i = 0; i < 500 && (!new_tokens().empty() || !stray_helpers().empty()); ++i)
    ::usleep(10000);
  CHECK(new_tokens().empty());
  CHECK(stray_helpers().empty());
  ::munmap(page, 4096);
}
