#!/usr/bin/python3
"""The main job's whole budget (issue 22): shmarray-stack against its Python
peer (bench/stack_python_peer.py, the seed's way), on the same TIFF, whole
process, -j 1 and -j 2, in one run.

    flock /tmp/shmarray-heavy.lock /usr/bin/python3 bench/bench_stack_vs_python.py build [--pairs 5] [--quick]

- The input: one 200 x 512 x 512 uint16 TIFF (50 frames with --quick), the
  synthetic default stack, made once by `shmarray-stack --steps none` (whose
  processed.tif is its input bit for bit).
- Time: the wall time of each whole process (start to exit, files written),
  in `pairs` rounds; in each round the four jobs (shmarray-stack -j 1 and
  -j 2, the peer -j 1 and -j 2) run one after the other, the order of the
  two programs alternating from round to round. Medians, and each ratio the
  median of the rounds' ratios (paired).
- Memory: the peak PSS summed over each job's process tree (the program and
  every descendant: workers, fork server, the peer's manager and resource
  tracker), from /proc/PID/smaps_rollup sampled every few ms, in one extra
  run of each job after the timed ones (the sampler takes CPU, so it never
  runs beside a timed job).
- The bound: the job's bytes in and out (the input stack read and the
  processed stack written) at memcpy speed, measured in the same run (a
  NumPy copy between two prefaulted 100 MiB buffers, best of a few, before
  every round): one core's copy for -j 1, two processes copying at once for
  -j 2.
- Outputs: each program's processed.tif for -j 1 and -j 2 the same bit for
  bit; shmarray-stack's against the peer's: at most 1 LSB apart, and the
  share of pixels exactly equal (the goal: at least 99.5 %); the projections'
  largest differences.
- shmarray-stack's own stage table (medians over the timed runs), and the
  whole process less its stages (start, the arrays made, teardown).
"""
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import tifffile

args = sys.argv[1:]
build = args[0] if args and not args[0].startswith("--") else "build"
quick = "--quick" in args
pairs = int(args[args.index("--pairs") + 1]) if "--pairs" in args else 5
here = os.path.dirname(os.path.abspath(__file__))
stack = os.path.join(build, "examples/image_stack/shmarray-stack")
peer = [sys.executable, os.path.join(here, "stack_python_peer.py")]
dims = (50, 512, 512) if quick else (200, 512, 512)
MiB = 1 << 20


# ---- memcpy speed, this run

