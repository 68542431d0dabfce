"""shmarray for Python: NumPy arrays in the same shared-memory segments as
the C++ library, by name, with their dtype, shape and order checked.

    import shmarray
    a = shmarray.attach("/frames")            # made by C++ (or here), by name alone
    with shmarray.Manager() as m:             # segments removed when the block ends
        b = m.from_array(np.arange(10.0))
        shmarray.name_of(b)                   # for a C++ process to attach
    with shmarray.lock(a) as held: ...        # the same lock as C++'s lock()
    with shmarray.Manager() as m:             # a ring of frames: one writer ...
        ring = m.ring("/camera", (512, 512), np.uint16, slots=8)
        ring.push(image)
    r = shmarray.RingReader("/camera")        # ... and readers by name, here or in C++
    frame = r.next(timeout=1.0)               # frame.array: read-only, in place; frame.valid()

The format is docs/FORMAT.md; nothing here reads the C++ code. Attaching
never registers anything with CPython's resource tracker, so a segment that
Python only attached to is never removed when Python exits."""

from ._errors import (AccessDenied, AlreadyExists, CorruptMetadata, DtypeMismatch, Error,
                      InvalidName, InvalidShape, LockError, MetadataError, NotFound, NotReady,
                      OutOfSpace, ProducerGone, RingTimeout, ShapeMismatch, TruncatedSegment,
                      VersionMismatch)
from ._format import Info, RingInfo
from ._list import list
from ._lock import Held, lock
from ._manager import Manager
from ._ring import Frame, Loan, RingReader, RingWriter
from ._segments import attach, attach_raw, name_of


def info(arr):
    """The record of the segment under an array (an Info), or None for a raw
    one; a ring's (a RingInfo) for a RingReader, a RingWriter, a Frame or a
    frame's array."""
    if isinstance(arr, (RingReader, RingWriter, Frame)):
        return arr.info
    from ._segments import mapping_of
    m = mapping_of(arr)
    if m is None:
        raise ValueError("this array is not over a shmarray segment")
    return m.info


__version__ = "0.1.0"
__all__ = [
    "attach", "attach_raw", "name_of", "info", "Manager", "list", "lock", "Held", "Info",
    "Error", "InvalidName", "NotFound", "AlreadyExists", "AccessDenied", "OutOfSpace",
    "InvalidShape", "ShapeMismatch", "DtypeMismatch", "NotReady", "MetadataError",
    "CorruptMetadata", "VersionMismatch", "TruncatedSegment", "LockError",
    "RingReader", "RingWriter", "Frame", "Loan", "RingInfo", "ProducerGone", "RingTimeout",
]
