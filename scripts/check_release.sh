#!/usr/bin/env bash
# Release check: build the wheel and the sdist, check what they hold, install the wheel into a fresh
# virtual environment (nothing from this checkout on its path) and tag a real recorded clip with it.
#   bash scripts/check_release.sh            # after scripts/setup.sh; .ci/run calls it
# KEEP=DIR keeps the built files in DIR. Uses .venv/bin/python to build (the dev extra has `build`).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
PY="${PY:-$ROOT/.venv/bin/python}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
DIST="${KEEP:-$WORK/dist}"

version="$("$PY" -c 'import runpy; print(runpy.run_path("src/mats/version.py")["__version__"])')"
grep -q "^## \[$version\]" CHANGELOG.md || { echo "check_release: CHANGELOG.md has no '## [$version]' section" >&2; exit 1; }

echo "check_release: building mats $version (wheel + sdist)"
"$PY" -m build --outdir "$DIST" . >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log" >&2; exit 1; }
wheel="$DIST/mats-$version-py3-none-any.whl"
sdist="$DIST/mats-$version.tar.gz"
[ -f "$wheel" ] && [ -f "$sdist" ] || { echo "check_release: expected $wheel and $sdist" >&2; ls "$DIST" >&2; exit 1; }

# What must ship: the default model, the page, the typing marker (and the changelog in the sdist).
"$PY" - "$wheel" "$sdist" <<'PYEOF'
import sys, tarfile, zipfile
wheel, sdist = sys.argv[1:]
names = set(zipfile.ZipFile(wheel).namelist())
need = ["mats/py.typed", "mats/server/static/index.html", "mats/resources/default_model/config.json",
        "mats/resources/default_model/mapper.safetensors", "mats/resources/default_model/santa/santa.safetensors",
        "mats/resources/default_model/lora/adapter_model.safetensors"]
missing = [n for n in need if n not in names]
top = tarfile.open(sdist).getnames()
missing += [n for n in ("CHANGELOG.md", "src/mats/py.typed", "src/mats/resources/default_model/config.json")
            if not any(t.endswith("/" + n) for t in top)]
if missing:
    sys.exit(f"check_release: missing from the built files: {', '.join(missing)}")
print(f"check_release: wheel {len(names)} files, sdist {len(top)} entries: the model, the page and py.typed inside")
PYEOF

echo "check_release: installing the wheel into a fresh virtual environment"
python3 -m venv "$WORK/venv"
pip_install() { "$WORK/venv/bin/python" -m pip install --quiet "$@" >>"$WORK/pip.log" 2>&1 || { cat "$WORK/pip.log" >&2; exit 1; }; }
pip_install --upgrade pip
# The CPU wheel of torch, as scripts/setup.sh installs it (a plain `pip install` could pull a CUDA build).
pip_install "torch==2.13.0"
pip_install "$wheel"

# A real recorded clip from the cached Debian sound set (scripts/setup.sh / the tests fetch it).
clip="$("$PY" -c 'from mats.data.sounds import fetch_real_sounds, read_metadata
f = fetch_real_sounds(); print(f / read_metadata(f)[0]["file"])')"
cd "$WORK"  # nothing of the checkout on the path: the installed package answers
unset PYTHONPATH
where="$("$WORK/venv/bin/python" -c 'import mats, mats.version as v; print(mats.__file__, v.__version__)')"
case "$where" in
  "$WORK/venv/"*" $version") ;;
  *) echo "check_release: the fresh environment imports the wrong mats: $where" >&2; exit 1 ;;
esac
out="$("$WORK/venv/bin/mats" tag "$clip" --format jsonl --quiet)"
echo "check_release: $out"
"$WORK/venv/bin/python" -c 'import json, sys
row = json.loads(sys.argv[1])
assert row.get("text") and row.get("tags") and "error" not in row, row' "$out"
echo "check_release: mats $version built, installed into a clean environment and tagged a real clip"
