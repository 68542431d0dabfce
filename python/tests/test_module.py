"""The module as a user meets it: lifetimes, views that outlive handles, the
lock shared with C++, list(), crash cleanup, and CPython's resource tracker."""

import gc
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import shmarray
from conftest import CLI, golden, pattern, shm_names


def run_python(code, **kw):
    """Runs a script in a fresh /usr/bin/python3 that imports this checkout's module."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(shmarray.__file__)))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, **kw)


def test_a_manager_removes_its_segments_at_the_end_of_its_block(prefix):
    with shmarray.Manager(prefix=prefix) as m:
        a = m.from_shape((10,), np.int64)
        b = m.from_array(np.ones((2, 2)))
        names = m.names()
        assert names == [shmarray.name_of(a), shmarray.name_of(b)]
        assert shm_names(prefix) == sorted(n[1:] for n in names)
        assert m.remove(a) and not m.remove(a)
        assert shm_names(prefix) == [names[1][1:]]
    assert shm_names(prefix) == []
    a[3] = 7  # arrays outlive their names
    assert a[3] == 7 and b.sum() == 4


def test_a_forked_child_removes_nothing_of_its_parent(prefix):
    with shmarray.Manager(prefix=prefix) as m:
        a = m.from_shape((4,), np.int32)
        pid = os.fork()
        if pid == 0:
            try:
                a[0] = 42
                m.close()  # the child's copy: removes nothing
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert a[0] == 42
        assert shm_names(prefix) == [shmarray.name_of(a)[1:]]
    assert shm_names(prefix) == []


def test_a_view_keeps_the_mapping_alive_after_every_handle_is_gone(prefix):
    with shmarray.Manager(prefix=prefix) as m:
        name = shmarray.name_of(m.from_array(np.arange(1000.0)))
        a = shmarray.attach(name)
        v = a[10:20]
        del a
        gc.collect()
        v[0] += 1  # numpy/numpy#23305 segfaults here with np.ndarray(buffer=shm.buf)
        assert v[0] == 11.0
        with pytest.raises(shmarray.Error):  # nor can the mapping be closed under it
            shmarray.attach(name).base.close()
        with pytest.raises(shmarray.Error):
            shmarray.attach(name).base.resize(10)
        r = shmarray.attach(name, readonly=True)
        assert not r.flags.writeable
        with pytest.raises(ValueError):
            r[0] = 1


def test_the_lock_is_the_same_as_cpp_s_owner_death_included(prefix):
    with shmarray.Manager(prefix=prefix) as m:
        a = m.from_shape((4,), np.uint8)
        name = shmarray.name_of(a)
        # C++ takes the lock and dies holding it: Python is told
        assert golden("lock-die", name, "|u1").strip() == "locked"
        with shmarray.lock(a) as held:
            assert held.owner_died
        with shmarray.lock(a) as held:
            assert not held.owner_died
        # Python holds it: this thread may not take it again, another times out
        import threading
        with shmarray.lock(a):
            with pytest.raises(shmarray.LockError):
                shmarray.lock(a)
            got = []
            t = threading.Thread(target=lambda: got.append(shmarray.lock(a, timeout=0.05)))
            t.start()
            t.join()
            assert len(got) == 1 and not got[0]  # timed out: a false Held
        # a Python process dies holding it: C++ is told
        r = run_python(f"""
            import os, shmarray
            a = shmarray.attach({name!r})
            h = shmarray.lock(a)
            os._exit(0)
        """)
        assert r.returncode == 0, r.stderr
        assert golden("lock-check", name, "|u1").strip() == "owner_died=1"
        assert golden("lock-check", name, "|u1").strip() == "owner_died=0"
        with pytest.raises(shmarray.LockError):
            shmarray.lock(shmarray.attach(name, readonly=True))
        with pytest.raises(shmarray.LockError):
            shmarray.lock(np.zeros(3))
        # a lock not initialised in this boot is refused, until C++ makes it
        b = m.from_shape((4,), np.uint8)
        b_name = shmarray.name_of(b)
        with open("/dev/shm" + b_name, "r+b") as fh:
            fh.seek(-512 + 384, os.SEEK_END)
            fh.write(bytes(4))  # lock_state 0
        with pytest.raises(shmarray.LockError) as err:
            shmarray.lock(b)
        assert "not initialised" in str(err.value)
        assert golden("lock-check", b_name, "|u1").strip() == "owner_died=0"
        with shmarray.lock(b) as held:
            assert held and not held.owner_died


def test_list_has_the_fields_of_shmarray_ls(prefix):
    if not CLI:
        pytest.skip("SHMARRAY_CLI is not set: run through CTest")
    with shmarray.Manager(prefix=prefix) as m:
        m.from_shape((3, 5), np.float32, order="F")
        golden("make", f"/{prefix}cpp", "<i2", "C", 7)
        with open(f"/dev/shm/{prefix}other", "wb") as fh:  # not a shmarray segment
            fh.write(b"x" * 100)
        try:
            for all_ in (False, True):
                mine = [r for r in shmarray.list(all=all_) if r["name"].startswith("/" + prefix)]
                ls = json.loads(subprocess.run([CLI, "ls", "--json"] + (["-a"] if all_ else []),
                                               capture_output=True, text=True,
                                               check=True).stdout)
                theirs = [r for r in ls if r["name"].startswith("/" + prefix)]
                assert len(mine) == (3 if all_ else 2) and len(theirs) == len(mine)
                for p, c in zip(mine, theirs):
                    if p["status"] != "ok":
                        p.pop("error"), c.pop("error")  # the messages' wording differs
                    assert p == c
            rows = {r["name"]: r for r in shmarray.list(all=True)}
            py = next(r for n, r in rows.items() if n.startswith("/" + prefix + str(os.getpid())))
            assert py["owner_alive"] is True and py["owner_pid"] == os.getpid() and py["lock"]
            assert py["owner"] == "alive"
            assert rows[f"/{prefix}cpp"]["owner_alive"] is None  # kept: no token
            assert rows[f"/{prefix}cpp"]["owner"] == "untracked"
            assert rows[f"/{prefix}other"]["shmarray"] is False
            assert rows[f"/{prefix}other"]["status"] == "corrupt"
        finally:
            os.unlink(f"/dev/shm/{prefix}cpp")
            os.unlink(f"/dev/shm/{prefix}other")


def test_a_killed_python_owner_leaves_nothing(prefix):
    if not os.environ.get("SHMARRAY_HELPER"):
        pytest.skip("SHMARRAY_HELPER is not set: run through CTest")
    r = run_python(f"""
        import os, signal, numpy as np, shmarray
        m = shmarray.Manager(prefix={prefix!r})
        a = m.from_shape((1000,), np.float64)
        b = m.from_array(np.ones(10))
        print("made", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert "made" in r.stdout
    assert r.returncode == -signal.SIGKILL
    for _ in range(300):
        if not shm_names(prefix):
            break
        time.sleep(0.01)
    assert shm_names(prefix) == []


def test_attaching_never_lets_cpythons_resource_tracker_remove_a_segment(prefix):
    name = f"/{prefix}tracked"
    golden("make", name, "<f8", "C", 8)
    try:
        # shmarray.attach: the segment survives the attaching process
        r = run_python(f"""
            import sys, shmarray
            a = shmarray.attach({name!r})
            assert a.sum() == sum(i / 4 for i in range(8))
            assert "multiprocessing.resource_tracker" not in sys.modules  # never told
        """)
        assert r.returncode == 0, r.stderr
        time.sleep(0.3)
        assert shm_names(prefix) == [name[1:]]
        # multiprocessing.shared_memory: the trap, python/cpython#82300
        r = run_python(f"""
            from multiprocessing import shared_memory
            s = shared_memory.SharedMemory(name={name[1:]!r})
            s.close()
        """)
        assert r.returncode == 0
        for _ in range(300):
            if not shm_names(prefix):
                break
            time.sleep(0.01)
        assert shm_names(prefix) == []  # gone, though C++ made it and Python only looked
    finally:
        if os.path.exists("/dev/shm" + name):
            os.unlink("/dev/shm" + name)


def test_errors_are_also_the_builtin_exceptions_and_a_closed_manager_makes_nothing(prefix):
    with pytest.raises(FileNotFoundError):
        shmarray.attach(f"/{prefix}missing")
    with pytest.raises(ValueError):
        shmarray.attach("a/b")
    m = shmarray.Manager(prefix=prefix)
    a = m.from_shape((3,), np.int16)
    with pytest.raises(FileExistsError):
        m.from_shape((3,), np.int16, name=shmarray.name_of(a))
    with pytest.raises(TypeError) as err:
        shmarray.attach(shmarray.name_of(a), dtype=np.float32)
    assert "<i2" in str(err.value) and "<f4" in str(err.value)
    with pytest.raises(TypeError) as err:
        m.from_array(np.arange(3, dtype=">f8"))  # big-endian: refused, with the way out
    assert "astype('<f8')" in str(err.value)
    with shmarray.lock(a) as held:
        assert "held" in repr(held) and shmarray.name_of(a) in repr(held)
    m.close()
    with pytest.raises(shmarray.Error):
        m.from_shape((1,), np.int8)
    assert shm_names(prefix) == []


def test_a_raw_segment_attached_by_name_alone_says_how_to_attach_it(prefix):
    name = f"/{prefix}raw"
    golden("raw", name, "|u1", 100)
    try:
        with pytest.raises(shmarray.Error) as err:
            shmarray.attach(name, timeout=0.01)
        assert "attach_raw" in str(err.value)
    finally:
        os.unlink("/dev/shm" + name)


KIND_AT = -512 + 448 + 16  # the mutex's kind (glibc's __kind), from the segment's end


def damage_kind(name, value=None):
    """Writes `value` (or the kind with its robust bit cleared) over the
    mutex's kind; returns the kind it held."""
    fd = os.open("/dev/shm" + name, os.O_RDWR)
    try:
        at = os.fstat(fd).st_size + KIND_AT
        old = int.from_bytes(os.pread(fd, 4, at), "little", signed=True)
        new = old & ~16 if value is None else value
        os.pwrite(fd, new.to_bytes(4, "little", signed=True), at)
        return old
    finally:
        os.close(fd)


def test_the_lock_rechecks_the_mutex_kind_at_every_lock_after_attach(prefix):
    with shmarray.Manager(prefix=prefix) as m:
        a = m.from_shape((4,), np.uint8)
        name = shmarray.name_of(a)
        b = shmarray.attach(name)  # attached while the mutex is sound
        with shmarray.lock(b) as held:
            assert held
        old = damage_kind(name)
        for arr in (a, b):
            with pytest.raises(shmarray.CorruptMetadata) as err:
                shmarray.lock(arr)
            assert "kind" in str(err.value) and name in str(err.value)
        damage_kind(name, old)
        with shmarray.lock(b) as held:
            assert held and not held.owner_died


def test_a_lock_waited_for_is_rechecked_and_refused_once_its_kind_is_damaged(prefix):
    import threading
    with shmarray.Manager(prefix=prefix) as m:
        a = m.from_shape((4,), np.uint8)
        name = shmarray.name_of(a)
        holding, release = threading.Event(), threading.Event()

        def holder():
            with shmarray.lock(a):
                holding.set()
                release.wait(30)
        t = threading.Thread(target=holder)
        t.start()
        holding.wait(10)
        got = []

        def waiter():
            try:
                got.append(shmarray.lock(a, timeout=20))
            except shmarray.Error as err:
                got.append(err)
        w = threading.Thread(target=waiter)
        w.start()
        time.sleep(0.3)  # the waiter is in its wait
        old = damage_kind(name)
        w.join(10)
        damage_kind(name, old)  # sound again before the holder unlocks
        release.set()
        t.join(10)
        assert not w.is_alive() and not t.is_alive()
        assert len(got) == 1 and isinstance(got[0], shmarray.CorruptMetadata), got


def test_a_writable_attach_reserves_a_sparse_segment_once_and_only_it(prefix, monkeypatch):
    from shmarray import _segments
    name = f"/{prefix}sparse"
    fd = os.open("/dev/shm" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, 1 << 20)  # as multiprocessing.shared_memory makes it
        calls = []
        real = _segments._fallocate_fn()
        assert real, "no fallocate in the C library"

        def counted(*args):
            calls.append(args[1:])
            return real(*args)
        monkeypatch.setattr(_segments, "_fallocate", counted)
        r = shmarray.attach_raw(name, (1 << 20,), np.uint8, readonly=True)
        assert calls == [] and os.fstat(fd).st_blocks == 0  # read-only: nothing reserved
        a = shmarray.attach_raw(name, (1 << 20,), np.uint8)
        st = os.fstat(fd)
        assert calls == [(1, 0, 1 << 20)]  # FALLOC_FL_KEEP_SIZE, all of it
        assert st.st_blocks * 512 >= st.st_size == 1 << 20  # reserved, its size kept
        a[:] = 3
        assert r.sum() == 3 << 20
        shmarray.attach_raw(name, (1 << 20,), np.uint8)
        assert len(calls) == 1  # populated now: never again
        with shmarray.Manager(prefix=prefix) as m:  # a segment shmarray made is never sparse
            shmarray.attach(shmarray.name_of(m.from_shape((1 << 18,), np.float64)))
        assert len(calls) == 1
    finally:
        os.close(fd)
        os.unlink("/dev/shm" + name)


def test_a_taken_generated_name_is_passed_over_for_another(prefix, monkeypatch):
    from shmarray import _manager
    parts = iter(["takentaken", "takentaken", "freshname0"])
    monkeypatch.setattr(_manager, "random_part", lambda: next(parts))
    planted = f"/dev/shm/{prefix}{os.getpid()}_takentaken"
    open(planted, "wb").close()
    try:
        with shmarray.Manager(prefix=prefix) as m:
            a = m.from_shape((2,), np.int8)
            assert shmarray.name_of(a) == f"/{prefix}{os.getpid()}_freshname0"
            monkeypatch.setattr(_manager, "random_part", lambda: "takentaken")
            with pytest.raises(shmarray.AlreadyExists) as err:
                m.from_shape((2,), np.int8)  # 16 taken in a row: said, not hidden
            assert "and so did the 16 names generated before it" in str(err.value)
            assert m.names() == [shmarray.name_of(a)]
        assert shm_names(prefix) == [os.path.basename(planted)]
    finally:
        os.unlink(planted)


def test_the_owner_tokens_journal_names_what_the_owner_still_has(prefix):
    """The token holds the helper's R/U records (FORMAT.md, "The owner
    token"), so that gc can finish a dead owner's cleanup when its helper
    died with it; a name removed is unregistered there too."""
    from shmarray import _owner
    with shmarray.Manager(prefix=prefix) as m:
        a = m.from_shape((4,), np.int32)
        b = m.from_shape((4,), np.int32)
        m.remove(a)
        path = _owner.SHM_DIR + _owner.token_name(_owner.token.id)
        with open(path, "rb") as fh:
            journal = fh.read()
        head = journal[:25]
        st = os.fstat(_owner.token.fd)
        from shmarray import _segments
        assert head == b"H" + struct.pack("<QQQ", _owner.token.id, st.st_ino,
                                          _segments.birth_ns(fd=_owner.token.fd))
        live, at = [], 25
        while at < len(journal):
            op, kind = journal[at:at + 1], journal[at + 1:at + 2]
            dev, ino, birth, n = struct.unpack_from("<QQQH", journal, at + 2)
            name = journal[at + 28:at + 28 + n].decode()
            at += 28 + n
            assert kind == b"s"
            if op == b"R":
                live.append((name, dev, ino, birth))
            else:
                assert op == b"U"
                live.remove((name, dev, ino, birth))
        path = "/dev/shm" + shmarray.name_of(b)
        st = os.stat(path)
        from shmarray import _segments
        assert live == [(shmarray.name_of(b), st.st_dev, st.st_ino, _segments.birth_ns(path=path))]
        assert live[0][3] > 0  # tmpfs keeps birth times here


def test_list_of_a_directory_is_shmarray_ls_dir(prefix, tmp_path):
    if not CLI:
        pytest.skip("SHMARRAY_CLI is not set: run through CTest")
    # A segment's bytes in a file are a file backing's: C++ makes one in
    # /dev/shm, the test copies it into the directory.
    golden("make", f"/{prefix}cpp", "<i2", "C", 7)
    try:
        with open(f"/dev/shm/{prefix}cpp", "rb") as fh:
            (tmp_path / "frames.shm").write_bytes(fh.read())
    finally:
        os.unlink(f"/dev/shm/{prefix}cpp")
    (tmp_path / "notes.txt").write_bytes(b"hello\n")
    os.symlink(tmp_path / "frames.shm", tmp_path / "link.shm")  # never followed
    d = str(tmp_path)
    for all_ in (False, True):
        mine = shmarray.list(all=all_, directory=d)
        theirs = json.loads(subprocess.run([CLI, "ls", "--json"] + (["-a"] if all_ else []) + [d],
                                           capture_output=True, text=True, check=True).stdout)
        assert [r["name"] for r in mine] == [d + "/frames.shm"] + ([d + "/notes.txt"] if all_ else [])
        for p, c in zip(mine, theirs):
            if p["status"] != "ok":
                p.pop("error"), c.pop("error")  # the messages' wording differs
            assert p == c
    row = shmarray.list(directory=d + "/")[0]
    assert row["name"] == d + "/frames.shm" and row["dtype"] == "<i2" and row["status"] == "ok"
    with pytest.raises(shmarray.NotFound):
        shmarray.list(directory=d + "/missing")
