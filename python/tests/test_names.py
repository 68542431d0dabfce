"""Names: what a segment may be called, how a name is written in a message,
and hostile names in /dev/shm (issue 19, case 5)."""

import os

import numpy as np
import pytest

import shmarray
from shmarray._names import escape

# The spec's examples, and GNU `ls --quoting-style=escape` in a UTF-8 locale.
ESCAPED = [
    ("x\ny", "x\\ny"), ("a b", "a\\ b"), (b"bad\xffz", "bad\\377z"), ("c1\u009bq", "c1\\302\\233q"),
    ("\u00e9", "\u00e9"), ("\x1b[31m", "\\033[31m"), ("back\\slash", "back\\\\slash"),
    ("\a\b\t\n\v\f\r", "\\a\\b\\t\\n\\v\\f\\r"), ("del\x7f", "del\\177"), ("nul\0", "nul\\000"),
    (b"trunc\xe2\x82", "trunc\\342\\202"), (b"\xe2\x82\xac", "\u20ac"),
    (b"over\xc0\xaf", "over\\300\\257"), (b"surr\xed\xa0\x80", "surr\\355\\240\\200"),
    (b"big\xf4\x90\x80\x80", "big\\364\\220\\200\\200"), (b"cont\x80", "cont\\200"),
    ("bad\udcff", "bad\\377"), ("lone\ud800", "lone\\355\\240\\200"), ("\U0001f600", "\U0001f600"),
]


@pytest.mark.parametrize("name, text", ESCAPED)
def test_names_are_escaped_as_gnu_ls_escape_writes_them(name, text):
    assert escape(name) == text
    if isinstance(name, bytes):  # the str os.fsdecode gives is escaped alike
        assert escape(name.decode("utf-8", "surrogateescape")) == text


def test_escaping_is_what_gnu_ls_prints():
    import shutil
    import subprocess
    import tempfile
    if not shutil.which("ls"):
        pytest.skip("no ls")
    with tempfile.TemporaryDirectory() as d:
        names = sorted({to_bytes(n) for n, _ in ESCAPED} - {b"nul\0"})
        for n in names:
            open(os.path.join(d.encode(), n), "wb").close()
        env = dict(os.environ, LC_ALL="C.UTF-8")
        r = subprocess.run(["ls", "-1", "--quoting-style=escape", d], capture_output=True,
                           env=env)
        if r.returncode != 0:
            pytest.skip("ls has no --quoting-style")
        got = sorted(r.stdout.decode("utf-8").splitlines())
        assert got == sorted(escape(n) for n in names)


def to_bytes(name):
    """A name's bytes: surrogateescape's bytes back, other surrogates as UTF-8 would."""
    if isinstance(name, bytes):
        return name
    try:
        return name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogatepass")


def from_bytes(raw, like):
    if "\ud800" in like:
        return raw.decode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "surrogateescape")


BAD = ["/x\ny", "/\x1b[31mred", "/c1\u009bq", "/bad\udcff", "/lone\ud800", b"/bad\xff",
       "/del\x7f", "/tab\t", b"/trunc\xe2\x82", b"/over\xc0\xaf", "/nul\0"]


@pytest.mark.parametrize("bad", BAD, ids=repr)
def test_an_invalid_name_is_refused_by_attach_and_creation_whatever_exists(prefix, bad):
    name = to_bytes(bad).replace(b"/", b"/" + prefix.encode(), 1)
    made = b"\0" not in name
    if made:  # the object exists: it is still refused, never attached
        with open(b"/dev/shm" + name, "wb") as fh:
            fh.write(bytes(4096))
    asked = name if isinstance(bad, bytes) else from_bytes(name, bad)
    try:
        for call in (lambda: shmarray.attach(asked),
                     lambda: shmarray.attach(asked, readonly=True),
                     lambda: shmarray.attach_raw(asked, (4096,), np.uint8),
                     lambda: shmarray.Manager(prefix=prefix).from_shape((4,), name=asked),
                     lambda: shmarray.Manager(prefix=prefix).from_array(np.ones(3), name=asked)):
            with pytest.raises(shmarray.InvalidName) as err:
                call()
            text = str(err.value)
            assert "is not a valid name" in text and "byte " in text, text
            assert text.startswith(escape(asked) + ":"), text  # escaped, whatever it holds
            assert text.isprintable() and "\udcff" not in text
    finally:
        if made:
            os.unlink(b"/dev/shm" + name)


def test_the_first_offending_byte_is_named():
    for bad, at in (("/ab\ncd", 3), (b"/abc\xff", 4), ("/\u00e9\x1b", 3), ("/x\u009b", 2),
                    ("/\u00e9\udcfe", 3)):
        with pytest.raises(shmarray.InvalidName) as err:
            shmarray.attach(bad)
        assert f"byte {at}" in str(err.value), str(err.value)


def test_valid_names_with_spaces_and_letters_are_kept_and_escaped_in_messages(prefix):
    for name in (f"/{prefix}a b", f"/{prefix}\u00e9t\u00e9", f"/{prefix}back\\slash",
                 f"{prefix}\U0001f600"):
        with pytest.raises(shmarray.NotFound) as err:
            shmarray.attach(name)
        assert str(err.value).startswith(escape("/" + name.lstrip("/")) + ": does not exist")
        with shmarray.Manager(prefix=prefix) as m:
            a = m.from_shape((3,), np.int8, name=name)
            assert shmarray.name_of(a) == "/" + name.lstrip("/")
            b = shmarray.attach(name.encode())  # a bytes name: its UTF-8
            assert shmarray.name_of(b) == shmarray.name_of(a)
    with pytest.raises(shmarray.NotFound) as err:
        shmarray.attach(f"/{prefix}a b")
    assert "a\\ b: does not exist" in str(err.value)


def test_list_survives_a_one_byte_file_with_a_non_utf8_name(prefix):
    raw = prefix.encode() + b"bad\xff"
    with open(b"/dev/shm/" + raw, "wb") as fh:
        fh.write(b"x")
    try:
        assert [r for r in shmarray.list() if r["name"].startswith("/" + prefix)] == []
        rows = [r for r in shmarray.list(all=True) if r["name"].startswith("/" + prefix)]
        assert [r["name"] for r in rows] == ["/" + os.fsdecode(raw)]
        assert rows[0]["status"] == "corrupt" and rows[0]["bytes"] == 1
        assert "bad\\377" in rows[0]["error"] and "\udcff" not in rows[0]["error"]
    finally:
        os.unlink(b"/dev/shm/" + raw)


def test_a_semaphores_name_is_refused_at_creation(prefix):
    """Names starting "sem." are POSIX semaphores' (sem_open), which ls, gc
    and list() skip: no segment is made under one, as in C++."""
    with shmarray.Manager(prefix=prefix) as m:
        with pytest.raises(shmarray.InvalidName, match="POSIX semaphores"):
            m.from_shape((4,), np.int32, name="/sem.frames")
    assert not os.path.exists("/dev/shm/sem.frames")


def test_an_owner_tokens_name_is_refused_at_creation(prefix):
    """A segment under a token's name would pass for a token: refused, as
    in C++."""
    with shmarray.Manager(prefix=prefix) as m:
        with pytest.raises(shmarray.InvalidName, match="owner tokens"):
            m.from_shape((4,), np.int32, name="/.shmarray-owner-00000000deadbeef")
    assert not os.path.exists("/dev/shm/.shmarray-owner-00000000deadbeef")
