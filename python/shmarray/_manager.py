"""Manager: the owner of the segments it creates, whose `with` block ends
their names' life, as shmarray::manager in C++."""

import os
import threading

import numpy as np

from . import _errors as e
from . import _format as f
from . import _owner
from . import _segments as s
from ._names import escape

_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
NAME_ATTEMPTS = 17  # a generated name, then up to 16 others when one is taken


def random_part():
    """10 base-36 characters from os.urandom (getrandom), each uniform:
    bytes of 252 and up are drawn again, so that none is likelier."""
    out = []
    while len(out) < 10:
        out.extend(_DIGITS[b % 36] for b in os.urandom(16) if b < 252)
    return "".join(out[:10])


class Manager:
    """Creates arrays in shared memory, self-describing segments that C++
    attaches by name alone (shmarray::ndarray<T>::attach(name)), and removes
    every segment it created when it is closed or its `with` block ends, in
    the creating process only (a forked child's copy removes nothing).

        with shmarray.Manager() as m:
            a = m.from_shape((200, 512, 512), np.uint16)
            shmarray.name_of(a)     # '/shmarray_1234_k3x9q0w7fz': give it to C++

    Rings of frames are made here too (ring()), and closed at the end.
    Arrays stay usable after their segment's name is removed, as long as they
    live. While the process lives its segments are watched: if it dies,
    however it dies, the watchdog helper (the `shmarray` command) removes
    them, or `shmarray gc` does."""

    def __init__(self, prefix="shmarray_"):
        self.prefix = prefix
        self._owned = []  # (name, device, inode, counted in the token, creating pid)
        self._writers = []  # the RingWriters of the rings made here, closed at the end
        self._closed = False
        self._mu = threading.Lock()

    def __enter__(self):
        if self._closed:
            raise e.Error("this shmarray.Manager is closed")
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _name(self):
        """A generated name: the prefix, the pid and a new random part, so
        that no other user can tell the next one and take it first."""
        return s.normalise(f"/{self.prefix}{os.getpid()}_{random_part()}")

    def from_shape(self, shape, dtype=np.float64, *, name=None, order="C"):
        """A new zero-filled array of `shape` and `dtype` ('C' row-major or
        'F' column-major), named `name` or a generated name."""
        return self._create(shape, dtype, order, None, name)

    def from_array(self, arr, *, name=None):
        """A new array holding a copy of `arr`, in its order (column-major
        if it is Fortran-contiguous and not C-contiguous, else row-major)."""
        a = np.asarray(arr)
        order = "F" if a.flags.f_contiguous and not a.flags.c_contiguous else "C"
        data = np.ascontiguousarray(a) if order == "C" else np.asfortranarray(a)
        return self._create(a.shape, a.dtype, order, data.reshape(-1, order=order), name)

    def _create(self, shape, dtype, order, data, name):
        if self._closed:
            raise e.Error("this shmarray.Manager is closed: it makes no more arrays")
        if order not in ("C", "F"):
            raise ValueError("order is 'C' or 'F'")
        try:
            shape = tuple(int(d) for d in shape)
        except TypeError:
            shape = (int(shape),)
        dt = f.dtype_string(dtype)
        m = self._make(name, lambda seg, token, before_link: s.create(
            seg, dt, shape, order, data, token, before_link))
        return s._array(m, dt, shape, order, False)

    def ring(self, name=None, frame_shape=None, dtype=None, *, slots=8, policy="overwrite",
             order="C", max_readers=16, max_groups=4, timeout=10.0):
        """A new ring (docs/FORMAT.md, "Rings"): `slots` frames of
        `frame_shape` and `dtype` in `order`, named `name` or a generated
        name, written by the RingWriter returned and read by any process
        with shmarray.RingReader(name) or C++'s ring_reader<T>. `policy`
        'overwrite' never waits (a reader that falls behind is told what it
        missed); 'block' waits for the slowest live reader, for at most
        `timeout` seconds a frame (then RingTimeout; None: no limit). Its
        name goes with this manager as an array's does, and the writer is
        closed then (readers get ProducerGone after what is left)."""
        from . import _ring
        if self._closed:
            raise e.Error("this shmarray.Manager is closed: it makes no more rings")
        if frame_shape is None or dtype is None:
            raise TypeError("Manager.ring needs a frame_shape and a dtype: "
                            "m.ring(name, frame_shape, dtype) (name may be None)")
        if name is not None and not isinstance(name, (str, bytes, bytearray)):
            raise TypeError(f"a ring's name is a str, not {name!r}: give frame_shape and "
                            "dtype after it, m.ring(None, frame_shape, dtype)")
        spec = _ring.spec(frame_shape, dtype, slots, policy, order, max_readers, max_groups)
        made = []

        def create(seg, token, before_link):
            w = _ring.create(seg, spec, token, before_link, timeout)
            made.append(w)
            return w.mapping

        self._make(name, create)
        w = made[-1]
        with self._mu:
            self._writers.append(w)
        return w

    def _make(self, name, create):
        """Runs create(name, token, before_link) for `name` or generated
        names until one is free, with the owner token and the watchdog's
        registration around it; records the object made and returns what
        create returned (a Mapping)."""
        for attempt in range(NAME_ATTEMPTS):
            seg = s.normalise(name) if name is not None else self._name()
            token = _owner.token.acquire(_owner.watchdog.prepare)
            _owner.watchdog.prepare(token)  # the helper, started with the first
            registered = []

            def before_link(dev, ino, birth):
                _owner.watchdog.add("s", seg, dev, ino, birth)
                registered.append((dev, ino, birth))

            try:
                m = create(seg, token, before_link)
            except e.AlreadyExists:
                for dev, ino, birth in registered:
                    _owner.watchdog.remove("s", seg, dev, ino, birth)
                if token:
                    _owner.token.release()
                if name is not None:
                    raise
                if attempt == NAME_ATTEMPTS - 1:
                    raise e.AlreadyExists(
                        f"{escape(seg)}: already exists, and so did the {NAME_ATTEMPTS - 1} "
                        "names generated before it (another process takes them?)") from None
                continue
            except BaseException:
                for dev, ino, birth in registered:
                    _owner.watchdog.remove("s", seg, dev, ino, birth)
                if token:
                    _owner.token.release()
                raise
            with self._mu:
                self._owned.append((seg, m.device, m.inode, m.birth, token != 0, os.getpid()))
            return m

    def names(self):
        """The names of the segments this manager owns, in creation order."""
        with self._mu:
            return [o[0] for o in self._owned]

    def remove(self, arr_or_name):
        """Removes one owned segment's name now (arrays over it stay usable):
        an array's, a RingWriter's (its ring keeps working for those
        attached), or a name."""
        if isinstance(arr_or_name, str):
            name = arr_or_name
        elif hasattr(arr_or_name, "frame_shape"):  # a RingWriter
            name = arr_or_name.name
        else:
            name = s.name_of(arr_or_name)
        name = s.normalise(name)
        with self._mu:
            for i, o in enumerate(self._owned):
                if o[0] == name:
                    self._remove(o)
                    del self._owned[i]
                    return True
        return False

    def _remove(self, o):
        seg, dev, ino, birth, counted, creator = o
        if os.getpid() != creator:
            return  # a forked child's copy removes nothing of its parent's
        s.remove_if_same(seg, dev, ino, birth)
        _owner.watchdog.remove("s", seg, dev, ino, birth)
        if counted:
            _owner.token.release()

    def close(self):
        """Closes the rings' writers and removes every segment this manager
        created (in the creating process only)."""
        with self._mu:
            for w in self._writers:
                w.close()  # a forked child's copy closes nothing
            self._writers.clear()
            for o in self._owned:
                self._remove(o)
            self._owned.clear()
            self._closed = True

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
