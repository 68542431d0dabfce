#!/usr/bin/python3
"""Watches a running shmarray-stack job from Python, as a notebook would: it
finds the job's arrays in /dev/shm, attaches them by name (no copy), follows
the job until it ends, and plots the result: the maximum projection, and the
mean of each input frame. The arrays stay readable after the job has ended
and removed their names, because this process still maps them.

    ./build/examples/image_stack/shmarray-stack --synthetic 200,512,512 -j 1 &
    PYTHONPATH=python SHMARRAY_HELPER=build/tools/shmarray \
        /usr/bin/python3 examples/python/watch_stack.py watch.png
"""
import argparse
import os
import re
import sys
import time

import shmarray


def find_job(wait):
    """The pid and base name of a running shmarray-stack job whose arrays are
    all there. A job's six arrays share a base, /shmarray-stack-PID-RANDOM-,
    whose random part (16 hex digits) another user cannot guess."""
    until = time.monotonic() + wait
    while True:
        jobs = {}
        for row in shmarray.list():
            m = re.fullmatch(r"(/shmarray-stack-(\d+)-[0-9a-f]{16}-)std", row["name"])
            if m and row["status"] == "ok" and row["owner_alive"]:
                jobs[int(m.group(2))] = m.group(1)
        if jobs:
            pid = max(jobs)
            return pid, jobs[pid]
        if time.monotonic() >= until:
            sys.exit("watch_stack: no running shmarray-stack job found in /dev/shm")
        time.sleep(0.05)


def running(pid):
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("png", help="where the plot goes")
    ap.add_argument("--wait", type=float, default=10, help="seconds to wait for a job")
    args = ap.parse_args()

    pid, base = find_job(args.wait)
    stack = shmarray.attach(base + "input", readonly=True)
    mx = shmarray.attach(base + "max", readonly=True)
    print(f"watching job {pid}: a stack of {stack.shape} {stack.dtype}")
    frames, last = stack.shape[0], None
    while running(pid):  # what the job has loaded so far, live from its memory
        loaded = int((stack.reshape(frames, -1)[:, ::97].max(axis=1) > 0).sum())
        if loaded != last:
            print(f"  {loaded} of {frames} frames loaded", flush=True)
            last = loaded
        time.sleep(0.05)
    # The job has ended and removed its names; our mappings still hold the data.
    means = stack.reshape(frames, -1).mean(axis=1)
    import matplotlib  # imported late: it takes a while, and the job does not wait
    matplotlib.use("Agg")  # files, no display
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4.5))
    a.imshow(mx, cmap="gray", vmin=float(mx.min()), vmax=float(mx.max()))
    a.set_title(f"maximum projection ({mx.shape[0]} x {mx.shape[1]})")
    a.axis("off")
    b.plot(means)
    b.set_xlabel("frame")
    b.set_ylabel("mean input intensity")
    b.set_title("input, frame by frame")
    fig.tight_layout()
    fig.savefig(args.png, dpi=80)
    print(f"ok: plotted job {pid} to {args.png}")


if __name__ == "__main__":
    main()
