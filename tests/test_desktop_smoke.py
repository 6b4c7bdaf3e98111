"""The real QGIS desktop (``/usr/bin/qgis``, GUI, X server, OpenGL) runs one algorithm of every family and loads the
outputs, then quits normally.

Why a desktop test: QGIS desktop loads Mesa's OpenGL driver, which links ``libLLVM-15.so.1``. Importing
segmentation-models-pytorch used to import ``triton`` (through torchvision and ``torch._dynamo``), whose bundled LLVM
clashes with Mesa's: QGIS died with a segmentation fault on the first "Classify pixels" run. Headless runs
(``qgis_process``, the other tests) never load OpenGL and cannot see it. ``algorithms/import_guard.py`` keeps triton
out; ``DEEPRASTER_ALLOW_TRITON=1`` turns the guard off, which brings the crash back: run this file with it set and
the first test fails as the code before the guard did (``test_desktop_crashes_without_the_guard`` shows the same
crash as a passing check; it runs only on demand, with ``DEEPRASTER_SMOKE_RED=1``).

The test starts QGIS under Xvfb (``xvfb-run``, installed by scripts/setup.sh) with a private copy of the project's
profile (``.build/qgis-profile``, plugin enabled) and ``--code`` pointing at a script that checks libLLVM is mapped,
runs the algorithms with ``processing.runAndLoadResults``, writes a JSON result and quits QGIS.
"""

from __future__ import annotations

import filecmp
import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from helpers import REPO

XVFB_RUN = shutil.which("xvfb-run")
QGIS = "/usr/bin/qgis"
TIMEOUT_S = 180

DESKTOP_SCRIPT = r'''
import json, os, sys, traceback
from qgis.core import QgsApplication, QgsProject
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface

result = {"steps": {}, "errors": []}


def mapped(name):
    """The first shared library of this process whose path holds ``name`` (/proc/self/maps), or ""."""
    with open("/proc/self/maps") as maps:
        return next((line.split()[-1] for line in maps if name in line), "")


def ensure_opengl():
    """QGIS's window has loaded the GL driver already on most desktops; make sure by creating a context."""
    if mapped("libLLVM-"):
        return "at start-up"
    from qgis.PyQt.QtGui import QOffscreenSurface, QOpenGLContext
    global _GL
    surface = QOffscreenSurface(); surface.create()
    context = QOpenGLContext(); context.create(); context.makeCurrent(surface)
    _GL = (surface, context)
    return "after creating a QOpenGLContext" if mapped("libLLVM-") else "never"


def step(name, alg, params):
    import processing
    before = set(QgsProject.instance().mapLayers())
    out = processing.runAndLoadResults(alg, params)
    new = [QgsProject.instance().mapLayer(i) for i in set(QgsProject.instance().mapLayers()) - before]
    result["steps"][name] = {"outputs": sorted(k for k, v in out.items() if v),
                             "layers": sorted(l.name() for l in new if l.isValid())}
    print("SMOKE", name, "done", flush=True)


def main():
    args = json.loads(os.environ["DEEPRASTER_SMOKE_ARGS"])
    try:
        result["opengl"] = ensure_opengl()
        result["llvm_mapped"] = mapped("libLLVM-")  # Mesa's (libLLVM-15.so.1 on Debian 12)
        result["provider"] = QgsApplication.processingRegistry().providerById("deepraster") is not None
        work = args["work"]
        step("classify_pixels", "deepraster:classify_pixels", {
            "INPUT": args["raster"], "MODEL": args["model"],
            "OUTPUT_CLASSES": f"{work}/classes.tif", "OUTPUT_PROBABILITIES": f"{work}/probabilities.tif"})
        step("classify_pixels_dask", "deepraster:classify_pixels", {  # scale family: workers started from QGIS
            "INPUT": args["raster"], "MODEL": args["model"], "EXECUTION": 1, "DASK_WORKERS": 1,
            "OUTPUT_CLASSES": f"{work}/classes_dask.tif", "OUTPUT_PROBABILITIES": None})
        step("extract_features", "deepraster:extract_features", {
            "INPUT": args["raster"], "ENCODER": 0, "MODEL": args["model"], "STRIDE": 1,
            "OUTPUT": f"{work}/features.tif"})
        step("cluster_pixels", "deepraster:cluster_pixels", {
            "INPUT": f"{work}/features.tif", "N_CLUSTERS": 3, "SAMPLE_SIZE": 100, "OUTPUT": f"{work}/clusters.tif"})
        step("export_training_data", "deepraster:export_training_data", {
            "INPUT": args["raster"], "LABEL_RASTER": args["labels"], "CHIP_SIZE": 32, "BLOCK_SIZE": 1920,
            "SEED": 0, "OUTPUT": f"{work}/chips"})
        step("evaluate_classes", "deepraster:evaluate_classes", {
            "INPUT": f"{work}/classes.tif", "REFERENCE_RASTER": f"{work}/classes.tif",
            "OUTPUT_REPORT": f"{work}/evaluation.html", "OUTPUT_REPORT_JSON": f"{work}/evaluation.json"})
        step("classify_objects", "deepraster:classify_objects", {  # objects family
            "INPUT": args["raster"], "FEATURES": args["points"], "MODEL": args["classifier"], "BUFFER": 60.0,
            "OUTPUT": f"{work}/classified.gpkg"})
        step("inspect_package", "deepraster:inspect_package", {
            "MODEL": args["model"], "DRY_RUN": False, "OUTPUT_JSON": f"{work}/inspect.json",
            "OUTPUT_HTML": f"{work}/inspect.html"})
        result["triton"] = repr(sys.modules.get("triton", "absent"))
        result["torch_loaded"] = "torch" in sys.modules
        result["torch_file"] = getattr(sys.modules.get("torch"), "__file__", "")
    except Exception:  # reported in the JSON; QGIS still quits normally
        result["errors"].append(traceback.format_exc())
    with open(args["result"], "w") as f:
        json.dump(result, f, indent=1)
    QgsProject.instance().clear()  # no "save the project?" or "temporary layers" question on exit
    QgsProject.instance().setDirty(False)
    QTimer.singleShot(0, iface.actionExit().trigger)


QTimer.singleShot(0, main)
'''


