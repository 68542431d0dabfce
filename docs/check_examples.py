#!/usr/bin/python3
"""Keeps the pages' code and output blocks equal to what the tests compile and run.

In a page (README.md, docs/*.md, python/README.md), the line right before a
fenced block may say where the block comes from:

    <!-- example: examples/FILE.cpp#NAME -->      the block is that region, verbatim
    <!-- output: PROGRAM [ARG...] -->             the block is what PROGRAM prints
    <!-- output: PROGRAM [ARG...]; vary: REGEX --> ... where REGEX's matches may differ

A region is marked in the source by a line `// doc-region: NAME` and a line
`// doc-region-end` (`#` in Python; regions may nest; marker lines are never
part of a region); it is compared dedented. Every ```cpp block must come from a region,
and every fence must name its language (```sh, ```text, ```cmake, ...), so
that no C++ can hide in an unchecked block.

    check_examples.py [--write] [--root DIR] [--program NAME=PATH ...] [FILE.md ...]

Without files it checks README.md, docs/*.md and python/README.md under DIR
(the checkout this script is in). --write puts each region (and, for the
programs given, each output) into its block instead of comparing. Output
blocks whose program is not given are an error unless --no-outputs.
"""
import argparse
import difflib
import glob
import os
import re
import shlex
import subprocess
import sys

CPP_LANGS = {"cpp", "c++", "cxx", "cc", "hpp"}
MARKER = re.compile(r"^\s*<!--\s*(example|output):\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^(\s*)(`{3,})(.*)$")
REGION_BEGIN = re.compile(r"^\s*(?://|#)\s*doc-region:\s*(\S+)\s*$")
REGION_END = re.compile(r"^\s*(?://|#)\s*doc-region-end\s*$")


def dedent(lines):
    indents = [len(l) - len(l.lstrip(" ")) for l in lines if l.strip()]
    cut = min(indents) if indents else 0
    return [l[cut:] if l.strip() else "" for l in lines]


def read_regions(path):
    """Every region of a source file: {name: [lines]}, or raises ValueError."""
    regions, open_ = {}, []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f.read().splitlines(), 1):
            begin = REGION_BEGIN.match(line)
            if begin:
                name = begin.group(1)
                if name in regions or name in [n for n, _ in open_]:
                    raise ValueError(f"{path}:{number}: region {name!r} is marked twice")
                open_.append((name, number))
                regions[name] = []
                continue
            if REGION_END.match(line):
                if not open_:
                    raise ValueError(f"{path}:{number}: doc-region-end with no region open")
                open_.pop()
                continue
            for name, _ in open_:
                regions[name].append(line)
    if open_:
        name, number = open_[-1]
        raise ValueError(f"{path}:{number}: region {name!r} has no doc-region-end")
    return {name: dedent(lines) for name, lines in regions.items()}


