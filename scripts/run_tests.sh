#!/usr/bin/env bash
# Run the test suite headless in the project venv; extra arguments go to pytest.
#
#   scripts/run_tests.sh                      # all of tests/
#   scripts/run_tests.sh -k tiling -x         # options only: still all of tests/
#   scripts/run_tests.sh tests/test_x.py::t   # given paths replace tests/
#
# PYTHONPATH holds .build/plugins (the symlink deepraster -> repo root, made by scripts/setup.sh), so the plugin
# imports as the package "deepraster" exactly as QGIS loads it.
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
ROOT="$(pwd -P)"

[ -x .venv/bin/python ] || { echo "run_tests: .venv missing: run scripts/setup.sh (or make setup)" >&2; exit 1; }
[ -e .build/plugins/deepraster ] || { echo "run_tests: .build/plugins/deepraster missing: run scripts/setup.sh" >&2; exit 1; }

export QT_QPA_PLATFORM=offscreen
export PYTHONPATH="$ROOT/.build/plugins${PYTHONPATH:+:$PYTHONPATH}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$ROOT/.build/qgis-profile/runtime}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
# The tests' extracted packages and ONNX exports go to a cache of their own (bounded like any, see models/cache.py),
# never into the user's ~/.cache.
export XDG_CACHE_HOME="$ROOT/.build/cache"

# Add tests/ unless a test path (file, directory or node id) was given.
targets=(tests)
for arg in "$@"; do
    if [[ "$arg" != -* && -e "${arg%%::*}" ]]; then
        targets=()
        break
    fi
done

exec .venv/bin/python -m pytest -p no:cacheprovider --import-mode=importlib "${targets[@]}" "$@"
