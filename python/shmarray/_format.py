"""The segment format as docs/FORMAT.md gives it, version 1 (arrays) and
version 2 (rings): reading and checking a record, and writing one. Nothing
here maps memory."""

import os
import struct
import time
import zlib

import numpy as np

from . import _errors as e
from ._names import escape

RECORD_SIZE = 512
ALIGN = 64
MAGIC = b"SHMARRAY"
VERSION = 1
RING_VERSION = 2
READY = b"REDY"
MAX_RANK = 32
SIZE_MAX = 2**63 - 1  # a segment's size, data and record, fits a signed 64-bit size

# Offsets in the record.
OFF_MAGIC, OFF_VERSION, OFF_RECORD_SIZE, OFF_NBYTES = 0, 8, 12, 16
OFF_DTYPE, OFF_ITEMSIZE, OFF_RANK, OFF_ORDER, OFF_FLAGS = 24, 40, 44, 48, 52
OFF_PID, OFF_CREATED, OFF_BOOT, OFF_SHAPE, OFF_TOKEN = 56, 64, 72, 88, 344
OFF_CHECKSUM, OFF_READY, OFF_LOCK_STATE, OFF_LOCK_BOOT, OFF_MUTEX = 376, 380, 384, 392, 448
CHECKED = 376  # bytes 0..375 are checked and never change

# The type strings a writer writes, with their sizes.
DTYPES = {
    "|b1": 1, "|i1": 1, "|u1": 1, "<i2": 2, "<u2": 2, "<i4": 4, "<u4": 4,
    "<i8": 8, "<u8": 8, "<f4": 4, "<f8": 8, "<c8": 8, "<c16": 16,
}


def dtype_string(dtype):
    """The record's type string for a NumPy dtype, or InvalidShape-free
    DtypeMismatch if shmarray does not store it."""
    dt = np.dtype(dtype)
    s = dt.str
    if s in DTYPES:
        return s
    hint = ""
    if dt.byteorder == ">" and dt.newbyteorder("<").str in DTYPES:
        hint = f"; convert it first: arr.astype({dt.newbyteorder('<').str!r})"
    raise e.DtypeMismatch(
        f"element type {s!r} is not one shmarray stores (it stores " + ", ".join(DTYPES)
        + ")" + hint)


