// shmarray over MPI-3 node-shared windows: the ranks of one node share one
// buffer (allocated once per node), seen through a handle with ndarray<T>'s
// interface, so the Eigen and xtensor views work on it unchanged.
//
//   MPI_Init(...);
//   shmarray::mpi::node node(MPI_COMM_WORLD);       // the ranks sharing memory with this one
//   auto stack = shmarray::mpi::node_array<float>(node, {frames, h, w});   // collective
//   ... each rank writes its frames ...
//   stack.barrier();                                // writes visible to the node's ranks
//   auto m = shmarray::eigen::frame(stack, k);      // an Eigen::Map, no copy
//
// Synchronisation follows MPI's memory model for shared windows: each array
// keeps a passive-target epoch open (MPI_Win_lock_all) and syncs with
// MPI_Win_sync. barrier() is MPI_Win_sync, MPI_Barrier on the node,
// MPI_Win_sync: after it every rank of the node sees what any rank wrote
// before it. lock() is a node-wide mutual exclusion (an exclusive lock on a
// window of its own), with MPI_Win_sync on entry and exit, for
// read-modify-write of shared data.
//
// Node grouping: MPI_Comm_split_type(MPI_COMM_TYPE_SHARED), or, where the
// environment sets SHMARRAY_MPI_RANKS_PER_NODE=K, consecutive groups of K
// ranks (simulated nodes), so that multi-node code runs on one machine for
// tests and debugging.
#pragma once

#include <mpi.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <shmarray/detail/array_view.hpp>
#include <shmarray/errors.hpp>
#include <shmarray/shape.hpp>

namespace shmarray::mpi {

// An MPI call that failed (where the error handler returns).
class mpi_error : public error {
 public:
  mpi_error(const std::string& what, int code) : error(what), code_(code) {}
  int code() const noexcept { return code_; }

 private:
  int code_;
};

namespace detail {

inline void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw mpi_error(std::string("shmarray: ") + what + ": " + std::string(text, std::size_t(len)),
                  rc);
}

inline bool finalized() {
  int done = 0;
  MPI_Finalized(&done);
  return done != 0;
}

// The simulated node size, 0 for real nodes.
inline int ranks_per_node_override() {
  const char* k = std::getenv("SHMARRAY_MPI_RANKS_PER_NODE");
  if (!k || !*k) return 0;
  char* end = nullptr;
  const long v = std::strtol(k, &end, 10);
  if (*end || v < 1 || v > 1 << 20)
    throw shmarray::invalid_argument(std::string("shmarray: SHMARRAY_MPI_RANKS_PER_NODE=") + k +
                                     " is not a positive number of ranks");
  return int(v);
}

struct comms {
  MPI_Comm node = MPI_COMM_NULL, leaders = MPI_COMM_NULL;
  ~comms() {
    if (finalized()) return;
    if (node != MPI_COMM_NULL) MPI_Comm_free(&node);
    if (leaders != MPI_COMM_NULL) MPI_Comm_free(&leaders);
  }
};

}  // namespace detail

