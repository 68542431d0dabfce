#!/usr/bin/python3
"""The image-stack job three ways, side by side in one run (median of
`reps`, alternating): shmarray-stack-mpi with 2 ranks, shmarray-stack with 2
forked workers, and shmarray-stack with 1 worker (one process), on the same
synthetic stack. Times are each program's own "from synthesis to the
projections" (writing the files excluded).

    /usr/bin/python3 bench/bench_stack_mpi.py build [--quick]
"""
import os
import re
import statistics
import subprocess
import sys
import tempfile

build = sys.argv[1] if len(sys.argv) > 1 else "build"
quick = "--quick" in sys.argv
dims = "50,512,512" if quick else "200,512,512"
reps = 3
stack = os.path.join(build, "examples/image_stack/shmarray-stack")
mpi = os.path.join(build, "examples/image_stack/shmarray-stack-mpi")
env = dict(os.environ, OMPI_MCA_btl_vader_single_copy_mechanism="none")
mpirun = ["mpirun", "--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])


def seconds(cmd, out):
    r = subprocess.run(cmd + ["--synthetic", dims, "-o", out], capture_output=True, text=True,
                       env=env, check=True, stdin=subprocess.DEVNULL)
    return float(re.search(r"([0-9.]+) s from synthesis to projections", r.stdout).group(1))


runs = {"mpi 2 ranks": mpirun + ["-np", "2", mpi], "fork 2 workers": [stack, "-j", "2"],
        "1 process": [stack, "-j", "1"]}
times = {k: [] for k in runs}
with tempfile.TemporaryDirectory() as d:
    for _ in range(reps):
        for k, cmd in runs.items():
            times[k].append(seconds(cmd, os.path.join(d, k.replace(" ", "_"))))
med = {k: statistics.median(v) for k, v in times.items()}
print(f"\nthe stack job, {dims} uint16, all steps, median of {reps}: ratio = against 1 process\n")
print("| job | seconds | ratio |")
print("|---|---:|---:|")
for k in runs:
    print(f"| {k} | {med[k]:.3f} | {med[k] / med['1 process']:.2f}x |")
