"""shared_ndarray2 interop with the real standard library: the calls
shared_ndarray2 makes (SharedMemory(create=True, size=nbytes),
SharedMemory(name), its exact-size check shm.size == itemsize * prod(shape),
np.ndarray(shape, dtype, buffer=shm.buf)), with multiprocessing.Process and
SharedMemoryManager, against C++."""

import multiprocessing
import os
import subprocess
import sys
import textwrap
import time
from multiprocessing import resource_tracker, shared_memory
from multiprocessing.managers import SharedMemoryManager

import numpy as np
import pytest

from conftest import GOLDEN, golden, pattern, shm_names


def wrap(name, shape, dtype):
    """What shared_ndarray2 does with an existing segment, plus the way out
    of python/cpython#82300: unregister it from the resource tracker."""
    shm = shared_memory.SharedMemory(name=name)
    resource_tracker.unregister(shm._name, "shared_memory")
    dtype = np.dtype(dtype)
    assert shm.size == dtype.itemsize * int(np.prod(shape))  # shared_ndarray2's check
    return shm, np.ndarray(shape, dtype, buffer=shm.buf)


def add_one(name, n):
    shm, a = wrap(name, (n,), np.float64)
    a += 1
    del a
    shm.close()


def test_a_raw_cpp_segment_is_a_shared_ndarray2_and_both_sides_write(prefix):
    name, n = f"/{prefix}raw", 1000
    golden("raw", name, "<f8", n)
    try:
        p = multiprocessing.Process(target=add_one, args=(name[1:], n))
        p.start()
        p.join()
        assert p.exitcode == 0
        golden("add1", name, "<f8", n)  # C++ reads Python's +1 and adds its own
        shm, a = wrap(name[1:], (n,), np.float64)
        assert (a == pattern("<f8", n) + 2).all()
        del a
        shm.close()
    finally:
        os.unlink("/dev/shm" + name)


def test_a_python_made_segment_is_wrapped_by_cpp_with_an_explicit_shape(prefix):
    n = 512
    with SharedMemoryManager() as smm:
        shm = smm.SharedMemory(size=n * 8)
        a = np.ndarray((n,), np.float64, buffer=shm.buf)
        a[:] = np.arange(n)
        golden("add1-fork", "/" + shm.name, "<f8", n)  # a forked C++ child writes
        assert (a == np.arange(n) + 1).all()
        del a


def test_the_resource_trackers_removal_of_a_cpp_segment_is_survived(prefix):
    name = f"/{prefix}owned"
    owner = subprocess.Popen([GOLDEN, "own", name, "<i4", "64"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True) if GOLDEN else None
    if owner is None:
        pytest.skip("SHMARRAY_GOLDEN is not set: run through CTest")
    try:
        assert owner.stdout.readline().strip() == "ready"
        # a Python process that only attached, the standard library's way
        code = f"""
            from multiprocessing import shared_memory
            s = shared_memory.SharedMemory(name={name[1:]!r})
            s.close()
        """
        r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                           text=True)
        assert r.returncode == 0
        for _ in range(300):
            if not shm_names(prefix):
                break
            time.sleep(0.01)
        assert shm_names(prefix) == []  # removed under its owner
        out, _ = owner.communicate("go\n", timeout=30)
        assert owner.returncode == 0 and "done" in out  # the C++ owner did not fail
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