def copy_rate(nbytes, reps=5):
    """Bytes per second of np.copyto between two prefaulted buffers."""
    src = np.ones(nbytes // 2, np.uint16)
    dst = np.zeros_like(src)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    return nbytes / best


def copy_rate_two(nbytes, reps=5):
    """Bytes per second copied by two processes at once, each nbytes/2 per copy."""
    half = nbytes // 2
    go_r, go_w = os.pipe()
    kids = []
    for _ in range(2):
        rd, wr = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(rd)
            src = np.ones(half // 2, np.uint16)
            dst = np.zeros_like(src)
            np.copyto(dst, src)
            os.write(wr, b"r")
            os.read(go_r, 1)
            for _ in range(reps):
                np.copyto(dst, src)
            os.write(wr, b"d")
            os._exit(0)
        os.close(wr)
        kids.append((pid, rd))
    for _, rd in kids:
        os.read(rd, 1)
    t = time.perf_counter()
    os.write(go_w, b"gg")
    for _, rd in kids:
        os.read(rd, 1)
    dt = time.perf_counter() - t
    for pid, rd in kids:
        os.waitpid(pid, 0)
        os.close(rd)
    os.close(go_r)
    os.close(go_w)
    return 2 * half * reps / dt


# ---- what the kernel charges for a fresh shared segment, this run

def kernel_costs(nbytes):
    """Seconds to reserve a segment of /dev/shm (posix_fallocate, as the
    library's arrays are made), to fault its pages in (one byte written per
    page), the same first touch of a segment only ftruncate'd (pages
    allocated and zeroed at the fault), and to unmap and unlink it."""
    import mmap
    out = {}
    for how in ("fallocate", "ftruncate"):
        path = f"/dev/shm/bench-stack-vs-python-{os.getpid()}-{how}"
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            t = time.perf_counter()
            if how == "fallocate":
                os.posix_fallocate(fd, 0, nbytes)
                out["fallocate"] = time.perf_counter() - t
            else:
                os.ftruncate(fd, nbytes)
            mm = mmap.mmap(fd, nbytes, mmap.MAP_SHARED)
            a = np.frombuffer(mm, np.uint8)
            t = time.perf_counter()
            a[::4096] = 1
            out["first touch after " + how] = time.perf_counter() - t
            del a
            t = time.perf_counter()
            mm.close()
            os.close(fd)
            fd = -1
            os.unlink(path)
            out["unmap and unlink"] = time.perf_counter() - t
        finally:
            if fd >= 0:
                os.close(fd)
            if os.path.exists(path):
                os.unlink(path)
    return out


# ---- the process tree's PSS

def children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        ppid = int(s[s.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(pid):
    kids, out, todo = children_map(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run(cmd, sample=False):
    """(wall seconds, stdout, peak PSS in MiB summed over the tree or None)."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         stdin=subprocess.DEVNULL)
    peak = 0
    if sample:
        while p.poll() is None:
            peak = max(peak, sum(pss_kib(q) for q in tree(p.pid)))
            time.sleep(0.003)
    out, err = p.communicate()
    wall = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"{cmd}: exit {p.returncode}\n{out}\n{err}")
    return wall, out, (peak / 1024 if sample else None)


def stage_table(out, head="stage"):
    """A program's printed table of seconds (shmarray-stack's stages, the
    peer's phases): [(name, seconds)]."""
    rows, on = [], False
    for line in out.splitlines():
        if re.match(r"\s+" + head + r"\s+seconds", line):
            on = True
            continue
        m = re.match(r"\s+([a-z][a-z ]*?)\s+([0-9.]+)$", line) if on else None
        if m:
            rows.append((m.group(1), float(m.group(2))))
        elif on and rows:
            break
    return rows


def main():
    with tempfile.TemporaryDirectory(prefix="bench-stack-py-") as d:
        subprocess.run([stack, "--steps", "none", "--synthetic", ",".join(map(str, dims)), "-o",
                        os.path.join(d, "in")], check=True, capture_output=True)
        src = os.path.join(d, "in.tif")
        os.rename(os.path.join(d, "in", "processed.tif"), src)
        with tifffile.TiffFile(src) as tif:
            shape, dtype = tif.series[0].shape, tif.series[0].dtype
        assert tuple(shape) == dims and dtype == np.uint16, (shape, dtype)
        in_bytes = int(np.prod(dims)) * 2
        moved = 2 * in_bytes  # the stack in and the processed stack out

        jobs = {}
        for j in (1, 2):
            jobs[("shmarray-stack", j)] = [stack, src, "-j", str(j), "-o", os.path.join(d, f"s{j}")]
            jobs[("python peer", j)] = peer + [src, "-j", str(j), "-o", os.path.join(d, f"p{j}")]
        walls = {k: [] for k in jobs}
        stages = {j: [] for j in (1, 2)}
        phases = {j: [] for j in (1, 2)}
        rates = {1: [], 2: []}
        kernel = []
        # one warm-up of each (page cache, imports), not counted
        for cmd in jobs.values():
            run(cmd)
        for r in range(pairs):
            rates[1].append(copy_rate(in_bytes))
            rates[2].append(copy_rate_two(in_bytes))
            kernel.append(kernel_costs(in_bytes))
            order = ["shmarray-stack", "python peer"]
            if r % 2:
                order.reverse()
            for j in (1, 2):
                for prog in order:
                    wall, out, _ = run(jobs[(prog, j)])
                    walls[(prog, j)].append(wall)
                    if prog == "shmarray-stack":
                        stages[j].append(stage_table(out))
                    else:
                        phases[j].append(stage_table(out, "phase"))
        peaks = {k: run(cmd, sample=True)[2] for k, cmd in jobs.items()}

        # ---- the outputs
        def load(tag, name="processed.tif"):
            return tifffile.imread(os.path.join(d, tag, name))

        s1, s2, p1, p2 = (load(t) for t in ("s1", "s2", "p1", "p2"))
        same_s, same_p = np.array_equal(s1, s2), np.array_equal(p1, p2)
        diff = np.abs(s2.astype(np.int32) - p2.astype(np.int32))
        max_lsb, exact = int(diff.max()), float((diff == 0).mean())
        proj = {}
        for name in ("max", "mean", "std"):
            a = load("s2", name + ".tif").astype(np.float64)
            b = load("p2", name + ".tif").astype(np.float64)
            proj[name] = float(np.abs(a - b).max())

    med = {k: statistics.median(v) for k, v in walls.items()}
    ratio = {j: statistics.median(p / s for p, s in zip(walls[("python peer", j)],
                                                         walls[("shmarray-stack", j)]))
             for j in (1, 2)}
    scale = {prog: statistics.median(a / b for a, b in zip(walls[(prog, 1)], walls[(prog, 2)]))
             for prog in ("shmarray-stack", "python peer")}
    rate = {j: statistics.median(rates[j]) for j in (1, 2)}
    bound = {j: moved / rate[j] for j in (1, 2)}

    print(f"\nthe main job against the Python peer: {dims[0]} x {dims[1]} x {dims[2]} uint16 TIFF "
          f"({in_bytes / MiB:.0f} MiB), whole process, {pairs} paired rounds, medians\n")
    print("| job | -j | seconds (min-max) | peer / job | job / bound | peak PSS |")
    print("|---|---:|---:|---:|---:|---:|")
    for j in (1, 2):
        for prog in ("shmarray-stack", "python peer"):
            v = walls[(prog, j)]
            r = f"{ratio[j]:.2f}x" if prog == "shmarray-stack" else "1.00x"
            print(f"| {prog} | {j} | {med[(prog, j)]:.3f} ({min(v):.3f}-{max(v):.3f}) | {r} | "
                  f"{med[(prog, j)] / bound[j]:.1f}x | {peaks[(prog, j)]:.0f} MiB |")
    print(f"\nmemcpy bound: {moved / MiB:.0f} MiB in and out at {rate[1] / 1e9:.2f} GB/s (one core) "
          f"= {bound[1] * 1e3:.0f} ms; at {rate[2] / 1e9:.2f} GB/s (two processes) = "
          f"{bound[2] * 1e3:.0f} ms")
    print(f"the kernel's part, per {in_bytes / MiB:.0f} MiB segment in /dev/shm (one process, "
          "medians): " + ", ".join(f"{k} {1e3 * statistics.median(c[k] for c in kernel):.1f} ms"
                                   for k in kernel[0]))
    print(f"-j 1 / -j 2, whole process: shmarray-stack {scale['shmarray-stack']:.2f}x, "
          f"python peer {scale['python peer']:.2f}x")
    arrays = (2 * in_bytes + dims[1] * dims[2] * (2 + 4 + 4)) / MiB
    print(f"PSS goal: the input, the processed stack and the projections ({arrays:.1f} MiB) "
          f"+ 10 % = {1.1 * arrays:.0f} MiB")
    print(f"goal >= 5x the peer at -j 2: today {ratio[2]:.2f}x "
          f"(5x would be {med[('python peer', 2)] / 5:.3f} s)")

    print(f"\noutputs: shmarray-stack -j 1 == -j 2: {same_s}; peer -j 1 == -j 2: {same_p}; "
          f"shmarray-stack against the peer (-j 2): at most {max_lsb} LSB apart, "
          f"{100 * exact:.4f} % of pixels equal (goal: <= 1 LSB, >= 99.5 %)")
    print("projections, largest difference: " +
          ", ".join(f"{k} {v:.4g}" for k, v in proj.items()))

    def breakdown(title, prog, j, tables):
        whole = med[(prog, j)]
        names = [n for n, _ in tables[0]]
        per = {n: statistics.median(dict(t)[n] for t in tables) for n in names}
        rest = statistics.median(w - sum(s for _, s in t) for w, t in zip(walls[(prog, j)], tables))
        print(f"\n{prog} -j {j}, {title} (medians), of {whole:.3f} s whole process:\n")
        print("| stage | seconds | share of the process |")
        print("|---|---:|---:|")
        for n in sorted(names, key=lambda n: -per[n]):
            print(f"| {n} | {per[n]:.3f} | {100 * per[n] / whole:.0f} % |")
        print(f"| outside the table | {rest:.3f} | {100 * rest / whole:.0f} % |")

    for j in (1, 2):
        breakdown("its stage table", "shmarray-stack", j, stages[j])
    for j in (1, 2):
        breakdown("its phases", "python peer", j, phases[j])


if __name__ == "__main__":
    main()
