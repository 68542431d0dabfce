#!/usr/bin/python3
"""Frames from another process into Python, side by side in one run (issue
21): frames per second of 512 x 512 uint16 frames, each summed with NumPy,
received through a shmarray ring (RingReader.next() + frame.array.sum(),
in place, then frame.valid()) against the same frames sent through a
multiprocessing Pipe (send_bytes, recv_bytes_into a buffer made once, then
np.frombuffer(...).sum(): the Pipe's fastest way). Both are lossless (the
ring in 'block' policy, 8 slots), both senders are forked children sending
one frame array over and over, and the two alternate, batch by batch; the
medians are compared. Also the sums alone over private frames in this
process (64 of them, more than a core's cache), the ceiling of both.

    PYTHONPATH=python /usr/bin/python3 bench/bench_ring_python.py [--quick]
"""
import multiprocessing as mp
import sys
import time

import numpy as np

import shmarray

SHAPE = (512, 512)


def median(v):
    v = sorted(v)
    return v[len(v) // 2]


def frame():
    return (np.arange(SHAPE[0] * SHAPE[1], dtype=np.uint32) % 65536).astype(
        np.uint16).reshape(SHAPE)


def ring_writer(conn, count):
    f = frame()
    with shmarray.Manager(prefix="bench_ring_py_") as m:
        w = m.ring(None, SHAPE, np.uint16, slots=8, policy="block", timeout=60)
        conn.send(w.name)
        w.wait_for_readers(1, 30)
        for _ in range(count):
            w.push(f)
        w.close()
        conn.recv()  # the name stays until the reader is done


def pipe_writer(conn, count):
    f = frame()
    view = memoryview(f).cast("B")
    conn.recv()
    for _ in range(count):
        conn.send_bytes(view)


def by_ring(ctx, count, want):
    parent, child = ctx.Pipe()
    p = ctx.Process(target=ring_writer, args=(child, count))
    p.start()
    r = shmarray.RingReader(parent.recv(), dtype=np.uint16, frame_shape=SHAPE, spin=0.0001)
    n = torn = 0
    t0 = None
    while True:
        try:
            fr = r.next(timeout=30)
        except shmarray.ProducerGone:
            break
        if t0 is None:
            t0 = time.perf_counter()
        total = int(fr.array.sum())
        if not fr.valid() or total != want:
            torn += 1
        n += 1
    took = time.perf_counter() - t0
    r.close()
    parent.send(True)
    p.join()
    assert n == count and torn == 0 and r.missed == 0, (n, torn, r.missed)
    return (count - 1) / took


def by_pipe(ctx, count, want):
    parent, child = ctx.Pipe()
    p = ctx.Process(target=pipe_writer, args=(child, count))
    p.start()
    buf = bytearray(SHAPE[0] * SHAPE[1] * 2)
    parent.send(True)
    t0 = None
    for _ in range(count):
        parent.recv_bytes_into(buf)
        if t0 is None:
            t0 = time.perf_counter()
        total = int(np.frombuffer(buf, np.uint16).reshape(SHAPE).sum())
        assert total == want
    took = time.perf_counter() - t0
    p.join()
    return (count - 1) / took


def sums_alone(count, want):
    """The sums over 64 private frames (32 MiB: more than a core's L2 holds,
    as a frame another core has just written is not in this one's)."""
    frames = [frame() for _ in range(64)]
    t0 = time.perf_counter()
    for i in range(count):
        assert int(frames[i % 64].sum()) == want
    return count / (time.perf_counter() - t0)


def main():
    quick = "--quick" in sys.argv
    count, reps = (500, 3) if quick else (2000, 5)
    ctx = mp.get_context("fork")
    want = int(frame().sum())
    ring, pipe, alone = [], [], []
    by_ring(ctx, 100, want), by_pipe(ctx, 100, want)  # warm-up
    for _ in range(reps):
        ring.append(by_ring(ctx, count, want))
        pipe.append(by_pipe(ctx, count, want))
        alone.append(sums_alone(count, want))
    r, p, a = median(ring), median(pipe), median(alone)
    print(f"\n512x512 uint16 frames from another process into Python, each summed "
          f"({count} frames a batch, median of {reps}; higher is better)\n")
    print("| path | frames/s | against the Pipe |")
    print("|---|---:|---:|")
    print(f"| multiprocessing Pipe: send_bytes, recv_bytes_into, np.frombuffer + sum | "
          f"{p:.0f} | 1.00x |")
    print(f"| shmarray ring (block, 8 slots): next() + frame.array.sum() + valid() | "
          f"{r:.0f} | {r / p:.2f}x |")
    print(f"| (the sums alone: 64 private frames in this process) | {a:.0f} | {a / p:.2f}x |")
    print(f"\nring / Pipe: {r / p:.2f}x; ring / sums alone: {r / a:.2f}x")


if __name__ == "__main__":
    main()
