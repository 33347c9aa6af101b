"""The import graph of a package read from its source, lazy (function-level) imports included.

Used by tests/test_boundaries.py. Modules are dotted names; an edge goes to the imported module
(``from pkg import sub`` counts as importing ``pkg.sub`` when ``sub`` is a module of ``pkg``).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Rule:
    """``target`` (and its sub-modules) may be imported only from ``allowed`` (sub-packages or
    modules right under the package), or from anywhere except ``forbidden_in``."""

    target: str
    allowed: tuple[str, ...] | None = None
    forbidden_in: tuple[str, ...] = ()

    def broken_by(self, module: str, imported: str) -> bool:
        if imported != self.target and not imported.startswith(self.target + "."):
            return False
        if self.target == "torch" and imported.startswith("torchvision"):
            return False
        part = module.split(".")[1] if "." in module else ""
        if self.allowed is not None:
            return part not in self.allowed
        return part in self.forbidden_in


def read_sources(folder: Path, package: str) -> dict[str, str]:
    """Dotted module name -> source text, for every ``.py`` file under ``folder``."""
    sources = {}
    for path in sorted(folder.rglob("*.py")):
        parts = [package, *path.relative_to(folder).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        sources[".".join(parts)] = path.read_text(encoding="utf-8")
    return sources


def _absolute(module: str, is_package: bool, level: int, name: str | None) -> str:
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join([*base, name] if name else base)


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """Module -> every module it imports anywhere in its body (third-party ones too)."""
    graph: dict[str, set[str]] = {}
    packages = {m for m, src in sources.items() if _is_package(m, sources)}
    for module, text in sources.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                origin = (
                    _absolute(module, module in packages, node.level, node.module)
                    if node.level
                    else node.module or ""
                )
                for alias in node.names:
                    sub = f"{origin}.{alias.name}"
                    edges.add(sub if sub in sources else origin)
        graph[module] = edges
    return graph


def _is_package(module: str, sources: dict[str, str]) -> bool:
    return any(other.startswith(module + ".") for other in sources)


def check(graph: dict[str, set[str]], rules: tuple[Rule, ...]) -> list[str]:
    """Every broken rule as ``"<module> imports <target> (<imported>)"``."""
    return sorted(
        f"{module} imports {rule.target} ({imported})"
        for module, edges in graph.items()
        for imported in edges
        for rule in rules
        if rule.broken_by(module, imported)
    )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles among the graph's own modules (a package's ``__init__`` importing its own
    sub-modules is not a cycle: Python loads the sub-module after the package object exists)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def internal(module: str) -> list[str]:
        own = module + "."
        return sorted(
            e for e in graph[module] if e in graph and e != module and not e.startswith(own)
        )

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for nxt in internal(module):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return found


def line_counts(folder: Path) -> dict[str, int]:
    """File (relative to ``folder``) -> its number of lines."""
    return {
        str(p.relative_to(folder)): len(p.read_text(encoding="utf-8").splitlines())
        for p in sorted(folder.rglob("*.py"))
    }
