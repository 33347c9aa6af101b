"""What a logged model ships: the factory's module and its local imports, and the model's size.

:func:`walk_factory` reads (never runs) the factory's module and, recursively, every module it
imports (at the top or inside a function) that lives in the same project: the same top-level
package, or another top-level package or module in the directory that holds it (the project
root; for a factory in an installed package, its own package only). Those modules, with
their parent packages' ``__init__.py``, are what :func:`stage_code` copies into the model's
``code/``; data files (checkpoints, text files) and the package's other modules are left
out. ``inc_flow`` is not shipped: it is a pinned pip requirement of the model
(:mod:`inc_flow.model.requirements`). Imports of everything else are the factory's
third-party packages, pinned by :func:`inc_flow.model.requirements.factory_requirements`.
A module imported by name at run time (``importlib.import_module``) is not seen: pass
``code_paths`` to ``log_model`` for such a model.

:func:`logged_size` is the logged model's total size in bytes, recorded as the tag
``model_size_bytes`` on the logged model and on its registry version.
"""

from __future__ import annotations

import ast
import importlib.util
import logging
import shutil
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import mlflow

from inc_flow.errors import SaveLoadError
from inc_flow.model.factory import import_factory

logger = logging.getLogger("inc_flow")

NOT_SHIPPED = frozenset({"inc_flow", "inc_flow_dashboards", "__future__"})  # requirements


@dataclass
class FactoryImports:
    """What the factory's module needs, read from the source.

    Attributes:
        root: the directory holding the factory's top-level package or module.
        local: module name -> its ``.py`` file: the factory's module, its local imports and
            their parent packages (``__init__.py``; a namespace package has none).
        external: top-level names of every other module imported (stdlib ones included).
    """

    root: Path
    local: dict[str, Path] = field(default_factory=dict)
    external: set[str] = field(default_factory=set)

    def files(self) -> list[Path]:
        """The local modules' files, relative to :attr:`root`, sorted."""
        return sorted(p.relative_to(self.root) for p in self.local.values())


def _spec(name: str) -> importlib.machinery.ModuleSpec | None:
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError, AttributeError):
        return None  # `from pkg.module import attr` names no module; an optional import


def _source(spec: importlib.machinery.ModuleSpec | None) -> Path | None:
    origin = getattr(spec, "origin", None)
    return Path(origin).resolve() if origin and origin.endswith(".py") else None


def _imports(path: Path, module: str, is_package: bool) -> Iterator[str]:
    """Absolute names of what ``path``'s source imports (anywhere, also in functions), and for
    ``from a import b`` also ``a.b`` (which may name a module)."""
    here = module if is_package else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = importlib.util.resolve_name("." * node.level + base, here)
            yield base
            yield from (f"{base}.{a.name}" for a in node.names if a.name != "*")


def _top_root(top: str) -> Path | None:
    """The directory holding the top-level package or module ``top``."""
    spec = _spec(top)
    if spec is None:
        return None
    source = _source(spec)
    if source is not None:
        return source.parent.parent if source.name == "__init__.py" else source.parent
    locations = list(spec.submodule_search_locations or [])  # a namespace package
    return Path(locations[0]).resolve().parent if locations else None


def _is_site_packages(root: Path) -> bool:
    """Whether ``root`` is where pip installs packages (then other top-level names beside the
    factory's package are installed distributions, not the project's)."""
    paths = sysconfig.get_paths()
    site = {Path(paths[k]).resolve() for k in ("purelib", "platlib")}
    return root.name in ("site-packages", "dist-packages") or root in site


def walk_factory(factory: str) -> FactoryImports:
    """The factory's module and its local imports, and the top-level names of the rest.

    Raises:
        ConfigError: the factory does not import (``model.factory``).
        SaveLoadError: its module has no readable ``.py`` source.
    """
    import_factory(factory)  # the module and its parents import, or the problem is named
    module = factory.partition(":")[0]
    top = module.split(".")[0]
    source = _source(_spec(module))
    root = _top_root(top)
    if source is None or root is None:
        raise SaveLoadError(
            f"cannot read the source of the factory module {module!r} (factory {factory!r}): "
            "give `code_paths` to ship it"
        )
    found = FactoryImports(root)
    tops: dict[str, bool] = {top: True}  # top-level name -> lives in the project root
    installed = _is_site_packages(root)  # an installed package: its own modules only

    def is_local(name: str) -> bool:
        first = name.split(".")[0]
        if first not in tops:
            tops[first] = (
                not installed
                and first not in NOT_SHIPPED
                and first not in sys.stdlib_module_names
                and _top_root(first) == root
            )
        return tops[first]

    todo = [module]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        spec = _spec(name)
        path = _source(spec)
        if path is None:
            continue  # not a module (an attribute), or not Python source
        found.local[name] = path
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages
        is_package = bool(spec.submodule_search_locations)
        try:
            imported = list(_imports(path, name, is_package))
        except (SyntaxError, ValueError, OSError, ImportError) as e:
            raise SaveLoadError(f"cannot read module {name!r} ({path}): {e}") from e
        for other in imported:
            if other and is_local(other):
                todo.append(other)
            elif other:
                found.external.add(other.split(".")[0])
    return found


def stage_code(factory: str, destination: Path) -> list[Path]:
    """Copy the factory's local modules to ``destination`` (their paths under the project
    root kept) and return the top-level entries to ship as ``code_paths``."""
    found = walk_factory(factory)
    tops: set[Path] = set()
    for relative in found.files():
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(found.root / relative, target)
        tops.add(destination / relative.parts[0])
    logger.debug("the model's code: %s (from %s)", ", ".join(map(str, found.files())), found.root)
    return sorted(tops)


def logged_size(model_id: str) -> int:
    """Total bytes of a logged model's artifacts (every file, recursively)."""
    client = mlflow.MlflowClient()
    total, todo = 0, [None]
    while todo:
        for info in client.list_logged_model_artifacts(model_id, todo.pop()):
            if info.is_dir:
                todo.append(info.path)
            else:
                total += int(info.file_size or 0)
    return total
