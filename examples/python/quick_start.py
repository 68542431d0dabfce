#!/usr/bin/python3
"""The seed's quick start, with the Python module beside a C++ worker: Python
puts 0..1023 in shared memory, a C++ program attaches it by name and adds 1
in place, and Python sees the result. No copy, no serialisation.

    PYTHONPATH=python SHMARRAY_HELPER=build/tools/shmarray \
        /usr/bin/python3 examples/python/quick_start.py build/examples/add_one

(SHMARRAY_HELPER names the watchdog helper, the `shmarray` command; where it is
installed on PATH, it is found without.)
"""
import subprocess
import sys

import numpy as np

import shmarray

worker = sys.argv[1] if len(sys.argv) > 1 else "build/examples/add_one"

# doc-region: quick_start
with shmarray.Manager() as manager:             # its block is the memory's life
    arr = manager.from_array(np.arange(1024, dtype=np.int64))   # a copy, in shared memory
    name = shmarray.name_of(arr)
    print(f"created {name}: {arr.shape[0]} x {arr.dtype.str}, {arr.nbytes} bytes")
    subprocess.run([worker, name], check=True)  # the C++ worker works in place
    assert (arr == np.arange(1, 1025)).all()
    print(f"ok: the C++ worker's +1 is seen by Python: arr = [{arr[0]}, {arr[1]}, ..., {arr[-1]}]")
# the segment is unlinked here
# doc-region-end
