"""Segment names: the rules a name must meet to make or attach a segment
(docs/FORMAT.md), and the one way a name is written in a message."""

from . import _errors as e

# The C escapes GNU `ls --quoting-style=escape` writes for these controls.
_C_ESCAPES = {0x07: "\\a", 0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0B: "\\v", 0x0C: "\\f",
              0x0D: "\\r"}


def from_raw(raw):
    """The str of a raw name from /dev/shm: UTF-8 with surrogateescape, what
    os.fsdecode gives under a UTF-8 file-system encoding and json.loads of
    `shmarray ls --json` gives everywhere."""
    return bytes(raw).decode("utf-8", "surrogateescape")


def _is_control(c):
    return c < 0x20 or 0x7F <= c <= 0x9F


def _octal(data):
    return "".join(f"\\{b:03o}" for b in data)


def escape(name):
    """`name` (a str, undecodable bytes as surrogateescape gives them, or
    bytes) as GNU `ls --quoting-style=escape` writes it in a UTF-8 locale:
    printable characters as they are but `\\` and space, the C escapes,
    and \\ooo for every other byte of a control and every byte that is not
    part of a valid UTF-8 character. No name can forge a line or a colour."""
    text = from_raw(name) if isinstance(name, (bytes, bytearray)) else str(name)
    out = []
    for ch in text:
        c = ord(ch)
        if 0xDC80 <= c <= 0xDCFF:
            out.append(f"\\{c - 0xDC00:03o}")  # an undecodable byte
        elif 0xD800 <= c <= 0xDFFF:
            out.append(_octal(ch.encode("utf-8", "surrogatepass")))
        elif c in _C_ESCAPES:
            out.append(_C_ESCAPES[c])
        elif _is_control(c):
            out.append(_octal(ch.encode("utf-8")))
        elif ch == "\\":
            out.append("\\\\")
        elif ch == " ":
            out.append("\\ ")
        else:
            out.append(ch)
    return "".join(out)


def _invalid(name, why):
    return e.InvalidName(f"{escape(name)}: is not a valid name: it {why}")


def normalise(name):
    """The name with its leading '/', checked: one leading '/' at most and
    no other, not empty, not '.' or '..', at most 255 bytes, no NUL, valid
    UTF-8 (a str holding a lone surrogate is not) and no control
    character (C0, DEL, C1). A bytes name is taken as its UTF-8."""
    if isinstance(name, (bytes, bytearray)):
        raw = bytes(name)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise _invalid(raw, f"is not valid UTF-8 at byte {err.start} "
                                f"({raw[err.start]:#04x})") from None
    elif isinstance(name, str):
        text = name
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError as err:
            at = len(text[:err.start].encode("utf-8", "surrogateescape"))
            c = ord(text[err.start])
            what = (f"byte {c - 0xDC00:#04x}, which is not UTF-8" if 0xDC80 <= c <= 0xDCFF
                    else f"a lone surrogate U+{c:04X}")
            raise _invalid(text, f"is not valid UTF-8 at byte {at} ({what})") from None
    else:
        raise e.InvalidName(f"{name!r}: a segment's name is a str")
    bare = text[1:] if text.startswith("/") else text
    why = None
    if not bare:
        why = "is empty"
    elif "/" in bare:
        why = "holds a '/' after its first character"
    elif "\0" in bare:
        why = f"holds a NUL character at byte {raw.index(bytes(1))}"
    elif bare in (".", ".."):
        why = "is a directory name"
    elif len(raw) - (len(text) - len(bare)) > 255:
        why = "is longer than 255 bytes"
    else:
        for i, ch in enumerate(text):
            if _is_control(ord(ch)):
                why = (f"holds the control character U+{ord(ch):04X} at byte "
                       f"{len(text[:i].encode('utf-8'))}")
                break
    if why:
        raise _invalid(text, why)
    return "/" + bare
