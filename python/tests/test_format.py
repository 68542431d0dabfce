"""The format holds the two sides together: segments written by C++ are read
by Python field by field and element by element, and the other way round,
for every dtype, both orders and ranks 0 to 4; every bad segment is the same
kind of error on both sides."""

import os
import struct
import zlib

import numpy as np
import pytest

import shmarray
from conftest import golden, pattern, shm_names

DTYPES = ["|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f4", "<f8",
          "<c8", "<c16"]
SHAPES = [(), (5,), (3, 4), (2, 3, 4), (2, 1, 3, 2), (4, 0)]  # the last: a record alone


def fields(name):
    out = {}
    for line in golden("fields", name).splitlines():
        k, v = line.split("=", 1)
        out[k] = v
    return out


def check_fields(name, info, size):
    f = fields(name)
    assert int(f["size"]) == size
    assert f["dtype"] == info.dtype
    assert f["order"] == info.order
    assert int(f["data_nbytes"]) == info.data_nbytes
    assert int(f["owner_pid"]) == info.owner_pid
    assert int(f["created_ns"]) == info.created_ns
    assert int(f["owner_token"]) == info.owner_token
    assert bytes.fromhex(f["boot_id"]) == info.boot_id
    assert f["shape"] == repr(info.shape)  # C++ writes shapes as Python tuples


