// Test support for rings: a ring with readers of both kinds, as the
// listings (test_inspect, test_cli) show it.
#pragma once

#include <cstdint>
#include <shmarray/manager.hpp>
#include <shmarray/ring.hpp>
#include <string>
#include <vector>

namespace test {

// A ring and its two readers: `own`, a reader of its own, and `worker`, the
// one member of the group "workers".
struct ring_with_readers {
  shmarray::ring_writer<std::uint16_t> w;
  shmarray::ring_reader<std::uint16_t> own;
  shmarray::ring_reader<std::uint16_t> worker;
};

// Makes the ring `name` of <u2 4x5 frames in `frame_order` (4 slots, block,
// room for 3 readers and 2 groups), attaches its two readers and publishes
// two frames: head 2, nothing read, nothing missed.
inline ring_with_readers ring_with_two_readers(shmarray::manager& m, const std::string& name,
                                               shmarray::order frame_order) {
  shmarray::ring_options o;
  o.slots = 4;
  o.policy = shmarray::ring_policy::block;
  o.order = frame_order;
  o.max_readers = 3;
  o.max_groups = 2;
  shmarray::reader_options member;
  member.group = "workers";
  ring_with_readers r{m.ring<std::uint16_t>(name, {4, 5}, o),  // in this order
                      shmarray::ring_reader<std::uint16_t>::attach(name),
                      shmarray::ring_reader<std::uint16_t>::attach(name, member)};
  const std::vector<std::uint16_t> frame(20, 1);
  r.w.push(frame.data());
  r.w.push(frame.data());
  return r;
}

}  // namespace test
