// docs/mpi.md's examples: node-shared arrays over MPI-3 shared windows, and
// the same frame loop first in forked workers (before MPI_Init: workers are
// forked from a single-threaded process) and then across the ranks of a node.
// Run under mpirun; each doc-region is a block of that page.
#include <mpi.h>

#include <cstdio>
#include <shmarray/eigen.hpp>
#include <shmarray/mpi.hpp>
#include <shmarray/workers.hpp>

namespace {

// A stage: any function of an Eigen frame (the image-stack job's are in
// examples/image_stack/include/shmarray/stack/stages.hpp).
template <class Frame>
void blur(Frame&& frame) {
  frame.array() = frame.array() * 0.5f + 1.f;
}

bool forked(std::size_t frames, std::size_t h, std::size_t w, int workers) {
  // doc-region: before
  // before: forked workers on one machine
  shmarray::manager m;
  auto stack = m.from_shape<float>({frames, h, w});
  shmarray::parallel_for(workers, std::size_t(0), frames,
                         [&](std::size_t k) { blur(shmarray::eigen::frame(stack, k)); });
  // doc-region-end
  return stack(frames - 1, h - 1, w - 1) == 1.f;
}

bool ranks(std::size_t my_frames, std::size_t h, std::size_t w) {
  // doc-region: after
  // after: ranks across nodes, one copy per node
  shmarray::mpi::node node(MPI_COMM_WORLD);
  shmarray::mpi::node_array<float> stack(node, {my_frames, h, w});  // this node's share
  for (std::size_t k = node.rank(); k < my_frames; k += node.size())
    blur(shmarray::eigen::frame(stack, k));
  stack.barrier();
  // doc-region-end
  return stack(my_frames - 1, h - 1, w - 1) == 1.f;
}

bool node_array(std::size_t frames, std::size_t h, std::size_t w) {
  // doc-region: node_array
  shmarray::mpi::node node(MPI_COMM_WORLD);  // the ranks that share memory with this one
  shmarray::mpi::node_array<float> stack(node, {frames, h, w});  // collective over the node
  shmarray::mpi::node_array<long> counter(node, {1});
  for (std::size_t k = node.rank(); k < frames; k += node.size())
    shmarray::eigen::frame(stack, k).array() += 2.f;  // each rank its frames, in place
  stack.barrier();                                    // every rank of the node sees every write
  {
    auto g = counter.lock();  // node-wide mutual exclusion
    counter(0) += 1;
  }
  // doc-region-end
  counter.barrier();
  return stack(frames - 1, 0, 0) == 2.f && counter(0) == node.size();
}

}  // namespace

int main(int argc, char** argv) {
  const bool before = forked(8, 16, 16, 2);  // no thread yet: MPI_Init starts them
  MPI_Init(&argc, &argv);
  bool ok = false;
  int rank = 0, size = 0;
  try {
    ok = before && ranks(8, 16, 16) && node_array(8, 16, 16);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mpi example: %s\n", e.what());
  }
  int all = ok ? 1 : 0;
  MPI_Allreduce(MPI_IN_PLACE, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (rank == 0 && all) std::printf("ok: docs/mpi.md's examples run on %d ranks\n", size);
  MPI_Finalize();
  return all ? 0 : 1;
}
