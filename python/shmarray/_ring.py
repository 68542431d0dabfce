"""Rings of N-d frames (docs/FORMAT.md, "Rings: format version 2"): one
writer, a RingWriter made by Manager.ring, and any number of readers by
name, RingReader, in any process and in C++ or Python, over one segment.

Python has no atomics or fences, so every protocol word the page names
atomic is read and written through Debian's libatomic.so.1 (ctypes), with
the page's memory orders; frame bytes are plain NumPy copies and reads,
validated by the slot's sequence afterwards (a seqlock). Sleeping is a
shared futex (never the private flag) through libc's syscall(), in slices
of at most 50 ms, so that Ctrl-C interrupts a wait and a writer's (or a
reader's) death is noticed. Liveness is an open-file-description read
lock on one byte, through a descriptor of its own that nothing maps and
forked children close. A writer or reader is used by one thread at a time."""

import ctypes
import errno
import fcntl
import operator
import os
import platform
import struct
import time
import weakref

import numpy as np

from . import _errors as e
from . import _format as f
from . import _names
from . import _segments as s
from ._names import escape

RELAXED, ACQUIRE, RELEASE, SEQ_CST = 0, 2, 3, 5  # C's memory_order values
SLICE = 0.05  # the longest sleep between looks at a writer's or reader's liveness
SPIN = 0.0001  # a reader's default spin, in seconds, before it sleeps

# The writer area (from D) and the reader area (from D + W), FORMAT.md's tables.
W_HEAD, W_WAKE, W_CLOSED, W_PID, W_SLOTS = 0, 8, 12, 16, 64
R_SLEEPERS, R_PROGRESS, R_WRITER_SLEEPING, R_GROUP_LOCK, R_TABLE = 0, 4, 8, 12, 64
G_STATE, G_NAME_LEN, G_NEXT, G_MISSED, G_NAME = 0, 4, 8, 16, 24
E_STATE, E_GROUP, E_DONE, E_CLAIM, E_MISSED, E_PID, E_ATTACHED = 0, 4, 8, 16, 24, 32, 40
ENTRY = 64
FREE, SETTING_UP, IN_USE = 0, 1, 2
GROUP_NAME_MAX = 40

FUTEX_WAIT, FUTEX_WAKE = 0, 1  # never FUTEX_PRIVATE_FLAG: the word is shared between processes
SYS_FUTEX = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98}
U32 = 0xFFFFFFFF


class _timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Atomics:
    """libatomic's functions on addresses (c_void_p) in shared mappings."""

    def __init__(self):
        try:
            lib = ctypes.PyDLL("libatomic.so.1")  # short calls: the GIL is kept
        except OSError as err:
            raise e.Error(f"rings need libatomic.so.1 (Debian's libatomic1): {err}") from None
        vp, u32, u64, i = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int

        def fn(name, res, *args):
            c = getattr(lib, name)
            c.restype, c.argtypes = res, list(args)
            return c

        self.load4 = fn("__atomic_load_4", u32, vp, i)
        self.load8 = fn("__atomic_load_8", u64, vp, i)
        self.store4 = fn("__atomic_store_4", None, vp, u32, i)
        self.store8 = fn("__atomic_store_8", None, vp, u64, i)
        self.add4 = fn("__atomic_fetch_add_4", u32, vp, u32, i)
        self.add8 = fn("__atomic_fetch_add_8", u64, vp, u64, i)
        self._cas4 = fn("__atomic_compare_exchange_4", ctypes.c_bool, vp,
                        ctypes.POINTER(u32), u32, i, i)
        self._cas8 = fn("__atomic_compare_exchange_8", ctypes.c_bool, vp,
                        ctypes.POINTER(u64), u64, i, i)
        self.fence = fn("atomic_thread_fence", None, i)

    def cas4(self, addr, expected, desired):
        """Compare-and-swap (seq_cst): True if the word held `expected`."""
        return self._cas4(addr, ctypes.byref(ctypes.c_uint32(expected)), desired, SEQ_CST,
                          SEQ_CST)

    def cas8(self, addr, expected, desired):
        return self._cas8(addr, ctypes.byref(ctypes.c_uint64(expected)), desired, SEQ_CST,
                          SEQ_CST)


class _Futex:
    """FUTEX_WAIT and FUTEX_WAKE through libc's syscall()."""

    def __init__(self):
        nr = SYS_FUTEX.get(platform.machine())
        if nr is None:
            raise e.Error(f"rings do not know the futex system call on {platform.machine()}")
        self._call = s.libc().syscall  # the GIL is let go while a wait sleeps
        self._call.restype = ctypes.c_long
        self._nr = ctypes.c_long(nr)
        self._none = ctypes.c_void_p(None)

    def wait(self, addr, value, seconds):
        """Sleeps while the word at `addr` holds `value`, for at most
        `seconds`; a wake-up, a changed value, a timeout or a signal all
        return (the caller looks again)."""
        sec = int(seconds)
        ts = _timespec(sec, int((seconds - sec) * 1e9))
        rc = self._call(self._nr, addr, ctypes.c_long(FUTEX_WAIT), ctypes.c_long(value),
                        ctypes.byref(ts), self._none, ctypes.c_long(0))
        if rc == -1:
            code = ctypes.get_errno()
            if code not in (errno.EAGAIN, errno.ETIMEDOUT, errno.EINTR):
                raise e.Error(f"futex wait: {os.strerror(code)}")

    def wake(self, addr):
        self._call(self._nr, addr, ctypes.c_long(FUTEX_WAKE), ctypes.c_long(0x7FFFFFFF),
                   self._none, self._none, ctypes.c_long(0))


_atomics = _futex = None


def _primitives():
    global _atomics, _futex
    if _atomics is None:
        _atomics, _futex = _Atomics(), _Futex()
    return _atomics, _futex


# ---- liveness: OFD locks on one byte

