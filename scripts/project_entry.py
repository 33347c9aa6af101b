"""The MLproject's entry point: ``python scripts/project_entry.py <inc-flow arguments>``.

``mlflow run --env-manager local`` runs the project with whatever ``python`` is first on PATH.
When that is not the project's environment, ``python -m inc_flow.cli`` failed with a bare
"No module named 'torch'". This file uses the standard library only, checks that the packages
are importable and, if not, says which interpreter ran and how to fix it (exit 2)."""

from __future__ import annotations

import importlib.util
import os
import sys

REQUIRED = ("torch", "mlflow", "optuna", "inc_flow")


def missing_packages() -> list[str]:
    return [name for name in REQUIRED if importlib.util.find_spec(name) is None]


def hint(missing: list[str]) -> str:
    return (
        f"inc_flow's project cannot start: {', '.join(missing)} not importable by "
        f"{sys.executable}.\n"
        "`mlflow run --env-manager local` uses the `python` first on PATH. Set up and activate "
        "the project's environment first:\n"
        "  bash scripts/setup.sh && . .venv/bin/activate\n"
        "then rerun, e.g. `mlflow run . --env-manager local -P config=conf/lenet_static.yaml`."
    )


def main(argv: list[str]) -> int:
    missing = missing_packages()
    if missing:
        print(hint(missing), file=sys.stderr)
        return 2
    from inc_flow.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())  # as `python -m` did: the project directory first
    sys.exit(main(sys.argv[1:]))
