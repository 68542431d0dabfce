"""shmarray.list(): the shmarray segments in /dev/shm, with the fields of
`shmarray ls`."""

import os
import stat

from . import _errors as e
from . import _format as f
from . import _owner
from . import _segments as s


def list(all=False):  # noqa: A001 (the module's public name)
    """One dict per segment in /dev/shm, sorted by name: name, dtype, shape,
    order, bytes (of the object), owner_pid, owner_alive (True, False, or
    None where unknown), created (ISO 8601, UTC) and status ('ok', or what
    is wrong). Objects that are not shmarray segments are listed only with
    all=True, with status 'not a shmarray segment'."""
    import datetime
    out = []
    try:
        entries = sorted(os.listdir(s.SHM_DIR))
    except OSError:
        return out
    boot = f.boot_id()
    for n in entries:
        if n.startswith(_owner.TOKEN_PREFIX):
            continue
        name = "/" + n
        row = {"name": name, "dtype": None, "shape": None, "order": None, "bytes": None,
               "owner_pid": None, "owner_alive": None, "created": None, "status": "ok"}
        try:
            fd = os.open(s.path_of(name), os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW
                         | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                continue
            row["bytes"] = st.st_size
            info = f.read_record(name, st.st_size, s.read_tail(fd, st.st_size))
        except e.CorruptMetadata as err:
            if not all and "is not a shmarray segment" in str(err) or \
                    not all and "no record can end" in str(err):
                continue
            row["status"] = "not a shmarray segment" if (
                "is not a shmarray segment" in str(err) or "no record can end" in str(err)) \
                else str(err).split(": ", 1)[-1]
            out.append(row)
            continue
        except e.Error as err:
            row["status"] = str(err).split(": ", 1)[-1]
            out.append(row)
            continue
        finally:
            os.close(fd)
        alive = _owner.token_state(info.owner_token, info.boot_id != boot)
        row.update(dtype=info.dtype, shape=info.shape, order=info.order,
                   owner_pid=info.owner_pid,
                   owner_alive={"alive": True, "dead": False}.get(alive),
                   created=datetime.datetime.fromtimestamp(
                       info.created_ns / 1e9, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
        out.append(row)
    return out