def _flock(kind, at):
    # struct flock on Linux (x86-64, AArch64): short type, short whence, off_t
    # start, off_t len, pid_t pid (0 for OFD locks), padded to 32 bytes
    return struct.pack("hhqqi4x", kind, os.SEEK_SET, at, 1, 0)


def _try_lock(fd, at, kind=fcntl.F_RDLCK):
    """Takes an OFD lock on byte `at`; False where another holds a conflicting one."""
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock(kind, at))
        return True
    except OSError as err:
        if err.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise


def _unlock(fd, at):
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_UNLCK, at))


def _held(fd, at):
    """Whether anyone holds a lock on byte `at` (asked as F_WRLCK: a reader's
    or writer's read lock conflicts with it), through `fd`, which holds none there."""
    got = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _flock(fcntl.F_WRLCK, at))
    return struct.unpack_from("h", got)[0] != fcntl.F_UNLCK


def _reopen(fd, name):
    """A new open file description of the object `fd` is open on: the
    descriptor of a liveness lock, which nothing maps (a mapping, or
    CPython's mmap's duplicate, would keep the lock after close())."""
    try:
        lfd = os.open(f"/proc/self/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)
    except OSError as err:
        raise s._os_error(err, name, "could not be opened again for its liveness lock") from None
    a, b = os.fstat(fd), os.fstat(lfd)
    if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
        os.close(lfd)
        raise e.Error(f"{escape(name)}: could not be opened again for its liveness lock")
    return lfd


# Every writer and reader with a lock descriptor, for forked children to close.
_live = weakref.WeakSet()


def _after_fork_in_child():
    for r in list(_live):
        r._forget()


os.register_at_fork(after_in_child=_after_fork_in_child)


# ---- what writer and reader share

class _Ring:
    """The words of one ring, at their addresses in this process."""

    def __init__(self, name, info, writer_base, reader_base, lock_fd):
        self.name, self.info = name, info
        self._a, self._f = _primitives()
        i = info
        self._n = i.slots
        self._wbase, self._rbase = writer_base, reader_base
        self._head = self._addr_w(W_HEAD)
        self._wake = self._addr_w(W_WAKE)
        self._closed_word = self._addr_w(W_CLOSED)
        self._sleepers = self._addr_r(R_SLEEPERS)
        self._progress = self._addr_r(R_PROGRESS)
        self._writer_sleeping = self._addr_r(R_WRITER_SLEEPING)
        self._states = [None] * i.slots
        self._times = [None] * i.slots
        self._lock_fd = lock_fd
        self._writer_byte = i.slots_bytes  # file offset D
        self._entries_byte = i.slots_bytes + i.writer_bytes + R_TABLE + ENTRY * i.max_groups
        self._group_byte = i.slots_bytes + i.writer_bytes + R_GROUP_LOCK
        self._forked = False
        self._block = i.policy == "block"
        _live.add(self)

    # close() is the writer's or the reader's own.
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _addr_w(self, off):
        return ctypes.c_void_p(self._wbase + off)

    def _addr_r(self, off):
        return ctypes.c_void_p(self._rbase + off)

    def _state(self, k):
        a = self._states[k]
        if a is None:
            a = self._states[k] = self._addr_w(W_SLOTS + 64 * k)
        return a

    def _time(self, k):
        a = self._times[k]
        if a is None:
            a = self._times[k] = self._addr_w(W_SLOTS + 64 * k + 8)
        return a

    def _group_addr(self, g, off):
        return self._addr_r(R_TABLE + ENTRY * g + off)

    def _entry_addr(self, i, off):
        return self._addr_r(R_TABLE + ENTRY * (self.info.max_groups + i) + off)

    def _entry_byte(self, i):
        """The file offset of entry `i`'s liveness lock."""
        return self._entries_byte + ENTRY * i

    def _forget(self):
        """In a forked child: the parent's lock is the parent's."""
        self._forked = True
        if self._lock_fd >= 0:
            try:
                os.close(self._lock_fd)
            except OSError:
                pass
            self._lock_fd = -1

    def _writer_gone(self):
        """Whether nobody holds the writer's liveness lock."""
        return not _held(self._lock_fd, self._writer_byte)

    def _reader_alive(self, i):
        return _held(self._lock_fd, self._entry_byte(i))

    def _free_if_gone(self, i):
        """Frees entry `i` if its reader is gone: under a write lock on its
        byte, so that no reader is taking the entry meanwhile (state 2 is
        then a dead reader's), by compare-and-swap 2 -> 0. A member's claim
        (not 0: it died holding a frame, or waiting for one it claimed) is a
        frame the group missed. True if this call freed it."""
        a, byte = self._a, self._entry_byte(i)
        if _held(self._lock_fd, byte) or not _try_lock(self._lock_fd, byte, fcntl.F_WRLCK):
            return False
        try:
            group = a.load4(self._entry_addr(i, E_GROUP), RELAXED)
            claim = a.load8(self._entry_addr(i, E_CLAIM), SEQ_CST)
            if not a.cas4(self._entry_addr(i, E_STATE), IN_USE, FREE):
                return False
            if group and group <= self.info.max_groups and claim:
                a.add8(self._group_addr(group - 1, G_MISSED), 1, SEQ_CST)
            return True
        finally:
            _unlock(self._lock_fd, byte)

    def _attached(self):
        """The entries in state 2 whose reader is alive."""
        a = self._a
        return [i for i in range(self.info.max_readers)
                if a.load4(self._entry_addr(i, E_STATE), SEQ_CST) == IN_USE
                and self._reader_alive(i)]

    @property
    def head(self):
        """The newest published frame's sequence number (0 before the first)."""
        return self._a.load8(self._head, ACQUIRE)

    @property
    def slots(self):
        return self.info.slots

    @property
    def frame_shape(self):
        return self.info.shape

    @property
    def dtype(self):
        return np.dtype(self.info.dtype)

    @property
    def order(self):
        return self.info.order

    @property
    def policy(self):
        return self.info.policy

    def _frame_view(self, mapping, k, views):
        v = views[k]
        if v is None:
            i = self.info
            v = views[k] = np.ndarray(i.shape, dtype=self.dtype, buffer=mapping,
                                      offset=k * i.slot_stride, order=i.order)
        return v


def _base(mapping):
    """The address of a mapping, through NumPy (ctypes' from_buffer refuses
    read-only ones); the array keeps the mapping exported."""
    raw = np.frombuffer(mapping, dtype=np.uint8)
    return raw, raw.ctypes.data


def _count(value, what, low, high):
    try:
        n = operator.index(value)
    except TypeError:
        raise TypeError(f"{what} is an integer, not {value!r}") from None
    if not low <= n <= high:
        raise ValueError(f"{what} {n} is not in {low} to {high}")
    return n


def spec(frame_shape, dtype, slots, policy, order, max_readers, max_groups):
    """A new ring's parameters, checked: (dtype string, frame shape, order,
    policy, slots, max_readers, max_groups)."""
    try:
        shape = tuple(operator.index(d) for d in frame_shape)
    except TypeError:
        shape = (operator.index(frame_shape),)
    if len(shape) > f.MAX_RANK:
        raise e.InvalidShape(f"frame shape {shape}: rank {len(shape)} is above {f.MAX_RANK}")
    if any(d <= 0 for d in shape):
        raise e.InvalidShape(f"frame shape {shape}: a ring's frame has no zero or negative "
                             "extent")
    dt = f.dtype_string(dtype)
    frame = f.data_nbytes(f.DTYPES[dt], shape)
    if frame > f.MAX_FRAME_NBYTES:
        raise e.InvalidShape(f"frame shape {shape} of {dt} is {frame} bytes, 2**48 or more")
    if policy not in f.POLICIES:
        raise ValueError(f"policy is 'overwrite' or 'block', not {policy!r}")
    if order not in ("C", "F"):
        raise ValueError("order is 'C' or 'F'")
    return (dt, shape, order, policy, _count(slots, "slots", 1, f.MAX_SLOTS),
            _count(max_readers, "max_readers", 1, f.MAX_READERS),
            _count(max_groups, "max_groups", 0, f.MAX_GROUPS))


def create(name, spec_, owner_token, before_link, timeout):
    """Creates the ring `name` as FORMAT.md says (s.make_object: 0600,
    unnamed then linked, every byte reserved): writer_pid, the writer's
    liveness lock, the record last. Returns its RingWriter."""
    name = s.check_new_name(name)
    dt, shape, order, policy, slots, readers, groups = spec_
    frame = f.data_nbytes(f.DTYPES[dt], shape)
    stride, d, w, r, size = f.ring_layout(frame, slots, readers, groups)
    if size > f.SIZE_MAX:
        raise e.InvalidShape(f"{escape(name)}: {slots} slots of {frame} bytes overflow a "
                             "segment's size")
    lock = []

    def drop_lock():
        while lock:
            os.close(lock.pop())

    def write(fd):
        drop_lock()  # of an attempt made again by name
        os.pwrite(fd, struct.pack("<q", os.getpid()), d + W_PID)
        lock.append(_reopen(fd, name))
        if not _try_lock(lock[0], d):
            raise e.Error(f"{escape(name)}: its writer's liveness lock is taken")
        rec, checksum = f.new_ring_record(dt, shape, order, policy, slots, readers, groups,
                                          owner_token)
        s.write_record(fd, size, rec, checksum)

    try:
        fd, st = s.make_object(name, size, write, before_link)
        try:
            info = f.read_record(name, size, s.read_tail(fd, size, name), (f.RING_VERSION,))
            m = s.Mapping(fd, d + w + r, True, name, info, st.st_dev, st.st_ino)
        finally:
            os.close(fd)
    except BaseException:
        drop_lock()
        raise
    return RingWriter(m, info, name, lock[0], timeout)


# ---- the writer

class _Default:
    def __repr__(self):
        return "the ring's timeout"


_DEFAULT = _Default()


class RingWriter(_Ring):
    """The one writer of a ring, made by Manager.ring. push(frame) copies a
    frame in; loan() lends the next slot to fill in place:

        with shmarray.Manager() as m:
            ring = m.ring("/camera", (512, 512), np.uint16, slots=8)
            seq = ring.push(image)              # 1, 2, 3, ...
            loan = ring.loan()
            with loan as frame:                 # a writable view of the next slot
                frame[...] = sensor.read()
            loan.seq                            # published as it left the block

    In 'block' policy a frame waits for the slowest live reader, for at most
    `timeout` seconds (the ring's, or push's and loan's own; None: no
    limit), then RingTimeout, with nothing published. close() (or the
    manager's end) says to readers that no frame follows: they get
    ProducerGone after the frames still in the ring, as they do when this
    process dies. A forked child's copy writes nothing."""

    def __init__(self, mapping, info, name, lock_fd, timeout):
        self.mapping = mapping
        self._raw, base = _base(mapping)
        super().__init__(name, info, base + info.slots_bytes,
                         base + info.slots_bytes + info.writer_bytes, lock_fd)
        self.timeout = timeout
        self.spin = SPIN
        self._seq = 0  # head: only this writer writes it
        self._views = [None] * info.slots
        self._loaned = False
        self._done = False

    def __repr__(self):
        state = "closed" if self._done else f"head {self._seq}"
        return (f"<shmarray.RingWriter {escape(self.name)}: {self.info.slots} slots of "
                f"{self.info.shape} {self.info.dtype}, {self.info.policy}, {state}>")

    @property
    def head(self):
        return self._seq

    @property
    def closed(self):
        return self._done

    @property
    def readers(self):
        """How many readers are attached now (entries in use whose reader lives)."""
        return len(self._attached())

    def wait_for_readers(self, count=1, timeout=10.0):
        """Waits until at least `count` readers are attached; False if
        `timeout` seconds pass first."""
        deadline = time.monotonic() + timeout
        while self.readers < count:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.001)
        return True

    def _usable(self):
        if self._forked:
            raise e.Error(f"{escape(self.name)}: a forked child's copy of a ring's writer does "
                          "not write (the ring has one writer)")
        if self._done:
            raise e.Error(f"{escape(self.name)}: this ring's writer is closed")
        if self._loaned:
            raise e.Error(f"{escape(self.name)}: a slot is on loan: leave its with block first")

    def _begin(self, timeout):
        """Step 1 and 2 of publishing the next frame: room for it ('block'),
        the slot's odd state and the release fence. Its (seq, slot)."""
        self._usable()
        n = self._seq + 1
        if self._block and n > self._n:
            self._wait_room(n, self.timeout if timeout is _DEFAULT else timeout)
        k = (n - 1) % self._n
        a = self._a
        a.store8(self._state(k), 2 * n + 1, RELAXED)
        a.fence(RELEASE)  # the frame's bytes are not seen before the odd state
        return n, k

    def _publish(self, n, k):
        """Steps 4 to 6: time, even state (release), head (seq_cst), and a
        wake-up only if a reader sleeps (a seq_cst load after the head's
        seq_cst store: the Dekker pattern with a sleeping reader)."""
        a = self._a
        a.store8(self._time(k), time.monotonic_ns(), RELAXED)
        a.store8(self._state(k), 2 * n, RELEASE)
        a.store8(self._head, n, SEQ_CST)
        self._seq = n
        if a.load4(self._sleepers, SEQ_CST):
            a.add4(self._wake, 1, SEQ_CST)
            self._f.wake(self._wake)
        return n

    def push(self, frame, timeout=_DEFAULT):
        """Copies `frame` (an array of the frame shape, its values cast as
        NumPy's assignment casts them, slot[...] = frame) into the next
        slot and publishes it; returns its sequence number. `timeout`
        ('block'): the ring's unless given; None for no limit."""
        return self._push(frame, timeout)

    def _push(self, frame, timeout):
        src = np.asarray(frame)
        if src.shape != self.info.shape:
            raise e.ShapeMismatch(f"{escape(self.name)}: frames have shape {self.info.shape}, "
                                  f"not {src.shape}")
        n, k = self._begin(timeout)
        self._frame_view(self.mapping, k, self._views)[...] = src
        return self._publish(n, k)

    def loan(self, timeout=_DEFAULT):
        """A Loan of the next slot: its `with` block gives a writable array
        of the frame, published as the block ends (loan.seq its number).
        A block left by an exception publishes nothing: the slot keeps its
        odd state (the frame that was in it is gone, as its readers see:
        they count it missed, and a read of it in place is not valid()),
        head does not move, and the next frame takes the same number."""
        return Loan(self, timeout)

    def close(self):
        """No more frames: `closed` set (release), readers woken, the
        liveness lock dropped. The name stays until the manager removes it;
        the mapping, until the last view of a slot goes."""
        if self._done or self._forked:
            return
        self._done = True
        a = self._a
        a.store4(self._closed_word, 1, RELEASE)
        a.add4(self._wake, 1, SEQ_CST)
        self._f.wake(self._wake)
        os.close(self._lock_fd)
        self._lock_fd = -1

    # ---- 'block': room for frame n

    def _holding_back(self, need):
        """The attached entries that do not release frame `need` yet."""
        a, out = self._a, []
        for i in range(self.info.max_readers):
            if a.load4(self._entry_addr(i, E_STATE), SEQ_CST) != IN_USE:
                continue
            group = a.load4(self._entry_addr(i, E_GROUP), RELAXED)
            if group == 0:
                if a.load8(self._entry_addr(i, E_DONE), SEQ_CST) < need:
                    out.append(i)
            elif group <= self.info.max_groups:
                claim = a.load8(self._entry_addr(i, E_CLAIM), SEQ_CST)
                if (a.load8(self._group_addr(group - 1, G_NEXT), SEQ_CST) < need
                        or (claim and claim - 1 < need)):
                    out.append(i)
        return out

    def _wait_room(self, n, timeout):
        """Waits until every attached entry has released frame n - N (FORMAT.md,
        "Releasing and blocking"), freeing the entries of gone readers
        between sleeps; RingTimeout after `timeout` seconds."""
        need = n - self._n
        a = self._a
        if not self._holding_back(need):
            return
        now = time.monotonic()
        deadline = None if timeout is None else now + timeout
        spin_end, looked = now + self.spin, now
        while time.monotonic() < spin_end:
            if not self._holding_back(need):
                return
        while True:
            p = a.load4(self._progress, ACQUIRE)
            a.store4(self._writer_sleeping, 1, SEQ_CST)
            back = self._holding_back(need)
            if not back:
                a.store4(self._writer_sleeping, 0, RELAXED)
                return
            now = time.monotonic()
            if now - looked >= SLICE:
                looked = now
                if any(self._free_if_gone(i) for i in back):
                    continue
            if deadline is not None and now >= deadline:
                a.store4(self._writer_sleeping, 0, RELAXED)
                pids = [a.load8(self._entry_addr(i, E_PID), RELAXED) for i in back]
                raise e.RingTimeout(
                    f"{escape(self.name)}: frame {n} waited {timeout} s for readers that have "
                    f"not released frame {need} (pids {', '.join(map(str, pids))}): they are "
                    "alive but do not read")
            left = SLICE if deadline is None else max(0.0, min(SLICE, deadline - now))
            self._f.wait(self._progress, p, left)
            a.store4(self._writer_sleeping, 0, RELAXED)


