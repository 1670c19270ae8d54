#!/usr/bin/env bash
# Are the dependency floors in pyproject.toml true? Resolve the lowest version every direct dependency
# allows (uv's --resolution lowest-direct, the dev extra included), install exactly those into a fresh
# virtual environment and run the fast tests there. A failure means a floor is too low: raise it.
#   bash scripts/check_lowest.sh                    # after scripts/setup.sh; .ci/run calls it
#   bash scripts/check_lowest.sh tests/test_x.py    # other tests instead of the fast set
# torch is the CPU wheel of the lowest allowed release (what scripts/setup.sh installs): a CUDA build
# would pull gigabytes of libraries that the CPU tests never load.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
UV="${UV:-$ROOT/.venv/bin/uv}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# The fast set: every floor that matters is loaded by one of these (torch, transformers' beam search with
# cache=, peft, tokenizers, soundfile/scipy/numpy, faiss through the Santa memory, onnxruntime,
# FastAPI/starlette/pydantic/uvicorn, openai/httpx, pytest).
TESTS=("$@")
[ ${#TESTS[@]} -gt 0 ] || TESTS=(tests/test_decode_fast.py tests/test_openai_api.py tests/test_audio.py)

torch_floor="$(sed -n 's/^ *"torch>=\([0-9.]*\),.*/\1/p' pyproject.toml)"
[ -n "$torch_floor" ] || { echo "check_lowest: no torch floor found in pyproject.toml" >&2; exit 1; }
FIND_LINKS=()
if ls /opt/wheels/torch-"$torch_floor"+cpu-*.whl >/dev/null 2>&1; then
  FIND_LINKS=(--find-links /opt/wheels)  # this machine's local CPU wheel of torch
  echo "torch==$torch_floor+cpu" >"$WORK/overrides.txt"
else
  echo "torch==$torch_floor" >"$WORK/overrides.txt"
fi

echo "check_lowest: resolving the lowest allowed versions (uv pip compile --resolution lowest-direct)"
"$UV" pip compile pyproject.toml --extra dev --resolution lowest-direct --python-version 3.11 --quiet \
  "${FIND_LINKS[@]}" --override "$WORK/overrides.txt" -o "$WORK/lowest.txt"
grep -E '^(torch|transformers|tokenizers|peft|accelerate|numpy|scipy|fastapi|starlette|pydantic|uvicorn|openai|httpx)==' \
  "$WORK/lowest.txt" | tr '\n' ' '; echo

python3 -m venv "$WORK/venv"
"$UV" pip install --quiet --python "$WORK/venv/bin/python" "${FIND_LINKS[@]}" -r "$WORK/lowest.txt"
"$UV" pip install --quiet --python "$WORK/venv/bin/python" --no-deps -e .
"$WORK/venv/bin/python" -m pip check >/dev/null || { "$WORK/venv/bin/python" -m pip check >&2; exit 1; }

echo "check_lowest: running ${TESTS[*]} on the lowest versions"
unset PYTHONPATH
"$WORK/venv/bin/python" -m pytest -q -p no:cacheprovider "${TESTS[@]}"
