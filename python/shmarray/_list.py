"""shmarray.list(): the shmarray segments in /dev/shm, with the fields and
status words of `shmarray ls --json`."""

import datetime
import os
import stat
import struct

from . import _errors as e
from . import _format as f
from . import _owner
from . import _segments as s

# The error kinds as `shmarray ls` words them, most derived first.
_STATUS = [(e.NotReady, "being created"), (e.VersionMismatch, "unknown version"),
           (e.TruncatedSegment, "truncated"), (e.CorruptMetadata, "corrupt"),
           (e.AccessDenied, "no access"), (e.NotFound, "gone")]


def _status_of(err):
    for kind, word in _STATUS:
        if isinstance(err, kind):
            return word
    return "unreadable"


def _inspect(name):
    """The row of one object, as `shmarray ls --json` gives it."""
    row = {"name": name, "bytes": 0, "shmarray": False, "status": "ok"}
    try:
        fd, st = s.open_segment(name, False)
    except e.NotFound:
        return None  # removed meanwhile
    except e.Error as err:
        row.update(status=_status_of(err), error=str(err))
        return row
    try:
        size = st.st_size
        row["bytes"] = size
        tail = s.read_tail(fd, size)
        row["shmarray"] = (size >= f.RECORD_SIZE and (size - f.RECORD_SIZE) % f.ALIGN == 0
                           and tail[0:8] == f.MAGIC)
        try:
            info = f.read_record(name, size, tail)
        except e.Error as err:
            row.update(status=_status_of(err), error=str(err))
            return row
    finally:
        os.close(fd)
    same_boot = info.boot_id == f.boot_id()
    owner = _owner.token_state(info.owner_token, not same_boot)
    lock_state = struct.unpack_from("<I", tail, f.OFF_LOCK_STATE)[0]
    created = datetime.datetime.fromtimestamp(info.created_ns // 10**9, datetime.timezone.utc)
    row.update(dtype=info.dtype, itemsize=info.itemsize, shape=[*info.shape],
               order=info.order, data_nbytes=info.data_nbytes, owner_pid=info.owner_pid,
               created_ns=info.created_ns, created=created.strftime("%Y-%m-%dT%H:%M:%SZ"),
               same_boot=same_boot, lock=lock_state == 2,
               owner_alive={"alive": True, "dead": False}.get(owner))
    return row


def list(all=False):  # noqa: A001 (the module's public name)
    """One dict per shmarray segment in /dev/shm, sorted by name, with the
    fields of `shmarray ls --json`: name, bytes, shmarray, status ('ok',
    'being created', 'unknown version', 'truncated', 'corrupt', 'no access',
    'gone', 'unreadable'); for 'ok' also dtype, itemsize, shape, order,
    data_nbytes, owner_pid, created_ns, created, same_boot, lock and
    owner_alive (True, False, or None where unknown); otherwise error.
    Objects that are not shmarray segments (no record with the magic) are
    listed only with all=True."""
    out = []
    try:
        entries = sorted(os.listdir(s.SHM_DIR))
    except OSError:
        return out
    for n in entries:
        if n.startswith(_owner.TOKEN_PREFIX):
            continue
        try:
            st = os.lstat(os.path.join(s.SHM_DIR, n))
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        row = _inspect("/" + n)
        if row is not None and (row["shmarray"] or all):
            out.append(row)
    return out
