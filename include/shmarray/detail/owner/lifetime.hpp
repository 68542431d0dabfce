// shmarray internals: a manager's part in its owner's lifetime. Every named
// object a manager creates holds a reference to this process's owner token
// and is registered with the watchdog helper the moment it exists; the
// manager's end removes each, unregisters it and releases its reference.
// One object, `ownership`, does all of it, so manager.hpp only says when.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "../../backing.hpp"
#include "../../inspect.hpp"
#include "../same_object.hpp"
#include "helper_client.hpp"
#include "token.hpp"
#include "wire.hpp"

namespace shmarray::detail::owner {

// The names one manager created, and what their lifetime holds: a token
// reference each, and the watchdog's registration. Removes them all when
// it ends, in the creating process only (a forked child's copy removes
// nothing of its parent's). Thread-safe.
class ownership {
 public:
  ownership() = default;
  ownership(const ownership&) = delete;
  ownership& operator=(const ownership&) = delete;
  ~ownership() { remove_all(); }

  // One creation under way. Holds a reference to the owner token (its id
  // is what the new record names: 0 where none could be made), and
  // registers the object with the watchdog as soon as it exists, through
  // the hook it puts in `init`, before it is filled: an owner killed while
  // a large array is filled leaks nothing. Undone (unregistered, the
  // reference released) unless owned() is called.
  class creation {
   public:
    creation(ownership& o, wire::object_kind kind, std::string registered)
        : owner_(o), kind_(kind), registered_(std::move(registered)) {
      id_ = token::get().acquire();
      counted_ = id_ != 0;
      bool watched = watchdog::get().prepare(id_);
      // The token is named only once the watchdog knows it (see acquire);
      // a new one (the old one lost) is announced in turn.
      while (id_) {
        const std::uint64_t named = token::get().publish(id_);
        if (named == id_) break;
        id_ = named;
        if (id_) watched = watchdog::get().prepare(id_);
      }
      if (!watched) collect_once();
    }
    creation(const creation&) = delete;
    creation& operator=(const creation&) = delete;
    ~creation() {
      unregister();
      if (counted_) token::get().release();
    }

    // The token id the new object's record names (0: none).
    std::uint64_t token_id() const noexcept { return id_; }

    // Has `init` tell the watchdog of the new object the moment it exists.
    void watch(initial_bytes& init) noexcept {
      init.created = &created;
      init.context = this;
    }

    // The object exists as `name` (the segment's own name) and `object`:
    // the ownership holds it from now on, with its token reference.
    void owned(const std::string& name, pid_t creator, const object_id& object) {
      std::lock_guard<std::mutex> g(owner_.mu_);
      owner_.owned_.push_back({name, registered_, creator, object, counted_, kind_});
      watched_ = false;
      counted_ = false;
    }

   private:
    static void created(void* context, const object_id& id) noexcept {
      auto* c = static_cast<creation*>(context);
      c->unregister();  // a second object of the same creation (the fallback by name)
      watchdog::get().add(c->kind_, c->registered_, id, c->id_);
      c->watched_ = true;
      c->object_ = id;
    }
    void unregister() noexcept {
      if (watched_) watchdog::get().remove(kind_, registered_, object_);
      watched_ = false;
    }

    ownership& owner_;
    wire::object_kind kind_;
    std::string registered_;  // "/NAME", or a file's link-free path
    std::uint64_t id_ = 0;
    bool counted_ = false;  // a token reference held
    bool watched_ = false;
    object_id object_{};
  };

  // The names owned, in creation order.
  std::vector<std::string> names() const {
    std::lock_guard<std::mutex> g(mu_);
    std::vector<std::string> out;
    for (const auto& o : owned_)
      out.push_back(o.name);
    return out;
  }

  // Removes one owned name and stops owning it.
  void remove(const std::string& name) noexcept {
    std::lock_guard<std::mutex> g(mu_);
    for (auto it = owned_.begin(); it != owned_.end(); ++it) {
      if (it->name != name) continue;
      remove_if_mine(*it);
      owned_.erase(it);
      return;
    }
  }

  void remove_all() noexcept {
    std::lock_guard<std::mutex> g(mu_);
    for (const auto& o : owned_)
      remove_if_mine(o);
    owned_.clear();
  }

 private:
  // A name created, and the object it named then.
  struct owned_name {
    std::string name;        // as the segment has it
    std::string registered;  // as the watchdog has it: "/NAME", or the file's link-free path
    pid_t creator;
    object_id id;
    bool token;  // counted in the creator's owner token
    wire::object_kind kind;
  };

  // Without a watchdog, nobody removes what a crashed owner left until
  // someone runs `shmarray gc`: so the first named segment of a process
  // that runs without one does it (once per process, never in every
  // constructor: a scan of /dev/shm costs what its objects cost to open).
  static void collect_once() noexcept {
    static std::atomic<bool> done{false};
    if (done.exchange(true)) return;
    try {
      collect_dead(false, [](const collected&) {});
    } catch (...) {
    }
  }

  // Removes a name this process created, if it still names what was created
  // (gone already, or reused by someone else: left alone).
  static void remove_if_mine(const owned_name& o) noexcept {
    if (o.creator != ::getpid()) return;
    try {
      // The owner's own: device and inode do where no birth time is kept.
      unlink_if_same(wire::object_path(o.kind, o.registered), o.id, true);
    } catch (...) {  // out of memory: the watchdog removes it at the end
    }
    watchdog::get().remove(o.kind, o.registered, o.id);
    if (o.token) token::get().release();
  }

  mutable std::mutex mu_;
  std::vector<owned_name> owned_;
};

}  // namespace shmarray::detail::owner
