// shmarray: forked workers over shared arrays, all of it: fork_workers and
// parallel_for (a fork per call), process_pool (workers forked once), the
// options they share and array_ref, the view a pool job carries.
#pragma once

#include "array_ref.hpp"
#include "fork_workers.hpp"
#include "process_pool.hpp"
#include "worker.hpp"