@pytest.mark.parametrize("dtype", DTYPES)
def test_cpp_made_segments_are_read_by_python(prefix, dtype):
    for order in "CF":
        for shape in SHAPES:
            name = f"/{prefix}{dtype[1:]}_{order}_{len(shape)}"
            golden("make", name, dtype, order, *shape)
            try:
                a = shmarray.attach(name)
                assert a.dtype == np.dtype(dtype)
                assert a.shape == shape
                info = shmarray.info(a)
                assert info.order == order
                if a.size:
                    flat = a.reshape(-1, order=order)  # storage order
                    assert (flat == pattern(dtype, a.size)).all()
                assert a.flags.f_contiguous if order == "F" else a.flags.c_contiguous
                check_fields(name, info, os.stat("/dev/shm" + name).st_size)
            finally:
                os.unlink("/dev/shm" + name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_python_made_segments_are_read_by_cpp(prefix, dtype):
    with shmarray.Manager(prefix=prefix) as m:
        for order in "CF":
            for shape in SHAPES:
                a = m.from_shape(shape, dtype, order=order)
                if a.size:
                    a.reshape(-1, order=order)[:] = pattern(dtype, a.size)
                name = shmarray.name_of(a)
                golden("check", name, dtype, order, *shape)
                check_fields(name, shmarray.info(a), os.stat("/dev/shm" + name).st_size)
    assert shm_names(prefix) == []


def test_from_array_keeps_order_and_values(prefix):
    with shmarray.Manager(prefix=prefix) as m:
        c = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
        f = np.asfortranarray(c)
        a, b = m.from_array(c), m.from_array(f)
        assert shmarray.info(a).order == "C" and shmarray.info(b).order == "F"
        assert (a == c).all() and (b == c).all()
        v = b[1, :, 2]  # a view: still names its segment
        assert shmarray.name_of(v) == shmarray.name_of(b)
        for x in (np.array([True, False, True]), np.arange(4) * (1 - 2j),
                  np.array(3.5), np.zeros((0, 3), np.int8)):
            y = m.from_array(x)
            assert y.dtype == x.dtype and y.shape == x.shape and (y == x).all()
            golden("fields", shmarray.name_of(y))  # and C++ reads it


# ---- bad segments: the same kind of error on both sides

KINDS = {
    "not_found": shmarray.NotFound,
    "not_ready": shmarray.NotReady,
    "dtype_mismatch": shmarray.DtypeMismatch,
    "corrupt_metadata": shmarray.CorruptMetadata,
    "version_mismatch": shmarray.VersionMismatch,
    "truncated_segment": shmarray.TruncatedSegment,
}


def rewrite_record(path, change):
    """Applies change(record bytearray) to the last 512 bytes and fixes the
    checksum up, so that the checks behind it are reached."""
    with open(path, "r+b") as fh:
        fh.seek(-512, os.SEEK_END)
        at = fh.tell()
        rec = bytearray(fh.read(512))
        change(rec)
        struct.pack_into("<I", rec, 376, zlib.crc32(bytes(rec[:376])) & 0xFFFFFFFF)
        fh.seek(at)
        fh.write(rec)


def bad_segments(prefix):
    """(name, C++ kind) for each kind of bad segment, made here."""
    cases = []

    def make(tag):
        name = f"/{prefix}{tag}"
        golden("make", name, "<f8", "C", 4, 4)
        return name, "/dev/shm" + name

    cases.append((f"/{prefix}missing", "not_found"))
    name, path = make("dtype")
    cases.append((name + "?dtype=<i4", "dtype_mismatch"))
    name, path = make("empty")
    os.truncate(path, 0)
    cases.append((name, "not_ready"))
    name, path = make("checksum")
    with open(path, "r+b") as fh:  # one byte of the record changed, checksum left
        fh.seek(-512 + 30, os.SEEK_END)
        fh.write(b"X")
    cases.append((name, "corrupt_metadata"))
    name, path = make("overflow")

    def huge(rec):
        struct.pack_into("<2Q", rec, 88, 2**62, 2**62)
    rewrite_record(path, huge)
    cases.append((name, "corrupt_metadata"))
    name, path = make("bigdata")

    def just_below_2_63(rec):  # a data size whose segment (data and record) overflows
        struct.pack_into("<Q", rec, 16, 2**63 - 8)
        struct.pack_into("<I", rec, 44, 1)
        struct.pack_into("<2Q", rec, 88, 2**60 - 1, 0)
    rewrite_record(path, just_below_2_63)
    cases.append((name, "corrupt_metadata"))
    name, path = make("version")
    rewrite_record(path, lambda rec: struct.pack_into("<I", rec, 8, 2))
    cases.append((name, "version_mismatch"))
    name, path = make("truncated")
    with open(path, "r+b") as fh:  # the record kept, at a shorter end
        fh.seek(-512, os.SEEK_END)
        rec = fh.read(512)
        fh.truncate(64 + 512)
        fh.seek(64)
        fh.write(rec)
    cases.append((name, "truncated_segment"))
    name, path = make("raw")
    os.truncate(path, 4 * 4 * 8 + 7)  # a size no record can end
    cases.append((name, "corrupt_metadata"))
    for tag, offset, value in (("magic0", 0, bytes(8)), ("version0", 8, bytes(4)),
                               ("unready", 380, b"NOPE")):
        name, path = make(tag)  # caught while being created
        with open(path, "r+b") as fh:
            fh.seek(-512 + offset, os.SEEK_END)
            fh.write(value)
        cases.append((name, "not_ready"))
    return cases


def test_every_bad_segment_is_the_same_typed_error_on_both_sides(prefix):
    for spec, kind in bad_segments(prefix):
        name, _, want = spec.partition("?dtype=")
        dtype = want or "<f8"
        assert golden("attach", name, dtype).strip() == kind, spec
        with pytest.raises(KINDS[kind]) as err:
            shmarray.attach(name, dtype=want or None, timeout=0.02)
        assert name in str(err.value)  # the message names the segment
        if os.path.exists("/dev/shm" + name):
            os.unlink("/dev/shm" + name)
    assert shm_names(prefix) == []


def test_bad_names_and_wrong_shapes(prefix):
    for bad in ["", "/", "a/b", "/..", "x" * 300]:
        with pytest.raises(shmarray.InvalidName):
            shmarray.attach(bad)
    with shmarray.Manager(prefix=prefix) as m:
        a = m.from_shape((3, 4), np.float32)
        with pytest.raises(shmarray.ShapeMismatch) as err:
            shmarray.attach(shmarray.name_of(a), shape=(4, 3))
        assert "(3, 4)" in str(err.value) and "(4, 3)" in str(err.value)
        with pytest.raises(shmarray.AlreadyExists):
            m.from_shape((1,), np.int8, name=shmarray.name_of(a))
        with pytest.raises(shmarray.InvalidShape):
            m.from_shape((2**40, 2**40), np.float64)
        with pytest.raises(shmarray.DtypeMismatch):
            m.from_shape((2,), np.float16)  # not a type shmarray stores
    assert shm_names(prefix) == []


def test_raw_segments_are_attached_with_an_explicit_shape(prefix):
    name = f"/{prefix}raw"
    golden("raw", name, "<i4", 12)
    try:
        a = shmarray.attach_raw(name, (3, 4), np.int32)
        assert (a.reshape(-1) == pattern("<i4", 12)).all()
        assert shmarray.info(a) is None  # no record
        with pytest.raises(shmarray.ShapeMismatch) as err:
            shmarray.attach_raw(name, (5, 4), np.int32)
        assert "48" in str(err.value) and "80" in str(err.value)
        with pytest.raises(shmarray.InvalidShape):
            shmarray.attach_raw(name, (0,), np.int32)
        with pytest.raises(shmarray.CorruptMetadata):
            shmarray.attach(name)  # by name alone: no record to read
        with pytest.raises(shmarray.LockError):
            shmarray.lock(a)
    finally:
        os.unlink("/dev/shm" + name)


def test_a_data_size_just_below_2_63_is_corrupt_not_truncated_as_in_cpp(prefix):
    name = f"/{prefix}bigdata"
    golden("make", name, "<f8", "C", 4, 4)
    try:
        def just_below_2_63(rec):
            struct.pack_into("<Q", rec, 16, 2**63 - 8)
            struct.pack_into("<I", rec, 44, 1)
            struct.pack_into("<2Q", rec, 88, 2**60 - 1, 0)
        rewrite_record("/dev/shm" + name, just_below_2_63)
        assert golden("attach", name, "<f8").strip() == "corrupt_metadata"
        with pytest.raises(shmarray.CorruptMetadata) as err:
            shmarray.attach(name)
        assert "data size overflows" in str(err.value)
        row = next(r for r in shmarray.list() if r["name"] == name)
        assert row["status"] == "corrupt" and "data size overflows" in row["error"]
    finally:
        os.unlink("/dev/shm" + name)


def test_a_raw_segment_is_raw_whatever_its_bytes_hold_even_a_record_lookalike(prefix):
    """Raw data the size of the shape, whose bytes at size - 512 begin with
    SHMARRAY (here: a whole valid record), is attached as raw data."""
    made, name = f"/{prefix}made", f"/{prefix}lookalike"
    golden("make", made, "<f8", "C", 448)  # 448 * 8 + 512 = 4096 bytes
    try:
        with open("/dev/shm" + made, "rb") as fh:
            data = fh.read()
        assert len(data) == 4096 and data[4096 - 512:][:8] == b"SHMARRAY"
        fd = os.open("/dev/shm" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        os.write(fd, data)
        os.close(fd)
        a = shmarray.attach_raw(name, (4096,), np.uint8)
        assert bytes(a) == data and shmarray.info(a) is None
        b = shmarray.attach_raw(name, (64, 64), "|u1")
        assert b.shape == (64, 64)
    finally:
        os.unlink("/dev/shm" + made)
        if os.path.exists("/dev/shm" + name):
            os.unlink("/dev/shm" + name)


def test_cpp_attaches_a_record_lookalike_raw_with_its_shape_as_python_does(prefix):
    made, name = f"/{prefix}made", f"/{prefix}lookalike"
    golden("make", made, "<f8", "C", 448)
    try:
        with open("/dev/shm" + made, "rb") as fh:
            data = fh.read()
        fd = os.open("/dev/shm" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        os.write(fd, data)
        os.close(fd)
        golden("add1", name, "|u1", 4096)  # C++: attach(name, {4096}), +1 each
        a = shmarray.attach_raw(name, (4096,), np.uint8)
        assert (a == (np.frombuffer(data, np.uint8) + 1).astype(np.uint8)).all()
    finally:
        os.unlink("/dev/shm" + made)
        if os.path.exists("/dev/shm" + name):
            os.unlink("/dev/shm" + name)
