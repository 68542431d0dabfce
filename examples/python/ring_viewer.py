#!/usr/bin/python3
"""Views a camera's ring from Python: it attaches by name to a ring that a
C++ (or Python) writer makes, such as examples/ring_camera.cpp's, and
prints the statistics of the newest frame a few times a second, read in
place from the ring's memory (no copy), until the camera ends. With
--plot PNG it also draws the last frame it saw and its means over time.

    ./build/examples/ring_camera --name /camera --frames 0 &
    PYTHONPATH=python /usr/bin/python3 examples/python/ring_viewer.py /camera --plot view.png
"""
import argparse
import sys
import time

import shmarray


def attach(name, wait):
    """The ring `name`, waiting up to `wait` seconds for it to be made."""
    until = time.monotonic() + wait
    while True:
        try:
            # doc-region: attach
            r = shmarray.RingReader(name)  # dtype, frame shape and order from its record
            # doc-region-end
            return r
        except shmarray.NotFound:
            if time.monotonic() >= until:
                sys.exit(f"ring_viewer: no ring {name} appeared within {wait} s")
            time.sleep(0.05)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name", nargs="?", default="/camera", help="the ring's name")
    ap.add_argument("--wait", type=float, default=10, help="seconds to wait for the ring")
    ap.add_argument("--every", type=float, default=0.5, help="seconds between two lines")
    ap.add_argument("--plot", metavar="PNG", help="draw the last frame and its means here")
    args = ap.parse_args()

    r = attach(args.name, args.wait)
    info = r.info
    print(f"viewer: attached to {args.name}: {' x '.join(map(str, info.frame_shape))} "
          f"{info.dtype} frames, {info.slots} slots, {info.policy}", flush=True)
    shown, torn, seqs, means, last = 0, 0, [], [], None
    why = "stopped"
    try:
        while True:
            # doc-region: latest
            frame = r.latest(timeout=args.every)  # the newest frame, or None after `every` s
            if frame is None:
                continue
            a = frame.array  # a read-only NumPy view of the slot, in place
            mean, peak = float(a.mean()), int(a.max())
            if not frame.valid():  # the camera reused the slot while we read it
                torn += 1
                continue
            # doc-region-end
            age_ms = (time.monotonic_ns() - frame.publish_ns) / 1e6  # both CLOCK_MONOTONIC
            shown += 1
            seqs.append(frame.seq)
            means.append(mean)
            print(f"  frame {frame.seq:4d}: mean {mean:6.1f}, max {peak:5d}, "
                  f"{age_ms:6.3f} ms after its publish", flush=True)
            if args.plot:
                copy = frame.copy()  # a private copy, validated: None if torn
                last = copy if copy is not None else last
            time.sleep(args.every)
    except shmarray.ProducerGone as e:
        why = f"producer gone ({e})"
    except KeyboardInterrupt:
        why = "stopped by Ctrl-C"
    finally:
        r.close()
    print(f"viewer: {why}: {shown} frames shown, {torn} torn and dropped")
    if args.plot and last is not None:
        import matplotlib  # imported late: it takes a while
        matplotlib.use("Agg")  # files, no display
        import matplotlib.pyplot as plt
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.5))
        left.imshow(last, cmap="gray")
        left.set_title(f"a frame of {args.name} ({last.shape[0]} x {last.shape[1]})")
        left.axis("off")
        right.plot(seqs, means, marker=".")
        right.set_xlabel("frame")
        right.set_ylabel("mean intensity")
        right.set_title("the frames the viewer saw")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=80)
        print(f"ok: plotted {shown} frames of {args.name} to {args.plot}")


if __name__ == "__main__":
    main()