class Loan:
    """A slot lent by RingWriter.loan(). `with loan as frame:` gives the
    slot as a writable array (waiting for room in 'block'), and publishes it
    when the block ends normally; `seq` is its sequence number from then
    on, `published` whether it was."""

    def __init__(self, writer, timeout):
        self._w, self._timeout = writer, timeout
        self.seq, self.published, self._slot = None, False, None

    def __enter__(self):
        w = self._w
        if self._slot is not None:
            raise e.Error(f"{escape(w.name)}: a Loan is used once: take another with loan()")
        n, k = w._begin(self._timeout)
        self.seq, self._slot = n, k
        w._loaned = True
        return w._frame_view(w.mapping, k, w._views)

    def __exit__(self, kind, value, tb):
        w = self._w
        w._loaned = False
        if kind is None:
            if w._done:
                raise e.Error(f"{escape(w.name)}: the writer was closed while a slot was on "
                              "loan: the frame is not published")
            w._publish(self.seq, self._slot)
            self.published = True
        return False


# ---- the reader

def _oldest(head, slots):
    """Where a reader that fell behind goes on from (FORMAT.md, "Reading",
    step 2): the oldest frame still there, head - N + 1."""
    return head - slots + 1


class Frame:
    """A frame a RingReader gave: `seq`, `publish_ns` (CLOCK_MONOTONIC, ns),
    and `array`, a read-only NumPy view of its slot, in place. In
    'overwrite' the writer may reuse the slot while it is read: valid()
    after reading says whether what was read is the frame whole; drop what
    was computed from it if not. copy() copies it and validates the copy."""

    __slots__ = ("seq", "publish_ns", "array", "_r", "_k")

    def __init__(self, reader, seq, slot, publish_ns, array):
        self._r, self._k = reader, slot
        self.seq, self.publish_ns, self.array = seq, publish_ns, array

    def valid(self):
        """True if the slot still holds this frame, so that everything read
        from `array` before the call was the frame whole (an acquire fence,
        then the slot's state)."""
        a = self._r._a
        a.fence(ACQUIRE)
        return a.load8(self._r._state(self._k), RELAXED) == 2 * self.seq

    def copy(self):
        """A private copy of the frame (in its order), or None if the writer
        reused the slot while it was copied (torn: the copy is dropped)."""
        out = self.array.copy(order="K")
        return out if self.valid() else None

    @property
    def info(self):
        return self._r.info

    def __repr__(self):
        return f"<shmarray.Frame {self.seq} of {escape(self._r.name)}>"


