// shmarray: rings of live frames. One named (or anonymous, for fork()
// children) segment of N slots, each one frame of a fixed element type and
// frame shape; one writer that loans the next slot and publishes it, and any
// number of readers, attached by name, that read frames in place and learn
// afterwards whether the frame they read was whole (a seqlock). The layout
// and protocol are docs/FORMAT.md's "Rings: format version 2".
//
//   auto w = m.ring<std::uint16_t>("/camera", {512, 512});   // a manager's
//   auto loan = w.loan();  fill(loan.data());  w.publish(std::move(loan));
//
//   auto r = shmarray::ring_reader<std::uint16_t>::attach("/camera");
//   while (auto f = r.next(std::chrono::seconds(1))) { use(*f); if (!f->valid()) drop(); }
#pragma once

#include "ring_frame.hpp"
#include "ring_options.hpp"
#include "ring_reader.hpp"
#include "ring_writer.hpp"
