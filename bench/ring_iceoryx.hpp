// The ring benchmark's iceoryx baseline (ring_iceoryx.cpp, built where
// iceoryx 2's CMake package is found: SHMARRAY_BENCH_ICEORYX).
#pragma once

#include <sys/types.h>

#include <cstddef>

#include "ring_pingpong.hpp"

namespace bench::iceoryx {

// Starts iox-roudi and waits until it takes clients (-1 if it did not
// start). Call it in a mount namespace of its own with private tmpfs mounts
// over /dev/shm and /tmp: roudi makes about 207 MiB of shared memory and
// its sockets and locks in /tmp.
pid_t start_roudi();
// Stops it (after every iceoryx process has ended).
void stop_roudi(pid_t roudi);

// The two roles of a publisher/subscriber round trip of `payload` bytes,
// each in a fresh child process: the leader publishes on "ping" and polls
// "pong", the follower the other way round.
void leader(pingpong::control& c, std::size_t payload);
void follower(pingpong::control& c, std::size_t payload);

}  // namespace bench::iceoryx
