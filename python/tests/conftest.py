import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the module from the checkout

GOLDEN = os.environ.get("SHMARRAY_GOLDEN", "")
CLI = os.environ.get("SHMARRAY_CLI", "")


def golden(*args, check=True):
    """Runs the C++ side (tests/python/golden.cpp); its stdout."""
    if not GOLDEN:
        pytest.skip("SHMARRAY_GOLDEN (the C++ side) is not set: run through CTest")
    r = subprocess.run([GOLDEN, *map(str, args)], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"golden {' '.join(map(str, args))}: {r.stderr.strip()}")
    return r.stdout


def pattern(dtype, n):
    """The values golden.cpp writes at storage indices 0..n-1."""
    i = np.arange(n)
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return i % 3 == 1
    if dt.kind == "c":
        return ((i % 251) - 1j * (i % 7)).astype(dt)
    if dt.kind == "f":
        return ((i % 251) / 4).astype(dt)
    if dt.kind == "i":
        return ((i % 251) - 125).astype(dt)
    return (i % 251).astype(dt)


def shm_names(prefix):
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(prefix))


@pytest.fixture
def prefix():
    """Names of this test's own; the test must leave none behind."""
    p = f"shmarray_py{os.getpid()}_{os.urandom(3).hex()}_"
    yield p
    left = shm_names(p)
    for n in left:
        os.unlink("/dev/shm/" + n)
    assert left == [], f"left in /dev/shm: {left}"
