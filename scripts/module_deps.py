#!/usr/bin/env python3
"""Who imports whom in src/ (the library): folder-level edges, and any file that imports a
file that imports it (directly or through others). Test modules (`#[cfg(test)]` onwards and
`*_tests.rs`) are left out. Usage: python3 scripts/module_deps.py [src]"""
import re
import sys
from pathlib import Path

src = Path(sys.argv[1] if len(sys.argv) > 1 else "src")
modules = {}  # module path tuple -> file
for f in src.rglob("*.rs"):
    rel = f.relative_to(src)
    if rel.parts[0] == "bin" or f.name.endswith("_tests.rs"):
        continue
    parts = list(rel.with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    modules[tuple(parts)] = f

def code(f):
    text = f.read_text()
    cut = text.find("#[cfg(test)]")
    text = text if cut < 0 else text[:cut]
    return re.sub(r"//[^\n]*", "", text)

def expand(tree):
    """`a::{b, c::{d}}` -> [a::b, a::c::d]"""
    tree = tree.replace(" ", "").replace("\n", "")
    m = re.match(r"^([^{]*)\{(.*)\}$", tree)
    if not m:
        return [tree]
    prefix, body = m.groups()
    items, depth, cur = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0:
            items.append(cur); cur = ""; continue
        depth += ch == "{"; depth -= ch == "}"
        cur += ch
    items.append(cur)
    return [p for i in items if i for p in expand(prefix + i)]

def resolve(mod, path):
    parts = path.split("::")
    if parts[0] == "crate":
        base, parts = [], parts[1:]
    elif parts[0] == "super":
        base = list(mod[:-1])
        parts = parts[1:]
        while parts and parts[0] == "super":
            base, parts = base[:-1], parts[1:]
    elif parts[0] == "self":
        base, parts = list(mod), parts[1:]
    else:
        return None
    full = base + parts
    for n in range(len(full), -1, -1):
        if tuple(full[:n]) in modules:
            return tuple(full[:n])
    return None

edges = set()
for mod, f in modules.items():
    text = code(f)
    paths = [p for u in re.findall(r"\buse\s+([^;]+);", text) for p in expand(u)]
    paths += re.findall(r"\b((?:crate|super)(?:::\w+)+)", text)
    for p in paths:
        target = resolve(mod, p)
        if target is not None and target != mod and target != mod[: len(target)]:
            edges.add((mod, target))

def folder(m):
    return m[0] if m else "lib"

by_folder = {}
for a, b in edges:
    fa, fb = folder(a), folder(b)
    if fa != fb:
        by_folder.setdefault(fa, set()).add(fb)
print("folder -> folders it imports")
for fa in sorted(by_folder):
    print(f"  {fa} -> {', '.join(sorted(by_folder[fa]))}")

graph = {}
for a, b in edges:
    graph.setdefault(a, set()).add(b)
cycles = set()
def walk(start, node, seen):
    for nxt in graph.get(node, ()):
        if nxt == start:
            cycles.add(tuple(sorted([start] + list(seen))))
        elif nxt not in seen and len(seen) < 6:
            walk(start, nxt, seen | {nxt})
for m in graph:
    walk(m, m, frozenset())
print("file cycles:", len(cycles))
for c in sorted(cycles):
    print("  " + " <-> ".join("::".join(m) or "lib" for m in c))