class RingReader(_Ring):
    """A reader of the ring `name`, made by C++ or Python, attached by name:

        with shmarray.RingReader("/camera", dtype=np.uint16) as r:
            while True:
                frame = r.next(timeout=1.0)       # None on a timeout
                total = frame.array.sum()         # read in place, read-only
                if not frame.valid():             # the writer reused the slot
                    continue                      # (counted by nobody: drop it)
                ...
            # ProducerGone: the writer closed, or died, and every frame was read

    The record is checked before anything is mapped, as attach() checks an
    array's (same errors; an array is a VersionMismatch saying so); `dtype`
    and `frame_shape`, if given, must match. The slots and the writer's
    words are mapped read-only, the reader area read-write apart. `start`
    'next' reads from the next frame published, 'oldest' from the oldest
    still in the ring. With `group`, a name of 1 to 40 bytes, the reader is
    a member of that group: each frame goes to exactly one member (a
    member claims a frame once it is published, and holds no claim while
    it waits). `spin` seconds of spinning before a wait sleeps. A ring
    still being created is waited for up to `timeout` seconds (NotReady);
    a name that does not exist yet (a reader started before its camera) up
    to `wait_for_name` seconds (NotFound after), as C++'s
    reader_options::wait_for_name.
    `missed`: the frames this reader skipped because the writer overwrote
    them first ('overwrite'). A reader is used by one thread at a time;
    its frames' views stay readable after close() (they keep the mapping)."""

    def __init__(self, name, dtype=None, frame_shape=None, group=None, start="next",
                 spin=SPIN, timeout=0.2, wait_for_name=0.0):
        if start not in ("next", "oldest"):
            raise ValueError(f"start is 'next' or 'oldest', not {start!r}")
        self._entry = -1
        self._lock_fd = -1
        self._gone = False
        group_raw = None if group is None else _group_name(group)
        start_at = time.monotonic()
        while True:
            try:
                self._open(name, dtype, frame_shape)
                break
            except e.NotReady:
                if time.monotonic() >= start_at + max(timeout, wait_for_name):
                    raise
            except e.NotFound:
                if time.monotonic() >= start_at + wait_for_name:
                    raise
            time.sleep(0.005)
        self.spin = spin
        self.group = group
        self._missed = 0
        self._held = 0
        self._views = [None] * self.info.slots
        self._looked = 0.0
        self._attach(group_raw, start)

    def _open(self, name, dtype, frame_shape):
        name = s.normalise(name)
        fd, st = s.open_segment(name, True)
        try:
            info = f.read_record(name, st.st_size, s.read_tail(fd, st.st_size, name),
                                 (f.RING_VERSION,))
            if info.dtype not in f.DTYPES:
                raise e.DtypeMismatch(
                    f"{escape(name)}: holds {info.dtype}, which this module does not map")
            if dtype is not None and np.dtype(dtype).str != info.dtype:
                raise e.DtypeMismatch(f"{escape(name)}: holds frames of {info.dtype}, but "
                                      f"{np.dtype(dtype).str} was asked for")
            if frame_shape is not None:
                want = tuple(frame_shape) if np.ndim(frame_shape) else (int(frame_shape),)
                if want != info.shape:
                    raise e.ShapeMismatch(f"{escape(name)}: has frames of shape {info.shape}, "
                                          f"but {want} was asked for")
            s.reserve_if_sparse(fd, st, name)
            lock_fd = _reopen(fd, name)
            try:
                split = info.slots_bytes + info.writer_bytes
                ro = s.Mapping(fd, split, False, name, info, st.st_dev, st.st_ino)
                rw = s.Mapping(fd, info.readers_bytes, True, name, info, st.st_dev, st.st_ino,
                               offset=split)
            except BaseException:
                os.close(lock_fd)
                raise
        finally:
            os.close(fd)
        self._ro, self._rw = ro, rw
        self._ro_raw, ro_base = _base(ro)
        self._rw_raw, rw_base = _base(rw)
        super().__init__(name, info, ro_base + info.slots_bytes, rw_base, lock_fd)

    def _attach(self, group_raw, start):
        """FORMAT.md, "Attaching a reader"."""
        a, i = self._a, None
        for attempt in range(2):
            for j in range(self.info.max_readers):
                st = self._entry_addr(j, E_STATE)
                if a.load4(st, RELAXED) != FREE or not a.cas4(st, FREE, SETTING_UP):
                    continue
                if self._lock_entry(j):
                    i = j
                    break
                a.store4(st, FREE, RELEASE)  # a collector holds its byte: another entry
            if i is not None:
                break
            if attempt == 0:
                for j in range(self.info.max_readers):
                    if a.load4(self._entry_addr(j, E_STATE), SEQ_CST) == IN_USE:
                        self._free_if_gone(j)
        if i is None:
            self._drop()
            raise e.Error(f"{escape(self.name)}: has {self.info.max_readers} readers attached, "
                          "its max_readers")
        self._entry = i
        try:
            g = -1 if group_raw is None else self._join(group_raw)
        except BaseException:
            a.store4(self._entry_addr(i, E_STATE), FREE, RELEASE)
            self._drop()
            raise
        self._g = g
        self._member = g >= 0
        a.store4(self._entry_addr(i, E_GROUP), g + 1, RELAXED)
        a.store8(self._entry_addr(i, E_CLAIM), 0, RELAXED)
        a.store8(self._entry_addr(i, E_MISSED), 0, RELAXED)
        a.store8(self._entry_addr(i, E_PID), os.getpid(), RELAXED)
        a.store8(self._entry_addr(i, E_ATTACHED), time.time_ns(), RELAXED)
        n = self._n
        h = a.load8(self._head, ACQUIRE)
        a.store8(self._entry_addr(i, E_DONE), h if start == "next" else max(0, h - n), RELAXED)
        a.store4(self._entry_addr(i, E_STATE), IN_USE, SEQ_CST)
        h2 = a.load8(self._head, SEQ_CST)
        # a 'block' writer that had not seen the entry may have moved on:
        # the reader starts from where it is now (nothing missed before it
        # attached); 'oldest' from the oldest frame still there
        done = h2 if start == "next" else max(0, h2 - n)
        a.store8(self._entry_addr(i, E_DONE), done, SEQ_CST)
        self._cursor = done
        self._done_addr = self._entry_addr(i, E_DONE)
        if self._member:
            self._claim_addr = self._entry_addr(i, E_CLAIM)
            self._next_addr = self._group_addr(g, G_NEXT)
            self._group_missed_addr = self._group_addr(g, G_MISSED)

    def _lock_entry(self, i):
        """The entry's liveness lock; a collector freeing it holds its byte
        for a moment (a write lock): tried for up to 0.1 s."""
        for _ in range(100):
            if _try_lock(self._lock_fd, self._entry_byte(i)):
                return True
            time.sleep(0.001)
        return False

    def _join(self, raw):
        """The index of the group named `raw`, made if no group in use has
        that name, under the group lock (FORMAT.md, "Groups"), so that two
        readers naming a new group at once make one."""
        a, at = self._a, self._group_byte
        deadline = time.monotonic() + 5
        while not _try_lock(self._lock_fd, at, fcntl.F_WRLCK):  # F_OFD_SETLKW, in slices
            if time.monotonic() >= deadline:
                raise e.Error(f"{escape(self.name)}: its group lock has been held for 5 s")
            time.sleep(0.0005)
        try:
            for g in range(self.info.max_groups):
                if (a.load4(self._group_addr(g, G_STATE), ACQUIRE) == IN_USE
                        and self._group_name_at(g) == raw):
                    return g
            for g in range(self.info.max_groups):
                st = self._group_addr(g, G_STATE)
                if a.load4(st, RELAXED) != FREE or not a.cas4(st, FREE, SETTING_UP):
                    continue
                base = R_TABLE + ENTRY * g
                self._rw_raw[base + G_NAME:base + G_NAME + GROUP_NAME_MAX] = 0
                self._rw_raw[base + G_NAME:base + G_NAME + len(raw)] = np.frombuffer(raw,
                                                                                     np.uint8)
                a.store4(self._group_addr(g, G_NAME_LEN), len(raw), RELAXED)
                a.store8(self._group_addr(g, G_MISSED), 0, RELAXED)
                a.store8(self._group_addr(g, G_NEXT), a.load8(self._head, ACQUIRE), RELAXED)
                a.store4(st, IN_USE, RELEASE)
                return g
            raise e.Error(f"{escape(self.name)}: has {self.info.max_groups} groups, its "
                          f"max_groups (groups are never freed), and none is named "
                          f"{_names.escape(raw)}")
        finally:
            _unlock(self._lock_fd, at)

    def _group_name_at(self, g):
        base = R_TABLE + ENTRY * g
        n = self._a.load4(self._group_addr(g, G_NAME_LEN), RELAXED)
        if not 1 <= n <= GROUP_NAME_MAX:
            return None
        return bytes(self._rw_raw[base + G_NAME:base + G_NAME + n])

    def _drop(self):
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __repr__(self):
        what = f", member of {self.group!r}" if self.group is not None else ""
        state = "closed" if self._entry < 0 else f"at {self._cursor}, missed {self._missed}"
        return f"<shmarray.RingReader {escape(self.name)}{what}: {state}>"

    @property
    def missed(self):
        """Frames this reader skipped because the writer overwrote them before
        it got to them (a member: of those it claimed or passed over)."""
        return self._missed

    @property
    def group_missed(self):
        """A member's group's missed frames (all members', and claims of
        members that died), or None for a reader of its own."""
        if not self._member:
            return None
        return self._a.load8(self._group_missed_addr, ACQUIRE)

    @property
    def closed(self):
        return self._entry < 0

    @property
    def writer_alive(self):
        """False once the writer has closed the ring or its process is gone."""
        self._usable()
        return not (self._a.load4(self._closed_word, ACQUIRE) or self._writer_gone())

    # The C++ name, ring_reader::producer_alive().
    producer_alive = writer_alive

    def release(self):
        """Releases the frame held now, before the next call: in 'block' the
        writer may reuse its slot from now on (its valid() then says False)."""
        self._usable()
        if self._held or self._member:
            self._release()

    def _usable(self):
        if self._forked:
            raise e.Error(f"{escape(self.name)}: a forked child's copy of a ring reader does not "
                          "read (attach another in the child)")
        if self._entry < 0:
            raise e.Error(f"{escape(self.name)}: this ring reader is closed")

    def _miss(self, count):
        self._missed += count
        self._a.store8(self._entry_addr(self._entry, E_MISSED), self._missed, RELAXED)

    def _release(self):
        """Releases the frame held (FORMAT.md, "Releasing and blocking"): a
        reader of its own stores `done`, a member its `claim` back to 0 (it
        holds nothing while it waits for the next frame, and claims only
        one that is published), seq_cst, then a 'block' writer asleep is
        woken."""
        a = self._a
        a.store8(self._done_addr, self._held, SEQ_CST)
        self._held = 0
        if self._member:
            self._unclaim()
        else:
            self._wake_writer()

    def _unclaim(self):
        self._a.store8(self._claim_addr, 0, SEQ_CST)
        self._wake_writer()

    def _wake_writer(self):
        a = self._a
        if self._block and a.load4(self._writer_sleeping, SEQ_CST):
            a.add4(self._progress, 1, SEQ_CST)
            self._f.wake(self._progress)

    def _ended(self):
        """Whether the writer has closed or is gone. Closed is read every
        time; the liveness lock at most every SLICE seconds (a system call)."""
        if self._gone or self._a.load4(self._closed_word, ACQUIRE):
            return True
        now = time.monotonic()
        if now - self._looked >= SLICE:
            self._looked = now
            if self._writer_gone():
                self._gone = True
        return self._gone

    def _wait(self, ready, deadline):
        """Waits until ready() (True) or the deadline (False); ProducerGone
        once the writer has ended and ready() still is not. Spins `spin`
        seconds, then sleeps on `wake` in slices (FORMAT.md, "Waiting")."""
        a, fx = self._a, self._f
        if self.spin > 0:
            end = time.monotonic() + self.spin
            while time.monotonic() < end:
                if ready():
                    return True
        while True:
            if ready():
                return True
            if self._ended():
                if ready():
                    return True
                closed = bool(a.load4(self._closed_word, ACQUIRE))
                why = "closed the ring" if closed else "is gone (its process died)"
                raise e.ProducerGone(f"{escape(self.name)}: its writer {why}: no frame comes "
                                     f"after {a.load8(self._head, ACQUIRE)}", died=not closed)
            if deadline is None:
                left = SLICE
            else:
                left = min(SLICE, deadline - time.monotonic())
                if left <= 0:
                    return False
            w = a.load4(self._wake, ACQUIRE)
            a.add4(self._sleepers, 1, SEQ_CST)
            try:
                if ready():  # a seq_cst look at head after the seq_cst count
                    return True
                fx.wait(self._wake, w, left)
            finally:
                a.add4(self._sleepers, U32, SEQ_CST)  # - 1

    def next(self, timeout=None):
        """The next frame in order (after the one returned last), waiting
        for at most `timeout` seconds (None: until it comes; 0: no wait):
        a Frame, or None on a timeout. Frames the writer overwrote first
        are skipped and counted in `missed`. ProducerGone once the writer
        has closed the ring or died and every frame it published was
        given. Asking for the next frame releases the last one (in
        'block' the writer may then reuse its slot)."""
        self._usable()
        if self._held:
            self._release()
        if self._member:
            return self._next_claim(timeout)
        a, n_slots = self._a, self._n
        head = self._head
        n = self._cursor + 1
        deadline = None
        while True:
            h = a.load8(head, ACQUIRE)
            if h < n:
                if deadline is None and timeout is not None:
                    deadline = time.monotonic() + timeout
                if not self._wait(lambda: a.load8(head, SEQ_CST) >= n, deadline):
                    return None
                continue
            if h - n >= n_slots:  # gone: on to the oldest frame not about to be reused
                skip = _oldest(h, n_slots)
                self._miss(skip - n)
                n = skip
            k = (n - 1) % n_slots
            s1 = a.load8(self._state(k), ACQUIRE)
            if s1 != 2 * n:
                if s1 > 2 * n:  # the writer has begun to reuse the slot: frame n is lost
                    self._miss(1)
                    n += 1
                continue  # (below: look again)
            self._cursor = self._held = n
            return Frame(self, n, k, a.load8(self._time(k), RELAXED),
                         self._frame_view(self._ro, k, self._views))

    def _next_claim(self, timeout):
        """A member's next frame: claimed from the group (FORMAT.md,
        "Groups") once one is published, so that a claim always names a
        frame there to read, and a member that waits, times out or
        detaches holds none (a claim of a frame to come would be a frame
        lost to the group)."""
        a, n_slots = self._a, self._n
        head, nxt = self._head, self._next_addr
        deadline = None
        while True:
            g = a.load8(nxt, ACQUIRE)
            c = g + 1
            h = a.load8(head, ACQUIRE)
            if h < c:
                if deadline is None and timeout is not None:
                    deadline = time.monotonic() + timeout
                if not self._wait(lambda: a.load8(head, SEQ_CST) > a.load8(nxt, ACQUIRE),
                                  deadline):
                    return None
                continue
            skipped = 0
            if h - c >= n_slots:
                skipped = _oldest(h, n_slots) - c
                c += skipped
            a.store8(self._claim_addr, c, SEQ_CST)  # before the swap: a writer that
            if not a.cas8(nxt, g, c):               # sees next >= c sees the claim
                self._unclaim()  # another member took it: hold nothing meanwhile
                continue
            if skipped:
                a.add8(self._group_missed_addr, skipped, SEQ_CST)
                self._miss(skipped)
            k = (c - 1) % n_slots
            s1 = a.load8(self._state(k), ACQUIRE)
            while s1 < 2 * c:  # not yet whole to this process: look again
                s1 = a.load8(self._state(k), ACQUIRE)
            if s1 != 2 * c:  # the slot has moved on: lost, and claimed again
                a.add8(self._group_missed_addr, 1, SEQ_CST)
                self._miss(1)
                self._unclaim()
                continue
            self._cursor = self._held = c
            return Frame(self, c, k, a.load8(self._time(k), RELAXED),
                         self._frame_view(self._ro, k, self._views))

    def latest(self, timeout=0):
        """The newest frame, if it is newer than the one returned last
        (frames passed over are not counted as missed: they were passed
        over on purpose, as in C++), waiting for at most `timeout`
        seconds for one (0: no wait; None: until one comes); None on a
        timeout, ProducerGone as next() says. Not for group members."""
        self._usable()
        if self._member:
            raise e.Error(f"{escape(self.name)}: a group member takes its frames with next()")
        if self._held:
            self._release()
        a, n_slots = self._a, self._n
        head = self._head
        deadline = None
        while True:
            h = a.load8(head, ACQUIRE)
            if h <= self._cursor:
                if deadline is None and timeout is not None:
                    deadline = time.monotonic() + timeout
                if not self._wait(lambda: a.load8(head, SEQ_CST) > self._cursor, deadline):
                    return None
                continue
            k = (h - 1) % n_slots
            if a.load8(self._state(k), ACQUIRE) != 2 * h:
                continue  # being reused: the writer has moved on
            if h > 1:  # 'block': the writer may reuse the slots passed over
                a.store8(self._done_addr, h - 1, SEQ_CST)
                self._wake_writer()
            self._cursor = self._held = h
            return Frame(self, h, k, a.load8(self._time(k), RELAXED),
                         self._frame_view(self._ro, k, self._views))

    def close(self):
        """Detaches: the entry freed (release), then the liveness lock
        dropped. Frames already given stay readable (their views keep the
        mapping), but in 'block' the writer no longer waits for them."""
        if self._entry < 0:
            return
        if self._forked:
            self._entry = -1
            return
        self._a.store4(self._entry_addr(self._entry, E_STATE), FREE, RELEASE)
        self._entry = -1
        self._drop()
        self._wake_writer()