// The ranks of a communicator that share memory with this one. Made
// collectively on `comm`; copies are cheap and share the communicators,
// freed with the last copy (before MPI_Finalize).
class node {
 public:
  explicit node(MPI_Comm comm = MPI_COMM_WORLD) : c_(std::make_shared<detail::comms>()) {
    int world = 0;
    detail::check(MPI_Comm_rank(comm, &world), "MPI_Comm_rank");
    // Rank 0's setting holds for all (mpirun need not pass the environment
    // to other hosts), and simulated nodes never span real ones.
    int per = world == 0 ? detail::ranks_per_node_override() : 0;
    detail::check(MPI_Bcast(&per, 1, MPI_INT, 0, comm), "MPI_Bcast");
    detail::check(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, world, MPI_INFO_NULL, &c_->node),
                  "MPI_Comm_split_type");
    if (per > 0) {
      int host_rank = 0;
      MPI_Comm_rank(c_->node, &host_rank);
      MPI_Comm host = c_->node;
      c_->node = MPI_COMM_NULL;
      const int rc = MPI_Comm_split(host, host_rank / per, world, &c_->node);
      MPI_Comm_free(&host);
      detail::check(rc, "MPI_Comm_split");
      simulated_ = true;
    }
    MPI_Comm_rank(c_->node, &rank_);
    MPI_Comm_size(c_->node, &size_);
    detail::check(MPI_Comm_split(comm, rank_ == 0 ? 0 : MPI_UNDEFINED, world, &c_->leaders),
                  "MPI_Comm_split");
    int where[2] = {0, 0};  // this node's index among the nodes, and their number
    if (c_->leaders != MPI_COMM_NULL) {
      MPI_Comm_rank(c_->leaders, &where[0]);
      MPI_Comm_size(c_->leaders, &where[1]);
    }
    detail::check(MPI_Bcast(where, 2, MPI_INT, 0, c_->node), "MPI_Bcast");
    index_ = where[0];
    count_ = where[1];
  }

  MPI_Comm comm() const noexcept { return c_->node; }
  int rank() const noexcept { return rank_; }  // within the node
  int size() const noexcept { return size_; }  // ranks on the node
  // The node leaders' communicator (rank 0 of each node), MPI_COMM_NULL elsewhere.
  MPI_Comm leaders() const noexcept { return c_->leaders; }
  int index() const noexcept { return index_; }  // of this node among the nodes
  int count() const noexcept { return count_; }  // the number of nodes
  bool simulated() const noexcept { return simulated_; }

 private:
  std::shared_ptr<detail::comms> c_;
  int rank_ = 0, size_ = 1, index_ = 0, count_ = 1;
  bool simulated_ = false;
};

namespace detail {

// A node's shared window and its lock window, freed together (collectively,
// with the last handle on every rank of the node).
struct window_state {
  MPI_Win data = MPI_WIN_NULL, lock = MPI_WIN_NULL;
  bool epoch = false;  // MPI_Win_lock_all holds on data
  std::byte* base = nullptr;
  node where;
  explicit window_state(const node& n) : where(n) {}
  window_state(const window_state&) = delete;
  window_state& operator=(const window_state&) = delete;
  ~window_state() {
    // Freeing is collective: a handle dropped while an exception unwinds
    // this rank alone would wait for ranks that never come. Then the
    // window is left to MPI_Abort or MPI_Finalize.
    if (finalized() || std::uncaught_exceptions() > 0) return;
    if (data != MPI_WIN_NULL) {
      if (epoch) MPI_Win_unlock_all(data);
      MPI_Win_free(&data);
    }
    if (lock != MPI_WIN_NULL) MPI_Win_free(&lock);
  }
};

}  // namespace detail

// Held while a node_array's node-wide lock is held.
class node_lock {
 public:
  node_lock() = default;
  node_lock(node_lock&& o) noexcept : s_(std::move(o.s_)) {}
  node_lock& operator=(node_lock&& o) noexcept {
    if (this != &o) {
      unlock();
      s_ = std::move(o.s_);
    }
    return *this;
  }
  ~node_lock() { unlock(); }
  bool owns_lock() const noexcept { return s_ != nullptr; }
  explicit operator bool() const noexcept { return owns_lock(); }
  void unlock() noexcept {
    if (!s_) return;
    MPI_Win_sync(s_->data);  // what this rank wrote under the lock, out first
    MPI_Win_unlock(0, s_->lock);
    s_.reset();
  }

 private:
  template <class T>
  friend class node_array;
  explicit node_lock(std::shared_ptr<detail::window_state> s) : s_(std::move(s)) {}
  std::shared_ptr<detail::window_state> s_;
};

// An N-d array in one node-shared MPI window: the interface of ndarray<T>
// (shape, strides, data, element access, reshape, keep_alive), so the
// Eigen and xtensor views work on it, with no copy. Made collectively on a
// node; copies are cheap handles. The last handle frees the window, which
// is collective: drop the arrays on every rank of the node together.
template <class T>
class node_array : public shmarray::detail::array_view<T> {
  using base = shmarray::detail::array_view<T>;
  using base::data_;
  using base::order_;
  using base::set_view;
  using base::size_;

 public:
  using base::begin;
  using base::end;
  using typename base::value_type;
  // The data starts 64-byte aligned (checked on every rank: the window's
  // base need not be, so the data starts a few bytes into it).
  static constexpr std::size_t alignment = 64;

  node_array() = default;

