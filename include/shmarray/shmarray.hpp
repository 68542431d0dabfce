// shmarray: N-dimensional arrays in shared memory. The core, in one include.
#pragma once

#include "allocator.hpp"
#include "backing.hpp"
#include "creation_tags.hpp"
#include "dtype.hpp"
#include "errors.hpp"
#include "format.hpp"
#include "inspect.hpp"
#include "lock.hpp"
#include "manager.hpp"
#include "metadata.hpp"
#include "ndarray.hpp"
#include "segment.hpp"
#include "shape.hpp"
#include "worker_init.hpp"
#include "workers.hpp"
