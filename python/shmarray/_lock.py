"""The segment's lock, the record's process-shared robust mutex, through
glibc's pthread_mutex_* with ctypes: the same lock C++'s ndarray::lock()
takes, owner death included.

Sound because the mutex is glibc's own object, initialised by glibc (here
or in C++) and only ever handed to glibc's functions; ctypes releases the
GIL while a lock call blocks; and a robust mutex belongs to the thread that
took it, which a `with` block keeps. Only where the C library is glibc."""

import ctypes
import ctypes.util
import errno
import os
import struct
import time

from . import _errors as e
from ._names import escape
from . import _format as f

_libc = None


def _c():
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c") or "libc.so.6"
        try:
            lib = ctypes.CDLL(name, use_errno=True)
            if not hasattr(lib, "gnu_get_libc_version"):
                raise AttributeError("gnu_get_libc_version")
            for fn in ("pthread_mutex_trylock", "pthread_mutex_unlock",
                       "pthread_mutex_consistent", "pthread_mutex_timedlock",
                       "pthread_mutex_init", "pthread_mutexattr_init",
                       "pthread_mutexattr_settype", "pthread_mutexattr_setpshared",
                       "pthread_mutexattr_setrobust", "pthread_mutexattr_destroy"):
                getattr(lib, fn).restype = ctypes.c_int
        except (OSError, AttributeError) as err:
            raise e.LockError(f"the lock needs glibc's robust mutexes ({err})") from None
        _libc = lib
    return _libc


PTHREAD_MUTEX_ERRORCHECK, PTHREAD_PROCESS_SHARED, PTHREAD_MUTEX_ROBUST = 2, 1, 1


class _timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


# struct __pthread_mutex_s on glibc: __lock, __count, __owner, __nusers, then __kind.
_KIND_OFFSET = 16


def new_mutex_bytes():
    """An unlocked glibc mutex, process-shared, robust and error-checking,
    as the 64 bytes of the record's mutex field; None without glibc. (It is
    made in private memory and copied into the segment before the segment
    has a name: glibc keeps no pointer to itself in an unlocked
    process-shared mutex, so the copy is the same mutex, though POSIX
    leaves copying one undefined.)"""
    try:
        c = _c()
    except e.LockError:
        return None
    attr = ctypes.create_string_buffer(64)
    mutex = ctypes.create_string_buffer(64)
    if (c.pthread_mutexattr_init(attr) or
            c.pthread_mutexattr_settype(attr, PTHREAD_MUTEX_ERRORCHECK) or
            c.pthread_mutexattr_setpshared(attr, PTHREAD_PROCESS_SHARED) or
            c.pthread_mutexattr_setrobust(attr, PTHREAD_MUTEX_ROBUST) or
            c.pthread_mutex_init(mutex, attr)):
        return None
    c.pthread_mutexattr_destroy(attr)
    return mutex.raw


# Locks taken and not yet unlocked, with what they need (the mapping and
# the mutex's address) kept alive: a Held dropped without unlock() must
# not let its mapping go while the mutex is on the thread's robust list.
_held = {}


class Held:
    """The result of lock(): true while it holds the lock. `owner_died` is
    True when the previous holder died holding it (the data it guarded may
    be half-written). Unlock with `unlock()` or by leaving the `with` block.
    A timed lock that timed out gives a Held that is false."""

    def __init__(self, mapping, cell, name, owner_died, held=True):
        self._mapping, self._cell, self.name = mapping, cell, name
        self.owner_died = owner_died
        self.held = held
        if held:
            _held[id(self)] = (mapping, cell)

    def __bool__(self):
        return self.held

    def __repr__(self):
        if not self.held:
            return f"<shmarray.Held {escape(self.name)}: not held>"
        died = ", owner died" if self.owner_died else ""
        return f"<shmarray.Held {escape(self.name)}: held{died}>"

    def unlock(self):
        if not self.held:
            return
        rc = _c().pthread_mutex_unlock(self._cell)
        if rc:
            raise e.LockError(f"{self.name}: could not be unlocked: {os.strerror(rc)} (it is "
                              "unlocked by the thread and process that locked it)")
        self.held = False
        _held.pop(id(self), None)
        self._cell = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.unlock()
        return False


