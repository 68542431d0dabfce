// shmarray-stack-mpi: shmarray-stack across MPI ranks and nodes. The ranks
// of a node work in place on one node-shared copy of that node's frames;
// frames cross the network once, each to its node; the projections are
// reduced across nodes; rank 0 reads (or synthesises) the stack and writes
// the files. Same options and outputs as shmarray-stack, same stage code.
//
//   mpirun -np N shmarray-stack-mpi [INPUT.tif] [-o OUTDIR] [--steps LIST] [--sigma S]
//                                   [--synthetic F,H,W] [--scratch DIR]
#include <fcntl.h>
#include <mpi.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <shmarray/eigen.hpp>
#include <shmarray/mpi.hpp>
#include <shmarray/stack/memory.hpp>
#include <shmarray/stack/options.hpp>
#include <shmarray/stack/png.hpp>
#include <shmarray/stack/stages.hpp>
#include <shmarray/stack/synthetic.hpp>
#include <shmarray/stack/tiff.hpp>
#include <string>
#include <vector>

namespace st = shmarray::stack;
namespace sm = shmarray::mpi;
using clock_type = std::chrono::steady_clock;

namespace {

int world_rank = 0, world_size = 1;

// Ends the whole job: the message from the rank that met the error, then
// MPI_Abort, which stops every rank (never a hang) with a non-zero exit.
[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "shmarray-stack-mpi: rank %d: %s\n", world_rank, what.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::exit(1);
}

// The most bytes one MPI call carries: MPI counts are int.
// SHMARRAY_MPI_MAX_CHUNK lowers it, so that tests split small transfers.
// Every rank uses rank 0's value (mpirun need not pass the environment to
// other nodes): set once, after MPI_Init, by agree_on_chunk().
std::size_t g_max_chunk = std::size_t(INT_MAX);

std::size_t max_chunk() {
  return g_max_chunk;
}

void agree_on_chunk() {
  long long n = INT_MAX;
  if (world_rank == 0)
    if (const char* v = std::getenv("SHMARRAY_MPI_MAX_CHUNK"))
      if (const long long c = std::atoll(v); c > 0 && c <= INT_MAX) n = c;
  MPI_Bcast(&n, 1, MPI_LONG_LONG, 0, MPI_COMM_WORLD);
  g_max_chunk = std::size_t(n);
}

void send_bytes(const void* p, std::size_t n, int dest, int tag, MPI_Comm c) {
  const auto* b = static_cast<const char*>(p);
  for (std::size_t off = 0, step = max_chunk(); off < n; off += step)
    sm::detail::check(MPI_Send(b + off, int(std::min(step, n - off)), MPI_BYTE, dest, tag, c),
                      "MPI_Send");
}

void recv_bytes(void* p, std::size_t n, int src, int tag, MPI_Comm c) {
  auto* b = static_cast<char*>(p);
  for (std::size_t off = 0, step = max_chunk(); off < n; off += step)
    sm::detail::check(
        MPI_Recv(b + off, int(std::min(step, n - off)), MPI_BYTE, src, tag, c, MPI_STATUS_IGNORE),
        "MPI_Recv");
}

template <class T>
MPI_Datatype mpi_type() {
  if constexpr (std::is_same_v<T, std::uint8_t>) return MPI_UNSIGNED_CHAR;
  if constexpr (std::is_same_v<T, std::uint16_t>) return MPI_UNSIGNED_SHORT;
  if constexpr (std::is_same_v<T, float>) return MPI_FLOAT;
}

// Reduces `n` elements to rank 0 of `c`, in chunks that fit an int count.
void reduce_chunked(void* data, std::size_t n, std::size_t size, MPI_Datatype t, MPI_Op op,
                    MPI_Comm c) {
  int r = 0;
  MPI_Comm_rank(c, &r);
  auto* b = static_cast<char*>(data);
  const std::size_t step = std::max<std::size_t>(1, max_chunk() / size);
  for (std::size_t off = 0; off < n; off += step) {
    const int count = int(std::min(step, n - off));
    sm::detail::check(
        MPI_Reduce(r == 0 ? MPI_IN_PLACE : b + off * size, b + off * size, count, t, op, 0, c),
        "MPI_Reduce");
  }
}

// The maximum with stages.hpp's rule: a NaN wins (MPI_MAX does not say).
template <class T>
void max_nan_wins(void* in, void* inout, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const T*>(in);
  auto* b = static_cast<T*>(inout);
  for (int i = 0; i < *len; ++i)
    if (b[i] < a[i] || a[i] != a[i]) b[i] = a[i];
}

// Merges partial moments: MPI's inout = in (+) inout, in rank order.
void merge_moments(void* in, void* inout, int* len, MPI_Datatype*) {
  auto* a = static_cast<st::moments*>(in);
  auto* b = static_cast<st::moments*>(inout);
  for (int i = 0; i < *len; ++i) {
    st::moments m = a[i];
    m.merge(b[i]);
    b[i] = m;
  }
}

// Frames [first, first + count) of the input, into `out`.
template <class T>
void load(const st::job_options& o, const std::vector<st::spot>& spots, std::size_t first,
          std::size_t count, T* out) {
  const std::size_t frame = o.info.height * o.info.width;
  if (o.input.empty()) {
    if constexpr (std::is_same_v<T, std::uint16_t>) {
      std::vector<double> expected;
      for (std::size_t k = 0; k < count; ++k)
        st::synthesize_frame(o.synthetic, spots, first + k, out + k * frame, expected);
    }
  } else {
    st::read_tiff(o.input, o.info, out, first, count);
  }
}

template <class T, class FirstOf, class Stage>
int work_on(const st::job_options& o, const sm::node& n, FirstOf first_of, std::size_t first,
            std::size_t nf, std::vector<std::pair<std::string, double>>& times, Stage& stage,
            sm::node_array<T>& stack, sm::node_array<T>& processed, sm::node_array<T>& pmax,
            sm::node_array<float>& work, sm::node_array<st::moments>& acc,
            clock_type::time_point t_all);

template <class T>
int run(const st::job_options& o, const sm::node& n) {
  const std::size_t F = o.info.frames, H = o.info.height, W = o.info.width;
  const std::size_t nodes = std::size_t(n.count()), me = std::size_t(n.index());
  auto first_of = [&](std::size_t i) { return F * i / nodes; };
  const std::size_t first = first_of(me), nf = first_of(me + 1) - first;
  const auto t_all = clock_type::now();
  std::vector<std::pair<std::string, double>> times;
  auto stage = [&](const char* name, auto&& body) {
    const auto t0 = clock_type::now();
    body();
    times.emplace_back(name, std::chrono::duration<double>(clock_type::now() - t0).count());
  };

  // This node's share of the stack and its working arrays, one copy per node.
  sm::node_array<T> stack(n, {nf, H, W}), processed(n, {nf, H, W}), pmax(n, {H, W});
  sm::node_array<float> work(n, {nf, H, W});
  sm::node_array<st::moments> acc(n, {H, W});
  // From here a failure must end the job before the arrays go: freeing a
  // window is collective, and the other ranks would wait for this one.
  try {
    return work_on(o, n, first_of, first, nf, times, stage, stack, processed, pmax, work, acc,
                   t_all);
  } catch (const std::exception& e) {
    fail(e.what());
  }
}

template <class T, class FirstOf, class Stage>
int work_on(const st::job_options& o, const sm::node& n, FirstOf first_of, std::size_t first,
            std::size_t nf, std::vector<std::pair<std::string, double>>& times, Stage& stage,
            sm::node_array<T>& stack, sm::node_array<T>& processed, sm::node_array<T>& pmax,
            sm::node_array<float>& work, sm::node_array<st::moments>& acc,
            clock_type::time_point t_all) {
  const std::size_t F = o.info.frames, H = o.info.height, W = o.info.width, frame = H * W;
  const std::size_t nodes = std::size_t(n.count());

  // Rank 0 makes each node's frames and sends them, once, to that node's leader.
  stage(o.input.empty() ? "synthesize" : "read", [&] {
    const auto spots = o.input.empty() ? st::make_spots(o.synthetic) : std::vector<st::spot>{};
    if (world_rank == 0) {
      load(o, spots, first, nf, stack.data());
      std::vector<T> buf;
      for (std::size_t i = 1; i < nodes; ++i) {
        const std::size_t f0 = first_of(i), c = first_of(i + 1) - f0;
        buf.resize(c * frame);
        load(o, spots, f0, c, buf.data());
        send_bytes(buf.data(), buf.size() * sizeof(T), int(i), 1, n.leaders());
      }
    } else if (n.rank() == 0) {
      recv_bytes(stack.data(), nf * frame * sizeof(T), 0, 1, n.leaders());
    }
    stack.barrier();
  });

  // The stages, each rank its frames of the node's share, in place.
  const std::vector<float> kernel =
      o.todo.blur ? st::gaussian_kernel(o.sigma) : std::vector<float>{};
  const float full = st::full_scale<T>();
  std::vector<float> scratch;
  std::vector<std::uint32_t> counts;  // the median's counters
  auto each_frame = [&](const char* name, auto&& fn) {
    stage(name, [&] {
      for (std::size_t k = std::size_t(n.rank()); k < nf; k += std::size_t(n.size()))
        fn(k, st::frame_map(work.data() + k * frame, Eigen::Index(H), Eigen::Index(W)));
      work.barrier();
    });
  };
  each_frame("to float", [&](std::size_t k, st::frame_map) {
    st::to_work(stack.data() + k * frame, work.data() + k * frame, frame);
  });
  if (o.todo.background)
    each_frame("background", [&](std::size_t, st::frame_map f) {
      st::subtract_background<T>(f, scratch, counts);
    });
  if (o.todo.blur)
    each_frame("blur", [&](std::size_t, st::frame_map f) { st::blur(f, kernel, scratch); });
  if (o.todo.normalize)
    each_frame("normalize", [&](std::size_t, st::frame_map f) { st::normalize(f, full); });
  each_frame("to pixels", [&](std::size_t k, st::frame_map) {
    st::to_pixels(work.data() + k * frame, processed.data() + k * frame, frame);
  });
  processed.barrier();

  // Projections: each rank its rows of the node's share, then across nodes.
  std::vector<float> mean, sd;
  stage("projections", [&] {
    const std::size_t r = std::size_t(n.rank()), s = std::size_t(n.size());
    const std::size_t b = H * r / s, e = H * (r + 1) / s;
    if (nf == 0) {  // a node without frames: nothing for the maximum
      std::fill(pmax.data() + b * W, pmax.data() + e * W, std::numeric_limits<T>::lowest());
    } else if (e > b) {
      st::accumulate_rows(processed.data(), nf, H, W, b, e - b, pmax.data(), acc.data() + b * W);
    }
    pmax.barrier();
    acc.barrier();  // every rank's moments, seen by the leader
    if (n.rank() == 0) {
      MPI_Op max_op;
      MPI_Op_create(&max_nan_wins<T>, 1, &max_op);
      reduce_chunked(pmax.data(), frame, sizeof(T), mpi_type<T>(), max_op, n.leaders());
      MPI_Op_free(&max_op);
      MPI_Datatype mt;
      MPI_Type_contiguous(int(sizeof(st::moments)), MPI_BYTE, &mt);
      MPI_Type_commit(&mt);
      MPI_Op op;
      MPI_Op_create(&merge_moments, 0, &op);
      reduce_chunked(acc.data(), frame, sizeof(st::moments), mt, op, n.leaders());
      MPI_Op_free(&op);
      MPI_Type_free(&mt);
    }
    if (world_rank == 0) {
      mean.resize(frame);
      sd.resize(frame);
      st::finish_moments(acc.data(), frame, mean.data(), sd.data());
    }
  });

  // Rank 0 writes the files. The processed frames of the other nodes come
  // to it one page at a time, as it writes them: it never holds the whole
  // stack (which may be larger than any one machine).
  const double processing = std::chrono::duration<double>(clock_type::now() - t_all).count();
  if (world_rank != 0 && n.rank() == 0) {
    for (std::size_t k = 0; k < nf; ++k)
      send_bytes(processed.data() + k * frame, frame * sizeof(T), 0, 2, n.leaders());
  }
  if (world_rank == 0) {
    const auto t0 = clock_type::now();
    st::write_options wo;
    wo.bigtiff_above = o.bigtiff_above;
    const st::output_dir& out = *o.out;
    std::vector<T> page(frame);
    std::size_t from = 0;  // the node whose frames come next
    st::write_tiff_pages<T>(
        out, "processed.tif", F, H, W,
        [&](std::size_t k) -> const T* {
          if (k < first_of(1)) return processed.data() + k * frame;  // this node's own
          while (k >= first_of(from + 1))
            ++from;
          recv_bytes(page.data(), frame * sizeof(T), int(from), 2, n.leaders());
          return page.data();
        },
        wo);
    st::write_tiff(out, "max.tif", pmax.data(), 1, H, W);
    st::write_tiff(out, "mean.tif", mean.data(), 1, H, W);
    st::write_tiff(out, "std.tif", sd.data(), 1, H, W);
    st::write_png(out, "max.png", pmax.data(), H, W);
    times.emplace_back("write", std::chrono::duration<double>(clock_type::now() - t0).count());
    const std::uint64_t in_bytes = std::uint64_t(F) * frame * sizeof(T);
    std::printf("shmarray-stack-mpi: %zu frames of %zu x %zu %s (%s) from %s\n", F, H, W,
                st::pixel_name(o.info.type), st::human_bytes(in_bytes).c_str(),
                o.input.empty() ? "a synthetic stack" : o.input.c_str());
    std::printf("  steps %s, %d rank%s on %d node%s%s\n", o.todo.str().c_str(), world_size,
                world_size == 1 ? "" : "s", n.count(), n.count() == 1 ? "" : "s",
                n.simulated() ? " (simulated)" : "");
    std::printf("  %-12s %9s   (rank 0's)\n", "stage", "seconds");
    for (const auto& [name, secs] : times)
      std::printf("  %-12s %9.3f\n", name.c_str(), secs);
    std::printf("  %.3f s from %s to projections, %.0f MB/s\n", processing,
                o.input.empty() ? "synthesis" : "reading",
                processing > 0 ? double(in_bytes) / 1e6 / processing : 0.0);
    std::printf("wrote %s, max.tif, mean.tif, std.tif and max.png\n",
                out.shown("processed.tif").c_str());
  }
  sm::detail::check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
  return 0;
}

// Whether this node's arrays fit where they go; every rank learns whether all do.
bool space_everywhere(const st::job_options& o, const sm::node& n) {
  const std::size_t nodes = std::size_t(n.count()), me = std::size_t(n.index());
  const std::size_t F = o.info.frames, frame = o.info.height * o.info.width;
  const std::size_t nf = F * (me + 1) / nodes - F * me / nodes;
  const std::size_t px = st::pixel_bytes(o.info.type);
  const std::uint64_t need = std::uint64_t(nf) * frame * (2 * px + 4) +
                             std::uint64_t(frame) * (px + sizeof(st::moments)) + 5 * 4096 * 64;
  int ok = 1;
  if (n.rank() == 0) {
    const std::string where = o.scratch.empty() ? "/dev/shm" : o.scratch;
    struct statvfs sv {};
    const std::uint64_t avail =
        ::statvfs(where.c_str(), &sv) == 0 ? std::uint64_t(sv.f_bavail) * sv.f_frsize : 0;
    if (need > avail) {
      ok = 0;
      std::fprintf(stderr,
                   "shmarray-stack-mpi: node %d needs %" PRIu64
                   " bytes (%s) in %s for its "
                   "share of the stack, but it has %" PRIu64
                   " bytes (%s) free.\n"
                   "  Give it more (in a container, docker run --shm-size=...), or keep the "
                   "arrays in files on disk with --scratch DIR.\n",
                   n.index(), need, st::human_bytes(need).c_str(), where.c_str(), avail,
                   st::human_bytes(avail).c_str());
    } else if (o.scratch.empty()) {
      // /dev/shm's pages are memory: the node must have the memory too.
      const std::string short_of =
          st::memory_shortfall(need, avail, st::memory_for_shared_arrays());
      if (!short_of.empty()) {
        ok = 0;
        std::fprintf(stderr, "shmarray-stack-mpi: node %d: %s\n", n.index(), short_of.c_str());
      }
    }
  }
  int all = 0;
  sm::detail::check(MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD), "MPI_Allreduce");
  return all == 1;
}

}  // namespace

