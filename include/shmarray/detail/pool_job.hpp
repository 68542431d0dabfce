// shmarray internals: what a process_pool accepts as a job, and the checks
// that keep a job from reading the parent's memory as it was at the fork.
// A job is a callable that captures nothing (checked at compile time) and an
// optional argument, copied into the board, that is scanned at run time for
// pointers into the parent's stack and into mappings made after the pool.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "../errors.hpp"
#include "../worker.hpp"
#include "board.hpp"
#include "index_split.hpp"
#include "mapping_registry.hpp"

namespace shmarray::detail {

// A function pointer, or a class with no state (a lambda that captures nothing).
template <class F>
inline constexpr bool is_captureless_v = (std::is_pointer_v<F> &&
                                          std::is_function_v<std::remove_pointer_t<F>>) ||
                                         (std::is_class_v<F> && std::is_empty_v<F> &&
                                          std::is_trivially_copyable_v<F>);

template <class F>
constexpr void check_callable() {
  static_assert(is_captureless_v<F>,
                "a process_pool job must not capture: its workers were forked when the pool was "
                "made and would read captured locals as they were then. Pass what it needs as the "
                "argument: pool.parallel_for(first, last, [](std::size_t i, const Args& a) {...}, "
                "args) or pool.run([](const Args& a, const shmarray::worker& w) {...}, args)");
}

template <class Arg>
constexpr void check_argument_type() {
  static_assert(std::is_trivially_copyable_v<Arg>,
                "a process_pool job's argument must be trivially copyable: indices, sizes, "
                "pointers into arrays made before the pool, shmarray::array_ref, "
                "shmarray::fixed_name; never an ndarray handle, a std::string, a std::vector or a "
                "std::function");
  static_assert(std::has_unique_object_representations_v<Arg> || std::is_arithmetic_v<Arg>,
                "a process_pool job's argument must have no padding and no floating-point member "
                "(std::has_unique_object_representations), so that it can be checked for "
                "pointers into the parent's stack: order its members largest first, make a flag "
                "a std::uint64_t, keep a double's bits in a std::uint64_t, or pass a lone double "
                "as the argument");
  static_assert(sizeof(Arg) + 64 <= max_job_bytes,
                "a process_pool job's argument must fit in process_pool::max_job_bytes");
  static_assert(alignof(Arg) <= 64, "a process_pool job's argument must not be over-aligned");
}

// A job's argument, not its options (which have overloads of their own).
template <class Arg>
using if_job_argument = std::enable_if_t<!std::is_base_of_v<worker_options, Arg>>;

// What a pool's workers run: fn(w) or fn().
template <class F>
struct plain_job {
  F fn;
  void operator()(const worker& w) const { call_worker(fn, w); }
};

// fn(arg, w) or fn(arg).
template <class F, class Arg>
struct arg_job {
  F fn;
  Arg arg;
  void operator()(const worker& w) const {
    if constexpr (std::is_invocable_v<const F&, const Arg&, const worker&>)
      fn(arg, w);
    else {
      static_assert(std::is_invocable_v<const F&, const Arg&>,
                    "process_pool::run(fn, arg) calls fn(const Arg&, const shmarray::worker&) or "
                    "fn(const Arg&)");
      fn(arg);
    }
  }
};

// parallel_for's fn(i, arg, w) or fn(i, arg).
template <class F, class Arg>
struct arg_for_job {
  F fn;
  Arg arg;
  template <class I>
  void operator()(I i, const worker& w) const {
    if constexpr (std::is_invocable_v<const F&, I, const Arg&, const worker&>)
      fn(i, arg, w);
    else {
      static_assert(std::is_invocable_v<const F&, I, const Arg&>,
                    "process_pool::parallel_for(first, last, fn, arg) calls fn(i, const Arg&, "
                    "const shmarray::worker&) or fn(i, const Arg&)");
      fn(i, arg);
    }
  }
};

// The parent's memory a pool's workers do not share: its stack, and the
// mappings made after mapping number `mapped`.
struct pool_memory {
  std::uintptr_t stack_begin = 0, stack_end = 0;
  std::uint64_t mapped = 0;
};

// Scans an argument's words for addresses a worker cannot use; throws
// invalid_job saying what to do.
template <class Arg>
void check_argument(const Arg& arg, const pool_memory& mem) {
  if constexpr (sizeof(Arg) >= sizeof(std::uintptr_t)) {
    unsigned char bytes[sizeof(Arg)];
    std::memcpy(bytes, std::addressof(arg), sizeof(Arg));
    for (std::size_t at = 0; at + sizeof(std::uintptr_t) <= sizeof(Arg);
         at += alignof(std::uintptr_t)) {
      std::uintptr_t word;
      std::memcpy(&word, bytes + at, sizeof word);
      if (word >= mem.stack_begin && word < mem.stack_end)
        throw invalid_job(
            "shmarray: a process_pool job's argument holds a pointer into the parent's stack (a "
            "pointer to a local variable); a worker has a stack of its own, where that address "
            "means nothing. Pass values, and pointers or array_refs into arrays made before the "
            "pool");
      const mapped_range later = mapping_registry::instance().made_after(word, mem.mapped);
      if (later.seq)
        throw invalid_job(
            "shmarray: a process_pool job's argument refers to " + describe(later.name) +
            ", made after the pool was created: its workers do not have it mapped; create "
            "arrays before the pool, or pass a fixed_name and attach it in the job");
    }
  }
}

}  // namespace shmarray::detail
