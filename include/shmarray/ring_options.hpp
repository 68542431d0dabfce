// shmarray: how a ring of frames is made and how its readers attach
// (ring.hpp).
#pragma once

#include <chrono>
#include <cstddef>
#include <string>

#include "detail/ring_format.hpp"
#include "segment.hpp"
#include "shape.hpp"

namespace shmarray {

// How a ring is made (manager::ring).
struct ring_options {
  std::size_t slots = 8;
  ring_policy policy = ring_policy::overwrite;
  shmarray::order order = order::row_major;  // of each frame
  std::size_t max_readers = 16;              // readers attached at once, 1 to 1024
  std::size_t max_groups = 4;                // reader groups over the ring's life, 0 to 64
  // `block`: how long loan() and push() wait for the slowest reader before
  // they throw ring_timeout.
  std::chrono::nanoseconds block_timeout = std::chrono::seconds(10);
  // `block`: how long a writer waiting for a reader spins before it sleeps
  // (zero: at once). Spinning answers a reader's release sooner, but takes
  // a core the readers may need where there are fewer cores than processes.
  std::chrono::nanoseconds spin = std::chrono::microseconds(50);
  // The manager does not remove this ring's name at its end.
  bool keep = false;
  map_options map;
};

// Where a new reader starts: with the next frame published, or with the
// oldest frame still in the ring.
enum class ring_start { next, oldest };

// How a reader attaches (ring_reader::attach).
struct reader_options {
  // Readers attached under one group name split the frames: each frame goes
  // to exactly one of them. Printable UTF-8, 1 to 40 bytes; empty: a reader
  // of its own, which sees every frame.
  std::string group;
  ring_start start = ring_start::next;
  // How long a reader waiting for a frame spins before it sleeps on the
  // futex (the writer then pays a wake-up, and the reader a futex's
  // latency). Zero: sleep at once.
  std::chrono::nanoseconds spin = std::chrono::microseconds(50);
  // How long attach waits for the name to appear (or for its creation to
  // end) before it throws not_found (or not_ready).
  std::chrono::nanoseconds wait_for_name = std::chrono::nanoseconds(0);
};

// For ever, as a timeout.
inline constexpr std::chrono::nanoseconds forever = std::chrono::nanoseconds::max();

}  // namespace shmarray
