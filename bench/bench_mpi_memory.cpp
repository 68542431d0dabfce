// Memory per node: every rank holding a private copy of a stack, against
// one node-shared copy (shmarray::mpi::node_array), side by side in one run.
// PSS (from /proc/self/smaps_rollup) summed over the node's ranks, after
// every rank has read the whole stack.
//
//   mpirun -np N build/bench/shmarray_mpi_memory_bench [FRAMES]
#include <mpi.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <numeric>
#include <shmarray/mpi.hpp>
#include <string>
#include <vector>

namespace {

std::uint64_t pss_bytes() {
  std::ifstream f("/proc/self/smaps_rollup");
  std::string key;
  std::uint64_t kib = 0;
  while (f >> key) {
    if (key == "Pss:") {
      f >> kib;
      return kib * 1024;
    }
    f.ignore(1 << 12, '\n');
  }
  return 0;
}

// PSS summed over the node's ranks, less what they held before.
std::uint64_t node_pss(MPI_Comm node, std::uint64_t before) {
  const std::uint64_t mine = pss_bytes() - std::min(pss_bytes(), before);
  std::uint64_t sum = 0;
  MPI_Allreduce(&mine, &sum, 1, MPI_UINT64_T, MPI_SUM, node);
  return sum;
}

template <class It>
std::uint64_t checksum(It b, It e) {
  return std::accumulate(b, e, std::uint64_t(0));
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  {
    const std::size_t frames = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 200;
    const std::size_t n = frames * 512 * 512;
    shmarray::mpi::node node(MPI_COMM_WORLD);
    std::uint64_t base = pss_bytes();
    std::uint64_t priv = 0, shared = 0, sum_priv = 0, sum_shared = 0;
    {  // every rank its own copy, filled and read
      std::vector<std::uint16_t> copy(n);
      for (std::size_t i = 0; i < n; ++i)
        copy[i] = std::uint16_t(i);
      sum_priv = checksum(copy.begin(), copy.end());
      MPI_Barrier(node.comm());
      priv = node_pss(node.comm(), base);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    base = pss_bytes();
    {  // one copy per node: rank 0 of the node fills it, every rank reads it all
      shmarray::mpi::node_array<std::uint16_t> stack(node, {frames, 512, 512});
      if (node.rank() == 0)
        for (std::size_t i = 0; i < n; ++i)
          stack.data()[i] = std::uint16_t(i);
      stack.barrier();
      sum_shared = checksum(stack.begin(), stack.end());
      MPI_Barrier(node.comm());  // every rank has read it all before any measures
      shared = node_pss(node.comm(), base);
      stack.barrier();
    }
    if (sum_priv != sum_shared) {
      std::fprintf(stderr, "bench: the copies differ\n");
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    int world = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &world);
    if (world == 0)
      std::printf(
          "| a %zu x 512 x 512 uint16 stack (%.0f MiB) on a node of %d ranks | a private "
          "copy per rank | %.0f MiB | %.0f MiB | %.2fx |\n",
          frames, double(n * 2) / (1 << 20), node.size(), double(priv) / (1 << 20),
          double(shared) / (1 << 20), double(shared) / double(priv));
  }
  MPI_Finalize();
  return 0;
}
