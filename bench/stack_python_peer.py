#!/usr/bin/python3
"""shmarray-stack's job written in Python the seed's way: the Python peer
that bench/bench_stack_vs_python.py runs against shmarray-stack (issue 22).

    /usr/bin/python3 bench/stack_python_peer.py INPUT.tif [-o OUTDIR] [-j N] [--sigma S]

The arrays are `SharedMemory` segments of a `SharedMemoryManager` with
`np.ndarray`s over them (the input stack, the processed stack and the three
projections); the workers are a fork `multiprocessing.Pool` that attach the
segments by name and take the frames. Each frame goes through the stages of
docs/image_stack.md, as examples/image_stack/include/shmarray/stack/stages.hpp
computes them:

- to float32;
- background: the frame's median (`np.median` of its finite pixels, the mean
  of the two middle values for an even count) subtracted, clamped at 0;
- blur: `scipy.ndimage.gaussian_filter(sigma, truncate=3, mode='reflect')`
  in float32 (radius ceil(3 sigma), passed as `radius` so that it is
  shmarray-stack's for every sigma; for sigma 2 both give 6);
- normalize: the finite range stretched to 0 ... 2^bits - 1 (to [0, 1] for
  float input), in float32; a flat frame becomes 0;
- to pixels: rounded to nearest, ties to even (`np.rint`), clipped to the
  pixel type (NaN to 0).

Then the projections of the processed stack (maximum in the pixel type; mean
and population standard deviation in float64, stored as float32), split
across the same pool by rows, and the outputs: processed.tif, max.tif,
mean.tif and std.tif with tifffile (uncompressed), and max.png (the 0.5th to
99.5th percentile stretched to 8 bits, as shmarray-stack's). Debian packages
only: python3-numpy, python3-scipy, python3-tifffile. Prints the seconds of
its phases.
"""
import argparse
import math
import multiprocessing as mp
import os
import struct
import sys
import time
import zlib
from multiprocessing.managers import SharedMemoryManager
from multiprocessing.shared_memory import SharedMemory

import numpy as np
import scipy.ndimage
import tifffile

# What each worker attaches (set by the pool's initializer).
W = {}


def attach(spec):
    """The pool's initializer: attach every segment by name, views over them."""
    for key, (name, shape, dtype) in spec.items():
        shm = SharedMemory(name=name)
        W[key + "_shm"] = shm  # kept open while the worker lives
        W[key] = np.ndarray(shape, dtype=dtype, buffer=shm.buf)


def full_scale(dtype):
    return 1.0 if np.issubdtype(dtype, np.floating) else float(np.iinfo(dtype).max)


def process_frame(k):
    inp, out, sigma = W["input"], W["processed"], W["sigma"]
    f = inp[k].astype(np.float32)
    integer = not np.issubdtype(inp.dtype, np.floating)
    finite = None if integer else np.isfinite(f)
    # background: the median of the finite pixels, subtracted, clamped at 0
    vals = f if integer else f[finite]
    bg = np.float32(np.median(vals)) if vals.size else np.float32(0)
    f -= bg
    f[f < 0] = 0  # keeps a NaN a NaN
    # blur
    f = scipy.ndimage.gaussian_filter(f, sigma, truncate=3, mode="reflect",
                                      radius=int(math.ceil(3 * sigma)))
    # normalize
    full = np.float32(full_scale(inp.dtype))
    if not integer:
        finite = np.isfinite(f)
    vals = f if integer else f[finite]
    lo = vals.min() if vals.size else np.float32(0)
    hi = vals.max() if vals.size else np.float32(0)
    if not hi > lo:
        if integer:
            f[:] = 0
        else:
            f[finite] = 0
    else:
        scale = np.float32(full / (hi - lo))
        f -= lo
        f *= scale
    # to pixels
    if integer:
        np.rint(f, out=f)
        f[~(f > 0)] = 0  # NaN goes to 0
        np.minimum(f, full, out=f)
        out[k] = f.astype(inp.dtype)
    else:
        out[k] = f
    return k