def _profile(tmp_path: Path) -> Path:
    """A private copy of the project's profile (the plugin enabled, no first-run questions). With
    ``DEEPRASTER_SMOKE_PACKAGES`` (a ``deepraster-packages`` folder made by the installer) the profile holds those
    packages, where the plugin puts them on ``sys.path`` at start: the path of a user who installed them."""
    profiles = tmp_path / "profiles-root"
    ini = profiles / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    installed = os.environ.get("DEEPRASTER_SMOKE_PACKAGES")
    if installed:
        (profiles / "profiles" / "default" / "python").mkdir()
        (profiles / "profiles" / "default" / "python" / "deepraster-packages").symlink_to(installed)
    source = REPO / ".build" / "qgis-profile" / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    text = source.read_text(encoding="utf-8") if source.is_file() else ""
    if "deepraster=true" not in text:
        text = "[PythonPlugins]\ndeepraster=true\n\n" + text
    ini.write_text(text + "\n[core]\nshowNews=false\n", encoding="utf-8")
    return profiles


def _site_packages() -> str:
    """The venv's site-packages, for QGIS's PYTHONPATH; ``DEEPRASTER_SMOKE_SITE`` replaces it ("" for none: QGIS
    then sees only its own packages and those of the profile, see :func:`_profile`)."""
    return os.environ.get("DEEPRASTER_SMOKE_SITE",
                          str(next((REPO / ".venv" / "lib").glob("python3*/site-packages"))))


