#!/usr/bin/env bash
# Run the three benchmarks (not part of the test suite) and say where their JSON results are.
#
#   scripts/bench.sh            # pipeline efficiency, memory vs raster size (5000², 20000²), coral script side by side
#
# Expect about 15–20 minutes on a 2-core machine (the 20000² memory run and the coral comparison take minutes;
# the first run also generates the inputs under bench/data/, about 2 GB, kept for later runs). Figures from a noisy
# machine are only comparable within one run: each benchmark measures its own ratios.
#
# To measure a patched copy of the plugin with the same benchmarks, point DEEPRASTER_BENCH_PLUGINS at a folder that
# holds it as "deepraster" (e.g. DEEPRASTER_BENCH_PLUGINS=/tmp/patched scripts/bench.sh).
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
ROOT="$(pwd -P)"

[ -x .venv/bin/python ] || { echo "bench: .venv missing: run scripts/setup.sh (or make setup)" >&2; exit 1; }
[ -e .data/s2/s2_l1c_10m.tif ] || { echo "bench: .data fixtures missing: run scripts/setup.sh" >&2; exit 1; }
if [ ! -e .build/plugins/deepraster ]; then
    mkdir -p .build/plugins && ln -s ../.. .build/plugins/deepraster
fi

export QT_QPA_PLATFORM=offscreen
export PYTHONPATH="$ROOT/.build/plugins${PYTHONPATH:+:$PYTHONPATH}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$ROOT/.build/qgis-profile/runtime}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"

RESULTS="$ROOT/bench/results"
mkdir -p "$RESULTS"
PY="$ROOT/.venv/bin/python"

status=0
for name in pipeline memory coral; do
    echo "bench: running bench/bench_$name.py"
    "$PY" "bench/bench_$name.py" --out "$RESULTS/$name.json" || { echo "bench: bench_$name.py failed" >&2; status=1; }
done

echo "bench: results (JSON):"
for name in pipeline memory coral; do
    [ -e "$RESULTS/$name.json" ] && echo "  $RESULTS/$name.json"
done
exit "$status"
