"""Named segments in /dev/shm: opening, creating, mapping and removing them,
and the NumPy arrays over them."""

import ctypes
import ctypes.util
import errno
import mmap
import os
import stat
import struct
import time

import numpy as np

from . import _errors as e
from . import _format as f
from . import _names
from ._names import escape

SHM_DIR = "/dev/shm"


def normalise(name):
    """The name with its leading '/', checked as _names.normalise says."""
    return _names.normalise(name)


def path_of(name):
    return SHM_DIR + name


def link_unnamed(fd, path):
    """Gives an unnamed file (O_TMPFILE) the name `path`, never replacing
    one (FileExistsError): linkat through /proc/self/fd, following the
    link (os.link's defaults would call link(), which does not)."""
    d = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(f"/proc/self/fd/{fd}", os.path.basename(path), dst_dir_fd=d,
                follow_symlinks=True)
    finally:
        os.close(d)


def _os_error(err, name, doing):
    code = err.errno
    if code == errno.ENOENT:
        return e.NotFound(f"{escape(name)}: does not exist")
    if code == errno.EEXIST:
        return e.AlreadyExists(f"{escape(name)}: already exists")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return e.AccessDenied(f"{escape(name)}: {doing}: {err.strerror}")
    if code in (errno.ENOSPC, errno.ENOMEM):
        more = _free_text() if code == errno.ENOSPC else ""
        return e.OutOfSpace(f"{escape(name)}: {doing}: {err.strerror}{more}")
    return e.Error(f"{escape(name)}: {doing}: {err.strerror}")


def _free_text():
    """What /dev/shm has left, for a message about running out of it."""
    try:
        v = os.statvfs(SHM_DIR)
    except OSError:
        return ""
    return f" (/dev/shm has {v.f_bavail * v.f_frsize} bytes and {v.f_favail} inodes free)"


def _out_of_space(name, needed, fd, what="needs"):
    """OutOfSpace for `needed` bytes that the file system of `fd` could not give."""
    v = os.fstatvfs(fd)
    return e.OutOfSpace(
        f"{escape(name)}: {what} {needed} bytes, but /dev/shm has {v.f_bavail * v.f_frsize} "
        "bytes free; free space in /dev/shm (ls -l /dev/shm shows what holds it), give the "
        "container more shared memory (docker run --shm-size=...), or use a file")


class Mapping(mmap.mmap):
    """A segment's mapping (of `size` bytes from `offset`: a ring's areas
    are mapped apart). NumPy arrays over it hold a reference to it, and
    it is never closed or resized: it goes when the last array over it
    goes. (CPython's mmap keeps a duplicate of the descriptor it was made
    from, so each attach holds one descriptor while it lives.)"""

    def __new__(cls, fd, size, writable, name, info, device, inode, offset=0):
        try:
            m = super().__new__(cls, fd, size, flags=mmap.MAP_SHARED,
                                prot=mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0),
                                offset=offset)
        except OSError as err:
            raise _os_error(err, name, "could not be mapped") from None
        except ValueError:  # CPython's mmap checks the size again: it shrank meanwhile
            raise e.TruncatedSegment(f"{escape(name)}: was {size} bytes when checked, and was "
                                     "shortened before it could be mapped") from None
        m.segment_name, m.info, m.device, m.inode = name, info, device, inode
        m.birth = birth_ns(fd=fd)
        m.writable = writable
        return m

    def close(self):
        raise e.Error(f"{escape(self.segment_name)}: a shmarray mapping is not closed by hand: "
                      "it goes with the last array over it (closing it under them would crash)")

    def resize(self, newsize):
        raise e.Error(f"{escape(self.segment_name)}: a shared segment is never resized (every "
                      "process mapping it would get SIGBUS)")

    def __exit__(self, *exc):
        return False


def open_segment(name, writable):
    """Opens the segment `name` (checked: a valid name) and returns its
    descriptor and fstat; a symlink or anything but a regular file is refused."""
    name = normalise(name)
    return open_object(path_of(name), name, writable)


def open_object(path, name, writable):
    """open_segment for any path (str or bytes), `name` its name in messages."""
    flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as err:
        raise _os_error(err, name, "could not be opened") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise e.AccessDenied(f"{escape(name)}: is not a regular file")
        return fd, st
    except BaseException:
        os.close(fd)
        raise