int main(int argc, char** argv) {
  // Open MPI reads where its shared windows' files go when MPI starts.
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i], dir;
    if (a == "--scratch" && i + 1 < argc) dir = argv[i + 1];
    if (a.rfind("--scratch=", 0) == 0) dir = a.substr(10);
    if (!dir.empty()) {
      std::error_code ec;
      const auto abs = std::filesystem::absolute(dir, ec).lexically_normal().string();
      ::setenv("OMPI_MCA_osc_sm_backing_directory", abs.c_str(), 1);
    }
  }
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  agree_on_chunk();
  st::job_options o;
  int rc = -1;
  {
    // Only rank 0 speaks about the command line.
    const int saved_out = ::dup(1), saved_err = ::dup(2);
    if (world_rank != 0) {
      const int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, 1);
      ::dup2(null, 2);
      ::close(null);
    }
    st::command_line cli(
        "shmarray-stack-mpi",
        "shmarray-stack-mpi: shmarray-stack across MPI ranks and nodes (mpirun -np N "
        "shmarray-stack-mpi ...): one node-shared copy of each node's frames, worked on in "
        "place by the node's ranks; the same options and outputs as shmarray-stack, but the "
        "workers are the ranks.",
        o, false, 1);
    rc = cli.parse(argc, argv);
    std::fflush(nullptr);
    ::dup2(saved_out, 1);
    ::dup2(saved_err, 2);
    ::close(saved_out);
    ::close(saved_err);
  }
  if (rc >= 0) {
    MPI_Finalize();
    return rc;
  }
  try {
    // Rank 0 checks the input and the directories; every rank learns the stack's shape.
    unsigned long long shape[4] = {0, 0, 0, 0};
    if (world_rank == 0) {
      try {
        st::prepare_directories(o);
        st::describe_input(o);
      } catch (const std::exception& e) {
        fail(e.what());
      }
      shape[0] = o.info.frames;
      shape[1] = o.info.height;
      shape[2] = o.info.width;
      shape[3] = static_cast<unsigned long long>(o.info.type);
    }
    sm::detail::check(MPI_Bcast(shape, 4, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD), "MPI_Bcast");
    o.info.frames = shape[0];
    o.info.height = shape[1];
    o.info.width = shape[2];
    o.info.type = static_cast<st::pixel>(shape[3]);
    if (world_rank != 0 && !o.scratch.empty()) st::check_scratch(o);  // as on rank 0
    int code = 1;
    {
      sm::node n(MPI_COMM_WORLD);
      if (space_everywhere(o, n)) {
        if (world_rank == 0) {
          try {
            st::decode_unbounded_page(o);  // before any window holds the stack
          } catch (const std::exception& e) {
            fail(e.what());
          }
        }
        sm::detail::check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");  // every node waits for it
        switch (o.info.type) {
          case st::pixel::u8:
            code = run<std::uint8_t>(o, n);
            break;
          case st::pixel::u16:
            code = run<std::uint16_t>(o, n);
            break;
          case st::pixel::f32:
            code = run<float>(o, n);
            break;
        }
      }
    }
    MPI_Finalize();
    return code;
  } catch (const std::exception& e) {
    fail(e.what());
  }
}
