"""What makes a Python owner's segments go when it dies, as the C++ side
does it: an owner token (an flock the kernel releases at death, which
`shmarray gc` reads) and the watchdog helper (the `shmarray` command in its
hidden mode, which removes the owner's segments when the owner's socket
closes). See docs/FORMAT.md, "The owner token", and the README's
Reliability section."""

import fcntl
import os
import select
import shutil
import signal
import socket
import struct
import sys
import threading

from ._names import escape
from ._segments import link_unnamed

SHM_DIR = "/dev/shm"
TOKEN_PREFIX = ".shmarray-owner-"
HEADER_SIZE = 25  # a journal's header: 'H', the token's id, inode and birth time

_mu = threading.RLock()  # the token announces to the watchdog while it holds it


def token_name(id_):
    return f"/{TOKEN_PREFIX}{id_:016x}"


class _Token:
    def __init__(self):
        self.fd, self.id, self.refs, self.named, self.pid = -1, 0, 0, False, os.getpid()
        self.journal_bytes = 0

    def journal(self, id_, rec, rewrite):
        """Appends `rec` (R/U records) to token `id_`'s journal, or makes it
        the whole journal with `rewrite` (FORMAT.md, "The owner token"):
        what gc removes when owner and helper die at once. False where `id_`
        is not this process's token now. Best effort: a failed write leaves
        the helper to do its work."""
        with _mu:
            if self.pid != os.getpid() or self.refs == 0 or not id_ or id_ != self.id:
                return False
            if self.journal_bytes < HEADER_SIZE:
                return True  # no header could be written: no journal
            if rewrite:
                self.journal_bytes = HEADER_SIZE
            try:
                n = os.pwrite(self.fd, rec, self.journal_bytes) if rec else 0
            except OSError:
                n = -1
            if n == len(rec):
                self.journal_bytes += n
            if rewrite or n != len(rec):
                try:
                    os.ftruncate(self.fd, self.journal_bytes)
                except OSError:
                    pass
            return True

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
                os.fchmod(fd, 0o600)  # 0600 whatever the umask: its helper must open it
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
            self._head()
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
            try:
                os.fchmod(fd, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:
                os.close(fd)
                try:
                    os.unlink(path)
                except OSError:
                    pass
                return False
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
            self._head()
            return True
        return False

    def _head(self):
        """The journal's header (FORMAT.md, "The owner token"): 'H', the id,
        inode and birth time of this very file, which a file another user
        only named like a token cannot carry. No journal where it cannot be
        written."""
        from ._segments import birth_ns
        self.journal_bytes = 0
        try:
            st = os.fstat(self.fd)
            head = b"H" + struct.pack("<QQQ", self.id, st.st_ino, birth_ns(fd=self.fd))
            if os.pwrite(self.fd, head, 0) == len(head):
                self.journal_bytes = len(head)
            else:
                os.ftruncate(self.fd, 0)
        except OSError:
            pass

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
                self.journal_bytes = 0

    def after_fork_in_child(self):
        if self.fd >= 0:
            try:
                os.close(self.fd)  # the parent's lock stays with the parent
            except OSError:
                pass
        self.__init__()


def token_id_of(raw):
    """The id in an owner token's file name (bytes, without its '/'), or 0
    if the name is not one: the prefix and exactly 16 lower-case hex digits."""
    p = TOKEN_PREFIX.encode()
    digits = raw[len(p):]
    if not raw.startswith(p) or len(digits) != 16 or digits.strip(b"0123456789abcdef"):
        return 0
    return int(digits, 16)


def token_state(id_, other_boot=False):
    """What a record's token says of its owner, as FORMAT.md defines it:
    ('alive', None) while the token is held; ('gone', None) when it is free
    or missing, or the record is from an earlier boot; ('untracked', None)
    when the record names no token (id 0); ('unreadable', why) when the
    token exists but cannot be opened or locked. Never mapped or written."""
    if id_ == 0:
        return "untracked", None
    if other_boot:
        return "gone", None
    name = token_name(id_)
    try:
        fd = os.open(SHM_DIR + name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return "gone", None
    except OSError as err:
        return "unreadable", f"its owner token {name} cannot be read: {err.strerror}"
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return "gone", None
    except BlockingIOError:
        return "alive", None
    except OSError as err:
        return "unreadable", f"its owner token {name} cannot be read: {err.strerror}"
    finally:
        os.close(fd)


def _put_name(name):
    b = name.encode("utf-8")  # a valid name: at most 256 bytes, never cut
    return struct.pack("<H", len(b)) + b


class _Watchdog:
    """The helper watching this process: started with the first named
    segment, through an intermediate that exits at once. It is told the
    owner's token and every object registered; one killed alone is noticed
    at the next named segment (its end of the socket has hung up), and
    another is started and told all that is still registered."""

    def __init__(self):
        self.sock, self.token_sent, self.said = None, 0, False
        self.pid = os.getpid()
        self.helper_pid = 0
        self.ack = -1
        self.usable = True  # False once no helper can be found or started
        self.objects = {}  # (kind, name, dev, ino): registered, not yet unregistered
        self.token = 0  # the owner's token, whose journal mirrors self.objects
        self.journaled = 0  # the token whose journal holds self.objects

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
        """Spawns a helper; False (said once, never tried again) where none runs."""
        helper = self.find_helper()
        if not helper:
            self.usable = False
            env = os.environ.get("SHMARRAY_HELPER")
            if env:
                self._say_once(f"no watchdog helper found: SHMARRAY_HELPER={escape(env)} is not "
                               "an executable file (give it the absolute path of the shmarray "
                               "command)")
            else:
                self._say_once("no watchdog helper found (the shmarray command: install it, "
                               "put it on PATH, or set SHMARRAY_HELPER to its absolute path)")
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
            self.usable = False
            self._say_once(f"posix_spawn of {helper}: {err.strerror}")
            return False
        finally:
            for fd in (b, w, null):
                os.close(fd)
        try:
            os.waitpid(pid, 0)  # the intermediate exits at once: the helper is nobody's child
        except ChildProcessError:
            pass  # reaped elsewhere (SIGCHLD ignored, or another thread's wait)
        self.sock, self.ack, self.helper_pid, self.token_sent = a, r, 0, 0
        return True

    def _settle(self):
        """Reads the helper's pid once it has said it runs; a helper that
        ends its hello without one is given up."""
        if self.ack >= 0:
            if select.select([self.ack], [], [], 0)[0]:
                data = os.read(self.ack, 4)
                os.close(self.ack)
                self.ack = -1
                if len(data) == 4:
                    self.helper_pid = struct.unpack("<i", data)[0]
                else:
                    self.usable = False
                    self._drop("the watchdog helper did not start")

    def _drop(self, why=None):
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.ack >= 0:
            os.close(self.ack)
            self.ack = -1
        self.helper_pid = 0
        if why:
            self._say_once(why)

    def _hung_up(self):
        """Whether the helper's end of the socket is gone (it never writes)."""
        p = select.poll()
        p.register(self.sock.fileno(), select.POLLIN | select.POLLRDHUP)
        for _, ev in p.poll(0):
            if ev & (select.POLLHUP | select.POLLERR | select.POLLRDHUP | select.POLLNVAL):
                return True
            if ev & select.POLLIN:
                try:
                    return self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
                except BlockingIOError:
                    return False
                except OSError:
                    return True
        return False

    def _send(self, rec):
        if self.sock is None:
            return
        try:
            self.sock.sendall(rec, socket.MSG_NOSIGNAL)
        except OSError:
            self._drop("the watchdog helper stopped answering (another is started with this "
                       "process's next named segment)")

    def _connected(self, token):
        """A helper watching this process, started or replaced if need be,
        that knows `token` (non-zero) and everything registered."""
        self._fresh()
        if self.sock is not None:
            self._settle()
            if self.sock is not None and self._hung_up():
                self._drop()
        if self.sock is None:
            if not self.usable or not self._start():
                return False
            self._settle()
            if token:
                self._send(b"T" + struct.pack("<Q", token))
                self.token_sent = token
            for kind, name, dev, ino, birth in self.objects:
                self._send(_object_record(b"R", kind, name, dev, ino, birth))
            if self.sock is None:
                return False
        if token and token != self.token_sent:
            self._send(b"T" + struct.pack("<Q", token))
            self.token_sent = token
        return self.sock is not None

    def prepare(self, token):
        """Before a named segment is made: the helper runs and knows `token`."""
        with _mu:
            self._fresh()
            if token:
                self.token = token
            self._connected(token)

    def _journal(self, rec):
        """Keeps the token's journal in step with self.objects, as C++ does:
        appends `rec`; writes all to a new token, and rewrites the journal
        once it has grown to four times what is still live."""
        if not self.token:
            return
        if self.journaled == self.token and token.journal(self.token, rec, False):
            live = sum(28 + len(name.encode()) for _, name, _, _, _ in self.objects)
            if token.journal_bytes < 64 << 10 or token.journal_bytes < 4 * live:
                return
        everything = b"".join(_object_record(b"R", *o) for o in self.objects)
        self.journaled = self.token if token.journal(self.token, everything, True) else 0

    def add(self, kind, name, dev, ino, birth):
        with _mu:
            self._fresh()
            self.objects[(kind, name, dev, ino, birth)] = None
            rec = _object_record(b"R", kind, name, dev, ino, birth)
            self._journal(rec)
            self._send(rec)

    def remove(self, kind, name, dev, ino, birth):
        with _mu:
            if self.pid != os.getpid():
                return
            self.objects.pop((kind, name, dev, ino, birth), None)
            rec = _object_record(b"U", kind, name, dev, ino, birth)
            self._journal(rec)
            self._send(rec)

    def running(self):
        with _mu:
            self._fresh()
            return self.sock is not None

    def _fresh(self):
        if self.pid != os.getpid():
            self.after_fork_in_child()

    def after_fork_in_child(self):
        if self.sock is not None:
            self.sock.close()  # a child does not keep its parent's helper waiting
        if self.ack >= 0:
            os.close(self.ack)
        self.__init__()


def _object_record(op, kind, name, dev, ino, birth):
    """An 'R' (register) or 'U' (unregister) record of one object: its kind,
    device, inode, birth time (ns; 0 unknown) and name (FORMAT.md, "The
    owner token")."""
    return op + kind.encode() + struct.pack("<QQQ", dev, ino, birth) + _put_name(name)


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
