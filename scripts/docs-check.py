#!/usr/bin/env python3
"""Check the documentation: README.md, CONTRIBUTING.md and docs/.

1. Links: every relative link names a file that exists and, with a
   `#fragment`, a heading (GitHub's anchor) or an `id` in that file.
2. The reference (docs/reference.md): each section titled with a command
   (`sstream mirror`, `sstream key export`, ...) names exactly the long
   options that `sstream COMMAND --help` lists; its config keys are exactly
   the keys of dist/sstream.toml; its exit codes are those of
   `sstream --help`.

Prints each failure on a line of its own, then `docs: N passed, N failed`;
exits 1 when anything failed. Standard library only.

Usage: scripts/docs-check.py [--sstream PATH]   (default target/debug/sstream)
"""

import argparse
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference.md"
EXAMPLE_CONFIG = ROOT / "dist" / "sstream.toml"

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HTML_ID = re.compile(r"""<[^>]*\b(?:id|name)\s*=\s*["']([^"']+)["']""")
LONG_OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


class Checks:
    """Counts what passed and lists what failed."""

    def __init__(self):
        self.passed = 0
        self.failures = []

    def check(self, ok, failure):
        if ok:
            self.passed += 1
        else:
            self.failures.append(failure)


def documents():
    """The Markdown files the checks cover."""
    files = [ROOT / "README.md", ROOT / "CONTRIBUTING.md"]
    files += sorted((ROOT / "docs").rglob("*.md"))
    return [f for f in files if f.exists()]


def prose_lines(text):
    """(line number, line) of the text outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def slug(heading):
    """GitHub's anchor for a heading's text."""
    text = INLINE_CODE.sub(lambda m: m.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    kept = []
    for char in text:
        if char in "-_ " or unicodedata.category(char)[0] in "LN":
            kept.append(char)
    return "".join(kept).replace(" ", "-")


def anchors(path, cache={}):
    """The anchors a Markdown file offers: its headings' and its ids."""
    if path not in cache:
        seen = {}
        found = set()
        for _, line in prose_lines(path.read_text(encoding="utf-8")):
            heading = HEADING.match(line)
            if heading:
                base = slug(heading.group(2))
                count = seen.get(base, 0)
                seen[base] = count + 1
                found.add(base if count == 0 else f"{base}-{count}")
            found.update(HTML_ID.findall(line))
        cache[path] = found
    return cache[path]


def link_targets(path):
    """(line number, target) of every link in a file's prose."""
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        bare = INLINE_CODE.sub("", line)
        for target in LINK.findall(bare):
            yield number, target
        definition = REF_DEFINITION.match(bare)
        if definition:
            yield number, definition.group(1)


def check_links(checks):
    for path in documents():
        where = path.relative_to(ROOT)
        for number, target in link_targets(path):
            if SCHEME.match(target):
                continue
            file_part, _, fragment = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                checks.failures.append(f"{where}:{number}: link to a missing file: {target}")
                continue
            if fragment and linked.suffix == ".md":
                checks.check(
                    fragment in anchors(linked),
                    f"{where}:{number}: link to a missing anchor: {target}",
                )
            else:
                checks.passed += 1


def sections(path):
    """(heading, body) of each section of a Markdown file."""
    heading, body = None, []
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if match:
            if heading is not None:
                yield heading, "\n".join(body)
            heading, body = match.group(2), []
        else:
            body.append(line)
    if heading is not None:
        yield heading, "\n".join(body)


def help_text(sstream, command):
    run = subprocess.run(
        [sstream, *command, "--help"], capture_output=True, text=True, check=False
    )
    if run.returncode != 0:
        raise RuntimeError(f"`{' '.join(['sstream', *command, '--help'])}` failed: {run.stderr.strip()}")
    return run.stdout


def help_options(text):
    """The long options of a --help text's option list."""
    options = set()
    for line in text.splitlines():
        match = re.match(r"^\s+(?:-\w, )?(--[a-z][a-z0-9-]*)", line)
        if match and match.group(1) not in ("--help", "--version"):
            options.add(match.group(1))
    return options


def check_command_sections(checks, sstream):
    for heading, body in sections(REFERENCE):
        match = re.search(r"`sstream((?: [a-z][a-z-]*)+)`", heading)
        if not match:
            continue
        command = match.group(1).split()
        name = "sstream " + " ".join(command)
        try:
            offered = help_options(help_text(sstream, command))
        except RuntimeError as err:
            checks.failures.append(f"docs/reference.md: {err}")
            continue
        documented = set(LONG_OPTION.findall(body)) - {"--help"}
        for option in sorted(offered):
            checks.check(
                option in documented,
                f"docs/reference.md: section `{name}` lacks {option} (in `{name} --help`)",
            )
        for option in sorted(documented - offered):
            checks.failures.append(
                f"docs/reference.md: section `{name}` names {option}, which `{name} --help` does not list"
            )


def example_config_keys():
    keys = set()
    for line in EXAMPLE_CONFIG.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^#?\s?([a-z_]+)\s*=", line)
        if match:
            keys.add(match.group(1))
    return keys


def check_config_keys(checks):
    table = dict(sections(REFERENCE)).get("Config keys", "")
    documented = set(re.findall(r"^\|\s*`([a-z_]+)`\s*\|", table, re.MULTILINE))
    example = example_config_keys()
    checks.check(bool(documented), "docs/reference.md: no `Config keys` table")
    for key in sorted(example):
        checks.check(
            key in documented,
            f"docs/reference.md: Config keys lacks `{key}` (in dist/sstream.toml)",
        )
    for key in sorted(documented - example):
        checks.failures.append(
            f"docs/reference.md: Config keys names `{key}`, which dist/sstream.toml does not"
        )


def check_exit_codes(checks, sstream):
    try:
        text = help_text(sstream, [])
    except RuntimeError as err:
        checks.failures.append(f"docs/reference.md: {err}")
        return
    status = text.partition("Exit status:")[2]
    codes = set(re.findall(r"^\s+(\d+)\s{2}", status, re.MULTILINE))
    table = dict(sections(REFERENCE)).get("Exit codes", "")
    documented = set(re.findall(r"^\|\s*(\d+)\s*\|", table, re.MULTILINE))
    checks.check(bool(codes), "sstream --help lists no exit status")
    checks.check(
        codes == documented,
        f"docs/reference.md: Exit codes lists {sorted(documented)}, `sstream --help` {sorted(codes)}",
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sstream", default=str(ROOT / "target" / "debug" / "sstream"))
    args = parser.parse_args()
    checks = Checks()
    check_links(checks)
    if Path(args.sstream).is_file():
        check_command_sections(checks, args.sstream)
        check_exit_codes(checks, args.sstream)
    else:
        checks.failures.append(f"{args.sstream}: no sstream binary to check the reference with (cargo build -p sstream)")
    check_config_keys(checks)
    for failure in checks.failures:
        print(failure)
    print(f"docs: {checks.passed} passed, {len(checks.failures)} failed")
    return 1 if checks.failures else 0


if __name__ == "__main__":
    sys.exit(main())
