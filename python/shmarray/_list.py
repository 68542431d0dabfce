"""shmarray.list(): the objects in /dev/shm, with the rows, fields and
status words of `shmarray ls --json`. Nothing is mapped: records are read
with pread, and every name, whatever bytes it holds, is listed."""

import datetime
import errno
import os
import stat
import struct

from . import _errors as e
from . import _format as f
from . import _owner
from . import _ring
from . import _segments as s
from ._names import from_raw

# The error kinds as `shmarray ls` words them, most derived first.
_STATUS = [(e.NotReady, "being created"), (e.VersionMismatch, "unknown version"),
           (e.TruncatedSegment, "truncated"), (e.CorruptMetadata, "corrupt"),
           (e.AccessDenied, "no access"), (e.NotFound, "gone")]


def _status_of(err):
    for kind, word in _STATUS:
        if isinstance(err, kind):
            return word
    return "unreadable"


def _owner_fields(row, state, why):
    row["owner"] = state
    if why is not None:
        row["owner_error"] = why


def _token_row(name, st, id_):
    """The row of an owner token (listed with all=True)."""
    row = {"name": name, "bytes": st.st_size, "shmarray": False, "status": "owner token"}
    state, why = _owner.token_state(id_)
    _owner_fields(row, state, why)
    return row


def _inspect(raw, name, st, dir_fd=None):
    """The row of one object (`raw` its name in /dev/shm, or in the
    directory `dir_fd`; `st` its lstat), or None if it has gone or is no
    longer a regular file."""
    row = {"name": name, "bytes": st.st_size, "shmarray": False, "status": "ok"}  # readable or not
    try:
        fd = os.open(raw if dir_fd is not None else s.SHM_DIR.encode() + b"/" + raw,
                     os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None  # removed meanwhile
    except OSError as err:
        if err.errno == errno.ELOOP:
            return None  # a symlink now
        err = s._os_error(err, name, "could not be opened")
        row.update(status=_status_of(err), error=str(err))
        return row
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        size = st.st_size
        row["bytes"] = size
        try:
            tail = s.read_tail(fd, size, name)
            row["shmarray"] = (size >= f.RECORD_SIZE and (size - f.RECORD_SIZE) % f.ALIGN == 0
                               and tail[0:8] == f.MAGIC)
            if row["shmarray"] and struct.unpack_from("<I", tail, f.OFF_VERSION)[0] == \
                    f.RING_VERSION:
                row["kind"] = "ring"  # valid or not, as shmarray ls says
            info = f.read_record(name, size, tail, (f.VERSION, f.RING_VERSION))
            ring = _ring.inspect(fd, info, name) if info.kind == "ring" else None
        except e.Error as err:
            row.update(status=_status_of(err), error=str(err))
            return row
        except OSError as err:
            err = s._os_error(err, name, "could not be read")
            row.update(status=_status_of(err), error=str(err))
            return row
    finally:
        os.close(fd)
    same_boot = info.boot_id == f.boot_id()
    state, why = _owner.token_state(info.owner_token, not same_boot)
    created = datetime.datetime.fromtimestamp(info.created_ns // 10**9, datetime.timezone.utc)
    row.update(dtype=info.dtype, itemsize=info.itemsize, shape=[*info.shape], order=info.order)
    if ring is not None:
        row.update(ring)
    else:
        row.update(data_nbytes=info.data_nbytes)
    row.update(owner_pid=info.owner_pid, created_ns=info.created_ns,
               created=created.strftime("%Y-%m-%dT%H:%M:%SZ"), same_boot=same_boot)
    if ring is None:  # a ring has no lock
        row.update(lock=struct.unpack_from("<I", tail, f.OFF_LOCK_STATE)[0] == 2)
    row.update(owner_alive={"alive": True, "gone": False}.get(state))
    _owner_fields(row, state, why)
    return row


def _listed(row, all):
    """Whether a listing shows a row: segments, and what cannot be opened
    (it may be one); with all=True every row."""
    return row is not None and (all or row["shmarray"] or row["status"] == "no access")


def _list_directory(directory, all):
    """list(directory=...): the regular files of one directory, reached
    through one descriptor of it, named by their paths."""
    try:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise s._os_error(err, directory, "cannot be listed") from None
    out = []
    try:
        prefix = directory if directory.endswith("/") else directory + "/"
        for raw in sorted(os.fsencode(n) for n in os.listdir(dfd)):  # by bytes, as C++ sorts
            try:
                st = os.stat(raw, dir_fd=dfd, follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            row = _inspect(raw, prefix + from_raw(raw), st, dfd)
            if _listed(row, all):
                out.append(row)
    finally:
        os.close(dfd)
    return out


def list(all=False, directory=None):  # noqa: A001 (the module's public name)
    """One dict per object in /dev/shm, sorted by the bytes of its name,
    with the fields of `shmarray ls --json`: name (os.fsdecode's str:
    undecodable bytes as surrogateescape gives them), bytes, shmarray,
    status ('ok', 'being created', 'unknown version', 'truncated',
    'corrupt', 'no access', 'unreadable'); for 'ok' also dtype, itemsize,
    shape, order, data_nbytes, owner_pid, created_ns, created, same_boot,
    lock, owner_alive (True, False, or None where unknown) and owner
    ('alive', 'gone', 'untracked': the record names no token, or
    'unreadable', with owner_error saying why); otherwise error. A ring's
    row says kind 'ring' (an array's has no kind), valid or not; an 'ok'
    ring has its frame's dtype, itemsize, shape and order, and in place of
    data_nbytes and lock: frame_nbytes, slots, slot_stride, policy
    ('overwrite' or 'block'), head (the newest frame's number), readers
    (entries attached), readers_gone (of those, the ones whose process
    died), max_readers, reader_entries (pid, group: None or its name, done
    or claim, missed, alive), groups (name, members, next, missed),
    max_groups, producer ('alive', 'closed' or 'gone'), producer_alive and
    writer_pid. The words are read with pread, never mapped.

    Listed are the shmarray segments and the objects that cannot be opened
    ('no access': they may be segments); with all=True also every other
    object and the owner tokens (status 'owner token', with owner).
    Skipped always: what is not a regular file, and POSIX semaphores
    ('sem.' names).

    With `directory` (a str path), the files of that directory instead
    (file backings), named by their paths, as `shmarray ls DIR` lists them;
    NotFound or AccessDenied where it cannot be read."""
    if directory is not None:
        return _list_directory(directory, all)
    out = []
    try:
        entries = sorted(os.listdir(s.SHM_DIR.encode()))
    except OSError:
        return out
    for raw in entries:
        if raw.startswith(b"sem."):
            continue
        try:
            st = os.lstat(s.SHM_DIR.encode() + b"/" + raw)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        name = "/" + from_raw(raw)
        token = _owner.token_id_of(raw)
        if token:
            if all:
                out.append(_token_row(name, st, token))
            continue
        row = _inspect(raw, name, st)
        if _listed(row, all):
            out.append(row)
    return out