class Checker:
    def __init__(self, root, programs, write, outputs):
        self.root, self.programs, self.write, self.outputs = root, programs, write, outputs
        self.sources, self.ran, self.errors = {}, {}, []

    def error(self, page, number, text):
        self.errors.append(f"{os.path.relpath(page, self.root)}:{number}: {text}")

    def region(self, spec):
        path, _, name = spec.partition("#")
        if not name:
            raise ValueError(f"{spec!r} names no region: write FILE.cpp#NAME")
        full = os.path.join(self.root, path)
        if full not in self.sources:
            if not os.path.isfile(full):
                raise ValueError(f"{path} does not exist")
            self.sources[full] = read_regions(full)
        if name not in self.sources[full]:
            known = ", ".join(sorted(self.sources[full])) or "none"
            raise ValueError(f"{path} has no region {name!r} (it has: {known})")
        return self.sources[full][name]

    def output(self, spec):
        command, _, vary = spec.partition("; vary:")
        words = shlex.split(command)
        if not words:
            raise ValueError("an output marker names no program")
        if words[0] not in self.programs:
            raise KeyError(words[0])
        key = tuple(words)
        if key not in self.ran:
            run = subprocess.run([self.programs[words[0]]] + words[1:], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, timeout=300)
            if run.returncode != 0:
                raise ValueError(f"{command.strip()} exited {run.returncode}: {run.stderr.strip()}")
            self.ran[key] = run.stdout.splitlines()
        return self.ran[key], (re.compile(vary.strip()) if vary.strip() else None)

    def page(self, page):
        with open(page, encoding="utf-8") as f:
            lines = f.read().splitlines()
        out, i, changed = [], 0, False
        while i < len(lines):
            fence = FENCE.match(lines[i])
            if not fence:
                out.append(lines[i])
                i += 1
                continue
            indent, ticks, lang = fence.group(1), fence.group(2), fence.group(3).strip()
            end = i + 1
            while end < len(lines) and not re.match(r"^\s*" + ticks + r"\s*$", lines[end]):
                end += 1
            if end == len(lines):
                self.error(page, i + 1, "a code block that is never closed")
                out.extend(lines[i:])
                break
            body = [l[len(indent):] if l.startswith(indent) else l.lstrip() for l in lines[i + 1:end]]
            marker = MARKER.match(lines[i - 1]) if i > 0 else None
            want = self.expected(page, i + 1, lang.split()[0].lower() if lang else "", marker, body)
            out.append(lines[i])
            if want is not None and want != body:
                changed = True
                out.extend((indent + l) if l else "" for l in want)
            else:
                out.extend(lines[i + 1:end])
            out.append(lines[end])
            i = end + 1
        for number, line in enumerate(lines, 1):
            if MARKER.match(line) and (number == len(lines) or not FENCE.match(lines[number])):
                self.error(page, number, "a marker must be the line right before a code block")
        if self.write and changed:
            with open(page, "w", encoding="utf-8") as f:
                f.write("\n".join(out) + "\n")
            print(f"wrote {os.path.relpath(page, self.root)}")

    def expected(self, page, number, lang, marker, body):
        """The block's lines as they must be, or None when it is free."""
        if not lang:
            self.error(page, number, "a code block without a language: name it "
                       "(```cpp from an example, ```sh, ```text, ```cmake, ...)")
            return None
        kind, spec = (marker.group(1), marker.group(2)) if marker else (None, None)
        if lang in CPP_LANGS and kind != "example":
            self.error(page, number, "a C++ block that comes from no example: put the code in "
                       "a region of examples/*.cpp and write <!-- example: examples/FILE.cpp#NAME -->"
                       " on the line before it")
            return None
        if kind == "example":
            try:
                want = self.region(spec)
            except ValueError as e:
                self.error(page, number, str(e))
                return None
            if want != body and not self.write:
                self.error(page, number, f"the block differs from {spec}"
                           f" (run docs/check_examples.py --write):\n" + diff(body, want, spec))
            return want
        if kind == "output":
            if not self.outputs:
                return None
            try:
                got, vary = self.output(spec)
            except KeyError as e:
                self.error(page, number, f"no --program given for {e.args[0]!r}")
                return None
            except (ValueError, subprocess.TimeoutExpired, OSError) as e:
                self.error(page, number, str(e))
                return None
            mask = (lambda ls: [vary.sub("…", l) for l in ls]) if vary else (lambda ls: ls)
            if mask(got) == mask(body):
                return None
            if not self.write:
                self.error(page, number, f"the block is not what {spec.split(';')[0]} prints"
                           f" now:\n" + diff(body, got, spec.split(";")[0]))
            return got
        return None


def diff(have, want, what):
    return "\n".join(difflib.unified_diff(have, want, "the page", what, lineterm="", n=1))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pages", nargs="*")
    parser.add_argument("--root", default=os.path.dirname(here))
    parser.add_argument("--write", action="store_true", help="regenerate the blocks")
    parser.add_argument("--program", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--no-outputs", action="store_true", help="check code blocks only")
    args = parser.parse_args()
    root = os.path.abspath(args.root)
    programs = dict(p.split("=", 1) for p in args.program)
    pages = [os.path.abspath(p) for p in args.pages] or [
        p for p in [os.path.join(root, "README.md")] +
        sorted(glob.glob(os.path.join(root, "docs", "*.md"))) +
        [os.path.join(root, "python", "README.md")] if os.path.isfile(p)]
    checker = Checker(root, programs, args.write, not args.no_outputs)
    try:
        for page in pages:
            checker.page(page)
    except ValueError as e:  # a source's regions are malformed
        checker.errors.append(str(e))
    for e in checker.errors:
        print(e, file=sys.stderr)
    if checker.errors:
        print(f"check_examples: {len(checker.errors)} problem(s) in the pages", file=sys.stderr)
        return 1
    print(f"ok: {len(pages)} pages hold their examples and outputs as the sources give them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
