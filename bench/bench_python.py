#!/usr/bin/python3
"""Python benchmarks, side by side in one run (ratios of medians; read the
ratios, not the times):

1. getting a 1 GiB float32 array made by a C++ process into this Python
   process and summing it: shmarray.attach (no copy) against receiving it
   through a multiprocessing Pipe from a process that holds it;
2. the seed's quick start (1024 int64 in shared memory, a child process adds
   1 in place, the parent checks): shmarray.Manager against the calls
   shared_ndarray2 makes (SharedMemoryManager + SharedMemory + np.ndarray).

    PYTHONPATH=python /usr/bin/python3 bench/bench_python.py build/bench/shmarray_hold_array [--quick]
"""
import multiprocessing as mp
import subprocess
import sys
import time
from multiprocessing import shared_memory
from multiprocessing.managers import SharedMemoryManager

import numpy as np

import shmarray


def median(v):
    v = sorted(v)
    return v[len(v) // 2]


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def compare(reps, base, ours):
    base(), ours()  # warm-up
    b, o = [], []
    for _ in range(reps):
        b.append(timed(base))
        o.append(timed(ours))
    return median(b), median(o)


def human(s):
    return f"{s * 1e6:.1f} us" if s < 1e-3 else f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def row(what, baseline, r):
    print(f"| {what} | {baseline} | {human(r[0])} | {human(r[1])} | {r[1] / r[0]:.2f}x |",
          flush=True)


def sender(conn, n):
    data = np.ones(n, dtype=np.float32)
    while conn.recv():
        conn.send_bytes(memoryview(data).cast("B"))


def child_add_one_shmarray(name):
    a = shmarray.attach(name)
    a += 1


def child_add_one_shm(name, n):
    shm = shared_memory.SharedMemory(name=name)
    a = np.ndarray((n,), np.int64, buffer=shm.buf)
    a += 1
    del a
    shm.close()


def main():
    holder = sys.argv[1]
    quick = "--quick" in sys.argv
    n = (1 << 30) // 4 // (8 if quick else 1)
    size = "128 MiB" if quick else "1 GiB"
    reps = 5
    print("\nshmarray Python benchmarks: ratio = shmarray / baseline, lower is better\n")
    print("| operation | baseline | baseline | shmarray | ratio |")
    print("|---|---|---:|---:|---:|")

    # 1. a large array from another process
    hold = subprocess.Popen([holder, str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    name = hold.stdout.readline().strip()
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=sender, args=(child, n))
    p.start()
    buf = bytearray(n * 4)

    def by_pipe():
        parent.send(True)
        got = parent.recv_bytes_into(buf)
        assert got == n * 4
        assert float(np.frombuffer(buf, np.float32).sum(dtype=np.float64)) == n

    def by_attach():
        a = shmarray.attach(name, dtype=np.float32)
        assert float(a.sum(dtype=np.float64)) == n

    row(f"a {size} float32 array from another process, then its sum",
        "multiprocessing Pipe, recv_bytes_into", compare(reps, by_pipe, by_attach))
    attach_only = median([timed(lambda: shmarray.attach(name, dtype=np.float32))
                          for _ in range(50)])
    print(f"\n(shmarray.attach of the {size} array alone: {human(attach_only)}: it maps, "
          "it copies nothing)\n")
    parent.send(False)
    p.join()
    hold.stdin.close()
    hold.wait()

    # 2. the seed's quick start
    def quick_shmarray():
        with shmarray.Manager() as m:
            arr = m.from_array(np.arange(1024, dtype=np.int64))
            c = ctx.Process(target=child_add_one_shmarray, args=(shmarray.name_of(arr),))
            c.start()
            c.join()
            assert arr[0] == 1 and arr[-1] == 1024

    def quick_shared_ndarray2():
        with SharedMemoryManager() as smm:
            values = np.arange(1024, dtype=np.int64)
            shm = smm.SharedMemory(size=values.nbytes)
            arr = np.ndarray(values.shape, values.dtype, buffer=shm.buf)
            arr[:] = values
            c = ctx.Process(target=child_add_one_shm, args=(shm.name, values.size))
            c.start()
            c.join()
            assert arr[0] == 1 and arr[-1] == 1024
            del arr

    print("| operation | baseline | baseline | shmarray | ratio |")
    print("|---|---|---:|---:|---:|")
    row("the seed's quick start, Python", "SharedMemoryManager+SharedMemory+np.ndarray",
        compare(reps * 2, quick_shared_ndarray2, quick_shmarray))


if __name__ == "__main__":
    main()
