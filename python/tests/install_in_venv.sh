#!/usr/bin/env bash
# The offline install the README shows: a venv over Debian's Python that
# sees its packages (numpy), and pip without build isolation or an index.
# Installs from a copy, so that the checkout gets no build/ or egg-info.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$src" "$work/python"
rm -rf "$work/python/tests"
/usr/bin/python3 -m venv --system-site-packages "$work/venv"
"$work/venv/bin/pip" install --quiet --no-build-isolation --no-index "$work/python"
cd /
VENV_DIR="$work/venv" "$work/venv/bin/python" - <<'PY'
import numpy as np, shmarray, os, sys
venv = os.environ["VENV_DIR"]
assert sys.prefix == venv, (sys.prefix, venv)                  # the venv's Python
assert shmarray.__file__.startswith(venv + "/lib/"), shmarray.__file__  # the installed copy
with shmarray.Manager(prefix="shmarray_venv_") as m:
    a = m.from_array(np.arange(6.0).reshape(2, 3))
    b = shmarray.attach(shmarray.name_of(a))
    assert (b == a).all()
print("ok: installed with pip in a venv, offline, from", shmarray.__file__)
PY
