// The ring benchmark's iceoryx baseline: iceoryx 2.0.3's untyped publisher
// and subscriber (zero-copy: loan a chunk, write the sequence number into
// its first 8 bytes, publish; take, read them, release), a polling
// subscriber on each side, as iceoryx's own iceperf does; and iox-roudi,
// started and stopped here.
#include "ring_iceoryx.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "iceoryx_hoofs/log/logmanager.hpp"
#include "iceoryx_posh/popo/untyped_publisher.hpp"
#include "iceoryx_posh/popo/untyped_subscriber.hpp"
#include "iceoryx_posh/runtime/posh_runtime.hpp"

#ifndef SHMARRAY_IOX_ROUDI
#define SHMARRAY_IOX_ROUDI "iox-roudi"
#endif

namespace bench::iceoryx {

namespace {

using pingpong::die;

iox::capro::IdString_t id(const std::string& s) {
  return iox::capro::IdString_t(iox::cxx::TruncateToCapacity, s.c_str());
}

// One side's runtime, publisher and subscriber, connected to the other's.
struct endpoint {
  iox::popo::UntypedPublisher pub;
  iox::popo::UntypedSubscriber sub;
  std::uint64_t seq = 0;

  endpoint(const std::string& out, const std::string& in, std::size_t payload)
      : pub({"shmarray_bench", id(out), id(std::to_string(payload))}, publisher_options()),
        sub({"shmarray_bench", id(in), id(std::to_string(payload))}, subscriber_options()) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (sub.getSubscriptionState() != iox::SubscribeState::SUBSCRIBED || !pub.hasSubscribers()) {
      if (std::chrono::steady_clock::now() > until) die("iceoryx subscription");
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  static iox::popo::PublisherOptions publisher_options() {
    iox::popo::PublisherOptions o;
    o.historyCapacity = 0;
    return o;
  }
  static iox::popo::SubscriberOptions subscriber_options() {
    iox::popo::SubscriberOptions o;
    o.queueCapacity = 16;
    o.historyRequest = 0;
    return o;
  }

  void send(std::uint64_t v, std::size_t payload) {
    pub.loan(std::uint32_t(payload))
        .and_then([&](void*& p) {
          std::memcpy(p, &v, sizeof v);
          pub.publish(p);
        })
        .or_else([](auto&) { die("iceoryx loan"); });
  }
  // Polls until a sample comes; its sequence number.
  std::uint64_t receive() {
    std::uint64_t v = 0;
    for (bool got = false; !got;)
      sub.take().and_then([&](const void* p) {
        std::memcpy(&v, p, sizeof v);
        sub.release(p);
        got = true;
      });
    return v;
  }
};

void init_runtime(const std::string& name) {
  iox::log::LogManager::GetLogManager().SetDefaultLogLevel(iox::log::LogLevel::kWarn,
                                                           iox::log::LogLevelOutput::kHideLogLevel);
  iox::runtime::PoshRuntime::initRuntime(
      iox::RuntimeName_t(iox::cxx::TruncateToCapacity, name.c_str()));
}

}  // namespace

const char log_path[] = "/tmp/shmarray_bench_roudi.log";

void print_log() {
  if (FILE* f = std::fopen(log_path, "r")) {
    char line[512];
    while (std::fgets(line, sizeof line, f))
      std::fputs(line, stderr);
    std::fclose(f);
  }
}

pid_t start_roudi() {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    ::close_range(3, ~0U, 0);
    // Its banner and its log (verbose at its end, whatever the level) go
    // to a file in the private /tmp, printed if it fails to start.
    const int log = ::open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (log >= 0) {
      ::dup2(log, STDOUT_FILENO);
      ::dup2(log, STDERR_FILENO);
    }
    ::execlp(SHMARRAY_IOX_ROUDI, SHMARRAY_IOX_ROUDI, "--monitoring-mode", "off", "--log-level",
             "warning", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  // Ready once its socket is there (iceoryx 2: /tmp/roudi).
  for (int i = 0; i < 1000; ++i) {
    struct stat st {};
    if (::stat("/tmp/roudi", &st) == 0) return pid;
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      print_log();
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  print_log();
  return -1;
}

void stop_roudi(pid_t roudi) {
  if (roudi <= 0) return;
  ::kill(roudi, SIGTERM);
  int status = 0;
  for (int i = 0; i < 500; ++i) {
    if (::waitpid(roudi, &status, WNOHANG) == roudi) {
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        std::fprintf(stderr, "bench_ring: iox-roudi did not end cleanly; its log:\n");
        print_log();
      }
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(roudi, SIGKILL);
  ::waitpid(roudi, nullptr, 0);
  std::fprintf(stderr, "bench_ring: iox-roudi did not end within 5 s; its log:\n");
  print_log();
}

// Both roles end with exit(), not the _exit() of the benchmark's other
// children: the runtime unregisters from roudi in a static destructor
// (roudi aborts at its own end over a process that left registered).
void leader(pingpong::control& c, std::size_t payload) {
  init_runtime("shmarray_bench_leader_" + std::to_string(payload));
  {
    endpoint e("ping", "pong", payload);
    pingpong::lead(c, [&] {
      e.send(++e.seq, payload);
      if (e.receive() != e.seq) die("iceoryx round trip");
    });
  }
  std::exit(0);
}

void follower(pingpong::control& c, std::size_t payload) {
  init_runtime("shmarray_bench_follower_" + std::to_string(payload));
  {
    endpoint e("pong", "ping", payload);
    pingpong::follow(c, [&] {
      if (e.receive() != ++e.seq) die("iceoryx round trip");
      e.send(e.seq, payload);
    });
  }
  std::exit(0);
}

}  // namespace bench::iceoryx
