#!/usr/bin/python3
"""Proves that docs/check_examples.py fails where a page has drifted.

    test_check_examples.py drift|unmarked|write|output

Each case builds a small tree in a temporary directory: examples/quick_start.cpp
copied from this checkout and a page whose block --write made from it; the
tree passes the check, then one line is changed and the check must fail with
a message naming the page, the line and the region.
"""
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKER = os.path.join(HERE, "check_examples.py")
SOURCE = os.path.join(os.path.dirname(HERE), "examples", "quick_start.cpp")
REGION = "examples/quick_start.cpp#quick_start"


def check(root, *args):
    run = subprocess.run([sys.executable, CHECKER, "--root", root, *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return run.returncode, run.stdout + run.stderr


def expect(ok, what, output=""):
    if not ok:
        print(f"FAILED: {what}\n{output}")
        sys.exit(1)


def tree(root):
    os.makedirs(os.path.join(root, "examples"))
    shutil.copy(SOURCE, os.path.join(root, "examples"))
    page = os.path.join(root, "README.md")
    with open(page, "w") as f:
        f.write(f"# a page\n\nThe quick start:\n\n<!-- example: {REGION} -->\n```cpp\n```\n")
    rc, out = check(root, "--write", "--no-outputs")
    expect(rc == 0, "--write fills an empty block", out)
    rc, out = check(root, "--no-outputs")
    expect(rc == 0, "the tree --write made passes", out)
    return page


def edit(path, old, new):
    with open(path) as f:
        text = f.read()
    expect(old in text, f"{old!r} in {path}")
    with open(path, "w") as f:
        f.write(text.replace(old, new, 1))


def line_of(path, text):
    with open(path) as f:
        return next(n for n, l in enumerate(f.read().splitlines(), 1) if text in l)


def drift(root):
    page = tree(root)
    fence = line_of(page, "```cpp")
    # one line changed in the page's copy ...
    edit(page, "x += 1;", "x += 2;")
    rc, out = check(root, "--no-outputs")
    expect(rc != 0, "a changed line in the page fails the check", out)
    expect(f"README.md:{fence}: the block differs from {REGION}" in out,
           "the message names the page, the line and the region", out)
    lines = out.splitlines()
    expect(any(l.startswith("-") and "x += 2;" in l for l in lines) and
           any(l.startswith("+") and "x += 1;" in l for l in lines), "the message shows the diff", out)
    # ... or in the example
    edit(page, "x += 2;", "x += 1;")
    edit(os.path.join(root, "examples", "quick_start.cpp"), "_exit(0);", "_exit(1);")
    rc, out = check(root, "--no-outputs")
    expect(rc != 0 and f"README.md:{fence}: the block differs from {REGION}" in out,
           "a changed line in the example fails the check", out)
    # a region that is not there
    edit(page, REGION, REGION + "_gone")
    rc, out = check(root, "--no-outputs")
    expect(rc != 0 and "has no region 'quick_start_gone'" in out, "a missing region fails", out)
    print("ok: drift in a page or in its example fails the check, naming page, line and region")


def unmarked(root):
    page = tree(root)
    with open(page, "a") as f:
        f.write("\nA fragment:\n\n```cpp\nint x = 1;\n```\n\nA block of no language:\n\n```\nint y;\n```\n")
    rc, out = check(root, "--no-outputs")
    expect(rc != 0, "an unmarked C++ block fails the check", out)
    expect(f"README.md:{line_of(page, 'int x = 1;') - 1}: a C++ block that comes from no example"
           in out, "the message names the unmarked block", out)
    expect(f"README.md:{line_of(page, 'int y;') - 1}: a code block without a language" in out,
           "a block of no language fails too", out)
    print("ok: a C++ block from no example, and a block of no language, fail the check")


def write(root):
    page = tree(root)
    edit(page, "x += 1;", "x += 2;")
    rc, out = check(root, "--write", "--no-outputs")
    expect(rc == 0 and "wrote README.md" in out, "--write rewrites the page", out)
    rc, out = check(root, "--no-outputs")
    expect(rc == 0, "after --write the page passes", out)
    with open(page) as f:
        expect("x += 1;" in f.read(), "--write put the region back")
    print("ok: --write regenerates a drifted block from its region")


def output(root):
    page = tree(root)
    with open(page, "a") as f:
        f.write("\nIt prints:\n\n<!-- output: hello -->\n```text\nhello, world\n```\n")
    program = os.path.join(root, "hello")
    with open(program, "w") as f:
        f.write("#!/bin/sh\necho 'hello, world'\n")
    os.chmod(program, 0o755)
    rc, out = check(root, "--program", f"hello={program}")
    expect(rc == 0, "the output shown is what the program prints", out)
    rc, out = check(root)
    expect(rc != 0 and "no --program given for 'hello'" in out, "an unrun output fails", out)
    edit(program, "hello, world", "hello, there")
    rc, out = check(root, "--program", f"hello={program}")
    expect(rc != 0 and "the block is not what hello prints now" in out,
           "an output that changed fails the check", out)
    print("ok: an output shown that the program no longer prints fails the check")


if __name__ == "__main__":
    cases = {"drift": drift, "unmarked": unmarked, "write": write, "output": output}
    if len(sys.argv) != 2 or sys.argv[1] not in cases:
        sys.exit(f"usage: {sys.argv[0]} {'|'.join(cases)}")
    with tempfile.TemporaryDirectory() as root:
        cases[sys.argv[1]](root)
