"""Exits 0 when two mirror trees hold the same files: the same bytes, or
for JSON under .data/ the same value (the reference writes references.json
in insertion order, we sort). Our own bookkeeping (.data/sstream*) and
empty directories (the reference leaves them) are not compared.

Usage: same-mirror.py A B
"""

import json
import os
import sys


def files(root):
    out = set()
    for d, _, names in os.walk(root):
        for n in names:
            rel = os.path.relpath(os.path.join(d, n), root)
            if not rel.startswith(".data/sstream"):
                out.add(rel)
    return out


def same(a, b, rel):
    with open(os.path.join(a, rel), "rb") as f, open(os.path.join(b, rel), "rb") as g:
        x, y = f.read(), g.read()
    if x == y:
        return True
    if rel.startswith(".data/"):
        try:
            return json.loads(x) == json.loads(y)
        except ValueError:
            return False
    return False


a, b = sys.argv[1:3]
fa, fb = files(a), files(b)
problems = [f"only in {a}: {p}" for p in sorted(fa - fb)]
problems += [f"only in {b}: {p}" for p in sorted(fb - fa)]
problems += [f"differs: {p}" for p in sorted(fa & fb) if not same(a, b, p)]
for p in problems:
    print(p, file=sys.stderr)
sys.exit(1 if problems else 0)