def read_tail(fd, size, name):
    """The last 512 bytes of a segment of `size` bytes, for read_record,
    read with pread (never through a mapping: a file shrunk meanwhile is a
    short read here, TruncatedSegment, where a mapping would be a SIGBUS).
    The ready word is read first, on its own, and the rest after it: read
    in one go, the fields (copied first) could predate a ready word copied
    after the writer set it, and a segment being created would look corrupt."""
    if size < f.RECORD_SIZE:
        return b""
    at = size - f.RECORD_SIZE
    try:
        ready = os.pread(fd, 4, at + f.OFF_READY)
        tail = bytearray(os.pread(fd, f.RECORD_SIZE, at))
    except OSError as err:
        raise _os_error(err, name, "could not be read") from None
    if len(ready) != 4 or len(tail) != f.RECORD_SIZE:
        raise e.TruncatedSegment(f"{escape(name)}: was {size} bytes, and was shortened while "
                                 "its record was read")
    tail[f.OFF_READY:f.OFF_READY + 4] = ready
    return bytes(tail)


_fallocate = None
FALLOC_FL_KEEP_SIZE = 1
_statx = None
AT_EMPTY_PATH, AT_SYMLINK_NOFOLLOW, STATX_BTIME = 0x1000, 0x100, 0x800


_libc = None


def libc():
    """The C library through ctypes, loaded once, errno kept; ctypes lets
    go of the GIL while a call runs (a futex wait sleeps in one)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc


def birth_ns(fd=None, path=None):
    """An object's birth time in ns (statx, through glibc), which tells it
    from a later object that reuses its inode number: of the open `fd`, or
    of `path` (not followed if a link); 0 where the file system or the C
    library does not say."""
    global _statx
    if _statx is None:
        try:
            fn = libc().statx
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint,
                           ctypes.c_char_p]
            fn.restype = ctypes.c_int
            _statx = fn
        except (OSError, AttributeError):
            _statx = False
    if not _statx:
        return 0
    buf = ctypes.create_string_buffer(256)  # struct statx
    if fd is not None:
        rc = _statx(fd, b"", AT_EMPTY_PATH, STATX_BTIME, buf)
    else:
        rc = _statx(-100, os.fsencode(path), AT_SYMLINK_NOFOLLOW, STATX_BTIME, buf)  # AT_FDCWD
    mask, = struct.unpack_from("<I", buf.raw, 0)
    if rc != 0 or not mask & STATX_BTIME:
        return 0
    sec, nsec = struct.unpack_from("<qI", buf.raw, 80)  # stx_btime
    return sec * 10**9 + nsec


def _fallocate_fn():
    """glibc's fallocate(2) wrapper (64-bit offsets), or False without one."""
    global _fallocate
    if _fallocate is None:
        try:
            c = libc()
            fn = getattr(c, "fallocate64", None) or c.fallocate
            fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
            fn.restype = ctypes.c_int
            _fallocate = fn
        except (OSError, AttributeError):
            _fallocate = False
    return _fallocate


def reserve_if_sparse(fd, st, name):
    """Before a writable mapping of a segment that is sparse (made by
    something that only ftruncates: multiprocessing.shared_memory,
    shared_ndarray2): reserves its pages with fallocate(2), keeping its size,
    so that a full /dev/shm is OutOfSpace now, never a SIGBUS at a write.
    Never posix_fallocate, whose fallback writes zeros into a live segment;
    never on a populated one (fallocate walks every page: seconds a GiB)."""
    if st.st_blocks * 512 >= st.st_size:
        return
    fn = _fallocate_fn()
    if not fn:
        return
    while fn(fd, FALLOC_FL_KEEP_SIZE, 0, st.st_size) != 0:
        code = ctypes.get_errno()
        if code == errno.EINTR:
            continue  # tmpfs gives up when a signal is pending
        if code in (errno.EOPNOTSUPP, errno.ENOSYS):
            return  # nothing to reserve with there
        if code in (errno.ENOSPC, errno.ENOMEM):
            raise _out_of_space(
                name, st.st_size - st.st_blocks * 512, fd,
                f"is sparse ({st.st_blocks * 512} of its {st.st_size} bytes are backed): "
                "writing it needs") from None
        raise _os_error(OSError(code, os.strerror(code)), name,
                        "could not have its pages reserved") from None