def _group_name(group):
    """A group's name as its bytes: printable UTF-8, 1 to 40 bytes."""
    if not isinstance(group, str):
        raise e.InvalidName(f"{group!r}: a group's name is a str")
    try:
        raw = group.encode("utf-8")
    except UnicodeEncodeError:
        raise e.InvalidName(f"{escape(group)}: a group's name is valid UTF-8") from None
    if not 1 <= len(raw) <= GROUP_NAME_MAX:
        raise e.InvalidName(f"{escape(group)}: a group's name is 1 to {GROUP_NAME_MAX} bytes, "
                            f"not {len(raw)}")
    if any(_names._is_control(ord(ch)) for ch in group):
        raise e.InvalidName(f"{escape(group)}: a group's name holds no control character")
    return raw


# ---- inspection, by pread only (shmarray.list)

def inspect(fd, info, name):
    """A listing's fields of a ring past its frame's dtype, shape and order,
    as `shmarray ls --json` has them, read with pread through `fd` (nothing
    mapped); liveness asked with F_OFD_GETLK through `fd`, a description of
    the lister's own. The words are anyone's who can write the object: what
    they say is bounded by the record."""
    d, w = info.slots_bytes, info.writer_bytes
    size = R_TABLE + ENTRY * (info.max_groups + info.max_readers)
    words = os.pread(fd, 24, d)
    table = os.pread(fd, size, d + w)
    if len(words) != 24 or len(table) != size:
        raise e.TruncatedSegment(f"{escape(name)}: shrank while its ring's words were read "
                                 "(another process is resizing it)")
    head, _, closed, pid = struct.unpack_from("<QIIq", words)
    producer = "closed" if closed else "alive" if _held(fd, d) else "gone"
    groups, index = [], {}
    for g in range(info.max_groups):
        at = R_TABLE + ENTRY * g
        state, n, nxt, missed = struct.unpack_from("<IIQQ", table, at)
        if state != IN_USE:
            continue
        index[g + 1] = len(groups)
        groups.append({"name": _names.from_raw(table[at + G_NAME:at + G_NAME
                                                     + min(n, GROUP_NAME_MAX)]),
                       "members": 0, "next": nxt, "missed": missed})
    entries = []
    for i in range(info.max_readers):
        at = R_TABLE + ENTRY * (info.max_groups + i)
        state, group, done, claim, missed, rpid = struct.unpack_from("<IIQQQq", table, at)
        if state != IN_USE:
            continue
        x = {"pid": rpid}
        if group:
            of = groups[index[group]] if group in index else None
            x.update(group=of["name"] if of else "", claim=claim)
            if of:
                of["members"] += 1
        else:
            x.update(group=None, done=done)
        x.update(missed=missed, alive=_held(fd, d + w + at))
        entries.append(x)
    return {"frame_nbytes": info.frame_nbytes, "slots": info.slots,
            "slot_stride": info.slot_stride, "policy": info.policy, "head": head,
            "readers": len(entries), "readers_gone": sum(not x["alive"] for x in entries),
            "max_readers": info.max_readers, "reader_entries": entries, "groups": groups,
            "max_groups": info.max_groups, "producer": producer,
            "producer_alive": producer == "alive", "writer_pid": pid}