def run_desktop(tmp_path: Path, raster: Path, model: Path, *, allow_triton: bool | None,
                labels: Path | None = None, objects: tuple[Path, Path] | None = None
                ) -> tuple[subprocess.CompletedProcess, Path]:
    """QGIS desktop running DESKTOP_SCRIPT; ``objects``: (classification package, points layer) for the objects
    step."""
    script = tmp_path / "smoke.py"
    script.write_text(DESKTOP_SCRIPT, encoding="utf-8")
    result = tmp_path / "result.json"
    work = tmp_path / "out"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in {"QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY"}}
    plugins = os.environ.get("DEEPRASTER_SMOKE_PLUGINS", str(REPO / ".build" / "plugins"))  # e.g. an older build
    env.pop("PYTHONPATH", None)
    env.update(QGIS_PLUGINPATH=plugins, PYTHONPATH=_site_packages(),
               XDG_RUNTIME_DIR=str(tmp_path / "runtime"), QT_XCB_GL_INTEGRATION="xcb_glx",
               DEEPRASTER_SMOKE_ARGS=json.dumps({"raster": str(raster), "model": str(model), "work": str(work),
                                                 "result": str(result), "labels": str(labels),
                                                 "classifier": str(objects[0]) if objects else "",
                                                 "points": str(objects[1]) if objects else ""}))
    if allow_triton is not None:  # None: as in this environment (DEEPRASTER_ALLOW_TRITON=1 shows the old crash)
        env.pop("DEEPRASTER_ALLOW_TRITON", None)
        if allow_triton:
            env["DEEPRASTER_ALLOW_TRITON"] = "1"
    (tmp_path / "runtime").mkdir(mode=0o700)
    command = [XVFB_RUN, "-a", "-s", "-screen 0 1280x1024x24 +extension GLX", QGIS, "--nologo", "--noversioncheck",
               "--profiles-path", str(_profile(tmp_path)), "--code", str(script)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:  # a dialog waiting for a click: end QGIS and Xvfb (the session), then fail
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"QGIS desktop did not quit within {TIMEOUT_S} s\n{stdout[-3000:]}\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr), result


def crash_summary(proc: subprocess.CompletedProcess) -> str:
    """The lines of QGIS's crash report (its handler prints "QGIS died on signal N" and a gdb backtrace, then
    aborts: rc 134) that say where it died."""
    lines = (proc.stdout + proc.stderr).splitlines()
    keep = [line[:200] for line in lines if "died on signal" in line or ("#" in line and re.search(
        r"triton|LLVM|llvm", line))]
    return "crash report:\n" + "\n".join(keep[:12]) if keep else "no crash report"


@pytest.fixture(scope="module")
def small_raster(tmp_path_factory, s2_30m) -> Path:
    """A 96 × 128 px corner of the real 30 m Sentinel-2 scene (named bands, so the ukis package matches them)."""
    from osgeo import gdal

    out = tmp_path_factory.mktemp("smoke") / "s2_small.tif"
    gdal.Translate(str(out), str(s2_30m), srcWin=[0, 0, 128, 96])
    return out


@pytest.fixture(scope="module")
def stripe_labels(small_raster) -> Path:
    """Two classes in 4 px stripes on the small raster's grid: every 32 px chip holds both."""
    import numpy as np
    from osgeo import gdal

    source = gdal.Open(str(small_raster))
    out = small_raster.with_name("labels.tif")
    labels = gdal.GetDriverByName("GTiff").Create(str(out), source.RasterXSize, source.RasterYSize, 1, gdal.GDT_Byte)
    labels.SetGeoTransform(source.GetGeoTransform())
    labels.SetProjection(source.GetProjection())
    stripes = (np.arange(source.RasterXSize) // 4) % 2
    labels.GetRasterBand(1).WriteArray(np.repeat(stripes[None].astype(np.uint8), source.RasterYSize, axis=0))
    labels = None
    return out


@pytest.fixture(scope="module")
def objects_inputs(small_raster) -> tuple[Path, Path]:
    """An image-classification package reading B04 / B03 (tests/classification_scene.py) and three points on the
    small raster."""
    from classification_scene import classifier_package
    from helpers import write_vector
    from osgeo import gdal

    g = gdal.Open(str(small_raster)).GetGeoTransform()
    package = classifier_package(small_raster.parent / "classifier", input={"bands": ["B04", "B03"],
                                                                            "value_scale": 0.0001})
    points = [f"POINT ({g[0] + c * g[1]} {g[3] + r * g[5]})" for c, r in ((20, 20), (64, 48), (100, 70))]
    return package / "model.json", write_vector(small_raster.parent / "points.gpkg", points)


def _require_desktop() -> None:
    if XVFB_RUN is None:
        pytest.skip("no X server can be started: xvfb-run is missing (scripts/setup.sh installs the xvfb package)")
    if not os.path.exists(QGIS):
        pytest.skip(f"{QGIS} (QGIS desktop) is not installed")


def test_desktop_runs_every_family_and_quits(tmp_path, small_raster, stripe_labels, model_6b_l1c, objects_inputs):
    _require_desktop()
    proc, result_path = run_desktop(tmp_path, small_raster, model_6b_l1c, allow_triton=None, labels=stripe_labels,
                                    objects=objects_inputs)
    log = f"rc={proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, f"QGIS did not exit normally\n{crash_summary(proc)}\n{log}"
    assert result_path.is_file(), f"the desktop script wrote no result\n{log}"
    result = json.loads(result_path.read_text())
    assert result["errors"] == [], result["errors"][0]
    assert result["llvm_mapped"], "Mesa's libLLVM was not loaded: the test would not see the clash"
    assert result["provider"]
    assert result["triton"] == "None"  # blocked by the guard, torch imported without it
    assert result["torch_loaded"]
    installed = os.environ.get("DEEPRASTER_SMOKE_PACKAGES")
    if installed:  # the packages the installer put into the profile, not the venv's
        assert Path(result["torch_file"]).is_relative_to(Path(installed).resolve()) or \
            result["torch_file"].startswith(str(tmp_path / "profiles-root")), result["torch_file"]
    steps = result["steps"]
    assert steps["classify_pixels"]["outputs"] == ["OUTPUT_CLASSES", "OUTPUT_PROBABILITIES"]
    assert len(steps["classify_pixels"]["layers"]) == 2
    assert steps["classify_pixels_dask"]["outputs"] == ["OUTPUT_CLASSES"]  # a local Dask cluster inside QGIS
    assert filecmp.cmp(tmp_path / "out" / "classes.tif", tmp_path / "out" / "classes_dask.tif", shallow=False)
    for name in ("classify_pixels", "extract_features", "cluster_pixels", "classify_objects"):  # named after input
        assert all(layer.startswith(f"{small_raster.stem} — ") for layer in steps[name]["layers"]), steps[name]
    for name in ("extract_features", "cluster_pixels", "classify_objects"):
        assert "OUTPUT" in steps[name]["outputs"] and len(steps[name]["layers"]) == 1, (name, steps[name])
    assert json.loads((tmp_path / "out" / "inspect.json").read_text())["status"] == "valid"
    assert (tmp_path / "out" / "chips" / "manifest.json").is_file()  # training family
    assert json.loads((tmp_path / "out" / "evaluation.json").read_text())["metrics"]["overall_accuracy"] == 1.0


@pytest.mark.skipif(os.environ.get("DEEPRASTER_SMOKE_RED") != "1",
                    reason="shows the crash the guard prevents; run with DEEPRASTER_SMOKE_RED=1")
def test_desktop_crashes_without_the_guard(tmp_path, small_raster, model_6b_l1c):
    """Red before: with the guard off (as the code was before it), QGIS dies on the first Classify pixels run."""
    _require_desktop()
    proc, result_path = run_desktop(tmp_path, small_raster, model_6b_l1c, allow_triton=True)
    print(f"rc={proc.returncode}\n{crash_summary(proc)}")
    assert proc.returncode != 0 and not result_path.exists(), proc.stderr[-3000:]