def attach(name, *, readonly=False, dtype=None, shape=None, timeout=0.2):
    """An ndarray over the segment `name`, made by shmarray in C++ or Python:
    its dtype, shape and order come from its record, checked as the format
    says. `dtype`/`shape`, if given, must match (DtypeMismatch,
    ShapeMismatch). A segment still being created is waited for up to
    `timeout` seconds, then NotReady. The array is writeable unless
    `readonly`; it keeps the mapping alive for as long as it, or any view of
    it, lives. Python's resource tracker never hears of it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _attach_once(name, readonly, dtype, shape)
        except e.NotReady:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.005)


def _attach_once(name, readonly, dtype, shape):
    name = normalise(name)
    fd, st = open_segment(name, not readonly)
    try:
        info = f.read_record(name, st.st_size, read_tail(fd, st.st_size, name))
        if info.dtype not in f.DTYPES:
            raise e.DtypeMismatch(
                f"{escape(name)}: holds {info.dtype}, which this module does not map")
        if dtype is not None and np.dtype(dtype).str != info.dtype:
            raise e.DtypeMismatch(
                f"{escape(name)}: holds {info.dtype}, but {np.dtype(dtype).str} was asked for")
        if shape is not None and tuple(shape) != info.shape:
            raise e.ShapeMismatch(
                f"{escape(name)}: has shape {info.shape}, but {tuple(shape)} was asked for")
        if not readonly:
            reserve_if_sparse(fd, st, name)
        m = Mapping(fd, st.st_size, not readonly, name, info, st.st_dev, st.st_ino)
    finally:
        os.close(fd)
    return _array(m, info.dtype, info.shape, info.order, readonly)


def attach_raw(name, shape, dtype, *, readonly=False, order="C"):
    """An ndarray over a raw segment (no record, exactly the data's bytes, as
    shared_ndarray2 makes): its size must be exactly itemsize * prod(shape)."""
    name = normalise(name)
    dt = np.dtype(dtype)
    shape = tuple(int(d) for d in shape)
    nbytes = f.data_nbytes(dt.itemsize, shape)
    if nbytes == 0:
        raise e.InvalidShape(f"{escape(name)}: a raw segment is never empty, so it has no shape "
                             f"{shape}")
    fd, st = open_segment(name, not readonly)
    try:
        if st.st_size != nbytes:
            raise e.ShapeMismatch(f"{escape(name)}: holds {st.st_size} bytes, but shape {shape} "
                                  f"of {dt} needs {nbytes}")
        if not readonly:
            reserve_if_sparse(fd, st, name)
        m = Mapping(fd, st.st_size, not readonly, name, None, st.st_dev, st.st_ino)
    finally:
        os.close(fd)
    return _array(m, dt, shape, order, readonly)


def _array(m, dtype, shape, order, readonly):
    a = np.ndarray(shape, dtype=np.dtype(dtype), buffer=m, offset=0, order=order)
    if readonly:
        a.flags.writeable = False
    return a


def mapping_of(arr):
    """The Mapping under an array (or view) made by this module, or None."""
    base = arr
    while base is not None:
        if isinstance(base, Mapping):
            return base
        base = getattr(base, "base", None)
    return None


def name_of(arr):
    """The name of the segment under an array made or attached by this
    module (views included)."""
    m = mapping_of(arr)
    if m is None:
        raise ValueError("this array is not over a shmarray segment")
    return m.segment_name


def check_new_name(name):
    """The name normalised, refused where a listing would not take it for
    a segment (a semaphore's or an owner token's)."""
    name = normalise(name)
    if name.startswith("/sem."):  # POSIX semaphores' names, which listings skip
        raise e.InvalidName(f"{escape(name)}: is not a name for a segment: names starting "
                            "\"sem.\" are POSIX semaphores'")
    if name.startswith("/.shmarray-owner-"):
        raise e.InvalidName(f"{escape(name)}: is not a name for a segment: names starting "
                            "\".shmarray-owner-\" are owner tokens'")
    return name


def create(name, dtype, shape, order, data=None, owner_token=0, before_link=None):
    """Creates the array segment `name` (make_object), filled with `data`
    (bytes in storage order) or zeros, its record written as FORMAT.md
    orders it. Returns the Mapping."""
    name = check_new_name(name)
    dt = f.dtype_string(dtype)
    itemsize = f.DTYPES[dt]
    nbytes = f.data_nbytes(itemsize, shape)
    size = f.segment_size(nbytes)
    if size is None:
        raise e.InvalidShape(f"{escape(name)}: shape {tuple(shape)} of {itemsize}-byte items "
                             "and its record overflow a segment's size")

    def initial(fd):
        os.ftruncate(fd, size)
        view = memoryview(data).cast("B")
        done = 0
        while done < nbytes:
            done += os.pwrite(fd, view[done:done + (1 << 30)], done)

    def write(fd):
        rec, checksum = f.new_record(dt, shape, order, owner_token)
        write_record(fd, size, rec, checksum, init_lock)

    fd, st = make_object(name, size, write, before_link,
                         initial if data is not None and nbytes else None)
    try:
        info = f.read_record(name, size, read_tail(fd, size, name))
        return Mapping(fd, size, True, name, info, st.st_dev, st.st_ino)
    finally:
        os.close(fd)


def write_record(fd, size, rec, checksum, lock=None):
    """Writes a new record at the end of an object of `size` bytes as
    FORMAT.md orders it: bytes 0..375 with version, then magic, last; the
    checksum; `lock(fd, at)` if given; the ready word last."""
    at = size - f.RECORD_SIZE
    os.pwrite(fd, rec[16:], at + 16)
    os.pwrite(fd, rec[8:16], at + 8)
    os.pwrite(fd, rec[0:8], at)
    os.pwrite(fd, checksum, at + f.OFF_CHECKSUM)
    if lock is not None:
        lock(fd, at)
    os.pwrite(fd, f.READY, at + f.OFF_READY)


def make_object(name, size, write, before_link=None, initial=None, by_name=False):
    """Creates the object `name` (checked) of `size` bytes exclusively,
    mode 0600: unnamed in /dev/shm (O_TMPFILE), `initial(fd)` (which sizes
    it and writes initial bytes) if given, every byte reserved,
    `write(fd)` (the rest, record last), then linked under its name.
    `before_link(device, inode, birth)` runs once the object exists, before
    it has its name. Returns its descriptor (the caller closes it) and
    fstat. Where unnamed files cannot be made or linked, the name is
    created first and removed on failure."""
    path = path_of(name)
    if os.path.lexists(path):
        raise e.AlreadyExists(f"{escape(name)}: already exists")
    named_first = by_name
    try:
        if by_name:
            raise OSError(errno.EOPNOTSUPP, "by name")
        fd = os.open(SHM_DIR, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError:
        named_first = True
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600)
        except OSError as err:
            raise _os_error(err, name, "could not be created") from None
    linked = named_first
    try:
        st = os.fstat(fd)
        if before_link:
            before_link(st.st_dev, st.st_ino, birth_ns(fd=fd))
        os.fchmod(fd, 0o600)
        try:
            if initial is not None:
                initial(fd)
            os.posix_fallocate(fd, 0, size)
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
                # our own partial pages go first: the free space told is what the
                # file system had, not what this attempt left of it
                try:
                    os.ftruncate(fd, 0)
                except OSError:
                    pass
                raise _out_of_space(name, size, fd) from None
            raise _os_error(err, name, "could not be sized") from None
        write(fd)
        if not named_first:
            try:
                link_unnamed(fd, path)
                linked = True
            except FileExistsError:
                raise e.AlreadyExists(f"{escape(name)}: already exists") from None
            except OSError:
                # it cannot be linked here (no /proc?): made again, by name
                os.close(fd)
                fd = -1
                return make_object(name, size, write, before_link, initial, by_name=True)
        made, fd = fd, -1
        return made, st
    except BaseException:
        if named_first and linked:
            try:
                os.unlink(path)
            except OSError:
                pass
        raise
    finally:
        if fd >= 0:
            os.close(fd)


def init_lock(fd, at):
    """Initialises the record's robust process-shared mutex (glibc) so that
    C++ and Python lock it alike; leaves the lock bytes zero where that
    cannot be done (the C++ side then initialises it when it attaches)."""
    from . import _lock
    blob = _lock.new_mutex_bytes()
    if blob is None:
        return
    os.pwrite(fd, blob, at + f.OFF_MUTEX)
    os.pwrite(fd, f.boot_id(), at + f.OFF_LOCK_BOOT)
    os.pwrite(fd, struct.pack("<I", 2), at + f.OFF_LOCK_STATE)


def remove_if_same(name, device, inode, birth=0):
    """Unlinks `name` only while it names the object (device, inode and, where
    known, birth time) made under it; False if nothing was removed."""
    path = path_of(normalise(name))
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    if (st.st_dev, st.st_ino) != (device, inode):
        return False
    if birth and birth_ns(path=path) != birth:
        return False
    try:
        os.unlink(path)
        return True
    except OSError:
        return False
