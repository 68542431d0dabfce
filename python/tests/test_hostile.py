"""Issue 19, the Python module: what another local user (`nobody`) and a
full or hostile /dev/shm can do, each in a private mount namespace over a
tmpfs of its own (hostile.py)."""

import os
import re
import signal
import textwrap

import pytest

from conftest import CLI
from hostile import in_private_shm

HELPER = os.environ.get("SHMARRAY_HELPER", "")


def need_helper():
    if not HELPER:
        pytest.skip("SHMARRAY_HELPER is not set: run through CTest")


def code(text, **values):
    """A scenario's code, with `values` given to it as Python literals."""
    head = "".join(f"{k} = {v!r}\n" for k, v in values.items())
    return head + textwrap.dedent(text)


# A Python owner, run as nobody under umask 0777: two arrays, then it kills itself.
UMASK_OWNER = """
import json, os, signal
os.umask(0o777)
import numpy as np, shmarray
from shmarray import _owner
m = shmarray.Manager(prefix="tok_")
a = m.from_shape((1000,), np.float64)
b = m.from_array(np.ones(10))
modes = {n: os.stat("/dev/shm/" + n).st_mode & 0o7777 for n in os.listdir("/dev/shm")}
print(json.dumps({"token": _owner.token_name(_owner.token.id), "modes": modes}), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_owner_tokens_are_0600_under_umask_0777_and_a_killed_owners_helper_cleans_up():
    need_helper()
    out, _ = in_private_shm(code("""
        owner = subprocess.Popen(nobody_cmd(OWNER), stdout=subprocess.PIPE, text=True)
        made = json.loads(owner.stdout.readline())
        owner.wait()
        cleaned = wait_until(lambda: shm() == [], 5.0)
        result({"made": made, "rc": owner.returncode, "left": [n.decode() for n in shm()],
                "cleaned": cleaned, "helpers_left": len(helpers())})
    """, OWNER=UMASK_OWNER))
    made = out["made"]
    assert out["rc"] == -signal.SIGKILL
    assert out["cleaned"] and out["left"] == []  # segments and token, within 5 s
    assert out["helpers_left"] == 0  # and the helper ended: it did not loop for ever
    assert made["token"][1:] in made["modes"] and len(made["modes"]) == 3
    assert made["modes"] == {n: 0o600 for n in made["modes"]}  # the token too


# As nobody: plants the 17 names that follow `first` in the old scheme
# (/PREFIX{pid}_{salt}_{counter in base 36}), as someone who saw it would.
PLANT = """
import os, sys
first = sys.argv[1] if len(sys.argv) > 1 else FIRST
stem, _, last = first.rpartition("_")
digits = "0123456789abcdefghijklmnopqrstuvwxyz"
def b36(n):
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out
for k in range(1, 18):
    path = "/dev/shm" + stem + "_" + b36(int(last, 36) + k)
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
"""


def test_generated_names_cannot_be_taken_in_advance_by_another_user():
    out, _ = in_private_shm(code("""
        import re
        import numpy as np, shmarray
        m = shmarray.Manager(prefix="gen_")
        first = shmarray.name_of(m.from_shape((4,), np.uint8))
        planted = as_nobody(PLANT.replace("FIRST", repr(first)))
        assert planted.returncode == 0, planted.stderr
        try:
            second = shmarray.name_of(m.from_shape((4,), np.uint8))
        except shmarray.AlreadyExists as err:
            second = "AlreadyExists: " + str(err)
        names = [first, second] + [shmarray.name_of(m.from_shape((1,), np.uint8))
                                   for _ in range(20)]
        ours = m.names()
        m.close()
        result({"names": names, "ours": ours, "pid": os.getpid(),
                "left": sorted(n.decode() for n in shm())})
    """, PLANT=PLANT))
    names, pid = out["names"], out["pid"]
    assert not names[1].startswith("AlreadyExists"), names[1]
    form = re.compile(f"^/gen_{pid}_[0-9a-z]{{10}}$")
    assert all(form.match(n) for n in names), names  # the pid, then 10 random characters
    assert len(set(n.rsplit("_", 1)[1] for n in names)) == len(names)
    assert out["ours"] == names
    assert len(out["left"]) == 17 and not set(out["left"]) & {n[1:] for n in names}


# As nobody, in a 4 MiB /dev/shm: sparse objects, as multiprocessing.shared_memory
# makes them (shm_open and ftruncate, nothing written), and one with a record.
SPARSE_MAKER = """
import os
from multiprocessing import resource_tracker, shared_memory
big = shared_memory.SharedMemory(name="big", create=True, size=8 << 20)
resource_tracker.unregister(big._name, "shared_memory")  # it stays when this process ends
big.close()
for name, size in (("small", 1 << 20),):
    fd = os.open("/dev/shm/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o666)
    os.ftruncate(fd, size)
    os.close(fd)
from shmarray import _format as f
rec, checksum = f.new_record("|u1", (6 << 20,), "C")
size = (6 << 20) + 512
fd = os.open("/dev/shm/rec", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o666)
os.ftruncate(fd, size)
os.pwrite(fd, rec + checksum, size - 512)
os.pwrite(fd, f.READY, size - 512 + f.OFF_READY)
os.close(fd)
"""

# As root: attach one writable, then write every byte of it.
SPARSE_WRITER = """
import sys, numpy as np, shmarray
kind, name = sys.argv[1], sys.argv[2]
try:
    if kind == "raw":
        a = shmarray.attach_raw(name, (int(sys.argv[3]),), np.uint8)
    elif kind == "record":
        a = shmarray.attach(name)
    else:  # the hazard itself: a plain shared mapping, no reservation
        import mmap, os
        fd = os.open("/dev/shm" + name, os.O_RDWR)
        a = np.frombuffer(mmap.mmap(fd, 0), np.uint8)
except shmarray.OutOfSpace as err:
    print("OutOfSpace", err)
    sys.exit(0)
if len(sys.argv) > 4:  # someone else takes the rest of /dev/shm after the attach
    import os
    fd = os.open("/dev/shm/filler", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        while os.write(fd, bytes(1 << 16)):
            pass
    except OSError:
        pass
    os.close(fd)
a[:] = 7
print("written", int(a.sum()))
"""


def test_a_writable_attach_of_a_sparse_segment_reserves_it_and_never_dies_of_sigbus():
    out, _ = in_private_shm(code("""
        made = as_nobody(MAKER)
        assert made.returncode == 0, made.stderr
        blocks = {n.decode(): os.stat(b"/dev/shm/" + n).st_blocks for n in shm()}
        free = lambda: os.statvfs("/dev/shm").f_bavail
        runs = {}
        ro = as_root("import shmarray, numpy as np; "
                     "a = shmarray.attach_raw('/big', (8 << 20,), np.uint8, readonly=True); "
                     "print(a.shape[0], a.flags.writeable)")
        for key, args in (("raw", ["raw", "/big", str(8 << 20)]), ("record", ["record", "/rec"]),
                          ("plain", ["plain", "/big"])):
            before = free()
            r = subprocess.run([PY, "-c", WRITER] + args, capture_output=True, text=True)
            runs[key] = {"rc": r.returncode, "out": r.stdout.strip(), "err": r.stderr[-400:],
                         "free_kept": free() == before}
        os.unlink("/dev/shm/big")  # and the pages the plain mapping took before its SIGBUS
        r = subprocess.run([PY, "-c", WRITER, "raw", "/small", str(1 << 20), "fill"],
                           capture_output=True, text=True)
        runs["room"] = {"rc": r.returncode, "out": r.stdout.strip(), "err": r.stderr[-400:]}
        st = os.stat("/dev/shm/small")
        result({"blocks": blocks, "runs": runs, "ro": ro.stdout.strip() + ro.stderr[-300:],
                "small": [st.st_size, st.st_blocks * 512],
                "filled": os.statvfs("/dev/shm").f_bavail == 0})
    """, MAKER=SPARSE_MAKER, WRITER=SPARSE_WRITER), tmpfs="size=4m,mode=1777")
    runs = out["runs"]
    # made sparse, by nobody: nothing of the data is backed
    assert out["blocks"]["big"] == 0 and out["blocks"]["small"] == 0
    assert out["blocks"]["rec"] * 512 <= 4096
    # the hazard is real here: a plain writable mapping dies of SIGBUS on a full tmpfs
    assert runs["plain"]["rc"] == -signal.SIGBUS, runs["plain"]
    # shmarray refuses at attach, and reserves nothing it cannot keep
    for key in ("raw", "record"):
        assert runs[key]["rc"] == 0, runs[key]  # no SIGBUS
        assert runs[key]["out"].startswith("OutOfSpace"), runs[key]
        assert "is sparse" in runs[key]["out"] and "/dev/shm has" in runs[key]["out"]
        assert runs[key]["free_kept"], runs[key]
    assert out["ro"] == "8388608 False"  # a read-only attach reserves nothing
    # with room: reserved at attach (its size kept), so a /dev/shm filled after
    # the attach does not stop a write to every byte
    assert runs["room"] == {"rc": 0, "out": f"written {7 * (1 << 20)}", "err": ""}, runs["room"]
    assert out["small"] == [1 << 20, 1 << 20] and out["filled"]


def test_no_free_inode_in_dev_shm_is_out_of_space_and_leaves_nothing():
    out, _ = in_private_shm("""
        import numpy as np, shmarray
        m = shmarray.Manager(prefix="ino_")
        kinds = []
        for make in (lambda: m.from_shape((10,), np.float64),
                     lambda: m.from_array(np.ones(10)),
                     lambda: m.from_shape((10,), np.float64, name="/ino_named")):
            try:
                make()
                kinds.append(["made", ""])
            except shmarray.Error as err:
                kinds.append([type(err).__name__, str(err)])
        result({"kinds": kinds, "left": [n.decode() for n in shm()],
                "inodes": os.statvfs("/dev/shm").f_ffree})
    """, tmpfs="size=16m,nr_inodes=1,mode=1777")
    assert out["inodes"] == 0
    for kind, text in out["kinds"]:
        assert kind == "OutOfSpace", text
        assert "0 inodes free" in text
    assert out["left"] == []


def test_no_free_inode_is_out_of_space_in_cpp_too():
    golden_bin = os.environ.get("SHMARRAY_GOLDEN", "")
    if not golden_bin:
        pytest.skip("SHMARRAY_GOLDEN (the C++ side) is not set: run through CTest")
    out, _ = in_private_shm(code("""
        r = subprocess.run([GOLDEN, "make-kind", "/ino_cpp", "<f8", "10"], capture_output=True,
                           text=True)
        result({"kind": r.stdout.strip(), "err": r.stderr, "left": [n.decode() for n in shm()]})
    """, GOLDEN=golden_bin), tmpfs="size=16m,nr_inodes=1,mode=1777")
    assert out["kind"] == "out_of_space", out
    assert out["left"] == []


def test_a_full_dev_shm_says_the_free_space_it_had_not_what_the_attempt_left():
    out, _ = in_private_shm("""
        import re
        import numpy as np, shmarray
        m = shmarray.Manager(prefix="full_")
        keep = m.from_shape((1 << 17,), np.uint8)  # some of /dev/shm in use: 128 KiB
        free = lambda: os.statvfs("/dev/shm").f_bavail * os.statvfs("/dev/shm").f_frsize
        runs = []
        for make in (lambda: m.from_array(np.ones(1 << 18)),  # 2 MiB of data: written, then full
                     lambda: m.from_shape((1 << 18,), np.float64)):
            before = free()
            try:
                make()
                runs.append({"kind": "made"})
            except shmarray.Error as err:
                told = re.search(r"/dev/shm has (\\d+) bytes free", str(err))
                runs.append({"kind": type(err).__name__, "text": str(err), "before": before,
                             "told": int(told.group(1)) if told else None, "after": free()})
        names = m.names()
        m.close()
        result({"runs": runs, "names": names, "left": [n.decode() for n in shm()]})
    """, tmpfs="size=1m,mode=1777")
    for run in out["runs"]:
        assert run["kind"] == "OutOfSpace", run
        assert run["told"] == run["before"] > 0, run  # never "0 bytes free"
        assert run["after"] == run["before"], run
        assert f"needs {(1 << 21) + 512} bytes" in run["text"]
    assert len(out["names"]) == 1 and out["left"] == []


# A Python owner: an array, then (after a line on stdin) another, then waits
# to be killed.
RESTART_OWNER = """
import json, sys, time
import numpy as np, shmarray
from shmarray import _owner
m = shmarray.Manager(prefix="wd_")
a = m.from_shape((100,), np.float64)
gone = m.from_shape((100,), np.float64)
m.remove(gone)  # unregistered before the helper dies: not told again
# Its hello read first: a helper killed before it says it runs is one that
# did not start, and is not started again (the test kills it once it shows).
for _ in range(500):
    _owner.watchdog._settle()
    if _owner.watchdog.helper_pid:
        break
    time.sleep(0.01)
print(json.dumps({"token": _owner.token_name(_owner.token.id)}), flush=True)
sys.stdin.readline()
b = m.from_array(np.ones(10))
print(json.dumps({"names": m.names()}), flush=True)
sys.stdin.readline()
"""


def test_a_helper_killed_alone_is_replaced_at_the_next_array_and_told_everything():
    need_helper()
    out, _ = in_private_shm(code("""
        owner = subprocess.Popen([PY, "-c", OWNER], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        first = json.loads(owner.stdout.readline())
        wait_until(lambda: len(helpers()) == 1, 5.0)
        killed = helpers()
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: all(gone(p) for p in killed), 5.0)
        before = sorted(n.decode() for n in shm())
        owner.stdin.write("next\\n")
        owner.stdin.flush()
        second = json.loads(owner.stdout.readline())
        wait_until(lambda: len(helpers()) == 1, 5.0)
        replaced = helpers()
        during = sorted(n.decode() for n in shm())
        owner.kill()
        owner.wait()
        cleaned = wait_until(lambda: shm() == [], 5.0)
        result({"first": first, "second": second, "killed": killed, "replaced": replaced,
                "before": before, "during": during, "cleaned": cleaned,
                "left": [n.decode() for n in shm()], "helpers_left": len(helpers())})
    """, OWNER=RESTART_OWNER))
    names = [n[1:] for n in out["second"]["names"]]
    token = out["first"]["token"][1:]
    assert len(out["killed"]) == 1 and len(names) == 2
    assert out["before"] == sorted([token, names[0]])
    assert out["during"] == sorted([token] + names)
    assert len(out["replaced"]) == 1 and out["replaced"] != out["killed"]  # a new helper
    # the owner killed: its arrays of before and after the helper's death, and its token
    assert out["cleaned"] and out["left"] == []
    assert out["helpers_left"] == 0


# A Python owner that stays alive until stdin closes (its token held).
LIVE_OWNER = """
import json, os, sys
import numpy as np, shmarray
m = shmarray.Manager(prefix="live_")
shown = m.from_shape((2, 3), np.int32)  # made readable to nobody below
hidden = m.from_shape((4,), np.uint8)   # 0600: nobody cannot open it
print(json.dumps([shmarray.name_of(shown), shmarray.name_of(hidden)]), flush=True)
sys.stdin.read()
"""

# A Python owner that dies with no helper: its segment and free token stay.
DEAD_OWNER = """
import json, os
import numpy as np, shmarray
from shmarray import _owner
m = shmarray.Manager(prefix="dead_")
a = m.from_shape((5,), np.float32)
print(json.dumps([shmarray.name_of(a), _owner.token_name(_owner.token.id)]), flush=True)
os._exit(0)
"""

HOSTILE_NAMES = [b"bad\xff", b"x\ny", b"\x1b[31mred", "c1\u009bq".encode(), b"a b",
                 "\u00e9".encode(), "s\ue000".encode(), b"s\xff", b"tab\there", b"del\x7f",
                 b".shmarray-owner-xyz", b"back\\slash", b"trunc\xe2\x82"]

LISTING = """
import stat
import numpy as np, shmarray
# first the programs that may start a helper (which collects dead owners'
# leftovers as it starts), then the owner that dies
subprocess.run([GOLDEN, "make", "/kept", "<i2", "C", "7"], check=True)
os.chmod("/dev/shm/kept", 0o644)
live = subprocess.Popen([PY, "-c", LIVE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                        text=True)
shown, hidden = json.loads(live.stdout.readline())
os.chmod("/dev/shm" + shown, 0o644)
env = dict(os.environ, SHMARRAY_HELPER="")
r = subprocess.run([PY, "-c", DEAD], capture_output=True, text=True, env=env)
dead, dead_token = json.loads(r.stdout)
os.chmod("/dev/shm" + dead, 0o644)
with open("/dev/shm/kept", "rb") as fh:
    seg = fh.read()
for raw in [n.encode("latin-1") if isinstance(n, str) else n for n in HOSTILE]:
    with open(b"/dev/shm/" + raw, "wb") as fh:
        fh.write(b"z")
    os.chmod(b"/dev/shm/" + raw, 0o644)
with open(b"/dev/shm/seg\\xfe\\n", "wb") as fh:  # a segment under a name attach refuses
    fh.write(seg)
os.chmod(b"/dev/shm/seg\\xfe\\n", 0o644)
with open("/dev/shm/secret", "wb") as fh:
    fh.write(b"s" * 100)
os.chmod("/dev/shm/secret", 0o600)
open("/dev/shm/empty", "wb").close()
os.chmod("/dev/shm/empty", 0o644)
open("/dev/shm/sem.skipped", "wb").close()
os.symlink("/dev/shm/kept", "/dev/shm/link")
os.mkdir("/dev/shm/dir")
os.mkfifo("/dev/shm/fifo")

def cli(all_, who):
    cmd = [CLI, "ls", "--json"] + (["-a"] if all_ else [])
    if who == "nobody":
        cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] + cmd
    r = subprocess.run(cmd, capture_output=True)
    try:
        return {"rc": r.returncode, "rows": json.loads(r.stdout.decode("utf-8", "strict"))}
    except (UnicodeDecodeError, ValueError) as err:
        return {"rc": r.returncode, "invalid": str(err)[:200]}

LIST = "import json, shmarray; print(json.dumps([shmarray.list(), shmarray.list(all=True)]))"
rows = {"root": [shmarray.list(), shmarray.list(all=True)]}
r = as_nobody(LIST)
assert r.returncode == 0, r.stderr
rows["nobody"] = json.loads(r.stdout)
clis = {who: [cli(False, who), cli(True, who)] for who in ("root", "nobody")} if CLI else {}
text = subprocess.run([CLI, "ls", "-a"], capture_output=True).stdout if CLI else b""
text = text.decode("utf-8", "backslashreplace")
raw_names = sorted(os.listdir(b"/dev/shm"))
live.stdin.close()
live.wait()
result({"rows": rows, "cli": clis, "text": text, "raw": [n.decode("utf-8", "surrogateescape") for n in raw_names],
        "live": [shown, hidden], "dead": [dead, dead_token],
        "token": [n.decode() for n in raw_names if n.startswith(b".shmarray-owner-")
                  and n != b".shmarray-owner-xyz"]})
"""


@pytest.fixture(scope="module")
def listing():
    golden_bin = os.environ.get("SHMARRAY_GOLDEN", "")
    if not golden_bin:
        pytest.skip("SHMARRAY_GOLDEN (the C++ side) is not set: run through CTest")
    out, _ = in_private_shm(code(LISTING, LIVE=LIVE_OWNER, DEAD=DEAD_OWNER, GOLDEN=golden_bin,
                                 CLI=CLI, HOSTILE=HOSTILE_NAMES))
    return out


def by_name(rows):
    return {r["name"]: r for r in rows}


def test_list_names_any_bytes_and_gives_the_rows_the_spec_gives(listing):
    plain, every = listing["rows"]["root"]
    shown, hidden = listing["live"]
    dead, dead_token = listing["dead"]
    hostile = ["/" + n.decode("utf-8", "surrogateescape") for n in HOSTILE_NAMES]
    seg_name = "/seg\udcfe\n"
    # the names as os.fsdecode gives them, sorted by their bytes
    raw = lambda n: n.encode("utf-8", "surrogateescape")  # noqa: E731
    assert [r["name"] for r in every] == sorted((r["name"] for r in every), key=raw)
    assert os.fsencode("/bad\udcff") == b"/bad\xff"  # (a UTF-8 file-system encoding)
    # plain: the segments only, a hostile name's included
    assert [r["name"] for r in plain] == sorted([seg_name, "/kept", shown, hidden, dead], key=raw)
    rows = by_name(every)
    assert set(rows) == set(hostile) | {seg_name, "/kept", shown, hidden, dead, "/secret",
                                        "/empty", dead_token} | {"/" + t for t in listing["token"]}
    for n in ("/sem.skipped", "/link", "/dir", "/fifo"):
        assert n not in rows  # semaphores and what is not a regular file
    assert rows[shown]["owner"] == "alive" and rows[shown]["owner_alive"] is True
    assert rows[dead]["owner"] == "gone" and rows[dead]["owner_alive"] is False
    assert rows["/kept"]["owner"] == "untracked" and rows["/kept"]["owner_alive"] is None
    assert rows[seg_name]["status"] == "ok" and rows[seg_name]["shape"] == [7]
    assert rows["/empty"]["status"] == "being created"
    for n in hostile:
        assert rows[n]["shmarray"] is False and rows[n]["status"] == "corrupt", rows[n]
    assert rows[dead_token]["bytes"] >= 0  # its journal (FORMAT.md, "The owner token")
    assert rows[dead_token] == {"name": dead_token, "bytes": rows[dead_token]["bytes"],
                                "shmarray": False, "status": "owner token", "owner": "gone"}
    live_tokens = ["/" + t for t in listing["token"] if "/" + t != dead_token]
    assert len(live_tokens) == 1
    assert rows[live_tokens[0]]["owner"] == "alive"
    assert all("owner_error" not in r for r in every)
    # as nobody: what cannot be opened is listed too, and the token nobody can read is said
    plain, every = listing["rows"]["nobody"]
    rows = by_name(plain)
    assert set(rows) == {seg_name, "/kept", shown, hidden, dead, "/secret"}
    for n in (hidden, "/secret"):
        assert rows[n]["status"] == "no access" and rows[n]["shmarray"] is False
        assert "Permission denied" in rows[n]["error"]
    for n in (shown, dead):
        assert rows[n]["status"] == "ok" and rows[n]["owner"] == "unreadable"
        assert rows[n]["owner_alive"] is None
    token_of_shown = live_tokens[0]
    assert rows[shown]["owner_error"] == \
        f"its owner token {token_of_shown} cannot be read: Permission denied"
    tokens = [r for r in every if r["status"] == "owner token"]
    assert len(tokens) == 2 and all(t["owner"] == "unreadable" for t in tokens)


def test_list_is_shmarray_ls_json_row_for_row_for_any_name(listing):
    if not CLI:
        pytest.skip("SHMARRAY_CLI is not set: run through CTest")
    for who in ("root", "nobody"):
        for k, flag in enumerate(("", "-a")):
            cli = listing["cli"][who][k]
            assert "invalid" not in cli, f"ls --json {flag} as {who}: not UTF-8 JSON: {cli}"
            mine, theirs = listing["rows"][who][k], cli["rows"]
            assert [r["name"] for r in mine] == [r["name"] for r in theirs], (who, flag)
            for p, c in zip(mine, theirs):
                if p["status"] != "ok":
                    p.pop("error", None), c.pop("error", None)  # the wording differs
                assert p == c, (who, flag)


# As nobody: a file of its own, resized without end between 1 MiB, where it
# ends in a valid record, and 4 KiB (the loop that killed `shmarray ls`).
RESIZER = """
import os, sys, time
from shmarray import _format as f
rec, checksum = f.new_record("|u1", ((1 << 20) - 512,), "C")
tail = rec + checksum + bytes(128)
tail = tail[:f.OFF_READY] + f.READY + tail[f.OFF_READY + 4:]
fd = os.open("/dev/shm/flap", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o666)
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    os.ftruncate(fd, 1 << 20)
    os.pwrite(fd, tail, (1 << 20) - 512)
    os.ftruncate(fd, 4096)
"""

# As root, meanwhile: list() and attach() of it, counting what each raised.
INSPECTOR = """
import collections, json, sys, numpy as np, shmarray
seen = collections.Counter()
for i in range(int(sys.argv[1])):
    for call in (lambda: shmarray.list(all=True), lambda: shmarray.attach("/flap", timeout=0),
                 lambda: shmarray.attach("/flap", readonly=True, timeout=0),
                 lambda: shmarray.attach_raw("/flap", (4096,), np.uint8)):
        try:
            call()
            seen["ok"] += 1
        except shmarray.Error as err:
            seen[type(err).__name__] += 1
        except Exception as err:
            seen["NOT A SHMARRAY ERROR: " + type(err).__name__ + ": " + str(err)] += 1
print(json.dumps(seen))
"""


def test_a_file_resized_without_end_by_another_user_gives_typed_errors_only():
    """Issue 19, case 1, for the module (which read with pread already): no
    death by signal and nothing but shmarray's typed errors."""
    out, _ = in_private_shm(code("""
        resizer = subprocess.Popen(nobody_cmd(RESIZER) + ["20"], stdout=subprocess.PIPE, text=True)
        assert resizer.stdout.readline().strip() == "ready"
        r = subprocess.run([PY, "-c", INSPECTOR, "3000"], capture_output=True, text=True)
        resizer.kill()
        resizer.wait()
        result({"rc": r.returncode, "seen": json.loads(r.stdout) if r.stdout else r.stderr})
    """, RESIZER=RESIZER, INSPECTOR=INSPECTOR))
    assert out["rc"] == 0, out  # no death by signal
    assert not [k for k in out["seen"] if k.startswith("NOT")], out["seen"]
    assert out["seen"].get("ok", 0) > 0 and out["seen"].get("TruncatedSegment", 0) > 0


def test_shmarray_ls_escapes_names_as_the_module_does(listing):
    if not CLI:
        pytest.skip("SHMARRAY_CLI is not set: run through CTest")
    from shmarray._names import escape
    text = listing["text"]
    rows = listing["rows"]["root"][1]
    lines = text.splitlines()
    assert len(lines) == len(rows) + 1, text  # a header, then one line a row: none forged
    controls = [c for c in text.replace("\n", "") if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F]
    assert controls == [], text  # no control byte (no ESC, no newline) but the lines' ends
    for r in rows:
        assert escape(r["name"]) in text, (escape(r["name"]), text)
