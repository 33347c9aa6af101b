"""Database drivers a storage URL needs: a PostgreSQL URL whose driver is not installed is
bad input, named before anything is opened.

``postgresql+psycopg2://`` needs ``psycopg2`` (the ``[postgres]`` extra:
``pip install 'inc-flow[postgres]'``; scripts/setup.sh installs it); a plain
``postgresql://`` needs psycopg 3 (SQLAlchemy 2.1's default driver for it).
"""

from __future__ import annotations

import importlib.util

EXTRA_HINT = "pip install 'inc-flow[postgres]' (scripts/setup.sh installs it)"
DEFAULT_DRIVER = "psycopg"  # SQLAlchemy 2.1's driver for a plain postgresql://
_MODULES = {"psycopg2": "psycopg2", "psycopg": "psycopg", "pg8000": "pg8000"}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a module hidden or broken counts as missing
        return False


def missing_driver(url: str) -> str | None:
    """What is wrong when ``url`` is a PostgreSQL URL whose driver is not installed (a
    sentence naming the driver and how to install it); None otherwise."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    dialect, _, driver = scheme.partition("+")
    if dialect not in ("postgresql", "postgres"):
        return None
    driver = driver or DEFAULT_DRIVER
    module = _MODULES.get(driver, driver)
    if _installed(module):
        return None
    if driver == "psycopg2":
        how = EXTRA_HINT
    elif driver == DEFAULT_DRIVER:
        how = f"pip install psycopg, or use postgresql+psycopg2:// with {EXTRA_HINT}"
    else:
        how = f"pip install {module}, or use postgresql+psycopg2:// with {EXTRA_HINT}"
    return f"needs the PostgreSQL driver {module!r}, which is not installed: {how}"
