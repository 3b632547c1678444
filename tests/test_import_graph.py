"""The package's import graph has no cycle, counting imports inside functions too.

Run as a script to print the graph by package (modules per package, arrows between
packages): ``python tests/test_import_graph.py``.
"""

from __future__ import annotations

import ast
import sys
from collections import Counter, defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ase_mpnn"


def module_name(path: Path, root: Path = PACKAGE) -> str:
    """'ase_mpnn.graph.skin' for ase_mpnn/graph/skin.py; packages are their __init__."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(node: ast.ImportFrom, current: str, is_package: bool) -> str:
    """The absolute module an ``ImportFrom`` names (relative levels resolved)."""
    if not node.level:
        return node.module or ""
    base = current.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its source (functions too).

    ``from . import keys`` counts as importing ``ase_mpnn.keys``; ``from .x import y`` as
    importing ``ase_mpnn.x.y`` when that is a module, else ``ase_mpnn.x`` (where y is
    defined or re-exported).
    """
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node, name, is_package)
                for alias in node.names:  # a submodule, else a name defined in base
                    full = f"{base}.{alias.name}"
                    targets.add(full if full in files else base)
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for start in sorted(graph):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def room(module: str) -> str:
    """The package a module belongs to: 'graph' for ase_mpnn.graph.skin, '.' for top level."""
    parts = module.split(".")[1:]
    if not parts:
        return "."
    return parts[0] if (PACKAGE / parts[0]).is_dir() else "."


def package_graph(graph: dict[str, set[str]]) -> tuple[Counter, Counter]:
    """(modules per package, import arrows between packages: (from, to) -> count)."""
    modules = Counter(room(m) for m in graph)
    arrows: Counter = Counter()
    for source, targets in graph.items():
        for target in targets:
            if room(source) != room(target) or room(source) == ".":
                key = (room(source) if room(source) != "." else source.split(".")[-1],
                       room(target) if room(target) != "." else target.split(".")[-1])
                if key[0] != key[1]:
                    arrows[key] += 1
    return modules, arrows


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_planted_cycle(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .sub import b\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "b.py").write_text("def f():\n    from .. import a\n")
    graph = import_graph(package)
    assert graph["pkg.a"] == {"pkg.sub.b"}
    assert find_cycle(graph) in (["pkg.a", "pkg.sub.b", "pkg.a"],
                                 ["pkg.sub.b", "pkg.a", "pkg.sub.b"])
    (package / "sub" / "b.py").write_text("import math\n")
    assert find_cycle(import_graph(package)) is None


def main() -> int:
    graph = import_graph()
    modules, arrows = package_graph(graph)
    print("modules per package:")
    for name, count in sorted(modules.items()):
        print(f"  {name:16s} {count}")
    print("arrows (importer -> imported: number of module pairs):")
    by_source = defaultdict(list)
    for (source, target), count in sorted(arrows.items()):
        by_source[source].append(f"{target}({count})")
    for source, targets in sorted(by_source.items()):
        print(f"  {source:16s} -> {', '.join(targets)}")
    cycle = find_cycle(graph)
    print("cycle: " + (" -> ".join(cycle) if cycle else "none"))
    return 1 if cycle else 0


if __name__ == "__main__":
    sys.exit(main())
