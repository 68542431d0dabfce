"""The segment format, version 1, as docs/FORMAT.md gives it: reading and
checking a record, and writing one. Nothing here maps memory."""

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
    """What a record says: dtype (NumPy type string), shape, order ('C' or
    'F'), data_nbytes, owner_pid, created_ns, boot_id, owner_token."""

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


def read_record(name, size, tail):
    """Checks a segment of `size` bytes (its real size) whose last 512 bytes
    are `tail` (bytes-like; the ready word is read first of the fields past
    the version), in the format's order; returns its Info."""
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
    if version != VERSION:
        raise e.VersionMismatch(
            f"{shown}: has format version {version}; this module reads version {VERSION}")
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
    if any(rec[49:56]) or any(rec[352:376]):
        raise corrupt("reserved bytes are not zero")
    shape = struct.unpack_from("<32Q", rec, OFF_SHAPE)
    if any(shape[rank:]):
        raise corrupt("shape entries past the rank are not zero")
    shape = tuple(shape[:rank])
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
    if expected > size:
        raise e.TruncatedSegment(
            f"{shown}: holds {size} bytes, but its record describes {expected}")
    if expected < size:
        raise corrupt(f"holds {size} bytes, but its record describes {expected}")
    info = Info()
    info.dtype, info.shape, info.order, info.data_nbytes = dtype, shape, order, nbytes
    info.itemsize = itemsize
    info.owner_pid = struct.unpack_from("<q", rec, OFF_PID)[0]
    info.created_ns = _u64(rec, OFF_CREATED)
    info.boot_id = rec[OFF_BOOT:OFF_BOOT + 16]
    info.owner_token = _u64(rec, OFF_TOKEN)
    return info


def new_record(dtype, shape, order, owner_token=0):
    """Record bytes 0..375 and the checksum (bytes 376..379) of a new
    segment; the caller writes version and magic last of bytes 0..375 as
    FORMAT.md says, and the ready word after everything else."""
    itemsize = DTYPES[dtype]
    nbytes = data_nbytes(itemsize, shape)
    rec = bytearray(CHECKED)
    rec[0:8] = MAGIC
    struct.pack_into("<III", rec, OFF_VERSION, VERSION, RECORD_SIZE, 0)
    struct.pack_into("<Q", rec, OFF_NBYTES, nbytes)
    rec[OFF_DTYPE:OFF_DTYPE + len(dtype)] = dtype.encode("ascii")
    struct.pack_into("<II", rec, OFF_ITEMSIZE, itemsize, len(shape))
    rec[OFF_ORDER] = ord(order)
    struct.pack_into("<q", rec, OFF_PID, os.getpid())
    struct.pack_into("<Q", rec, OFF_CREATED, time.time_ns())
    rec[OFF_BOOT:OFF_BOOT + 16] = boot_id()
    struct.pack_into(f"<{len(shape)}Q", rec, OFF_SHAPE, *shape)
    struct.pack_into("<Q", rec, OFF_TOKEN, owner_token)
    checksum = struct.pack("<I", zlib.crc32(bytes(rec)) & 0xFFFFFFFF)
    return bytes(rec), checksum
