// shmarray internals: the helpers that were here, now a header each.
// transitional: removed when issue 20's branches merge
#pragma once

#include "crc32.hpp"
#include "endian.hpp"
#include "os_error.hpp"
#include "out_of_space.hpp"
#include "pread.hpp"
#include "scope_exit.hpp"
#include "system.hpp"
#include "unnamed_file.hpp"
