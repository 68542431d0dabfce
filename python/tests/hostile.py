"""Tests with another local user (`nobody`) and a /dev/shm of their own: each
scenario runs as root in a private mount namespace (unshare -m, propagation
private) over a fresh tmpfs at /dev/shm, so it can fill it, run out of
inodes and plant names without touching the real /dev/shm or any other
test's segments. Where that cannot be done the test is skipped with the
SHMARRAY-SKIP marker."""

import json
import os
import shutil
import subprocess
import textwrap

import pytest

import shmarray

MODULE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(shmarray.__file__)))

# Run first inside the namespace: the tmpfs, and what the scenarios use.
PRELUDE = r'''
import json, os, signal, subprocess, sys, time
subprocess.run(["mount", "--make-rprivate", "/"], check=True)
subprocess.run(["mount", "-t", "tmpfs", "-o", TMPFS, "shmarray-test", "/dev/shm"], check=True)
PY = sys.executable
MY_NS = os.stat("/proc/self/ns/mnt")


def nobody_cmd(code):
    """`code` run by /usr/bin/python3 as nobody, with this checkout's module."""
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", PY, "-c", code]


def as_nobody(code, **kw):
    return subprocess.run(nobody_cmd(code), capture_output=True, text=True, **kw)


def as_root(code, **kw):
    return subprocess.run([PY, "-c", code], capture_output=True, text=True, **kw)


def helpers():
    """The pids of the watchdog helpers in this mount namespace: this test's."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            ns = os.stat(f"/proc/{p}/ns/mnt")
            with open(f"/proc/{p}/cmdline", "rb") as fh:
                cmd = fh.read()
        except OSError:
            continue
        if (ns.st_dev, ns.st_ino) == (MY_NS.st_dev, MY_NS.st_ino) and \
                cmd == b"shmarray\0__watchdog\0":
            out.append(int(p))
    return sorted(out)


def gone(pid):
    """Whether every thread of pid has exited, so that its descriptors are
    closed: its leader may be a zombie while another thread of it (the
    helper's background collection) is still on its way out."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                return False
        return len(os.listdir(f"/proc/{pid}/task")) <= 1
    except OSError:
        return True


def wait_until(cond, seconds=5.0):
    end = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


def shm():
    return sorted(os.listdir(b"/dev/shm"))


def result(obj):
    print("RESULT " + json.dumps(obj), flush=True)


def _end():
    for pid in helpers():  # a helper left waiting (the old code's) ends with the test
        os.kill(pid, signal.SIGKILL)


import atexit
atexit.register(_end)
'''


def _skip_reason():
    if os.geteuid() != 0:
        return "needs root (a private mount namespace, a tmpfs, and setpriv to nobody)"
    for tool in ("unshare", "setpriv", "mount"):
        if not shutil.which(tool):
            return f"needs {tool}"
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "true"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return f"cannot make a private mount namespace here: {r.stderr.strip()}"
    return None


_reason = []


def in_private_shm(code, tmpfs="size=64m,mode=1777", timeout=120):
    """Runs `code` (after PRELUDE) as root in a private mount namespace whose
    /dev/shm is a new tmpfs mounted with `tmpfs`; returns the object the code
    gave to result(), and the whole run (stdout, stderr) for messages."""
    if not _reason:
        _reason.append(_skip_reason())
    if _reason[0]:
        print(f"SHMARRAY-SKIP: {_reason[0]}")
        pytest.skip(f"SHMARRAY-SKIP: {_reason[0]}")
    env = dict(os.environ)
    env["PYTHONPATH"] = MODULE_DIR
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    script = f"TMPFS = {tmpfs!r}\n" + PRELUDE + textwrap.dedent(code)
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "/usr/bin/python3", "-c",
                        script], capture_output=True, text=True, env=env, timeout=timeout,
                       cwd="/")
    lines = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
    assert r.returncode == 0 and lines, (
        f"the scenario failed (exit {r.returncode}):\n{r.stdout}\n{r.stderr}")
    return json.loads(lines[-1][len("RESULT "):]), r


def py(code):
    """Code as a string for as_nobody/as_root, dedented."""
    return textwrap.dedent(code)

