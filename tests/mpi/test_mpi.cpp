// The MPI adapter, run by mpirun with 1, 2 and 4 ranks, and with simulated
// nodes (SHMARRAY_MPI_RANKS_PER_NODE). Each check that fails says which, on
// which rank, and aborts the job; success prints "ok" from rank 0.
#include <mpi.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <shmarray/eigen.hpp>
#include <shmarray/mpi.hpp>
#include <shmarray/xtensor.hpp>
#include <string>

namespace sm = shmarray::mpi;

namespace {

int world_rank = 0, world_size = 1;

void expect(bool ok, const char* what, int line) {
  if (ok) return;
  std::fprintf(stderr, "test_mpi: rank %d: line %d: %s\n", world_rank, line, what);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
}
#define EXPECT(c) expect((c), #c, __LINE__)

// Node grouping: real (all ranks on this host), or simulated groups of K.
void grouping(const sm::node& n) {
  const char* k = std::getenv("SHMARRAY_MPI_RANKS_PER_NODE");
  const int per = k ? std::atoi(k) : world_size;
  EXPECT(n.simulated() == (k != nullptr));
  EXPECT(n.rank() == world_rank % per);
  EXPECT(n.size() == std::min(per, world_size - world_rank / per * per));
  EXPECT(n.index() == world_rank / per);
  EXPECT(n.count() == (world_size + per - 1) / per);
  EXPECT((n.leaders() != MPI_COMM_NULL) == (n.rank() == 0));
}

// One buffer per node: what one rank writes, every rank of its node reads,
// through the array and through Eigen and xtensor views, with no copy.
void shared_per_node(const sm::node& n) {
  const std::size_t frames = 8, h = 16, w = 12;
  sm::node_array<float> stack(n, {frames, h, w});
  EXPECT(stack.shape() == (shmarray::shape_type{frames, h, w}));
  EXPECT(reinterpret_cast<std::uintptr_t>(stack.data()) % 64 == 0);  // as the type claims
  for (float v : stack)
    EXPECT(v == 0.f);
  stack.barrier();
  // each rank fills its frames, with its node index in the value
  for (std::size_t k = std::size_t(n.rank()); k < frames; k += std::size_t(n.size()))
    shmarray::eigen::frame(stack, k).setConstant(float(1000 * n.index() + k));
  stack.barrier();
  for (std::size_t k = 0; k < frames; ++k) {
    EXPECT(stack(k, h - 1, w - 1) == float(1000 * n.index() + k));
    EXPECT(shmarray::eigen::frame(stack, k).sum() == float(h * w) * float(1000 * n.index() + k));
  }
  auto t = shmarray::adapt(stack);
  EXPECT(t(frames - 1, 0, 0) == float(1000 * n.index() + frames - 1));
  auto flat = stack.reshape({-1});
  EXPECT(flat.size() == frames * h * w && flat.data() == stack.data());
  // one buffer per node: the same address range holds the same values on all its ranks
  double mine = 0;
  for (float v : stack)
    mine += v;
  double first = mine;
  MPI_Bcast(&first, 1, MPI_DOUBLE, 0, n.comm());
  EXPECT(first == mine);
  stack.barrier();
}

// The node-wide lock makes read-modify-write exact.
void lock_counts(const sm::node& n) {
  sm::node_array<std::int64_t> counter(n, {1});
  const int rounds = 2000;
  for (int i = 0; i < rounds; ++i) {
    auto g = counter.lock();
    EXPECT(g.owns_lock());
    counter(0) = counter(0) + 1;
  }
  counter.barrier();
  EXPECT(counter(0) == std::int64_t(rounds) * n.size());
  counter.barrier();
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  try {
    sm::node n(MPI_COMM_WORLD);
    grouping(n);
    shared_per_node(n);
    lock_counts(n);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "test_mpi: rank %d: %s\n", world_rank, e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (world_rank == 0) std::printf("ok: %d ranks\n", world_size);
  MPI_Finalize();
  return 0;
}