_want_kind = None


def _check_kind(m, at, name):
    """The mutex must be of the kind FORMAT.md gives (robust, shared,
    error-checking), as glibc encodes it, before glibc is given it."""
    global _want_kind
    if _want_kind is None:
        fresh = new_mutex_bytes()
        if fresh is None:
            return
        _want_kind = struct.unpack_from("<i", fresh, _KIND_OFFSET)[0]
    kind = struct.unpack_from("<i", m, at + f.OFF_MUTEX + _KIND_OFFSET)[0]
    want = _want_kind
    if kind != want:
        raise e.CorruptMetadata(f"{escape(name)}: its lock is a mutex of kind {kind:#x}, not the "
                                f"robust, process-shared, error-checking kind {want:#x}")


def _check(m, at, name):
    """The lock's state word, boot and mutex kind, as a lock needs them."""
    state = struct.unpack_from("<I", m, at + f.OFF_LOCK_STATE)[0]
    if state not in (0, 1, 2):
        raise e.CorruptMetadata(f"{escape(name)}: its lock state is {state}, expected 0, 1 or 2")
    if state != 2 or bytes(m[at + f.OFF_LOCK_BOOT:at + f.OFF_LOCK_BOOT + 16]) != f.boot_id():
        raise e.LockError(
            f"{escape(name)}: its lock is not initialised in this boot (state {state}); a "
            "Python process cannot initialise it safely while others may use the segment: "
            "attach it once from C++ (ndarray::attach), which does")
    _check_kind(m, at, name)


def lock(arr, timeout=None):
    """Takes the lock of the segment under `arr` (an array made or attached
    by this module, or a view of one) and returns a Held, a context manager:

        with shmarray.lock(a) as held:
            if held.owner_died: ...   # repair what the dead holder left

    Waits until the lock is free (Ctrl-C still interrupts the wait), or for
    at most `timeout` seconds: then the Held is false if it timed out."""
    from ._segments import mapping_of
    m = mapping_of(arr)
    if m is None:
        raise e.LockError("this array is not over a shmarray segment, so it has no lock")
    name = m.segment_name
    if m.info is None:
        raise e.LockError(f"{escape(name)}: has no record, so it has no lock")
    if m.info.kind == "ring":
        raise e.LockError(f"{escape(name)}: is a ring, which has no lock (its frames are "
                          "checked with frame.valid())")
    if not m.writable:
        raise e.LockError(
            f"{escape(name)}: is attached read-only; the lock needs a writeable attach")
    at = len(m) - f.RECORD_SIZE
    c = _c()
    cell = ctypes.c_char.from_buffer(m, at + f.OFF_MUTEX)
    ptr = ctypes.byref(cell)
    until = None if timeout is None else time.time() + max(0.0, float(timeout))
    while True:
        # Checked before every call into glibc, the first and each slice
        # of a wait: anyone who can write the segment can damage the mutex
        # at any time, and glibc trusts what it finds there.
        _check(m, at, name)
        # In slices of 0.1 s, so that signals (Ctrl-C) are handled between
        # them. glibc's timed lock counts in CLOCK_REALTIME.
        now = time.time()
        end = now + 0.1 if until is None else min(until, now + 0.1)
        ts = _timespec(int(end), int((end - int(end)) * 1e9))
        rc = c.pthread_mutex_timedlock(ptr, ctypes.byref(ts))
        if rc != errno.ETIMEDOUT:
            break
        if until is not None and time.time() >= until:
            return Held(m, None, name, False, held=False)
    died = rc == errno.EOWNERDEAD
    if died:
        c.pthread_mutex_consistent(ptr)
    elif rc == errno.EDEADLK:
        raise e.LockError(f"{escape(name)}: has a lock this thread already holds")
    elif rc == errno.ENOTRECOVERABLE:
        raise e.LockError(f"{escape(name)}: has a lock left unrecoverable by a process that did "
                          "not use shmarray")
    elif rc:
        raise e.LockError(f"{escape(name)}: could not be locked: {os.strerror(rc)}")
    return Held(m, ptr, name, died)