  node_array(const node& n, const shape_type& shape, order o = order::row_major) {
    static_assert(std::is_trivially_copyable_v<value_type>,
                  "shmarray::mpi::node_array holds trivially copyable elements");
    const std::size_t nbytes = shmarray::detail::checked_nbytes(sizeof(T), shape, "a node array");
    auto s = std::make_shared<detail::window_state>(n);
    const MPI_Aint mine = n.rank() == 0 ? MPI_Aint(nbytes + alignment) : 0;
    void* base = nullptr;
    detail::check(MPI_Win_allocate_shared(mine, 1, MPI_INFO_NULL, n.comm(), &base, &s->data),
                  "MPI_Win_allocate_shared");
    MPI_Aint size = 0;
    int disp = 0;
    detail::check(MPI_Win_shared_query(s->data, 0, &size, &disp, &base), "MPI_Win_shared_query");
    s->base = static_cast<std::byte*>(base);
    // Where the data starts: the first 64-byte boundary in rank 0's view,
    // the same offset on every rank (they map the same pages).
    unsigned long offset =
        (alignment - reinterpret_cast<std::uintptr_t>(base) % alignment) % alignment;
    detail::check(MPI_Bcast(&offset, 1, MPI_UNSIGNED_LONG, 0, n.comm()), "MPI_Bcast");
    std::byte* data = s->base + offset;
    // Every rank must find its start aligned; all agree before any throws.
    int aligned = reinterpret_cast<std::uintptr_t>(data) % alignment == 0, all = 0;
    detail::check(MPI_Allreduce(&aligned, &all, 1, MPI_INT, MPI_MIN, n.comm()), "MPI_Allreduce");
    if (!all)
      throw error(
          "shmarray: a rank maps the node's window at an address that is not "
          "64-byte aligned where rank 0's is; the array cannot claim its alignment");
    detail::check(MPI_Win_lock_all(MPI_MODE_NOCHECK, s->data), "MPI_Win_lock_all");
    s->epoch = true;
    detail::check(MPI_Win_allocate_shared(0, 1, MPI_INFO_NULL, n.comm(), &base, &s->lock),
                  "MPI_Win_allocate_shared");
    state_ = std::move(s);
    set_view(reinterpret_cast<T*>(data), shape, o);
    if (n.rank() == 0) std::fill(begin(), end(), value_type{});
    barrier();
  }

  explicit operator bool() const noexcept { return state_ != nullptr; }
  const std::string& name() const {
    static const std::string n = "a node-shared MPI array";
    return n;
  }
  std::shared_ptr<const void> keep_alive() const noexcept { return state_; }
  const node& where() const { return state_->where; }

  node_array reshape(const std::vector<std::ptrdiff_t>& spec) const {
    node_array r = *this;
    r.set_view(data_, shmarray::detail::reshaped(spec, size_, sizeof(T), name()), order_);
    return r;
  }
  node_array reshape(std::initializer_list<std::ptrdiff_t> spec) const {
    return reshape(std::vector<std::ptrdiff_t>(spec));
  }
  node_array reshape(const shape_type& shape) const {
    return reshape(shmarray::detail::spec_of(shape));
  }

  // Makes this rank's writes visible, and others' seen, as far as this
  // rank's view of memory goes (MPI_Win_sync); use barrier() to agree.
  void sync() const { detail::check(MPI_Win_sync(state_->data), "MPI_Win_sync"); }
  // Every rank of the node waits here; after it, each sees what any wrote before it.
  void barrier() const {
    sync();
    detail::check(MPI_Barrier(state_->where.comm()), "MPI_Barrier");
    sync();
  }
  // A node-wide lock, for read-modify-write of shared data (not collective):
  // an exclusive passive-target lock on a window of its own. MPI promises
  // that exclusive locks on one window exclude each other; that they also
  // order the accesses to this array's memory is what Open MPI's
  // shared-memory windows do (the lock is taken eagerly), which the tests
  // check, and not a promise of every MPI.
  node_lock lock() const {
    detail::check(MPI_Win_lock(MPI_LOCK_EXCLUSIVE, 0, 0, state_->lock), "MPI_Win_lock");
    sync();  // what the last holder wrote, seen
    return node_lock(state_);
  }

 private:
  std::shared_ptr<detail::window_state> state_;
};

}  // namespace shmarray::mpi