def align64(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


def data_nbytes(itemsize, shape):
    """itemsize times the product of the extents (1 for rank 0), checked as
    the format asks: below 2**63."""
    if len(shape) > MAX_RANK:
        raise e.InvalidShape(f"rank {len(shape)} is above {MAX_RANK}")
    p = itemsize
    for d in shape:
        if d < 0:
            raise e.InvalidShape(f"shape {tuple(shape)} has a negative extent")
        if d:
            p *= d
    if p > SIZE_MAX:
        raise e.InvalidShape(f"shape {tuple(shape)} of {itemsize}-byte items overflows")
    return 0 if any(d == 0 for d in shape) else p


def segment_size(nbytes):
    """The size of a segment holding `nbytes` of data and its record, or
    None where that overflows (as in C++, the data size may be at most
    2**63 - 1 - 64 - 512)."""
    if nbytes > SIZE_MAX - ALIGN - RECORD_SIZE:
        return None
    return align64(nbytes) + RECORD_SIZE


def boot_id():
    """This host's boot id, the 16 bytes of the UUID in
    /proc/sys/kernel/random/boot_id (zero if unknown)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return bytes.fromhex(f.read().strip().replace("-", ""))[:16].ljust(16, b"\0")
    except OSError:
        return bytes(16)


class Info:
    """What an array's record says: dtype (NumPy type string), shape, order
    ('C' or 'F'), data_nbytes, owner_pid, created_ns, boot_id, owner_token.
    `kind` is 'array' (a ring's record is a RingInfo, whose kind is 'ring')."""

    kind = "array"
    __slots__ = ("dtype", "shape", "order", "data_nbytes", "itemsize", "owner_pid",
                 "created_ns", "boot_id", "owner_token")

    def __repr__(self):
        return (f"Info(dtype={self.dtype!r}, shape={self.shape}, order={self.order!r}, "
                f"data_nbytes={self.data_nbytes}, owner_pid={self.owner_pid}, "
                f"owner_token={self.owner_token:#x})")


def _u32(b, off):
    return struct.unpack_from("<I", b, off)[0]


def _u64(b, off):
    return struct.unpack_from("<Q", b, off)[0]


# Rings (FORMAT.md, "Rings: format version 2").
RING_AREA_ALIGN = 65536  # each area can be mapped on its own, whatever the page size
MAX_SLOTS, MAX_READERS, MAX_GROUPS = 65536, 1024, 64
MAX_FRAME_NBYTES = 2**48 - 1  # F is below 2**48
OFF_POLICY, OFF_SLOTS, OFF_MAX_READERS, OFF_MAX_GROUPS, OFF_SLOT_STRIDE = 49, 352, 356, 360, 368
POLICIES = {"overwrite": b"O", "block": b"B"}


def align_area(n):
    return (n + RING_AREA_ALIGN - 1) // RING_AREA_ALIGN * RING_AREA_ALIGN


def ring_layout(frame_nbytes, slots, max_readers, max_groups):
    """(stride, D, W, R, S): a slot's stride and the sizes of the slots, the
    writer area and the reader area, and the whole object's size."""
    stride = align64(frame_nbytes)
    d = align_area(slots * stride)
    w = align_area(64 + 64 * slots)
    r = align_area(64 + 64 * (max_groups + max_readers))
    return stride, d, w, r, d + w + r + RECORD_SIZE


class RingInfo:
    """What a ring's record says: dtype, shape (a frame's), order,
    itemsize, frame_nbytes, policy ('overwrite' or 'block'), slots,
    max_readers, max_groups, slot_stride, owner_pid, created_ns, boot_id,
    owner_token, and the layout: slots_bytes (D), writer_bytes (W),
    readers_bytes (R) and size (S). `kind` is 'ring'."""

    kind = "ring"
    __slots__ = ("dtype", "shape", "order", "itemsize", "frame_nbytes", "policy", "slots",
                 "max_readers", "max_groups", "slot_stride", "owner_pid", "created_ns",
                 "boot_id", "owner_token", "slots_bytes", "writer_bytes", "readers_bytes",
                 "size")

    @property
    def frame_shape(self):
        return self.shape

    def __repr__(self):
        return (f"RingInfo(dtype={self.dtype!r}, frame_shape={self.shape}, "
                f"order={self.order!r}, policy={self.policy!r}, slots={self.slots}, "
                f"max_readers={self.max_readers}, max_groups={self.max_groups}, "
                f"owner_pid={self.owner_pid}, owner_token={self.owner_token:#x})")


def _version_mismatch(shown, version, versions):
    if version == RING_VERSION and versions == (VERSION,):
        return e.VersionMismatch(
            f"{shown}: is a ring (format version {RING_VERSION}), not an array: attach it "
            "with shmarray.RingReader(name)")
    if version == VERSION and versions == (RING_VERSION,):
        return e.VersionMismatch(
            f"{shown}: is an array (format version {VERSION}), not a ring: attach it with "
            "shmarray.attach(name)")
    return e.VersionMismatch(
        f"{shown}: has format version {version}; this module reads versions {VERSION} "
        f"(arrays) and {RING_VERSION} (rings)")


def read_record(name, size, tail, versions=(VERSION,)):
    """Checks a segment of `size` bytes (its real size) whose last 512 bytes
    are `tail` (bytes-like; the ready word is read first of the fields past
    the version), in the format's order; returns its Info (version 1, an
    array) or RingInfo (version 2, a ring). A version not in `versions` is
    a VersionMismatch that says what the object is."""
    shown = escape(name)
    if size == 0:
        raise e.NotReady(f"{shown}: is empty: it is still being created, or holds nothing")
    if size < RECORD_SIZE or (size - RECORD_SIZE) % ALIGN:
        raise e.CorruptMetadata(
            f"{shown}: holds {size} bytes, which no record can end (damage, or a raw segment: "
            "attach that with shmarray.attach_raw(name, shape, dtype))")
    magic = bytes(tail[0:8])
    raw_hint = ("; or it is a raw segment (no record): attach it with "
                "shmarray.attach_raw(name, shape, dtype)")
    if magic == bytes(8):
        raise e.NotReady(f"{shown}: is still being created (its record is not written yet)"
                         + raw_hint)
    if magic != MAGIC:
        raise e.CorruptMetadata(
            f"{shown}: is not a shmarray segment (magic {magic!r}, expected {MAGIC!r})"
            + raw_hint)
    version = _u32(tail, OFF_VERSION)
    if version == 0:
        raise e.NotReady(f"{shown}: is still being created (its version is not set)")
    if version not in versions:
        raise _version_mismatch(shown, version, tuple(versions))
    if bytes(tail[OFF_READY:OFF_READY + 4]) != READY:
        raise e.NotReady(f"{shown}: is still being created (its ready word is not set)")
    rec = bytes(tail[0:CHECKED])  # a private copy: checked from here on

    def corrupt(what):
        return e.CorruptMetadata(f"{shown}: {what}")

    if _u32(rec, OFF_RECORD_SIZE) != RECORD_SIZE:
        raise corrupt(f"record size {_u32(rec, OFF_RECORD_SIZE)}, expected {RECORD_SIZE}")
    stored = _u32(tail, OFF_CHECKSUM)
    computed = zlib.crc32(rec) & 0xFFFFFFFF
    if stored != computed:
        raise corrupt(f"checksum {stored:#010x}, but the record's is {computed:#010x}")
    raw = rec[OFF_DTYPE:OFF_DTYPE + 16]
    text = raw.rstrip(b"\0")
    if not (1 <= len(text) <= 15) or any(c < 0x21 or c > 0x7E for c in text) \
            or b"\0" in text:
        raise corrupt(f"dtype field {raw!r} is not a type string")
    dtype = text.decode("ascii")
    itemsize = _u32(rec, OFF_ITEMSIZE)
    if itemsize == 0 or (dtype in DTYPES and DTYPES[dtype] != itemsize):
        raise corrupt(f"itemsize {itemsize} does not fit dtype {dtype}")
    rank = _u32(rec, OFF_RANK)
    if rank > MAX_RANK:
        raise corrupt(f"rank {rank} is above {MAX_RANK}")
    order = chr(rec[OFF_ORDER])
    if order not in "CF":
        raise corrupt(f"order byte {rec[OFF_ORDER]:#04x} is neither C nor F")
    reserved = ((49, 56), (352, 376)) if version == VERSION else ((50, 56), (364, 368))
    if any(any(rec[a:b]) for a, b in reserved):
        raise corrupt("reserved bytes are not zero")
    shape = struct.unpack_from("<32Q", rec, OFF_SHAPE)
    if any(shape[rank:]):
        raise corrupt("shape entries past the rank are not zero")
    shape = tuple(shape[:rank])
    if version == RING_VERSION:
        info = _ring_sizes(rec, shape, itemsize, size, shown, corrupt)
    else:
        info = _array_sizes(rec, shape, itemsize, size, shown, corrupt, dtype)
    info.dtype, info.shape, info.order, info.itemsize = dtype, shape, order, itemsize
    info.owner_pid = struct.unpack_from("<q", rec, OFF_PID)[0]
    info.created_ns = _u64(rec, OFF_CREATED)
    info.boot_id = rec[OFF_BOOT:OFF_BOOT + 16]
    info.owner_token = _u64(rec, OFF_TOKEN)
    return info


def _array_sizes(rec, shape, itemsize, size, shown, corrupt, dtype):
    """Step 10 of version 1: the data's size against the shape and the object's."""
    p = itemsize
    for d in shape:
        if d:
            p *= d
    if p > SIZE_MAX:
        raise corrupt(f"shape {shape} of {itemsize}-byte items overflows")
    expected_nbytes = 0 if any(d == 0 for d in shape) else p
    nbytes = _u64(rec, OFF_NBYTES)
    if nbytes != expected_nbytes:
        raise corrupt(f"data_nbytes {nbytes}, but shape {shape} of {dtype} holds "
                      f"{expected_nbytes}")
    expected = segment_size(nbytes)
    if expected is None:
        raise corrupt("data size overflows")
    _check_size(expected, size, shown, corrupt)
    info = Info()
    info.data_nbytes = nbytes
    return info


def _check_size(expected, size, shown, corrupt):
    if expected > size:
        raise e.TruncatedSegment(
            f"{shown}: holds {size} bytes, but its record describes {expected}")
    if expected < size:
        raise corrupt(f"holds {size} bytes, but its record describes {expected}")


def _ring_sizes(rec, shape, itemsize, size, shown, corrupt):
    """The checks version 2 adds: policy, extents, frame size, counts,
    stride, and the object's size against the layout."""
    policy = {v[0]: k for k, v in POLICIES.items()}.get(rec[OFF_POLICY])
    if policy is None:
        raise corrupt(f"policy byte {rec[OFF_POLICY]:#04x} is neither O nor B")
    if any(d == 0 for d in shape):
        raise corrupt(f"frame shape {shape} has a zero extent")
    frame = itemsize
    for d in shape:
        frame *= d
        if frame > MAX_FRAME_NBYTES:
            raise corrupt(f"frame shape {shape} of {itemsize}-byte items is 2**48 bytes or more")
    stored = _u64(rec, OFF_NBYTES)
    if stored != frame:
        raise corrupt(f"frame_nbytes {stored}, but frame shape {shape} of {itemsize}-byte "
                      f"items holds {frame}")
    slots, readers, groups = struct.unpack_from("<III", rec, OFF_SLOTS)
    if not 1 <= slots <= MAX_SLOTS:
        raise corrupt(f"slots {slots}, expected 1 to {MAX_SLOTS}")
    if not 1 <= readers <= MAX_READERS:
        raise corrupt(f"max_readers {readers}, expected 1 to {MAX_READERS}")
    if groups > MAX_GROUPS:
        raise corrupt(f"max_groups {groups}, expected 0 to {MAX_GROUPS}")
    stride, d, w, r, expected = ring_layout(frame, slots, readers, groups)
    if _u64(rec, OFF_SLOT_STRIDE) != stride:
        raise corrupt(f"slot_stride {_u64(rec, OFF_SLOT_STRIDE)}, expected {stride}")
    if expected > SIZE_MAX:
        raise corrupt("ring size overflows")
    _check_size(expected, size, shown, corrupt)
    info = RingInfo()
    info.frame_nbytes, info.policy, info.slot_stride = frame, policy, stride
    info.slots, info.max_readers, info.max_groups = slots, readers, groups
    info.slots_bytes, info.writer_bytes, info.readers_bytes, info.size = d, w, r, expected
    return info


def new_record(dtype, shape, order, owner_token=0):
    """Record bytes 0..375 and the checksum (bytes 376..379) of a new
    segment; the caller writes version and magic last of bytes 0..375 as
    FORMAT.md says, and the ready word after everything else."""
    itemsize = DTYPES[dtype]
    return _record(VERSION, dtype, shape, order, data_nbytes(itemsize, shape), owner_token)


def new_ring_record(dtype, shape, order, policy, slots, max_readers, max_groups,
                    owner_token=0):
    """new_record for a ring (version 2)."""
    frame = data_nbytes(DTYPES[dtype], shape)
    return _record(RING_VERSION, dtype, shape, order, frame, owner_token, policy=policy,
                   counts=(slots, max_readers, max_groups), stride=align64(frame))


def _record(version, dtype, shape, order, nbytes, owner_token, policy=None, counts=None,
            stride=0):
    itemsize = DTYPES[dtype]
    rec = bytearray(CHECKED)
    rec[0:8] = MAGIC
    struct.pack_into("<III", rec, OFF_VERSION, version, RECORD_SIZE, 0)
    struct.pack_into("<Q", rec, OFF_NBYTES, nbytes)
    rec[OFF_DTYPE:OFF_DTYPE + len(dtype)] = dtype.encode("ascii")
    struct.pack_into("<II", rec, OFF_ITEMSIZE, itemsize, len(shape))
    rec[OFF_ORDER] = ord(order)
    if policy is not None:
        rec[OFF_POLICY] = POLICIES[policy][0]
    struct.pack_into("<q", rec, OFF_PID, os.getpid())
    struct.pack_into("<Q", rec, OFF_CREATED, time.time_ns())
    rec[OFF_BOOT:OFF_BOOT + 16] = boot_id()
    struct.pack_into(f"<{len(shape)}Q", rec, OFF_SHAPE, *shape)
    struct.pack_into("<Q", rec, OFF_TOKEN, owner_token)
    if counts is not None:
        struct.pack_into("<III", rec, OFF_SLOTS, *counts)
        struct.pack_into("<Q", rec, OFF_SLOT_STRIDE, stride)
    checksum = struct.pack("<I", zlib.crc32(bytes(rec)) & 0xFFFFFFFF)
    return bytes(rec), checksum
