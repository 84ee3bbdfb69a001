#!/usr/bin/env python3
"""Find import cycles between aiidetect modules.

Reads every module under ``aiidetect/`` with the ``ast`` module (nothing is
imported or executed) and counts every import statement, including those inside
functions: a function-level import hides a cycle from the interpreter at load
time but still ties the two modules together for anyone changing them.

Usage::

    python scripts/import_cycles.py            # prints cycles, exit 1 if any
    python scripts/import_cycles.py --edges    # also prints every edge

Exit status: 0 no cycle, 1 cycles found.
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

PACKAGE = "aiidetect"


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(node: ast.ImportFrom, current: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = current.split(".")
    # A relative import is resolved against the package, which for a plain
    # module is its parent and for an __init__ is the module itself.
    if not is_package:
        base = base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def build_graph(root: Path) -> dict[str, set[str]]:
    files = sorted((root / PACKAGE).rglob("*.py"))
    modules = {module_name(p, root): p for p in files}
    graph: dict[str, set[str]] = {m: set() for m in modules}

    def owner(name: str) -> str | None:
        # ``from aiidetect.x import y`` may name a submodule ``x.y`` or an
        # attribute of ``x``; walk up to the longest known module.
        while name:
            if name in modules:
                return name
            name = name.rpartition(".")[0]
        return None

    for mod, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node, mod, is_package)
                targets = [f"{base}.{a.name}" for a in node.names] or [base]
            for t in targets:
                if not (t == PACKAGE or t.startswith(PACKAGE + ".")):
                    continue
                dep = owner(t)
                # A package importing its own submodule, or a module importing
                # its own package, is not a cycle between two pieces of code
                # anyone could separate; the package __init__ is excluded.
                if dep is None or dep == mod or dep == PACKAGE:
                    continue
                graph[mod].add(dep)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))
    for v in sorted(graph):
        if v not in index:
            strong(v)
    return sorted(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                    help="repository root holding the aiidetect package")
    ap.add_argument("--edges", action="store_true", help="print every edge inside a cycle")
    args = ap.parse_args(argv)
    graph = build_graph(args.root)
    cycles = find_cycles(graph)
    for comp in cycles:
        members = set(comp)
        print("cycle: " + " <-> ".join(comp))
        if args.edges:
            for a in comp:
                for b in sorted(graph[a] & members):
                    print(f"    {a} -> {b}")
    n_edges = sum(len(v) for v in graph.values())
    print(f"{len(graph)} modules, {n_edges} edges, {len(cycles)} cycles", file=sys.stderr)
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