def project_rows(rows):
    """Maximum, mean and standard deviation over frames of rows [r0, r1)."""
    r0, r1 = rows
    p = W["processed"][:, r0:r1, :]
    W["max"][r0:r1] = p.max(axis=0)  # NaN wins, as np.max does
    W["mean"][r0:r1] = p.mean(axis=0, dtype=np.float64)
    W["std"][r0:r1] = p.std(axis=0, dtype=np.float64)
    return rows


def write_png(path, img):
    """An 8-bit greyscale PNG of `img`, stretched as shmarray-stack's max.png."""
    flat = img.astype(np.float32).ravel()
    v = flat[np.isfinite(flat)]
    pixels = np.zeros(img.shape, np.uint8)
    if v.size:
        last = v.size - 1
        i_lo, i_hi = int(min(last, 0.005 * last)), int(min(last, 0.995 * last))
        part = np.partition(v, [i_lo, i_hi])
        lo, hi = part[i_lo], part[i_hi]
        scale = np.float32(255) / (hi - lo) if hi > lo else np.float32(0)
        s = np.rint((img.astype(np.float32) - lo) * scale)
        s[~(s > 0)] = 0
        pixels = np.minimum(s, 255).astype(np.uint8)
    h, w = pixels.shape
    raw = b"".join(b"\0" + pixels[y].tobytes() for y in range(h))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) +
                chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input")
    ap.add_argument("-o", "--output", default="python-out")
    ap.add_argument("-j", "--jobs", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--sigma", type=float, default=2.0)
    a = ap.parse_args()
    os.makedirs(a.output, exist_ok=True)
    times = []
    t0 = time.perf_counter()

    def phase(name):
        nonlocal t0
        t = time.perf_counter()
        times.append((name, t - t0))
        t0 = t

    with tifffile.TiffFile(a.input) as tif:
        series = tif.series[0]
        shape, dtype = tuple(series.shape), np.dtype(series.dtype)
        if len(shape) == 2:
            shape = (1,) + shape
        F, H, Wd = shape
        with SharedMemoryManager() as smm:
            spec, views, keep = {}, {}, []
            for key, shp, dt in (("input", shape, dtype), ("processed", shape, dtype),
                                 ("max", (H, Wd), dtype), ("mean", (H, Wd), np.float32),
                                 ("std", (H, Wd), np.float32)):
                dt = np.dtype(dt)
                shm = smm.SharedMemory(size=int(np.prod(shp)) * dt.itemsize)
                keep.append(shm)
                spec[key] = (shm.name, shp, dt)
                views[key] = np.ndarray(shp, dtype=dt, buffer=shm.buf)
            phase("shared memory")
            tif.asarray(out=views["input"].reshape(series.shape))  # straight into the segment
            phase("read")
            W["sigma"] = a.sigma
            with mp.get_context("fork").Pool(a.jobs, initializer=attach, initargs=(spec,)) as pool:
                phase("pool start")
                pool.map(process_frame, range(F))
                phase("frames")
                step = max(1, (1 << 14) // Wd)
                pool.map(project_rows, [(r, min(H, r + step)) for r in range(0, H, step)])
                phase("projections")
            phase("pool end")
            p = views["processed"]
            tifffile.imwrite(os.path.join(a.output, "processed.tif"), p, photometric="minisblack")
            for key in ("max", "mean", "std"):
                tifffile.imwrite(os.path.join(a.output, key + ".tif"), views[key],
                                 photometric="minisblack")
            write_png(os.path.join(a.output, "max.png"), views["max"])
            phase("write")
            del p, views
            for shm in keep:
                shm.close()
        phase("teardown")
    print(f"stack_python_peer: {F} frames of {H} x {Wd} {dtype}, {a.jobs} worker"
          f"{'' if a.jobs == 1 else 's'}")
    print(f"  {'phase':<14} {'seconds':>9}")
    for name, s in times:
        print(f"  {name:<14} {s:9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
