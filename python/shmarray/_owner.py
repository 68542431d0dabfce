"""What makes a Python owner's segments go when it dies, as the C++ side
does it: an owner token (an flock the kernel releases at death, which
`shmarray gc` reads) and the watchdog helper (the `shmarray` command in its
hidden mode, which removes the owner's segments when the owner's socket
closes). See docs/FORMAT.md, "The owner token", and the README's
Reliability section."""

import fcntl
import os
import shutil
import signal
import socket
import struct
import sys
import threading

from . import _format as f
from ._segments import link_unnamed

SHM_DIR = "/dev/shm"
TOKEN_PREFIX = ".shmarray-owner-"

_mu = threading.RLock()  # the token announces to the watchdog while it holds it


def token_name(id_):
    return f"/{TOKEN_PREFIX}{id_:016x}"


class _Token:
    def __init__(self):
        self.fd, self.id, self.refs, self.named, self.pid = -1, 0, 0, False, os.getpid()

    def _fresh(self):
        if self.pid != os.getpid():  # a forked child: not its token
            self.__init__()

    def acquire(self, announce):
        """One more segment owned; the token's id (0: none could be made).
        A new token is locked while unnamed, announced (to the watchdog),
        then linked under its name."""
        with _mu:
            self._fresh()
            if self.refs == 0:
                if not self._make(announce):
                    return 0
            self.refs += 1
            return self.id

    @staticmethod
    def _candidates():
        """Up to 8 random non-zero ids and their token paths."""
        for _ in range(8):
            id_ = int.from_bytes(os.urandom(8), "little")
            if id_:
                yield id_, SHM_DIR + token_name(id_)

    def _make(self, announce):
        for id_, path in self._candidates():
            try:
                fd = os.open(SHM_DIR, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
            except OSError:
                return self._make_named(announce)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                announce(id_)
                link_unnamed(fd, path)
            except FileExistsError:
                os.close(fd)
                continue
            except OSError:
                os.close(fd)
                return self._make_named(announce)
            self.fd, self.id, self.named = fd, id_, True
            return True
        return False

    def _make_named(self, announce):
        for id_, path in self._candidates():
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                continue
            except OSError:
                return False
            fcntl.flock(fd, fcntl.LOCK_EX)
            mine, named = os.fstat(fd), None
            try:
                named = os.stat(path)
            except OSError:
                pass
            if named is None or (named.st_dev, named.st_ino) != (mine.st_dev, mine.st_ino):
                os.close(fd)  # a cleaner took the name between open and lock
                continue
            announce(id_)
            self.fd, self.id, self.named = fd, id_, True
            return True
        return False

    def release(self):
        with _mu:
            if self.pid != os.getpid() or self.refs == 0:
                return
            self.refs -= 1
            if self.refs == 0:
                try:
                    os.unlink(SHM_DIR + token_name(self.id))
                except OSError:
                    pass
                os.close(self.fd)
                self.fd, self.id, self.named = -1, 0, False

    def after_fork_in_child(self):
        if self.fd >= 0:
            try:
                os.close(self.fd)  # the parent's lock stays with the parent
            except OSError:
                pass
        self.__init__()


def token_state(id_, other_boot=False):
    """'alive', 'dead' or 'unknown', as FORMAT.md defines them."""
    if id_ == 0:
        return "unknown"
    if other_boot:
        return "dead"
    try:
        fd = os.open(SHM_DIR + token_name(id_), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                     | os.O_CLOEXEC)
    except FileNotFoundError:
        return "dead"
    except OSError:
        return "unknown"
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return "dead"
    except BlockingIOError:
        return "alive"
    except OSError:
        return "unknown"
    finally:
        os.close(fd)


def _put_name(name):
    b = name.encode()[:4000]
    return struct.pack("<H", len(b)) + b


class _Watchdog:
    """The helper watching this process: started with the first named
    segment, through an intermediate that exits at once."""

    def __init__(self):
        self.sock, self.tried, self.token_sent, self.said = None, False, 0, False
        self.pid = os.getpid()
        self.helper_pid = 0
        self.ack = -1

    def _say_once(self, why):
        if not self.said:
            self.said = True
            sys.stderr.write(f"shmarray: warning: {why}; segments of this process that "
                             "outlive it are left to `shmarray gc`\n")

    @staticmethod
    def find_helper():
        env = os.environ.get("SHMARRAY_HELPER")
        if env is not None:
            return env  # set but empty: no helper
        return shutil.which("shmarray") or ""

    def _start(self):
        if self.tried:
            return self.sock is not None
        self.tried = True
        helper = self.find_helper()
        if not helper:
            self._say_once("no watchdog helper found (the shmarray command: install it, put "
                           "it on PATH, or set SHMARRAY_HELPER)")
            return False
        a, b0 = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        r, w0 = os.pipe()
        # the child's ends at 5 and up, clear of 0..4, which the spawn sets
        b = fcntl.fcntl(b0.fileno(), fcntl.F_DUPFD_CLOEXEC, 5)
        w = fcntl.fcntl(w0, fcntl.F_DUPFD_CLOEXEC, 5)
        null = fcntl.fcntl(os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC), fcntl.F_DUPFD_CLOEXEC, 5)
        b0.close()
        os.close(w0)
        try:
            pid = os.posix_spawn(
                helper, ["shmarray", "__watchdog"], dict(os.environ),
                file_actions=[(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, null, 1),
                              (os.POSIX_SPAWN_DUP2, null, 2), (os.POSIX_SPAWN_DUP2, b, 3),
                              (os.POSIX_SPAWN_DUP2, w, 4)],
                setsigdef=(signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP,
                           signal.SIGPIPE, signal.SIGCHLD),
                setsigmask=())
        except OSError as err:
            a.close()
            os.close(r)
            self._say_once(f"posix_spawn of {helper}: {err.strerror}")
            return False
        finally:
            for fd in (b, w, null):
                os.close(fd)
        try:
            os.waitpid(pid, 0)  # the intermediate exits at once: the helper is nobody's child
        except ChildProcessError:
            pass  # reaped elsewhere (SIGCHLD ignored, or another thread's wait)
        self.sock, self.ack = a, r
        return True

    def _settle(self):
        if self.ack >= 0:
            import select
            if select.select([self.ack], [], [], 0)[0]:
                data = os.read(self.ack, 4)
                os.close(self.ack)
                self.ack = -1
                if len(data) == 4:
                    self.helper_pid = struct.unpack("<i", data)[0]
                else:
                    self._drop("the watchdog helper did not start")

    def _drop(self, why):
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self._say_once(why)

    def _send(self, rec):
        if self.sock is None:
            return
        try:
            self.sock.sendall(rec, socket.MSG_NOSIGNAL)
        except OSError:
            self._drop("the watchdog helper stopped answering")

    def _fresh(self):
        if self.pid != os.getpid():
            self.after_fork_in_child()

    def prepare(self, token):
        with _mu:
            self._fresh()
            if self.sock is None and not self._start():
                return
            self._settle()
            if token and token != self.token_sent:
                self._send(b"T" + struct.pack("<Q", token))
                self.token_sent = token

    def add(self, kind, name, dev, ino):
        with _mu:
            self._fresh()
            if self.sock is None:
                return
            self._send(b"R" + kind.encode() + struct.pack("<QQ", dev, ino) + _put_name(name))

    def remove(self, kind, name, dev, ino):
        with _mu:
            if self.pid != os.getpid() or self.sock is None:
                return
            self._send(b"U" + kind.encode() + struct.pack("<QQ", dev, ino) + _put_name(name))

    def running(self):
        with _mu:
            self._fresh()
            return self.sock is not None

    def after_fork_in_child(self):
        if self.sock is not None:
            self.sock.close()  # a child does not keep its parent's helper waiting
        if self.ack >= 0:
            os.close(self.ack)
        self.__init__()


token = _Token()
watchdog = _Watchdog()


def _after_fork_in_child():
    global _mu
    _mu = threading.RLock()  # held by the parent's forking thread: not the child's
    token.after_fork_in_child()
    watchdog.after_fork_in_child()


# The lock is taken across fork, so that no child starts with it held by a
# thread it does not have.
os.register_at_fork(before=lambda: _mu.acquire(), after_in_parent=lambda: _mu.release(),
                    after_in_child=_after_fork_in_child)
