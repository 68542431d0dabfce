"""Rings (docs/FORMAT.md, "Rings: format version 2") from Python: a writer
and readers in different processes, every dtype, rank and order; torn
frames never accepted (and shown to happen to a reader that does not
check); missed counts, block mode, reader groups; deaths of writers and
readers; bad input; and the C++ side through its peer program."""

import json
import multiprocessing
import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
import traceback
import zlib

import numpy as np
import pytest

import shmarray
from conftest import CLI, shm_names

DTYPES = ["|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f4", "<f8",
          "<c8", "<c16"]
SHAPES = [(), (5,), (3, 4), (2, 3, 4)]
CTX = multiprocessing.get_context("fork")
PEER = os.environ.get("SHMARRAY_RING_PEER", "")

_children = []


class Child:
    """fn(*args) in a forked child; result() gives what it returned (or
    raises with the child's traceback) and reaps it."""

    def __init__(self, fn, *args):
        self._recv, send = CTX.Pipe(duplex=False)
        self.process = CTX.Process(target=_child_main, args=(send, fn, args))
        self.process.start()
        send.close()
        _children.append(self)

    @property
    def pid(self):
        return self.process.pid

    def result(self, timeout=60):
        if not self._recv.poll(timeout):
            raise AssertionError(f"child {self.pid} gave nothing in {timeout} s")
        try:
            kind, value = self._recv.recv()
        except EOFError:
            self.process.join(10)
            raise AssertionError(f"child {self.pid} ended with {self.process.exitcode}, "
                                 "giving nothing") from None
        self.process.join(10)
        assert self.process.exitcode == 0, self.process.exitcode
        if kind == "error":
            raise AssertionError(f"child {self.pid} failed:\n{value}")
        return value

    def reap(self):
        if self.process.is_alive():
            try:
                os.kill(self.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.process.kill()
        self.process.join(10)
        self._recv.close()


def _child_main(send, fn, args):
    try:
        send.send(("ok", fn(*args)))
    except BaseException:
        send.send(("error", traceback.format_exc()))
    finally:
        send.close()


@pytest.fixture(autouse=True)
def reap_children(prefix):
    """Every child is reaped, whatever the test did, before `prefix` looks
    at what is left in /dev/shm."""
    yield
    while _children:
        _children.pop().reap()


def run_python(code):
    """A fresh /usr/bin/python3 running `code` with this checkout's module; a Popen."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(shmarray.__file__)))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def peer_frame(dtype, shape, order, n):
    """Frame n of the peer program's pattern: element j (in storage order)
    is (n + j) % 100 cast to the dtype (bool: odd; complex: real part)."""
    size = int(np.prod(shape, dtype=np.int64))
    v = (n + np.arange(size)) % 100
    dt = np.dtype(dtype)
    flat = (v % 2 != 0) if dt.kind == "b" else v.astype(dt)
    return flat.reshape(shape, order=order)


def read_all(reader, timeout=20):
    """(seq, valid, array copy) of every frame until ProducerGone."""
    out, deadline = [], time.monotonic() + timeout
    while True:
        try:
            frame = reader.next(timeout=max(0.0, deadline - time.monotonic()))
        except shmarray.ProducerGone:
            return out
        if frame is None:
            raise AssertionError(f"no ProducerGone in {timeout} s (got {len(out)} frames)")
        out.append(taken(frame))


def taken(frame):
    """(seq, valid, copy) of a frame: copied first, then validated."""
    copy = frame.array.copy()
    return frame.seq, frame.valid(), copy


def wait_gone(prefix, timeout=5):
    """Waits until no name of `prefix` is left (the watchdog removes a dead
    owner's), and says what is."""
    deadline = time.monotonic() + timeout
    while shm_names(prefix) and time.monotonic() < deadline:
        time.sleep(0.01)
    return shm_names(prefix)


# ---- Python writer, Python reader in another process

def read_rings(names, combos):
    """A child: attaches every ring, then reads each until ProducerGone and
    checks its frames' patterns and views; returns what was wrong."""
    readers = [shmarray.RingReader(n, dtype=d, frame_shape=s) for n, (d, s, o) in
               zip(names, combos)]
    wrong = []
    for r, (d, s, o) in zip(readers, combos):
        first = r.next(timeout=20)
        flags = first.array.flags
        if flags.writeable or not (flags.f_contiguous if o == "F" else flags.c_contiguous):
            wrong.append((d, s, o, "view flags"))
        got = [taken(first)] + read_all(r)
        seqs = [q for q, _, _ in got]
        if seqs != [1, 2, 3] or r.missed:
            wrong.append((d, s, o, seqs, r.missed))
        for seq, valid, a in got:
            if not valid or a.dtype != np.dtype(d) or not np.array_equal(
                    a, peer_frame(d, s, o, seq)):
                wrong.append((d, s, o, seq, valid))
        r.close()
    return wrong


def test_a_python_writer_reaches_a_reader_in_another_process_every_dtype_rank_order(prefix):
    combos = [(d, s, o) for d in DTYPES for s in SHAPES for o in "CF"]
    with shmarray.Manager(prefix=prefix) as m:
        rings = [m.ring(None, s, d, slots=2, policy="block", order=o, timeout=20)
                 for d, s, o in combos]
        child = Child(read_rings, [w.name for w in rings], combos)
        for w in rings:
            assert w.wait_for_readers(1, 20)
        for w, (d, s, o) in zip(rings, combos):
            for n in (1, 2, 3):
                if n == 2:
                    with w.loan() as frame:  # in place, as a camera would
                        frame[...] = peer_frame(d, s, o, n)
                else:
                    assert w.push(peer_frame(d, s, o, n)) == n
            w.close()
        assert child.result() == []
    assert shm_names(prefix) == []


# ---- torn frames

def fill_as_fast_as_possible(prefix, send, stop, shape, slots):
    """A child writer: frame n is all n (uint32), written in place, until told to stop."""
    with shmarray.Manager(prefix=prefix) as m:
        w = m.ring(None, shape, np.uint32, slots=slots)
        send.send(w.name)
        w.wait_for_readers(1, 10)
        t_end = time.monotonic() + 20
        while not stop.is_set() and time.monotonic() < t_end:
            with w.loan() as frame:
                frame.fill(w.head + 1)
        return w.head


def test_frames_accepted_as_valid_are_never_torn_and_unchecked_reads_are(prefix):
    recv, send = CTX.Pipe(duplex=False)
    done = CTX.Event()
    child = Child(fill_as_fast_as_possible, prefix, send, done, (256, 256), 2)
    name = recv.recv()
    reader = shmarray.RingReader(name, dtype=np.uint32, frame_shape=(256, 256))
    accepted = accepted_torn = unchecked_torn = copies = copies_torn = copies_dropped = 0
    deadline = time.monotonic() + 15
    try:
        while time.monotonic() < deadline and not (
                unchecked_torn >= 20 and accepted >= 200 and copies >= 50):
            frame = reader.next(timeout=5)
            assert frame is not None
            if frame.seq % 3 == 0:
                c = frame.copy()
                if c is None:
                    copies_dropped += 1
                else:
                    copies += 1
                    copies_torn += not (c == frame.seq).all()
                continue
            a = frame.array
            lo, hi = int(a.min()), int(a.max())  # read in place, long enough to be torn
            ok = frame.valid()
            whole = lo == hi == frame.seq
            unchecked_torn += not whole  # what a reader that skips valid() would take
            if ok:
                accepted += 1
                accepted_torn += not whole
    finally:
        done.set()
        reader.close()
    child.result()
    assert accepted_torn == 0 and copies_torn == 0
    assert accepted > 0 and copies > 0
    assert unchecked_torn > 0, "no torn frame seen: the test cannot tell a reader that checks"
    assert wait_gone(prefix) == []


def write_1000_frames(prefix, q):
    base = np.arange(512 * 512, dtype=np.uint16).reshape(512, 512)
    with shmarray.Manager(prefix=prefix) as m:
        w = m.ring(None, (512, 512), np.uint16, slots=8, policy="block")
        q.send(w.name)
        w.wait_for_readers(1, 10)
        t = time.perf_counter()
        for n in range(1, 1001):
            with w.loan() as frame:
                np.add(base, n, out=frame, casting="unsafe")  # wraps as uint16
        w.close()
        return time.perf_counter() - t


def test_a_python_reader_reads_1000_frames_of_512x512_uint16_none_torn(prefix):
    recv, send = CTX.Pipe(duplex=False)
    child = Child(write_1000_frames, prefix, send)
    name = recv.recv()
    base = np.arange(512 * 512, dtype=np.uint16).reshape(512, 512)
    seqs, torn = [], 0
    with shmarray.RingReader(name, dtype=np.uint16, frame_shape=(512, 512)) as r:
        while True:
            try:
                frame = r.next(timeout=10)
            except shmarray.ProducerGone:
                break
            assert frame is not None
            whole = np.array_equal(frame.array, (base + frame.seq).astype(np.uint16))
            if not (frame.valid() and whole):
                torn += 1
            seqs.append(frame.seq)
        assert r.missed == 0
    child.result()
    assert seqs == list(range(1, 1001)) and torn == 0
    assert wait_gone(prefix) == []


# ---- overwrite: missed counts

def test_overwrite_counts_exactly_what_a_reader_that_falls_behind_missed(prefix):
    with shmarray.Manager(prefix=prefix) as m:
        w = m.ring(None, (8,), np.int64, slots=4)
        r = shmarray.RingReader(w.name)
        for n in range(1, 51):
            w.push(np.full(8, n))
        w.close()
        got = read_all(r)
        # on from the oldest frame still there, head - N + 1
        assert [s for s, _, _ in got] == [47, 48, 49, 50] and r.missed == 46
        assert all(v and (a == s).all() for s, v, a in got)
        r.close()
    assert shm_names(prefix) == []


def publish_steadily(prefix, q, count, every, slots):
    with shmarray.Manager(prefix=prefix) as m:
        w = m.ring(None, (64,), np.int64, slots=slots)
        q.send(w.name)
        w.wait_for_readers(1, 10)
        for n in range(1, count + 1):
            w.push(np.full(64, n))
            time.sleep(every)
        w.close()


def test_a_slow_reader_s_frames_and_missed_add_up_to_every_frame_published(prefix):
    recv, send = CTX.Pipe(duplex=False)
    count = 400
    child = Child(publish_steadily, prefix, send, count, 0.0002, 4)
    with shmarray.RingReader(recv.recv()) as r:
        seqs, missed_seen = [], []
        while True:
            try:
                frame = r.next(timeout=10)
            except shmarray.ProducerGone:
                break
            seqs.append(frame.seq)
            missed_seen.append(r.missed)
            whole = (frame.array == frame.seq).all()  # read, then validated
            assert whole or not frame.valid()
            time.sleep(0.001)  # slower than the writer
        # every frame either given or counted, and each gap counted as it came
        assert seqs == sorted(set(seqs))
        assert len(seqs) + r.missed == count
        assert r.missed > 0
        expected = [seqs[i] - i - 1 for i in range(len(seqs))]
        assert missed_seen == expected
    child.result()
    assert wait_gone(prefix) == []


def test_latest_gives_the_newest_frame_once_and_passes_over_the_rest_uncounted(prefix):
    with shmarray.Manager(prefix=prefix) as m:
        w = m.ring(None, (), np.float64, slots=4)
        with shmarray.RingReader(w.name) as r:
            assert r.latest() is None  # nothing yet, no wait
            for n in range(1, 4):
                w.push(n)
            f = r.latest()
            assert f.seq == 3 and f.array == 3.0 and r.missed == 0  # passed over on purpose
            assert r.latest(timeout=0.01) is None  # nothing newer
            w.push(4)
            assert r.next().seq == 4
            w.close()
            with pytest.raises(shmarray.ProducerGone) as gone:
                r.latest()
            assert not gone.value.died  # closed, not dead
            assert not r.producer_alive
    assert shm_names(prefix) == []


# ---- block: lossless

def read_everything(name, slow, group=None):
    with shmarray.RingReader(name, group=group, spin=0.0) as r:
        got = read_all(r, timeout=60) if not slow else []
        if slow:
            while True:
                try:
                    frame = r.next(timeout=60)
                except shmarray.ProducerGone:
                    break
                time.sleep(0.0005)
                got.append(taken(frame))
        bad = [s for s, v, a in got if not v or not (a == s).all()]
        return [s for s, _, _ in got], bad, r.missed, r.group_missed


@pytest.mark.parametrize("readers", [1, 2, 4])
def test_block_loses_nothing_and_keeps_order_for_fast_and_slow_readers(prefix, readers):
    count = 300
    with shmarray.Manager(prefix=prefix) as m:
        w = m.ring(None, (16, 16), np.int32, slots=4, policy="block", timeout=20)
        kids = [Child(read_everything, w.name, i % 2 == 1) for i in range(readers)]
        assert w.wait_for_readers(readers, 20)
        for n in range(1, count + 1):
            w.push(np.full((16, 16), n))
        w.close()
        for k in kids:
            seqs, bad, missed, _ = k.result()
            assert seqs == list(range(1, count + 1)) and bad == [] and missed == 0
    assert shm_names(prefix) == []


@pytest.mark.parametrize("members", [2, 3])
@pytest.mark.parametrize("policy", ["block", "overwrite"])
def test_a_group_s_members_share_every_frame_each_to_exactly_one(prefix, members, policy):
    count = 400
    with shmarray.Manager(prefix=prefix) as m:
        w = m.ring(None, (32,), np.int64, slots=4, policy=policy, timeout=20)
        kids = [Child(read_everything, w.name, i == 0, "workers") for i in range(members)]
        assert w.wait_for_readers(members, 20)
        for n in range(1, count + 1):
            w.push(np.full(32, n))
            if policy == "overwrite" and n % 50 == 0:
                time.sleep(0.005)  # some lost, some not
        w.close()
        results = [k.result() for k in kids]
        seqs = sorted(s for r in results for s in r[0])
        assert len(seqs) == len(set(seqs)), "a frame went to two members"
        assert all(r[1] == [] or policy == "overwrite" for r in results)
        for r in results:
            assert r[0] == sorted(r[0])  # each member's frames in order
        group_missed = results[0][3]
        assert all(r[3] == group_missed for r in results)
        if policy == "block":
            assert seqs == list(range(1, count + 1)) and group_missed == 0
            assert all(len(r[0]) > 0 for r in results)
        else:
            assert len(seqs) + group_missed == count
            assert sum(r[2] for r in results) == group_missed
    assert shm_names(prefix) == []


def member_that_holds(name, send):
    r = shmarray.RingReader(name, group="workers", spin=0.0)
    send.send(r.next(timeout=20).seq)
    time.sleep(60)  # holding its claim until it is killed


def test_a_member_killed_holding_a_claim_does_not_stall_the_group(prefix):
    count = 60
    with shmarray.Manager(prefix=prefix) as m:
        w = m.ring(None, (8,), np.int64, slots=2, policy="block", timeout=5)
        recv, send = CTX.Pipe(duplex=False)
        dying = CTX.Process(target=member_that_holds, args=(w.name, send))
        dying.start()
        try:
            assert w.wait_for_readers(1, 20)
            w.push(np.full(8, 1))
            assert recv.recv() == 1  # claimed, and held
            survivor = Child(read_everything, w.name, False, "workers")
            assert w.wait_for_readers(2, 20)
            os.kill(dying.pid, signal.SIGKILL)
            t = time.monotonic()
            for n in range(2, count + 1):
                w.push(np.full(8, n))  # never RingTimeout: the dead member is freed
            took = time.monotonic() - t
            w.close()
        finally:
            os.kill(dying.pid, signal.SIGKILL)
            dying.join(10)
        seqs, bad, missed, group_missed = survivor.result()
        assert bad == [] and took < 2
        assert seqs == list(range(2, count + 1))
        assert group_missed == 1  # the dead member's claim: not known to be done
        assert w.readers == 0
    assert shm_names(prefix) == []


# ---- deaths

WRITER = """
    import os, signal, sys, numpy as np, shmarray
    m = shmarray.Manager(prefix={prefix!r})
    w = m.ring(None, (64, 64), np.uint16, slots=4, policy={policy!r})
    print(w.name, flush=True)
    assert w.wait_for_readers(1, 10)
    for n in range(1, 4):
        w.push(np.full((64, 64), n))
    sys.stdin.readline()
    if {mid!r}:
        with w.loan() as frame:
            frame[:32] = 4  # half a frame, then death
            os.kill(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("mid", [False, True], ids=["between-publishes", "mid-publish"])
@pytest.mark.parametrize("policy", ["overwrite", "block"])
def test_a_killed_writer_is_producer_gone_after_its_frames_and_leaves_nothing(
        prefix, mid, policy):
    if not os.environ.get("SHMARRAY_HELPER"):
        pytest.skip("SHMARRAY_HELPER is not set: run through CTest")
    p = run_python(WRITER.format(prefix=prefix, policy=policy, mid=mid))
    try:
        name = p.stdout.readline().strip()
        assert name, p.stderr.read()
        r = shmarray.RingReader(name, start="oldest", spin=0.0)
        assert r.writer_alive
        p.stdin.write("go\n")
        p.stdin.flush()
        assert p.wait(10) == -signal.SIGKILL, p.stderr.read()
        t = time.monotonic()
        got = read_all(r, timeout=10)
        took = time.monotonic() - t
        assert [s for s, _, _ in got] == [1, 2, 3] and all(v for _, v, _ in got)
        assert all((a == s).all() for s, _, a in got)
        assert took < 1.0  # a slice or two, never a hang
        assert not r.writer_alive
        with pytest.raises(shmarray.ProducerGone) as gone:
            r.next(timeout=0)
        assert gone.value.died
        r.close()
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()
        p.stdout.close(), p.stderr.close(), p.stdin.close()
    assert wait_gone(prefix) == []  # its watchdog removed the ring


def attach_then(name, then, recv):
    r = shmarray.RingReader(name, spin=0.0)
    first = r.next(timeout=20)
    recv.send(first.seq)
    if then == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGSTOP)
    time.sleep(60)


def test_a_reader_killed_in_block_mode_does_not_stall_the_writer(prefix):
    with shmarray.Manager(prefix=prefix) as m:
        w = m.ring(None, (4,), np.int32, slots=2, policy="block", timeout=3)
        recv, send = CTX.Pipe(duplex=False)
        p = CTX.Process(target=attach_then, args=(w.name, "die", send))
        p.start()
        try:
            assert w.wait_for_readers(1, 20)
            w.push(np.full(4, 1))
            assert recv.recv() == 1
            t = time.monotonic()
            for n in range(2, 30):
                w.push(np.full(4, n))  # waits on the dead reader at most a slice or so
            assert time.monotonic() - t < 1.5
            assert w.readers == 0
        finally:
            p.join(10)
        assert p.exitcode == -signal.SIGKILL
    assert shm_names(prefix) == []


def test_a_stopped_reader_in_block_mode_is_the_writer_s_timeout(prefix):
    with shmarray.Manager(prefix=prefix) as m:
        w = m.ring(None, (4,), np.int32, slots=2, policy="block", timeout=0.3)
        recv, send = CTX.Pipe(duplex=False)
        p = CTX.Process(target=attach_then, args=(w.name, "stop", send))
        p.start()
        try:
            assert w.wait_for_readers(1, 20)
            w.push(np.full(4, 1))
            assert recv.recv() == 1
            w.push(np.full(4, 2))  # frame 1 held: slot 0 not yet free for frame 3
            t = time.monotonic()
            with pytest.raises(shmarray.RingTimeout) as err:
                w.push(np.full(4, 3))
            took = time.monotonic() - t
            assert 0.3 <= took < 1.5
            assert str(p.pid) in str(err.value) and w.head == 2
            with pytest.raises(TimeoutError):  # a built-in too
                with w.loan(timeout=0.05):
                    pass
            assert w.head == 2
        finally:
            os.kill(p.pid, signal.SIGKILL)
            p.join(10)
    assert shm_names(prefix) == []


# ---- waiting

def latencies(name, count):
    with shmarray.RingReader(name, spin=0.0) as r:  # never spins: every frame is a wake-up
        out = []
        for _ in range(count):
            frame = r.next(timeout=10)
            out.append(time.monotonic_ns() - frame.publish_ns)
        return out


def test_a_sleeping_reader_is_woken_by_each_frame_not_by_its_slice(prefix):
    with shmarray.Manager(prefix=prefix) as m:
        w = m.ring(None, (4,), np.int32, slots=4)
        child = Child(latencies, w.name, 20)
        assert w.wait_for_readers(1, 20)
        for n in range(20):
            time.sleep(0.02)  # the reader is asleep by then
            w.push(np.full(4, n))
        lat = sorted(child.result())
        assert lat[len(lat) // 2] < 10_000_000, lat  # 50 ms would be a lost wake-up
    assert shm_names(prefix) == []


def test_ctrl_c_interrupts_a_reader_s_wait(prefix):
    with shmarray.Manager(prefix=prefix) as m:
        w = m.ring(None, (4,), np.int32, slots=4)
        p = run_python(f"""
            import time, shmarray
            r = shmarray.RingReader({w.name!r})
            print("waiting", flush=True)
            try:
                r.next()
            except KeyboardInterrupt:
                print("interrupted", time.monotonic(), flush=True)
        """)
        try:
            assert p.stdout.readline().strip() == "waiting", p.stderr.read()
            time.sleep(0.2)
            sent = time.monotonic()
            p.send_signal(signal.SIGINT)
            out, err = p.communicate(timeout=10)
            word, at = out.split()
            assert word == "interrupted" and float(at) - sent < 0.2, err
            assert w.readers == 0  # it died: its entry's lock went with it
        finally:
            if p.poll() is None:
                p.kill()
            p.wait()
    assert shm_names(prefix) == []


# ---- the writer's side

def test_a_loan_left_by_an_exception_publishes_nothing(prefix):
    with shmarray.Manager(prefix=prefix) as m:
        w = m.ring(None, (3,), np.int16, slots=2)
        r = shmarray.RingReader(w.name)
        w.push(np.full(3, 1))
        w.push(np.full(3, 2))
        held = r.next()
        assert held.seq == 1
        loan = w.loan()
        with pytest.raises(ZeroDivisionError):
            with loan as frame:
                frame[:] = 9  # over frame 1's slot
                1 / 0
        assert not loan.published and loan.seq == 3 and w.head == 2
        assert not held.valid()  # what was read there is gone
        assert r.next().seq == 2
        assert r.next(timeout=0) is None  # frame 3 was never published
        loan = w.loan()
        with loan as frame:
            frame[:] = 3
        assert loan.published and loan.seq == 3
        f3 = r.next()
        assert f3.seq == 3 and (f3.array == 3).all() and f3.valid() and r.missed == 0
        with pytest.raises(shmarray.Error):
            with loan:  # used once
                pass
        with w.loan():
            with pytest.raises(shmarray.Error):  # one loan at a time
                w.push(np.zeros(3))
        r.close()
    assert shm_names(prefix) == []


def test_a_forked_child_s_copy_of_a_writer_writes_nothing_and_closes_nothing(prefix):
    def child(w):
        try:
            w.push(np.zeros(2))
            return "pushed"
        except shmarray.Error as err:
            w.close()
            return str(err)

    with shmarray.Manager(prefix=prefix) as m:
        w = m.ring(None, (2,), np.int8, slots=2)
        r = shmarray.RingReader(w.name)
        assert "forked child" in Child(child, w).result()
        assert r.writer_alive and not w.closed  # its lock is the parent's alone
        assert w.push(np.ones(2)) == 1 and r.next().seq == 1
    assert shm_names(prefix) == []


def test_the_manager_s_end_closes_its_rings_and_removes_their_names(prefix):
    with shmarray.Manager(prefix=prefix) as m:
        w = m.ring(None, (2, 2), np.float32, slots=3, policy="block")
        r = shmarray.RingReader(w.name, dtype=np.float32)
        w.push(np.ones((2, 2)))
        w.push(np.ones((2, 2)))
        frame = r.next()
        assert shmarray.name_of(frame.array) == w.name
        assert isinstance(shmarray.info(frame.array), shmarray.RingInfo)
    assert shm_names(prefix) == [] and w.closed
    assert r.next().seq == 2  # what is still in the ring is read after the end
    with pytest.raises(shmarray.ProducerGone):
        r.next()
    assert frame.array.sum() == 4  # views keep their mapping
    r.close()
    with pytest.raises(shmarray.Error):
        r.next()


# ---- bad input

def test_bad_input_is_a_typed_error_that_says_what_it_met(prefix):
    with shmarray.Manager(prefix=prefix) as m:
        a = m.from_shape((4,), np.int16)
        w = m.ring(None, (3, 4), np.uint16, slots=4)
        # an array attached as a ring, a ring as an array: each says what it is
        with pytest.raises(shmarray.VersionMismatch) as err:
            shmarray.RingReader(shmarray.name_of(a))
        assert "is an array" in str(err.value) and "shmarray.attach" in str(err.value)
        with pytest.raises(shmarray.VersionMismatch) as err:
            shmarray.attach(w.name)
        assert "is a ring" in str(err.value) and "RingReader" in str(err.value)
        with pytest.raises(shmarray.DtypeMismatch) as err:
            shmarray.RingReader(w.name, dtype=np.float32)
        assert "<u2" in str(err.value) and "<f4" in str(err.value)
        assert isinstance(err.value, TypeError)
        with pytest.raises(shmarray.ShapeMismatch) as err:
            shmarray.RingReader(w.name, frame_shape=(4, 3))
        assert "(3, 4)" in str(err.value) and "(4, 3)" in str(err.value)
        with pytest.raises(shmarray.NotFound):
            shmarray.RingReader(f"/{prefix}missing")
        for bad in ["", "a/b", "/.."]:
            with pytest.raises(shmarray.InvalidName):
                shmarray.RingReader(bad)
        for bad in ["", "x" * 41, "a\nb", 7]:
            with pytest.raises(shmarray.InvalidName):
                shmarray.RingReader(w.name, group=bad)
        with pytest.raises(ValueError):
            shmarray.RingReader(w.name, start="newest")
        for kw in [dict(slots=0), dict(slots=65537), dict(max_readers=0),
                   dict(max_readers=1025), dict(max_groups=65), dict(policy="drop"),
                   dict(order="X")]:
            with pytest.raises(ValueError):
                m.ring(None, (3,), np.int8, **kw)
        with pytest.raises(TypeError):
            m.ring(None, (3,), np.int8, slots=2.5)
        for shape in [(0,), (3, 0), (-1,), (1,) * 33, (2**24, 2**24)]:
            with pytest.raises(shmarray.InvalidShape):
                m.ring(None, shape, np.int8)
        with pytest.raises(shmarray.DtypeMismatch):
            m.ring(None, (3,), np.float16)
        with pytest.raises(TypeError):
            m.ring((3, 4), np.uint8)  # the name comes first
        with pytest.raises(TypeError):
            m.ring(None, (3, 4))
        with pytest.raises(shmarray.AlreadyExists):
            m.ring(w.name, (3,), np.int8)
        with pytest.raises(shmarray.ShapeMismatch):
            w.push(np.zeros((4, 3)))
        w.push(np.zeros((3, 4)))
        r = shmarray.RingReader(w.name, start="oldest")
        frame = r.next()
        with pytest.raises(ValueError):
            frame.array[0, 0] = 1  # read-only, and mapped so
        with pytest.raises(shmarray.LockError):
            shmarray.lock(frame.array)
        with w.loan() as slot:
            with pytest.raises(shmarray.LockError):
                shmarray.lock(slot)
        assert shmarray.info(r) is shmarray.info(frame) is r.info
        assert shmarray.info(w).slots == 4 and shmarray.info(w).policy == "overwrite"
        assert m.remove(w) and shm_names(prefix) == [shmarray.name_of(a)[1:]]
        assert r.next().seq == 2  # a ring whose name is gone goes on
        w.close()
        with pytest.raises(shmarray.Error):
            w.push(np.zeros((3, 4)))
        r.close()
        r.close()
    assert shm_names(prefix) == []


def test_the_reader_and_group_tables_fill_up_and_free_dead_readers(prefix):
    with shmarray.Manager(prefix=prefix) as m:
        w = m.ring(None, (2,), np.int8, slots=2, max_readers=2, max_groups=1)
        r1 = shmarray.RingReader(w.name)
        r2 = shmarray.RingReader(w.name, group="a")
        with pytest.raises(shmarray.Error) as err:
            shmarray.RingReader(w.name)
        assert "max_readers" in str(err.value)
        r1.close()
        with pytest.raises(shmarray.Error) as err:
            shmarray.RingReader(w.name, group="b")  # one group only, and it is "a"
        assert "max_groups" in str(err.value)
        r3 = shmarray.RingReader(w.name, group="a")  # a second member of "a"
        r2.close()

        def attach_and_die(name):
            r = shmarray.RingReader(name)
            os._exit(0 if r else 1)  # its entry stays in use, its lock goes

        p = CTX.Process(target=attach_and_die, args=(w.name,))
        p.start()
        p.join(10)
        assert p.exitcode == 0 and w.readers == 1
        row = next(r for r in shmarray.list() if r["name"] == w.name)
        assert row["readers"] == 2 and row["readers_gone"] == 1
        r4 = shmarray.RingReader(w.name)  # the dead reader's entry, freed for it
        assert w.readers == 2
        r3.close(), r4.close()
        assert w.readers == 0
        w0 = m.ring(None, (2,), np.int8, max_groups=0)
        with pytest.raises(shmarray.Error):
            shmarray.RingReader(w0.name, group="a")
        assert w0.readers == 0  # the entry it took is free again
    assert shm_names(prefix) == []


def test_a_ring_larger_than_dev_shm_is_out_of_space_at_creation(prefix):
    v = os.statvfs("/dev/shm")
    if v.f_blocks == 0 or v.f_blocks * v.f_frsize >= 2**47:
        pytest.skip("/dev/shm has no size limit below 128 TiB")
    with shmarray.Manager(prefix=prefix) as m:
        with pytest.raises(shmarray.OutOfSpace):
            m.ring(None, (2**27, 2**20), np.uint8, slots=1)  # 128 TiB
        assert m.names() == []
    assert shm_names(prefix) == []


def ring_bytes(prefix):
    """The bytes of a small ring, made and removed here."""
    with shmarray.Manager(prefix=prefix) as m:
        w = m.ring(None, (4, 4), np.uint16, slots=2, policy="block")
        with open("/dev/shm" + w.name, "rb") as fh:
            return fh.read()


def forge(record, change):
    rec = bytearray(record)
    change(rec)
    struct.pack_into("<I", rec, 376, zlib.crc32(bytes(rec[:376])) & 0xFFFFFFFF)
    return bytes(rec)


def test_a_forged_ring_record_is_a_typed_error_for_readers_and_listings(prefix):
    data = ring_bytes(prefix)
    body, rec = data[:-512], data[-512:]

    def put(offset, fmt, *v):
        return lambda r: struct.pack_into(fmt, r, offset, *v)

    cases = {
        "policy": (put(49, "B", ord("X")), shmarray.CorruptMetadata),
        "frame_nbytes": (put(16, "<Q", 33), shmarray.CorruptMetadata),
        "zero_extent": (put(96, "<Q", 0), shmarray.CorruptMetadata),
        "slots0": (put(352, "<I", 0), shmarray.CorruptMetadata),
        "slots_big": (put(352, "<I", 65537), shmarray.CorruptMetadata),
        "readers0": (put(356, "<I", 0), shmarray.CorruptMetadata),
        "readers_big": (put(356, "<I", 1025), shmarray.CorruptMetadata),
        "groups_big": (put(360, "<I", 65), shmarray.CorruptMetadata),
        "stride": (put(368, "<Q", 32), shmarray.CorruptMetadata),
        "reserved50": (put(50, "B", 1), shmarray.CorruptMetadata),
        "reserved364": (put(364, "B", 1), shmarray.CorruptMetadata),
        "rank": (put(44, "<I", 33), shmarray.CorruptMetadata),
        "huge_frame": (lambda r: (struct.pack_into("<Q", r, 16, 2**48),
                                  struct.pack_into("<2Q", r, 88, 2**24, 2**23)),
                       shmarray.CorruptMetadata),
        "layout": (put(352, "<I", 2000), shmarray.TruncatedSegment),  # more slots than bytes
        "version3": (put(8, "<I", 3), shmarray.VersionMismatch),
        "version1": (put(8, "<I", 1), shmarray.VersionMismatch),  # an array's, to a ring reader
    }
    names = []
    try:
        for tag, (change, kind) in cases.items():
            name = f"/{prefix}{tag}"
            with open("/dev/shm" + name, "wb") as fh:
                fh.write(body + forge(rec, change))
            names.append((name, kind))
        extra = {
            "checksum": (body + rec[:30] + b"X" + rec[31:], shmarray.CorruptMetadata),
            "grown": (body + bytes(64) + rec, shmarray.CorruptMetadata),
            "cut": (body[:65536] + rec, shmarray.TruncatedSegment),
            "unready": (body + rec[:380] + b"NOPE" + rec[384:], shmarray.NotReady),
        }
        for tag, (content, kind) in extra.items():
            name = f"/{prefix}{tag}"
            with open("/dev/shm" + name, "wb") as fh:
                fh.write(content)
            names.append((name, kind))
        for name, kind in names:
            with pytest.raises(kind) as err:
                shmarray.RingReader(name, timeout=0.01)
            assert name in str(err.value)
        rows = {r["name"]: r for r in shmarray.list()}
        for name, kind in names:
            assert rows[name]["status"] != "ok" and "error" in rows[name], rows[name]
        if CLI:  # and C++ calls each the same
            theirs = {r["name"]: r for r in cli_rows(prefix)}
            for name, _ in names:
                mine = {k: v for k, v in rows[name].items() if k != "error"}
                assert mine == {k: v for k, v in theirs[name].items() if k != "error"}, name
        with pytest.raises(shmarray.CorruptMetadata):
            shmarray.attach(f"/{prefix}version1")  # as an array: the policy byte is no zero
    finally:
        for name, _ in names:
            os.unlink("/dev/shm" + name)
    assert shm_names(prefix) == []


def test_random_damage_to_a_ring_record_is_an_error_never_a_crash(prefix):
    from shmarray import _format
    data = ring_bytes(prefix)
    rec = data[-512:]
    rng = np.random.default_rng(21)
    accepted = 0
    for _ in range(3000):
        r = bytearray(rec)
        for at in rng.integers(8, 376, size=rng.integers(1, 4)):
            r[at] = rng.integers(0, 256)
        r = forge(r, lambda _: None)
        try:
            info = _format.read_record("/fuzz", len(data), r, (1, 2))
        except shmarray.Error:
            continue
        accepted += 1  # then its layout must be the object's
        if info.kind == "ring":
            stride, d, w, rr, size = _format.ring_layout(info.frame_nbytes, info.slots,
                                                         info.max_readers, info.max_groups)
            assert size == len(data) and stride == info.slot_stride
            assert info.frame_nbytes == info.itemsize * int(np.prod(info.shape))
    assert accepted < 3000


def cli_rows(prefix):
    out = subprocess.run([CLI, "ls", "--json"], capture_output=True, text=True, check=True).stdout
    return [r for r in json.loads(out) if r["name"].startswith("/" + prefix)]


def test_list_shows_a_ring_as_shmarray_ls_does(prefix):
    with shmarray.Manager(prefix=prefix) as m:
        w = m.ring(None, (6, 5), np.float32, slots=3, policy="block", order="F")
        r1 = shmarray.RingReader(w.name)
        r2 = shmarray.RingReader(w.name, group="workers")

        def attach_and_die(name):
            r = shmarray.RingReader(name, group="viewers")
            os._exit(0 if r else 1)  # its entry stays in use, its lock goes

        p = CTX.Process(target=attach_and_die, args=(w.name,))
        p.start()
        p.join(10)
        w.push(np.ones((6, 5)))
        assert r2.next().seq == 1
        rows = [r for r in shmarray.list() if r["name"].startswith("/" + prefix)]
        row = rows[0]
        size = os.stat("/dev/shm" + w.name).st_size
        want = {"name": w.name, "bytes": size, "shmarray": True, "status": "ok",
                "kind": "ring", "dtype": "<f4", "itemsize": 4, "shape": [6, 5], "order": "F",
                "frame_nbytes": 120, "slots": 3, "slot_stride": 128, "policy": "block",
                "head": 1, "readers": 3, "readers_gone": 1, "max_readers": 16,
                "max_groups": 4, "producer": "alive", "producer_alive": True,
                "writer_pid": os.getpid(), "owner_pid": os.getpid(), "same_boot": True,
                "owner_alive": True, "owner": "alive"}
        assert {k: row[k] for k in want} == want
        assert row["groups"] == [{"name": "workers", "members": 1, "next": 1, "missed": 0},
                                 {"name": "viewers", "members": 1, "next": 0, "missed": 0}]
        assert row["reader_entries"] == [
            {"pid": os.getpid(), "group": None, "done": 0, "missed": 0, "alive": True},
            {"pid": os.getpid(), "group": "workers", "claim": 1, "missed": 0, "alive": True},
            {"pid": p.pid, "group": "viewers", "claim": 0, "missed": 0, "alive": False}]
        assert set(row) == set(want) | {"created_ns", "created", "groups", "reader_entries"}
        if CLI:
            assert rows == cli_rows(prefix)  # field for field
        r1.close()
        w.close()
        row = next(r for r in shmarray.list() if r["name"] == w.name)
        assert row["producer"] == "closed" and row["readers"] == 2
        if CLI:
            assert [row] == cli_rows(prefix)
        r2.close()
    assert shm_names(prefix) == []


# ---- C++ and Python: the peer program (tests/ring_peer.cpp), through SHMARRAY_RING_PEER

def peer(*args):
    if not PEER:
        pytest.skip("SHMARRAY_RING_PEER (the C++ ring peer) is not set: run through CTest")
    return subprocess.Popen([PEER, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def shape_arg(shape):
    return ",".join(map(str, shape))


def finish(p, timeout=30):
    """The peer's output, once it has ended (killed if it has not)."""
    try:
        out, err = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    return out, err


def write_for_peer(prefix, d, s, o, count, policy, slots=4):
    name = f"/{prefix}py2cpp"
    with shmarray.Manager(prefix=prefix) as m:
        w = m.ring(name, s, d, slots=slots, policy=policy, order=o, timeout=10)
        p = peer("read", name, d, shape_arg(s), o, count)
        try:
            if not w.wait_for_readers(1, 10):  # the peer attached: read in its table
                raise AssertionError(f"the peer did not attach: {finish(p, 1)}")
            for n in range(1, count + 1):
                w.push(peer_frame(d, s, o, n))
            w.close()
        finally:
            out, err = finish(p)
    return p.returncode, out, err


def test_a_python_writer_reaches_a_cpp_reader_every_dtype_rank_order(prefix):
    for d in DTYPES:
        for s in SHAPES:
            for o in "CF":
                rc, out, err = write_for_peer(prefix, d, s, o, 5, "block")
                assert rc == 0 and out.split() == "read 5 missed 0 torn 0 wrong 0".split(), \
                    (d, s, o, out, err)
    rc, out, err = write_for_peer(prefix, "<u2", (64, 64), "C", 3000, "overwrite")
    words = out.split()
    assert rc == 0 and words[0::2] == ["read", "missed", "torn", "wrong"], (out, err)
    r, missed, torn, wrong = (int(x) for x in words[1::2])
    assert wrong == 0 and 3000 in (r + missed, r + missed + torn)  # torn: read, not valid
    assert shm_names(prefix) == []


def attach_peer_ring(name, p, **kw):
    deadline = time.monotonic() + 10
    while True:
        try:
            return shmarray.RingReader(name, **kw)
        except (shmarray.NotFound, shmarray.NotReady):
            if p.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the peer made no ring: {finish(p, 1)}") from None
            time.sleep(0.001)


def test_a_cpp_writer_reaches_a_python_reader_every_dtype_rank_order(prefix):
    name = f"/{prefix}cpp2py"
    for d in DTYPES:
        for s in SHAPES:
            for o in "CF":
                p = peer("write", name, d, shape_arg(s), o, 4, "block", 5)
                try:
                    r = attach_peer_ring(name, p, dtype=d, frame_shape=s)
                    assert r.policy == "block" and r.order == o and r.slots == 4
                    got = read_all(r)
                    r.close()
                finally:
                    out, err = finish(p)
                assert p.returncode == 0 and out.strip() == "published 5", (d, s, o, out, err)
                assert [q for q, _, _ in got] == [1, 2, 3, 4, 5], (d, s, o)
                for seq, valid, a in got:
                    assert valid and a.dtype == np.dtype(d)
                    assert np.array_equal(a, peer_frame(d, s, o, seq)), (d, s, o, seq)
                assert wait_gone(prefix) == []
    p = peer("write", name, "<u2", "64,64", "C", 4, "overwrite", 3000)
    try:
        r = attach_peer_ring(name, p)
        seqs, wrong = [], 0
        while True:
            try:
                frame = r.next(timeout=10)
            except shmarray.ProducerGone:
                break
            whole = np.array_equal(frame.array, peer_frame("<u2", (64, 64), "C", frame.seq))
            if frame.valid():
                seqs.append(frame.seq)
                wrong += not whole
            time.sleep(0.0001 * (frame.seq % 3))
        missed = r.missed
        r.close()
    finally:
        out, err = finish(p)
    assert p.returncode == 0 and out.strip() == "published 3000", (out, err)
    assert wrong == 0 and seqs == sorted(set(seqs)) and len(seqs) + missed <= 3000
    assert wait_gone(prefix) == []


def test_a_one_slot_ring_gives_its_newest_frame_to_a_reader_that_fell_behind(prefix):
    with shmarray.Manager(prefix=prefix) as m:
        w = m.ring(None, (2,), np.int32, slots=1)
        r = shmarray.RingReader(w.name)
        for n in range(1, 6):
            w.push(np.full(2, n))
        f = r.next(timeout=0)
        assert f.seq == 5 and f.valid() and r.missed == 4
        late = shmarray.RingReader(w.name, start="oldest")
        assert late.next(timeout=0).seq == 5  # the one frame there
        r.close(), late.close()
    assert shm_names(prefix) == []


def test_a_reader_waits_for_a_name_that_comes_later_and_says_not_found_after(prefix):
    name = f"/{prefix}later"
    t = time.monotonic()
    with pytest.raises(shmarray.NotFound):
        shmarray.RingReader(name, wait_for_name=0.2)
    assert 0.2 <= time.monotonic() - t < 2.0
    with shmarray.Manager(prefix=prefix) as m:
        made = []
        timer = threading.Timer(0.1, lambda: made.append(m.ring(name, (4,), np.uint8)))
        timer.start()
        try:
            with shmarray.RingReader(name, wait_for_name=5) as r:
                assert r.info.slots == 8
        finally:
            timer.join()
            for w in made:
                w.close()
    assert shm_names(prefix) == []
