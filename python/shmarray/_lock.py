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
from . import _format as f

_libc = None


def _c():
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c") or "libc.so.6"
        lib = ctypes.CDLL(name, use_errno=True)
        if not hasattr(lib, "gnu_get_libc_version"):
            raise e.LockError("the lock needs glibc, and this C library is not glibc")
        for fn in ("pthread_mutex_lock", "pthread_mutex_trylock", "pthread_mutex_unlock",
                   "pthread_mutex_consistent", "pthread_mutex_clocklock",
                   "pthread_mutex_init", "pthread_mutexattr_init",
                   "pthread_mutexattr_settype", "pthread_mutexattr_setpshared",
                   "pthread_mutexattr_setrobust", "pthread_mutexattr_destroy"):
            getattr(lib, fn).restype = ctypes.c_int
        _libc = lib
    return _libc


PTHREAD_MUTEX_ERRORCHECK, PTHREAD_PROCESS_SHARED, PTHREAD_MUTEX_ROBUST = 2, 1, 1
CLOCK_MONOTONIC = 1


class _timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def new_mutex_bytes():
    """An unlocked glibc mutex, process-shared, robust and error-checking,
    as the 64 bytes of the record's mutex field; None without glibc."""
    try:
        c = _c()
    except (e.LockError, OSError):
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


class Held:
    """A held lock: `owner_died` is True when the previous holder died
    holding it (the data it guarded may be half-written). Unlock with
    `unlock()` or by leaving the `with` block."""

    def __init__(self, mapping, cell, name, owner_died):
        self._mapping, self._cell, self.name = mapping, cell, name
        self.owner_died = owner_died
        self.held = True

    def unlock(self):
        if self.held:
            self.held = False
            _c().pthread_mutex_unlock(self._cell)
            self._cell = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.unlock()
        return False


def lock(arr, timeout=None):
    """Takes the lock of the segment under `arr` (an array made or attached
    by this module, or a view of one) and returns a Held, a context manager:

        with shmarray.lock(a) as held:
            if held.owner_died: ...   # repair what the dead holder left

    Blocks until the lock is free, or for at most `timeout` seconds
    (None: no limit); a timeout returns None instead of a Held."""
    from ._segments import mapping_of
    m = mapping_of(arr)
    if m is None:
        raise e.LockError("this array is not over a shmarray segment, so it has no lock")
    name = m.segment_name
    if m.info is None:
        raise e.LockError(f"{name}: has no record, so it has no lock")
    if not m.writable:
        raise e.LockError(f"{name}: is attached read-only; the lock needs a writeable attach")
    at = len(m) - f.RECORD_SIZE
    state = struct.unpack_from("<I", m, at + f.OFF_LOCK_STATE)[0]
    if state != 2 or bytes(m[at + f.OFF_LOCK_BOOT:at + f.OFF_LOCK_BOOT + 16]) != f.boot_id():
        raise e.LockError(
            f"{name}: its lock is not initialised in this boot (state {state}); a Python "
            "process cannot initialise it safely while others may use the segment: attach "
            "it once from C++ (ndarray::attach), which does")
    c = _c()
    cell = ctypes.c_char.from_buffer(m, at + f.OFF_MUTEX)
    ptr = ctypes.byref(cell)
    if timeout is None:
        rc = c.pthread_mutex_lock(ptr)
    else:
        now = time.clock_gettime(time.CLOCK_MONOTONIC)
        until = now + max(0.0, float(timeout))
        ts = _timespec(int(until), int((until - int(until)) * 1e9))
        rc = c.pthread_mutex_clocklock(ptr, CLOCK_MONOTONIC, ctypes.byref(ts))
    if rc in (errno.ETIMEDOUT, errno.EBUSY):
        return None
    died = rc == errno.EOWNERDEAD
    if died:
        c.pthread_mutex_consistent(ptr)
    elif rc == errno.EDEADLK:
        raise e.LockError(f"{name}: has a lock this thread already holds")
    elif rc == errno.ENOTRECOVERABLE:
        raise e.LockError(f"{name}: has a lock left unrecoverable by a process that did not "
                          "use shmarray")
    elif rc:
        raise e.LockError(f"{name}: could not be locked: {os.strerror(rc)}")
    return Held(m, ptr, name, died)
